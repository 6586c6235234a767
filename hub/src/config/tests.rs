//! Tests of loading and validating the whole configuration.

use super::*;
use crate::wamp::MatchPolicy;

#[test]
fn embedded_default_parses_and_validates() {
    let c = Config::from_toml(DEFAULT_TOML, "default.toml").unwrap();
    assert_eq!(c, Config::default());
    assert_eq!(c.realms[0].name, "brume");
    let plans = c.listener_plans().unwrap();
    assert_eq!(plans[0].address.to_string(), "127.0.0.1:8080");
    assert_eq!(plans[0].spec.path, "/ws");
    assert_eq!(plans[1].address.to_string(), "127.0.0.1:8081");
}

#[test]
fn an_empty_file_means_the_defaults() {
    assert_eq!(Config::from_toml("", "x").unwrap(), Config::default());
}

#[test]
fn partial_sections_keep_other_defaults() {
    let c = Config::from_toml("[hub]\nid = \"edge-7\"\n", "x").unwrap();
    assert_eq!(c.hub.id, "edge-7");
    assert_eq!(c.hub.data_dir, HubSection::default().data_dir);
    assert_eq!(c.listeners, Config::default().listeners);
}

/// `hub.worker_threads`: 0 picks one fewer than the CPUs, at least one; a number is taken as
/// it is, within bounds.
#[test]
fn worker_threads_are_automatic_or_bounded() {
    let auto = HubSection::default();
    assert_eq!(auto.worker_threads, 0);
    let cpus = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
    assert_eq!(auto.runtime_threads(), cpus.saturating_sub(1).max(1));
    let c = Config::from_toml("[hub]\nworker_threads = 3\n", "x").unwrap();
    assert_eq!(c.hub.runtime_threads(), 3);
    assert!(err("[hub]\nworker_threads = 257").contains("hub.worker_threads"));
}

fn err(text: &str) -> String {
    Config::from_toml(text, "bad.toml").unwrap_err().to_string()
}

#[test]
fn errors_name_the_key() {
    assert!(
        err("[hub]\nidd = 1").contains("idd"),
        "{}",
        err("[hub]\nidd = 1")
    );
    assert!(err("[router]\noutbound_queue = \"x\"").contains("outbound_queue"));
    let e = err("[[listeners]]\nname = \"a\"\nkind = \"websocket\"\naddress = \"nowhere\"\n");
    assert!(e.starts_with("listeners[0].address:"), "{e}");
    let e = err("[[listeners]]\nname = \"a\"\nkind = \"websocket\"\naddress = \"0.0.0.0:80\"\n");
    assert!(
        e.starts_with("listeners[0].address:") && e.contains("allow_anonymous_remote"),
        "{e}"
    );
    let e = err(
        "[[listeners]]\nname = \"a\"\nkind = \"websocket\"\naddress = \"127.0.0.1:1\"\nserializers = [\"cbor\"]\n",
    );
    assert!(e.starts_with("listeners[0].serializers:"), "{e}");
    let e = err("[[realms]]\nname = \"a b\"\n");
    assert!(e.starts_with("realms[0].name:"), "{e}");
    let e = err("[[realms]]\nname = \"a\"\n[[realms]]\nname = \"a\"\n");
    assert!(e.starts_with("realms[1].name:"), "{e}");
    let e = err("[router]\nslow_consumer = \"explode\"\n");
    assert!(e.contains("slow_consumer"), "{e}");
    let e = err("[hub]\nid = \"a/b\"\n");
    assert!(e.starts_with("hub.id:"), "{e}");
    let e = err("[things]\nprovisioning = \"sometimes\"\n");
    assert!(e.contains("provisioning"), "{e}");
    let e = err("[things]\nauto_type = \"Bad Type\"\n");
    assert!(e.starts_with("things.auto_type:"), "{e}");
    let e = err("[things]\nrealm = \"elsewhere\"\n");
    assert!(e.starts_with("things.realm:"), "{e}");
    let e = err("[things]\nset_timeout_ms = 0\n");
    assert!(e.starts_with("things.set_timeout_ms:"), "{e}");
}

#[test]
fn things_section_parses_and_resolves_the_database() {
    let c = Config::from_toml(
        "[things]\nprovisioning = \"auto\"\nauto_type = \"relay\"\ntypes_dir = \"/etc/brume/types\"\n",
        "x",
    )
    .unwrap();
    assert_eq!(c.things.provisioning, Provisioning::Auto);
    assert_eq!(c.things.auto_type.as_deref(), Some("relay"));
    assert_eq!(
        c.things.database_path(Path::new("/data")),
        Path::new("/data/things.db")
    );
    assert_eq!(c.things.realm_name(&c.realms), "brume");
    let c = Config::from_toml("[[realms]]\nname = \"site\"\n", "x").unwrap();
    assert_eq!(
        c.things.realm_name(&c.realms),
        "site",
        "the first realm by default"
    );
    let c = Config::from_toml("[things]\ndatabase = \"/abs/t.db\"\n", "x").unwrap();
    assert_eq!(
        c.things.database_path(Path::new("/data")),
        Path::new("/abs/t.db")
    );
}

#[test]
fn non_loopback_with_anonymous_is_allowed_only_explicitly() {
    let text = "[[listeners]]\nname = \"a\"\nkind = \"both\"\naddress = \"0.0.0.0:8080\"\nallow_anonymous_remote = true\n";
    assert!(Config::from_toml(text, "x").is_ok());
    let text = "[[realms]]\nname = \"r\"\nanonymous = false\n[[listeners]]\nname = \"a\"\nkind = \"both\"\naddress = \"0.0.0.0:8080\"\n";
    assert!(Config::from_toml(text, "x").is_ok());
}

#[test]
fn the_http_listener_follows_the_same_rule_and_checks_its_tls_files() {
    let e = err("[http]\nlisten = \"0.0.0.0:8088\"\n");
    assert!(
        e.starts_with("http.listen:") && e.contains("allow_anonymous_remote"),
        "{e}"
    );
    let text = "[http]\nlisten = \"0.0.0.0:8088\"\nallow_anonymous_remote = true\n";
    assert!(Config::from_toml(text, "x").is_ok());
    let text = "[[realms]]\nname = \"r\"\nanonymous = false\n[http]\nlisten = \"0.0.0.0:8088\"\n";
    assert!(Config::from_toml(text, "x").is_ok());
    let e =
        err("[http.tls]\ncert_file = \"/nonexistent/c.pem\"\nkey_file = \"/nonexistent/k.pem\"\n");
    assert!(e.starts_with("http.tls.cert_file:"), "{e}");
}

/// The commented example of a secure realm in the embedded default.
fn documented_example() -> String {
    let start = DEFAULT_TOML
        .find("# ----- example: a realm with authentication -----")
        .unwrap();
    let end = DEFAULT_TOML.find("# ----- end of example -----").unwrap();
    DEFAULT_TOML[start..end]
        .lines()
        .skip(1)
        .map(|l| l.strip_prefix("#   ").unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn the_documented_secure_realm_parses_and_validates() {
    let c = Config::from_toml(&documented_example(), "example").unwrap();
    let realms = c.realm_configs().unwrap();
    let plant = &realms[0];
    assert_eq!(plant.name, "plant");
    assert!(!plant.anonymous);
    assert_eq!(plant.principals.len(), 3);
    let dashboard = plant.principals.get("dashboard").unwrap();
    assert_eq!(dashboard.role, "app");
    assert!(dashboard.ticket.is_some());
    assert!(plant.principals.get("historian").unwrap().wampcra.is_some());
    assert_eq!(
        plant.principals.get("gateway-7").unwrap().cryptosign.len(),
        1
    );
    use crate::router::authz::Action;
    let a = &plant.authorizer;
    assert!(a.allows("app", Action::Call, "brume.things.list", MatchPolicy::Exact));
    assert!(!a.allows(
        "app",
        Action::Call,
        "brume.things.delete",
        MatchPolicy::Exact
    ));
    assert!(a.allows(
        "device",
        Action::Publish,
        "brume.thing.t1.state",
        MatchPolicy::Exact
    ));
    assert!(!a.allows(
        "anonymous",
        Action::Subscribe,
        "brume.x",
        MatchPolicy::Exact
    ));
}

#[test]
fn realms_without_roles_allow_everything() {
    let c = Config::default();
    let realms = c.realm_configs().unwrap();
    assert!(!realms[0].authorizer.restricts());
    assert!(realms[0].principals.is_empty());
}

#[test]
fn secrets_never_appear_in_debug_output() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("s");
    std::fs::write(&file, "file-secret-value\n").unwrap();
    let text = format!(
        "{}\n[[realms.principals]]\nauthid = \"legacy\"\nrole = \"app\"\n\
         wampcra = {{ secret_file = {:?} }}\n",
        documented_example(),
        file.display().to_string()
    );
    let c = Config::from_toml(&text, "x").unwrap();
    let router = c.router_config().unwrap();
    for shown in [format!("{c:?}"), format!("{router:?}")] {
        for secret in [
            "5ffdVEserplTawUNt1cl8a3j2IVWxh4BwuisObl",
            "RTvdTZP3yqvX1diVYZxsOA",
            "TMuKrppUDemQi1+dLKtqyVzbbnNqoYhzOX7X9lNnO94=",
            "file-secret-value",
        ] {
            assert!(!shown.contains(secret), "{secret} leaked into {shown}");
        }
    }
    // The plain secret was read from its file.
    let legacy = router.realms[0].principals.get("legacy").unwrap();
    assert_eq!(
        legacy.wampcra.as_ref().unwrap().hmac_key(),
        b"file-secret-value"
    );
}

#[test]
fn a_plain_secret_from_the_environment() {
    // PATH is set wherever tests run; a test may not set variables (no unsafe code).
    let text = "[[realms]]\nname = \"r\"\n[[realms.principals]]\nauthid = \"a\"\nrole = \"x\"\n\
                wampcra = { secret_env = \"PATH\" }\n";
    let c = Config::from_toml(text, "x").unwrap();
    let realms = c.realm_configs().unwrap();
    let key = realms[0]
        .principals
        .get("a")
        .unwrap()
        .wampcra
        .clone()
        .unwrap();
    assert_eq!(key.hmac_key(), std::env::var("PATH").unwrap().as_bytes());
}

#[test]
fn security_errors_name_the_key() {
    let principal = |body: &str| {
        format!(
            "[[realms]]\nname = \"r\"\nanonymous = false\n[realms.roles.app]\nrules = []\n\
             [[realms.principals]]\nauthid = \"a\"\nrole = \"app\"\n{body}\n"
        )
    };
    let cases: Vec<(String, &str, &str)> = vec![
        (
            principal("wampcra = { secret = \"hunter2\" }"),
            "realms[0].principals[0].wampcra.secret:",
            "secret_file",
        ),
        (
            principal("ticket = \"hunter2\""),
            "realms[0].principals[0].ticket:",
            "new-principal",
        ),
        (
            principal("wampcra = { derived_key = \"AAAA\", salt = \"s\", iterations = 10 }"),
            "realms[0].principals[0].wampcra.keylen:",
            "missing",
        ),
        (
            principal(
                "wampcra = { derived_key = \"AAAA\", salt = \"s\", iterations = 10, keylen = 32 }",
            ),
            "realms[0].principals[0].wampcra.derived_key:",
            "base64",
        ),
        (
            principal("wampcra = { secret_file = \"/nonexistent/brume-secret\" }"),
            "realms[0].principals[0].wampcra.secret_file:",
            "cannot read",
        ),
        (
            principal("wampcra = { secret_env = \"BRUME_SURELY_UNSET_VARIABLE\" }"),
            "realms[0].principals[0].wampcra.secret_env:",
            "not set",
        ),
        (
            principal("wampcra = { secret_env = \"PATH\", salt = \"s\" }"),
            "realms[0].principals[0].wampcra:",
            "not both",
        ),
        (
            principal("cryptosign = { public_keys = [\"abcd\"] }"),
            "realms[0].principals[0].cryptosign.public_keys[0]:",
            "64 hex",
        ),
        (principal(""), "realms[0].principals[0]:", "credential"),
        (
            principal("ticket = \"x\"").replace("role = \"app\"", "role = \"admin\""),
            "realms[0].principals[0].role:",
            "not defined",
        ),
        (
            principal("cryptosign = { public_keys = [\"9e53bd3d7be4e806d9fbf89c01e5fea41aca7456adc3e432c703ed3fcd626eb5\"] }\n\
                       [[realms.principals]]\nauthid = \"a\"\nrole = \"app\"\n\
                       cryptosign = { public_keys = [\"9e53bd3d7be4e806d9fbf89c01e5fea41aca7456adc3e432c703ed3fcd626eb5\"] }"),
            "realms[0].principals[1].authid:",
            "twice",
        ),
        (
            "[[realms]]\nname = \"r\"\n[realms.roles.trusted]\nrules = []\n".to_owned(),
            "realms[0].roles.trusted:",
            "reserved",
        ),
        (
            "[[realms]]\nname = \"r\"\n[realms.roles.app]\nrules = [{ uri = \"a..b\", allow = [\"call\"] }]\n"
                .to_owned(),
            "realms[0].roles.app.rules[0].uri:",
            "exact",
        ),
        (
            "[[realms]]\nname = \"r\"\n[realms.roles.app]\nrules = [{ uri = \"a\", allow = [\"call\"] }, { uri = \"a\", match = \"exact\", allow = [] }]\n"
                .to_owned(),
            "realms[0].roles.app.rules[1]:",
            "second rule",
        ),
        (
            "[[listeners]]\nname = \"t\"\nkind = \"both\"\naddress = \"127.0.0.1:1\"\n\
             [listeners.tls]\ncert_file = \"/nonexistent/c.pem\"\nkey_file = \"/nonexistent/k.pem\"\n"
                .to_owned(),
            "listeners[0].tls.cert_file:",
            "/nonexistent/c.pem",
        ),
    ];
    for (text, key, hint) in cases {
        let e = err(&text);
        assert!(e.starts_with(key) && e.contains(hint), "{text}\n=> {e}");
        // The error never repeats a secret.
        assert!(!e.contains("hunter2"), "{e}");
    }
    // Unknown actions and match policies are parse errors naming the field.
    let e = err(
        "[[realms]]\nname = \"r\"\n[realms.roles.app]\nrules = [{ uri = \"a\", allow = [\"delete\"] }]\n",
    );
    assert!(e.contains("allow") || e.contains("delete"), "{e}");
    let e = err(
        "[[realms]]\nname = \"r\"\n[realms.roles.app]\nrules = [{ uri = \"a\", match = \"regex\", allow = [] }]\n",
    );
    assert!(e.contains("match") || e.contains("regex"), "{e}");
}

#[test]
fn the_readme_security_example_parses() {
    let readme = include_str!("../../../README.md");
    let start = readme.find("A realm with authentication").unwrap();
    let block = &readme[start..];
    let body = block
        .split("```toml\n")
        .nth(1)
        .and_then(|b| b.split("```").next())
        .unwrap();
    let c: Config = toml::from_str(body).unwrap();
    // Realms validate fully; the listener's certificate files only exist on a real host.
    let realms = c.realm_configs().unwrap();
    assert_eq!(realms[0].principals.len(), 3);
    assert!(c.listeners[0].tls.is_some());
}

#[test]
fn the_readme_modbus_example_parses_and_fits_the_bundled_types() {
    let readme = include_str!("../../../README.md");
    let start = readme.find("**Modbus TCP and RTU**").unwrap();
    let body = readme[start..]
        .split("```toml\n")
        .nth(1)
        .and_then(|b| b.split("```").next())
        .unwrap();
    let body: String = body
        .lines()
        .map(|l| format!("{}\n", l.trim_start()))
        .collect();
    let c = Config::from_toml(&body, "README.md").unwrap();
    let catalog = device_models::TypeCatalog::builtin().unwrap();
    crate::device_gateways::prepare(&c, &catalog).unwrap();
    assert_eq!(c.modbus.tcp.len(), 1);
    assert_eq!(c.modbus.rtu.len(), 1);
}
