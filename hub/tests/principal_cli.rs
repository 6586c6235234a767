//! `brume new-principal` end to end: the printed entry parses back into a valid config, holds no
//! secret, and the secret printed beside it authenticates against a hub running that config.
//! Also: a plain WAMP-CRA secret taken from the environment by `brume check-config`.

// Test helpers fail the test by panicking.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

use hub::client::{Client, ClientAuth, ConnectOptions};
use hub::config::Config;
use hub::router::auth::cryptosign::PrivateKey;
use hub::server::Hub;
use hub::wamp::{Dict, Payload, Value};

fn brume() -> Command {
    Command::new(env!("CARGO_BIN_EXE_brume"))
}

/// Runs `new-principal`; returns the entry (stdout) and the secret (the last line of stderr).
fn new_principal(authid: &str, method: &str) -> (String, String) {
    let out = brume()
        .args([
            "new-principal",
            "--realm",
            "brume",
            "--authid",
            authid,
            "--role",
            "app",
            "--method",
            method,
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let entry = String::from_utf8(out.stdout).unwrap();
    let stderr = String::from_utf8(out.stderr).unwrap();
    let secret = stderr
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap()
        .trim()
        .to_owned();
    assert!(stderr.contains("shown once"), "{stderr}");
    assert!(
        !entry.contains(&secret),
        "the entry must not hold the secret"
    );
    (entry, secret)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn printed_principals_parse_back_and_authenticate() {
    let methods = ["ticket", "wampcra", "cryptosign"];
    let mut text = String::from(
        "[[realms]]\nname = \"brume\"\nanonymous = false\n\
         [realms.roles.app]\nrules = [{ uri = \"com.\", match = \"prefix\", allow = [\"publish\"] }]\n",
    );
    let mut secrets = Vec::new();
    for m in methods {
        let (entry, secret) = new_principal(&format!("app-{m}"), m);
        text.push_str(&entry);
        secrets.push(secret);
    }
    let data = tempfile::tempdir().unwrap();
    text.push_str(&format!(
        "[hub]\ndata_dir = {:?}\n\
         [mqtt]\nlisten = \"127.0.0.1:0\"\n[coap]\nbind = \"127.0.0.1:0\"\n[http]\nlisten = \"127.0.0.1:0\"\n\
         [[listeners]]\nname = \"wamp\"\nkind = \"both\"\naddress = \"127.0.0.1:0\"\n",
        data.path().display().to_string()
    ));

    // The CLI accepts it...
    let file = data.path().join("brume.toml");
    std::fs::write(&file, &text).unwrap();
    let out = brume().arg("check-config").arg(&file).output().unwrap();
    assert!(
        out.status.success(),
        "{}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    // ...and a hub serves it.
    let config = Config::from_toml(&text, "generated").unwrap();
    assert_eq!(config.realms[0].principals.len(), 3);
    let hub = Hub::start(config).await.unwrap();
    let addr = hub.local_addr("wamp").unwrap();

    for (m, secret) in methods.into_iter().zip(secrets) {
        let authid = format!("app-{m}");
        let auth = match m {
            "ticket" => ClientAuth::Ticket {
                authid: authid.clone(),
                ticket: secret,
            },
            "wampcra" => ClientAuth::WampCra {
                authid: authid.clone(),
                secret,
            },
            _ => ClientAuth::Cryptosign {
                authid: Some(authid.clone()),
                key: PrivateKey::from_hex(&secret).expect("the printed private key"),
                channel_binding: false,
            },
        };
        let opts = ConnectOptions::new(&format!("rs://{addr}"), "brume").auth(auth);
        let client = Client::connect(&opts)
            .await
            .unwrap_or_else(|e| panic!("{m}: {e}"));
        let w = client.welcome_details();
        assert_eq!(
            w.get("authid").and_then(Value::as_str),
            Some(authid.as_str())
        );
        assert_eq!(w.get("authrole").and_then(Value::as_str), Some("app"));
        assert_eq!(w.get("authmethod").and_then(Value::as_str), Some(m));
        client
            .publish_acked("com.example", Payload::default(), Dict::new())
            .await
            .unwrap();
        client.leave().await.unwrap();
    }
    hub.shutdown().await;
}

#[test]
fn new_principal_refuses_the_reserved_role() {
    let out = brume()
        .args([
            "new-principal",
            "--authid",
            "x",
            "--role",
            "trusted",
            "--method",
            "ticket",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("reserved"));
}

#[test]
fn check_config_reads_a_plain_wampcra_secret_from_the_environment() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("brume.toml");
    std::fs::write(
        &file,
        "[[realms]]\nname = \"brume\"\n[[realms.principals]]\nauthid = \"legacy\"\nrole = \"app\"\n\
         wampcra = { secret_env = \"BRUME_TEST_CRA_SECRET\" }\n",
    )
    .unwrap();
    let ok = brume()
        .arg("check-config")
        .arg(&file)
        .env("BRUME_TEST_CRA_SECRET", "s3cret")
        .output()
        .unwrap();
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let missing = brume()
        .arg("check-config")
        .arg(&file)
        .env_remove("BRUME_TEST_CRA_SECRET")
        .output()
        .unwrap();
    assert!(!missing.status.success());
    let err = String::from_utf8_lossy(&missing.stderr);
    assert!(
        err.contains("realms[0].principals[0].wampcra.secret_env"),
        "{err}"
    );
}
