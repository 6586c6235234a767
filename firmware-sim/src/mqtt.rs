//! Simulated MQTT devices that follow Brume's device conventions (DESIGN.md §3), one or a fleet,
//! for demos, tests and load.
//!
//! Each device logs in as its thing id (with its secret, if any), sets a last will that marks it
//! `offline` on `things/<id>/status`, announces `online` there (retained, with its type), reports
//! state on `things/<id>/state` every `report_every`, applies desired values from
//! `things/<id>/desired` and reports them back, and answers actions on
//! `things/<id>/actions/<name>` with `{correlation, result | error}` on `things/<id>/replies`.
//! Values follow the thing type: numbers wander inside their limits, enums keep a valid value.
//! Lost connections are retried with a doubling, jittered back-off.
//!
//! - [`SimDevice`]: the device's behaviour, without I/O (state, desired, actions).
//! - [`run_device`] / [`run_fleet`]: the devices on rumqttc, until a cancellation token fires.
//! - [`MqttArgs`] / [`run_cli`]: the `brume-sim mqtt` subcommand.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use device_models::{DataSchema, PropertyKind, SchemaType, ThingId, ThingType, TypeCatalog};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rumqttc::{AsyncClient, Event, LastWill, MqttOptions, Packet, QoS};
use serde_json::{Map, Number, Value, json};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

/// A simulated device's behaviour: its current state and how it reacts, with no I/O.
#[derive(Debug)]
pub struct SimDevice {
    ty: Arc<ThingType>,
    state: Map<String, Value>,
    rng: StdRng,
}

impl SimDevice {
    /// A device of `ty` with initial values from the type's schemas; `seed` makes it
    /// reproducible.
    pub fn new(ty: Arc<ThingType>, seed: u64) -> Self {
        let mut rng = StdRng::seed_from_u64(seed);
        let state = ty
            .properties_of(PropertyKind::State)
            .filter_map(|(name, p)| initial(&p.schema, &mut rng).map(|v| (name.to_owned(), v)))
            .collect();
        Self { ty, state, rng }
    }

    /// The device's current values.
    pub fn state(&self) -> &Map<String, Value> {
        &self.state
    }

    /// Moves read-only readings a little (within their limits) and returns the full state.
    pub fn tick(&mut self) -> Map<String, Value> {
        let readings: Vec<(String, DataSchema)> = self
            .ty
            .properties_of(PropertyKind::State)
            .filter(|(_, p)| !p.writable)
            .map(|(n, p)| (n.to_owned(), p.schema.clone()))
            .collect();
        for (name, schema) in readings {
            if let Some(v) = self.state.get(&name).cloned() {
                let next = wander(&schema, &v, &mut self.rng);
                self.state.insert(name, next);
            }
        }
        self.state.clone()
    }

    /// Applies desired values to writable properties that accept them; returns what changed,
    /// which the device reports to confirm.
    pub fn apply_desired(&mut self, desired: &Map<String, Value>) -> Map<String, Value> {
        let mut applied = Map::new();
        for (name, value) in desired {
            let ok = self.ty.property(name).is_some_and(|p| {
                p.kind == PropertyKind::State && p.writable && p.schema.check(value).is_ok()
            });
            if ok {
                self.state.insert(name.clone(), value.clone());
                applied.insert(name.clone(), value.clone());
            }
        }
        applied
    }

    /// Runs an action: `on`, `off` and `toggle` drive the first writable boolean property and
    /// return its new value; any other action of the type answers with a value fitting its
    /// output schema.
    pub fn invoke(&mut self, action: &str, input: &Value) -> Result<Value, String> {
        let Some(def) = self.ty.action(action) else {
            return Err(format!("no action {action:?}"));
        };
        if let Some(schema) = &def.input
            && !(input.is_null() || input == &json!({}))
            && let Err(e) = schema.check(input)
        {
            return Err(e.to_string());
        }
        let switch = self
            .ty
            .properties_of(PropertyKind::State)
            .find(|(_, p)| p.writable && p.schema.schema_type == SchemaType::Boolean)
            .map(|(n, _)| n.to_owned());
        if let Some(prop) = switch
            && matches!(action, "on" | "off" | "toggle")
        {
            let now = self
                .state
                .get(&prop)
                .and_then(Value::as_bool)
                .unwrap_or(false);
            let next = match action {
                "on" => true,
                "off" => false,
                _ => !now,
            };
            self.state.insert(prop, Value::Bool(next));
            return Ok(Value::Bool(next));
        }
        Ok(def
            .output
            .as_ref()
            .and_then(|s| initial(s, &mut self.rng))
            .unwrap_or(Value::Null))
    }
}

/// A value that fits `schema`, or `None` for types the simulator does not invent.
fn initial(schema: &DataSchema, rng: &mut StdRng) -> Option<Value> {
    if let Some(first) = schema.enum_values.as_ref().and_then(|e| e.first()) {
        return Some(first.clone());
    }
    let (lo, hi) = bounds(schema);
    match schema.schema_type {
        SchemaType::Boolean => Some(Value::Bool(false)),
        SchemaType::Integer => Some(json!(
            rng.random_range(lo.ceil() as i64..=hi.floor() as i64)
        )),
        SchemaType::Number => {
            Number::from_f64((rng.random_range(lo..=hi) * 10.0).round() / 10.0).map(Value::Number)
        }
        SchemaType::String => Some(Value::String("sim".into())),
        SchemaType::Object => Some(Value::Object(Map::new())),
        SchemaType::Array => Some(Value::Array(Vec::new())),
        SchemaType::Null => Some(Value::Null),
    }
}

/// A step of a random walk inside the schema's limits.
fn wander(schema: &DataSchema, value: &Value, rng: &mut StdRng) -> Value {
    let (lo, hi) = bounds(schema);
    let Some(now) = value.as_f64() else {
        return value.clone();
    };
    let step = (hi - lo) / 100.0;
    let next = (now + rng.random_range(-step..=step)).clamp(lo, hi);
    match schema.schema_type {
        SchemaType::Integer => json!(next.round() as i64),
        SchemaType::Number => Number::from_f64((next * 10.0).round() / 10.0)
            .map(Value::Number)
            .unwrap_or_else(|| value.clone()),
        _ => value.clone(),
    }
}

fn bounds(schema: &DataSchema) -> (f64, f64) {
    let lo = schema
        .minimum
        .as_ref()
        .and_then(Number::as_f64)
        .unwrap_or(0.0);
    let hi = schema
        .maximum
        .as_ref()
        .and_then(Number::as_f64)
        .unwrap_or(lo + 100.0);
    if hi >= lo { (lo, hi) } else { (hi, lo) }
}

/// Where and as what one simulated device connects.
#[derive(Debug, Clone)]
pub struct DeviceConfig {
    /// Broker host.
    pub host: String,
    /// Broker port.
    pub port: u16,
    /// The device's thing id (its MQTT username and client id).
    pub thing: ThingId,
    /// Its secret; `None` connects anonymously (loopback hubs allow it by default).
    pub secret: Option<String>,
    /// Its thing type.
    pub ty: Arc<ThingType>,
    /// Time between state reports.
    pub report_every: Duration,
    /// MQTT keep-alive.
    pub keep_alive: Duration,
    /// Whether to ask for a clean session (false keeps QoS 1 commands while offline).
    pub clean_session: bool,
    /// Seed of the device's random readings.
    pub seed: u64,
}

/// Counters of one device or a whole fleet.
#[derive(Debug, Default)]
pub struct SimStats {
    /// Connections acknowledged by the broker.
    pub connects: AtomicU64,
    /// State reports sent.
    pub reports: AtomicU64,
    /// Desired-state messages applied.
    pub desired: AtomicU64,
    /// Actions answered.
    pub actions: AtomicU64,
    /// Connection failures (each followed by a back-off).
    pub failures: AtomicU64,
}

impl SimStats {
    /// A one-line summary.
    pub fn summary(&self) -> String {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        format!(
            "connects={} reports={} desired={} actions={} failures={}",
            g(&self.connects),
            g(&self.reports),
            g(&self.desired),
            g(&self.actions),
            g(&self.failures)
        )
    }
}

/// Runs one device until `stop` fires, then says `offline` and disconnects.
pub async fn run_device(
    config: DeviceConfig,
    stop: CancellationToken,
    stats: Arc<SimStats>,
) -> anyhow::Result<()> {
    let id = config.thing.as_str().to_owned();
    let topic = |suffix: &str| format!("things/{id}/{suffix}");
    let mut options = MqttOptions::new(id.clone(), config.host.clone(), config.port);
    options.set_keep_alive(config.keep_alive);
    options.set_clean_session(config.clean_session);
    options.set_last_will(LastWill::new(
        topic("status"),
        "offline",
        QoS::AtLeastOnce,
        true,
    ));
    if let Some(secret) = &config.secret {
        options.set_credentials(id.clone(), secret.clone());
    }
    let (client, mut eventloop) = AsyncClient::new(options, 64);
    let mut device = SimDevice::new(config.ty.clone(), config.seed);
    let mut ticker = tokio::time::interval(config.report_every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut backoff = Duration::from_millis(100);
    let mut jitter = StdRng::seed_from_u64(config.seed ^ 0x5eed);
    let mut connected = false;
    let status = json!({"status": "online", "type": config.ty.id}).to_string();

    loop {
        tokio::select! {
            () = stop.cancelled() => break,
            _ = ticker.tick(), if connected => {
                let state = Value::Object(device.tick()).to_string();
                client.try_publish(topic("state"), QoS::AtLeastOnce, false, state)?;
                stats.reports.fetch_add(1, Ordering::Relaxed);
            }
            event = eventloop.poll() => match event {
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    connected = true;
                    backoff = Duration::from_millis(100);
                    stats.connects.fetch_add(1, Ordering::Relaxed);
                    client.try_subscribe(topic("desired"), QoS::AtLeastOnce)?;
                    client.try_subscribe(topic("actions/+"), QoS::AtLeastOnce)?;
                    client.try_publish(topic("status"), QoS::AtLeastOnce, true, status.clone())?;
                }
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    if p.topic == topic("desired") {
                        if p.payload.is_empty() {
                            // The hub cleared its retained desired state: nothing is pending.
                            continue;
                        }
                        let Ok(Value::Object(desired)) = serde_json::from_slice(&p.payload) else {
                            warn!(thing = %id, "desired state is not a JSON object");
                            continue;
                        };
                        let applied = device.apply_desired(&desired);
                        stats.desired.fetch_add(1, Ordering::Relaxed);
                        if !applied.is_empty() {
                            let report = Value::Object(applied).to_string();
                            client.try_publish(topic("state"), QoS::AtLeastOnce, false, report)?;
                        }
                    } else if let Some(action) = p.topic.strip_prefix(&topic("actions/")) {
                        let call: Value = serde_json::from_slice(&p.payload).unwrap_or(Value::Null);
                        let Some(correlation) = call.get("correlation").and_then(Value::as_str) else {
                            warn!(thing = %id, "action without correlation");
                            continue;
                        };
                        let input = call.get("input").cloned().unwrap_or(Value::Null);
                        let reply = match device.invoke(action, &input) {
                            Ok(result) => json!({"correlation": correlation, "result": result}),
                            Err(error) => json!({"correlation": correlation, "error": error}),
                        };
                        client.try_publish(topic("replies"), QoS::AtLeastOnce, false, reply.to_string())?;
                        stats.actions.fetch_add(1, Ordering::Relaxed);
                        let state = Value::Object(device.state().clone()).to_string();
                        client.try_publish(topic("state"), QoS::AtLeastOnce, false, state)?;
                    }
                }
                Ok(_) => {}
                Err(error) => {
                    connected = false;
                    stats.failures.fetch_add(1, Ordering::Relaxed);
                    let wait = backoff + backoff.mul_f64(jitter.random_range(0.0..0.5));
                    debug!(thing = %id, %error, ?wait, "MQTT connection failed; retrying");
                    tokio::select! {
                        () = stop.cancelled() => break,
                        () = tokio::time::sleep(wait) => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(30));
                }
            },
        }
    }
    if connected {
        let _ = client.try_publish(topic("status"), QoS::AtLeastOnce, true, "offline");
        let _ = client.try_disconnect();
        // Let the event loop send them.
        let _ = tokio::time::timeout(Duration::from_secs(1), async {
            while let Ok(event) = eventloop.poll().await {
                if matches!(event, Event::Outgoing(rumqttc::Outgoing::Disconnect)) {
                    break;
                }
            }
        })
        .await;
    }
    Ok(())
}

/// A fleet: `count` devices `<prefix>-<n>` of one type.
#[derive(Debug, Clone)]
pub struct FleetConfig {
    /// The settings shared by every device; `thing` is ignored.
    pub device: DeviceConfig,
    /// Number of devices.
    pub count: usize,
    /// Thing id prefix.
    pub prefix: String,
    /// Delay between two device starts, to avoid a connection storm.
    pub ramp: Duration,
}

/// Runs a fleet until `stop` fires; returns the fleet's counters.
pub async fn run_fleet(
    fleet: FleetConfig,
    stop: CancellationToken,
) -> anyhow::Result<Arc<SimStats>> {
    let stats = Arc::new(SimStats::default());
    run_fleet_with(fleet, stop, stats.clone()).await?;
    Ok(stats)
}

/// [`run_fleet`], counting in `stats`.
pub async fn run_fleet_with(
    fleet: FleetConfig,
    stop: CancellationToken,
    stats: Arc<SimStats>,
) -> anyhow::Result<()> {
    let mut tasks = tokio::task::JoinSet::new();
    for n in 0..fleet.count {
        if stop.is_cancelled() {
            break;
        }
        let mut config = fleet.device.clone();
        config.thing = ThingId::new(format!("{}-{n}", fleet.prefix))
            .with_context(|| format!("fleet prefix {:?}", fleet.prefix))?;
        config.seed = fleet.device.seed.wrapping_add(n as u64);
        tasks.spawn(run_device(config, stop.clone(), stats.clone()));
        if !fleet.ramp.is_zero() {
            tokio::time::sleep(fleet.ramp).await;
        }
    }
    while let Some(done) = tasks.join_next().await {
        done.context("device task")??;
    }
    Ok(())
}

/// `brume-sim mqtt`: MQTT devices following Brume's conventions.
#[derive(clap::Args, Debug, Clone)]
pub struct MqttArgs {
    /// Broker address, host:port.
    #[arg(long, default_value = "127.0.0.1:1883")]
    pub broker: String,
    /// Thing type id (built-in, or from --types-dir).
    #[arg(long = "type", default_value = "thermostat")]
    pub type_id: String,
    /// A directory of user thing types (*.toml).
    #[arg(long)]
    pub types_dir: Option<std::path::PathBuf>,
    /// Run one device with this thing id (otherwise a fleet of --count).
    #[arg(long)]
    pub id: Option<String>,
    /// Number of devices in the fleet.
    #[arg(long, default_value_t = 1)]
    pub count: usize,
    /// Thing id prefix of the fleet's devices.
    #[arg(long, default_value = "sim")]
    pub prefix: String,
    /// The devices' secret (all the same); anonymous when absent.
    #[arg(long)]
    pub secret: Option<String>,
    /// Milliseconds between state reports.
    #[arg(long, default_value_t = 1000)]
    pub interval_ms: u64,
    /// Milliseconds between two device starts.
    #[arg(long, default_value_t = 2)]
    pub ramp_ms: u64,
    /// Keep a persistent session (QoS 1 commands wait while a device is offline).
    #[arg(long)]
    pub persistent: bool,
    /// Stop after this many seconds (default: run until Ctrl-C).
    #[arg(long)]
    pub seconds: Option<u64>,
}

/// Runs the subcommand; returns the summary to print.
pub async fn run_cli(args: MqttArgs) -> anyhow::Result<String> {
    let catalog = match &args.types_dir {
        Some(dir) => TypeCatalog::with_dir(dir)?,
        None => TypeCatalog::builtin()?,
    };
    let ty = catalog
        .get(&args.type_id)
        .with_context(|| format!("no thing type {:?}", args.type_id))?
        .clone();
    let (host, port) = args
        .broker
        .rsplit_once(':')
        .context("--broker is host:port")?;
    let port: u16 = port.parse().context("--broker port")?;
    let device = DeviceConfig {
        host: host.to_owned(),
        port,
        thing: ThingId::new(
            args.id
                .clone()
                .unwrap_or_else(|| format!("{}-0", args.prefix)),
        )?,
        secret: args.secret.clone(),
        ty,
        report_every: Duration::from_millis(args.interval_ms.max(1)),
        keep_alive: Duration::from_secs(30),
        clean_session: !args.persistent,
        seed: 1,
    };
    let stop = CancellationToken::new();
    let timer = stop.clone();
    let seconds = args.seconds;
    tokio::spawn(async move {
        match seconds {
            Some(s) => tokio::time::sleep(Duration::from_secs(s)).await,
            None => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
        timer.cancel();
    });
    info!(broker = %args.broker, type_id = %args.type_id, "simulated MQTT devices starting");
    let stats = Arc::new(SimStats::default());
    // Fleets and timed runs show progress; a single device left running does not.
    let _progress = (args.id.is_none() || seconds.is_some()).then(|| {
        let seen = stats.clone();
        let label = match &args.id {
            Some(id) => format!("MQTT device {id}"),
            None => format!("MQTT fleet of {}", args.count),
        };
        crate::progress::track(label, "reports sent", move || {
            seen.reports.load(Ordering::Relaxed)
        })
    });
    if args.id.is_some() {
        run_device(device, stop, stats.clone()).await?;
    } else {
        let fleet = FleetConfig {
            device,
            count: args.count,
            prefix: args.prefix,
            ramp: Duration::from_millis(args.ramp_ms),
        };
        run_fleet_with(fleet, stop, stats.clone()).await?;
    }
    Ok(format!("{}\n", stats.summary()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ty(id: &str) -> Arc<ThingType> {
        TypeCatalog::builtin().unwrap().get(id).unwrap().clone()
    }

    #[test]
    fn state_follows_the_type() {
        let t = ty("thermostat");
        let mut d = SimDevice::new(t.clone(), 7);
        let id = ThingId::new("t1").unwrap();
        for _ in 0..200 {
            let state = d.tick();
            t.check_reported(&id, &state).unwrap();
        }
        assert_eq!(d.state()["mode"], "off");
        let applied = d.apply_desired(
            json!({"setpoint": 21, "temperature": 5, "mode": "bogus"})
                .as_object()
                .unwrap(),
        );
        assert_eq!(Value::Object(applied), json!({"setpoint": 21}));
    }

    #[test]
    fn actions() {
        let mut relay = SimDevice::new(ty("relay"), 1);
        assert_eq!(relay.invoke("toggle", &Value::Null), Ok(json!(true)));
        assert_eq!(relay.invoke("off", &Value::Null), Ok(json!(false)));
        assert_eq!(relay.state()["on"], false);
        assert!(relay.invoke("explode", &Value::Null).is_err());
        let mut alarm = SimDevice::new(ty("alarm"), 1);
        assert!(alarm.invoke("arm", &json!({"code": ""})).is_err());
        let armed = alarm.invoke("arm", &json!({"code": "1234"})).unwrap();
        assert!(armed.is_boolean());
    }
}
