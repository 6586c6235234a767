//! Autobahn-Python as a things app against a hub with simulated devices, over WebSocket/JSON and
//! RawSocket/MessagePack.

// Test helpers fail the test by panicking, so unwrap and expect are their error reporting.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use device_models::ThingId;
use firmware_sim::{Kind, SimDevice, SimGateway, SimOptions};
use hub::wamp::{Dict, Value};
use tests::hub::TestHub;
use tests::peers::{assert_success, run_script};

fn kwargs(pairs: &[(&str, &str)]) -> Dict {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), Value::from(*v)))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn autobahn_reads_things_follows_state_sets_and_calls_actions() {
    for (transport, ser) in [("websocket", "json"), ("rawsocket", "msgpack")] {
        let hub = TestHub::start().await;
        let app = hub.local_client("setup");
        for (thing, ty) in [("th1", "thermostat"), ("r1", "relay")] {
            app.call(
                "brume.things.provision",
                vec![],
                kwargs(&[("thing", thing), ("type", ty)]),
            )
            .await
            .unwrap();
        }
        let devices = vec![
            SimDevice::new(ThingId::new("th1").unwrap(), Kind::Thermostat, 3),
            SimDevice::new(ThingId::new("r1").unwrap(), Kind::Relay, 4),
        ];
        let _gw = SimGateway::start(hub.hub.things(), devices, SimOptions::default())
            .await
            .unwrap();
        // Wait until both are online, as the script expects.
        let start = std::time::Instant::now();
        loop {
            let r = app
                .call(
                    "brume.things.list",
                    vec![],
                    [("online".to_owned(), Value::Bool(true))].into(),
                )
                .await
                .unwrap();
            if r.payload.arg(0).and_then(Value::as_list).map(Vec::len) == Some(2) {
                break;
            }
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "devices never came online"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let args = vec![hub.url(transport), ser.to_owned()];
        let out = run_script("things_autobahn.py", &args, Duration::from_secs(120)).await;
        assert_success("things_autobahn.py", &out);
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("ALL OK"),
            "{transport}/{ser}"
        );
    }
}
