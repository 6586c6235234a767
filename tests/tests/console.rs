//! The web console (`/console/` on the hub's HTTP listener) in a real browser: Debian's Chromium,
//! headless, driven by Playwright for Python (`tests/peers/console_browser.py`), against a hub
//! with a simulated MQTT thermostat from firmware-sim reporting every 200 ms. The browser must
//! list the thing while the hub is idle, see it come online and its temperature move without
//! polling, and set its setpoint through the page until the device confirms it; the test then
//! reads the value back from the hub, so it fails unless the console really did it.

// Test helpers fail the test by panicking.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use hub::client::Client;
use hub::http::client::{get, get_json};
use hub::router::AuthInfo;
use hub::wamp::{Value, dict};
use serde_json::Value as Json;
use tests::auth;
use tests::hub::TestHub;
use tests::peers::{self, LinePeer, workspace_root};
use tokio_util::sync::CancellationToken;

/// Everything the browser does, including Chromium's start on a busy machine.
const BROWSER_DEADLINE: Duration = Duration::from_secs(240);

/// One browser at a time: two Chromiums on a small machine make both tests slow and flaky.
static BROWSER: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn base(hub: &TestHub) -> String {
    format!(
        "http://{}",
        hub.hub.local_addr("http").expect("HTTP listener")
    )
}

/// Provisions thermostat `thing` through `client` and returns its device secret.
async fn provision(client: &Client, thing: &str) -> String {
    let r = client
        .call(
            "brume.things.provision",
            vec![],
            dict([
                ("thing", Value::from(thing)),
                ("type", Value::from("thermostat")),
            ]),
        )
        .await
        .unwrap();
    r.payload
        .arg(0)
        .and_then(Value::as_dict)
        .and_then(|d| d.get("secret"))
        .and_then(Value::as_str)
        .expect("a secret")
        .to_owned()
}

/// Runs the simulated thermostat `thing` over MQTT until the returned token is cancelled.
fn thermostat(hub: &TestHub, thing: &str, secret: String) -> CancellationToken {
    hub.mqtt_device(
        thing,
        "thermostat",
        Some(secret),
        Duration::from_millis(200),
    )
}

/// Runs the browser script against the hub at `base`. Once the browser lists `thing` (offline),
/// `device` starts it; returns what the browser set, `{"thing", "property", "value"}`, and the
/// device's stop token.
async fn browse(
    base: &str,
    thing: &str,
    extra: &[&str],
    screenshot: &str,
    device: impl FnOnce() -> CancellationToken,
) -> (Json, CancellationToken) {
    let chromium = tokio::task::spawn_blocking(peers::chromium)
        .await
        .expect("install task");
    let screenshot = workspace_root()
        .join("target")
        .join("peers")
        .join(screenshot);
    let _ = std::fs::remove_file(&screenshot);
    let mut args = vec![
        "--base".to_owned(),
        base.to_owned(),
        "--thing".to_owned(),
        thing.to_owned(),
        "--chromium".to_owned(),
        chromium.display().to_string(),
        "--screenshot".to_owned(),
        screenshot.display().to_string(),
    ];
    args.extend(extra.iter().map(|a| (*a).to_owned()));
    let mut browser = LinePeer::spawn("console_browser.py", &args, BROWSER_DEADLINE).await;
    let listed = browser.line().await;
    assert_eq!(listed["listed"], thing, "{listed}");
    let stop = device();
    let result = browser.line().await;
    browser.finish().await;
    assert_eq!(result["thing"], thing, "{result}");
    assert_eq!(result["property"], "setpoint", "{result}");
    (result, stop)
}

/// `thing`'s reported setpoint equals `value` and nothing is pending, from the thing as the API
/// shows it (`GET /api/things/{thing}`, or `brume.things.get`).
fn assert_confirmed(thing: &Json, value: &Json) {
    let reported = thing["reported"]["setpoint"]["value"].as_f64();
    assert_eq!(reported, value.as_f64(), "reported setpoint: {thing}");
    assert!(
        thing["desired"].get("setpoint").is_none(),
        "the setpoint is still pending: {thing}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_follows_a_device_and_sets_its_setpoint() {
    let _one = BROWSER.lock().await;
    let hub = TestHub::start().await;
    let secret = provision(&hub.local_client("console-test"), "th1").await;

    let base = base(&hub);
    let (set, device) = browse(&base, "th1", &[], "console-failure.png", || {
        thermostat(&hub, "th1", secret)
    })
    .await;

    // What the browser did is what the hub holds.
    let thing = get_json(&base, "/api/things/th1").await.unwrap();
    assert_confirmed(&thing, &set["value"]);
    device.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_asks_for_a_ticket_when_the_realm_needs_one() {
    let _one = BROWSER.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let realm = auth::realm(dir.path());
    // The things realm is the first one: the console must authenticate against it.
    let hub = TestHub::start_with(|c| c.realms.insert(0, realm)).await;
    let admin = Client::local(
        hub.hub.router(),
        auth::REALM,
        AuthInfo {
            authid: "console-test".into(),
            authrole: "trusted".into(),
            authmethod: "trusted".into(),
            authprovider: "static".into(),
        },
    )
    .unwrap();
    let secret = provision(&admin, "th2").await;

    let base = base(&hub);
    let (status, body) = get(&base, "/api/things").await.unwrap();
    assert_eq!(status, 401, "{}", String::from_utf8_lossy(&body));

    let login = format!("{}:{}", auth::TICKET_AUTHID, auth::TICKET);
    let (set, device) = browse(
        &base,
        "th2",
        &["--login", &login],
        "console-login-failure.png",
        || thermostat(&hub, "th2", secret),
    )
    .await;

    let r = admin
        .call(
            "brume.things.get",
            vec![],
            dict([("thing", Value::from("th2"))]),
        )
        .await
        .unwrap();
    let thing = Json::from(r.payload.arg(0).expect("the thing"));
    assert_confirmed(&thing, &set["value"]);
    device.cancel();
}
