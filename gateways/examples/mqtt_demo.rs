//! The MQTT gateway on its own, printing every device event, for trying it with other MQTT
//! tools (mosquitto_pub/sub, paho, MQTT Explorer) and `brume-sim mqtt`:
//!
//! ```text
//! cargo run -p gateways --example mqtt_demo -- 127.0.0.1:1883
//! mosquitto_pub -i dev-1 -t things/dev-1/state -m '{"temperature": 21.5}'
//! mosquitto_sub -i watcher -t 'sensors/#' -v
//! ```
//!
//! Things are anonymous on loopback; every device event is printed as JSON, and a `ping` raw
//! message (`mosquitto_pub -t demo/ping -m x`) is answered on `demo/pong` through the bridge.

#![allow(clippy::print_stderr, reason = "a demo prints what it sees")]

use std::sync::Arc;

use device_models::DeviceEvent;
use gateways::mqtt::{MqttConfig, MqttGateway};
use gateways::{GatewayIo, StaticCredentials};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let listen = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:1883".to_owned())
        .parse()?;
    let config = MqttConfig {
        listen,
        ..MqttConfig::default()
    };
    let (io, mut hub) = GatewayIo::pair("mqtt", 1024, Arc::new(StaticCredentials::default()));
    let gateway = MqttGateway::start(config, io).await?;
    eprintln!("MQTT demo gateway on {}", gateway.local_addr());
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            event = hub.events.recv() => {
                let Some(event) = event else { break };
                eprintln!("{}", serde_json::to_string(&event)?);
                if let DeviceEvent::Raw { source, payload } = &event
                    && source == "mqtt:demo/ping"
                {
                    gateway.publish_raw("demo/pong", payload.clone(), false).await?;
                }
            }
        }
    }
    eprintln!("{:?}", gateway.stats());
    gateway.shutdown().await;
    Ok(())
}
