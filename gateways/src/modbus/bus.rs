//! The task that owns one bus: its connection or port, its schedule and its queue of writes. One
//! request is on the line at a time; writes and actions go before polls; a device that stops
//! answering is backed off (see [`super::schedule`]).

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use device_models::modbus::{ModbusModel, ReadData, ReadRequest, Table, Write};
use device_models::{DeviceCommand, DeviceEvent, ThingId};
use serde_json::{Map, Value};
use tokio::sync::mpsc;
use tokio_modbus::client::{Context, Reader as _, Writer as _};
use tokio_modbus::prelude::SlaveContext as _;
use tokio_modbus::{ExceptionCode, Slave};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::config::{Endpoint, PreparedBus};
use super::schedule::{PollJob, Schedule, Transition};
use super::stats::BusStats;
use super::transport;
use crate::link::GatewayIo;
use crate::outbox::{Outbox, Stopped};
use device_models::{LogLimiter, LogPermit};

/// What one request came back with.
enum Outcome<T> {
    /// An answer with data.
    Data(T),
    /// An exception answer (the device is alive).
    Exception(ExceptionCode),
    /// No answer in time.
    Timeout,
    /// The answer did not fit the request.
    Protocol(String),
    /// The connection or port failed.
    Transport(std::io::Error),
}

/// What a request brought back: register or bit values of a read, or a write's confirmation.
enum Data {
    Bits(Vec<bool>),
    Registers(Vec<u16>),
    Written,
}

impl Data {
    /// The values for the model's decoder (a write brings none).
    fn as_read(&self) -> ReadData<'_> {
        match self {
            Data::Bits(b) => ReadData::Bits(b),
            Data::Registers(r) => ReadData::Registers(r),
            Data::Written => ReadData::Registers(&[]),
        }
    }
}

/// One bus and everything its task owns.
pub(super) struct Bus {
    name: String,
    endpoint: Endpoint,
    devices: Vec<Device>,
    by_thing: HashMap<ThingId, usize>,
    schedule: Schedule<ReadRequest>,
    queue: VecDeque<DeviceCommand>,
    timeout: Duration,
    max_queued: usize,
    backoff_min: Duration,
    backoff_max: Duration,
    stats: Arc<BusStats>,
    log: LogLimiter,
    /// When the line last went quiet (RTU: the next frame waits the gap after it).
    quiet_since: Instant,
    /// Events of the current turn (a poll, a command, a lost line), sent to the hub together.
    outbox: Outbox,
}

struct Device {
    unit: u8,
    thing: ThingId,
    model: Arc<ModbusModel>,
    /// Info values last sent, so that unchanged info is not written to the registry each poll.
    info: Map<String, Value>,
}

impl Bus {
    /// A bus ready to run.
    pub(super) fn new(bus: PreparedBus, stats: Arc<BusStats>) -> Bus {
        let now = Instant::now();
        let groups = bus.devices.iter().map(|d| {
            d.model
                .groups()
                .iter()
                .map(|g| (g.interval, g.reads.clone()))
                .collect::<Vec<_>>()
        });
        let schedule = Schedule::new(groups, bus.settings.clone(), now);
        let devices: Vec<Device> = bus
            .devices
            .into_iter()
            .map(|d| Device {
                unit: d.unit,
                thing: d.thing,
                model: d.model,
                info: Map::new(),
            })
            .collect();
        let by_thing = devices
            .iter()
            .enumerate()
            .map(|(i, d)| (d.thing.clone(), i))
            .collect();
        Bus {
            name: bus.name,
            endpoint: bus.endpoint,
            devices,
            by_thing,
            schedule,
            queue: VecDeque::new(),
            timeout: bus.settings.timeout,
            max_queued: bus.settings.max_queued,
            backoff_min: bus.settings.backoff_min,
            backoff_max: bus.settings.backoff_max,
            stats,
            log: LogLimiter::default(),
            quiet_since: now,
            outbox: Outbox::default(),
        }
    }

    /// Runs until `shutdown` or until the hub drops the gateway's channels.
    pub(super) async fn run(mut self, mut io: GatewayIo, shutdown: CancellationToken) {
        let mut open_backoff = self.backoff_min;
        loop {
            let ctx = match transport::open(&self.endpoint).await {
                Ok(ctx) => {
                    self.stats.connects();
                    info!(bus = %self.name, "Modbus bus open");
                    open_backoff = self.backoff_min;
                    ctx
                }
                Err(e) => {
                    self.stats.connect_failures();
                    if let LogPermit::Log { suppressed } = self.log.permit(Instant::now()) {
                        warn!(bus = %self.name, error = %e, suppressed,
                            retry_in_ms = open_backoff.as_millis() as u64, "cannot open Modbus bus");
                    }
                    let wait = open_backoff;
                    open_backoff = (open_backoff * 2).min(self.backoff_max);
                    if self
                        .idle_until(Instant::now() + wait, &mut io, &shutdown)
                        .await
                        .is_err()
                    {
                        return;
                    }
                    continue;
                }
            };
            match self.serve(ctx, &mut io, &shutdown).await {
                Ok(()) => {}
                Err(Stopped) => return,
            }
            // The line was lost: every device on it goes offline until it answers again.
            let lost = self.schedule.all_lost(Instant::now());
            self.update_online();
            for d in lost {
                let thing = self.devices[d].thing.clone();
                self.outbox.push(DeviceEvent::Offline { thing });
            }
            if self.outbox.flush(&io.events, &shutdown).await.is_err() {
                return;
            }
            if self
                .idle_until(Instant::now() + self.backoff_min, &mut io, &shutdown)
                .await
                .is_err()
            {
                return;
            }
        }
    }

    /// While the line is closed: refuses commands (their devices are offline) until `until`.
    async fn idle_until(
        &mut self,
        until: Instant,
        io: &mut GatewayIo,
        shutdown: &CancellationToken,
    ) -> Result<(), Stopped> {
        loop {
            while let Some(cmd) = self.queue.pop_front() {
                self.refuse(cmd, "the bus is not open");
            }
            self.outbox.flush(&io.events, shutdown).await?;
            tokio::select! {
                () = shutdown.cancelled() => return Err(Stopped),
                () = tokio::time::sleep_until(until.into()) => return Ok(()),
                cmd = io.commands.recv() => match cmd {
                    Some(cmd) => self.queue.push_back(cmd),
                    None => return Err(Stopped),
                },
            }
        }
    }

    /// Serves the open line; returns `Ok` when it is lost (the lost turn's events not sent yet).
    async fn serve(
        &mut self,
        mut ctx: Context,
        io: &mut GatewayIo,
        shutdown: &CancellationToken,
    ) -> Result<(), Stopped> {
        loop {
            loop {
                match io.commands.try_recv() {
                    Ok(cmd) => self.enqueue(cmd),
                    Err(mpsc::error::TryRecvError::Empty) => break,
                    Err(mpsc::error::TryRecvError::Disconnected) => return Err(Stopped),
                }
            }
            // The previous turn's events (and refusals just made), before anything waits.
            self.outbox.flush(&io.events, shutdown).await?;
            if shutdown.is_cancelled() {
                return Err(Stopped);
            }
            let lost = if let Some(cmd) = self.queue.pop_front() {
                self.command(&mut ctx, cmd).await
            } else {
                match self.schedule.next_poll(Instant::now()) {
                    Ok(job) => self.poll(&mut ctx, job).await,
                    Err(next) => {
                        let sleep = async {
                            match next {
                                Some(at) => tokio::time::sleep_until(at.into()).await,
                                None => std::future::pending().await,
                            }
                        };
                        tokio::select! {
                            () = shutdown.cancelled() => return Err(Stopped),
                            () = sleep => {}
                            cmd = io.commands.recv() => match cmd {
                                Some(cmd) => self.enqueue(cmd),
                                None => return Err(Stopped),
                            },
                        }
                        false
                    }
                }
            };
            if lost {
                return Ok(());
            }
        }
    }

    fn enqueue(&mut self, cmd: DeviceCommand) {
        if self.queue.len() >= self.max_queued {
            self.refuse(cmd, "the bus's queue is full");
        } else {
            self.queue.push_back(cmd);
        }
    }

    /// Refuses a command before any request: counted, logged (rate-limited), and an action is
    /// answered with the reason. A refused set stays pending in the hub, which sends it again
    /// when the thing comes back online.
    fn refuse(&mut self, cmd: DeviceCommand, why: &str) {
        self.stats.commands_refused();
        if let LogPermit::Log { suppressed } = self.log.permit(Instant::now()) {
            warn!(bus = %self.name, thing = %cmd.thing(), suppressed, "Modbus command refused: {why}");
        }
        if let DeviceCommand::InvokeAction {
            thing, correlation, ..
        } = cmd
        {
            let reply = DeviceEvent::ActionReply {
                thing,
                correlation,
                outcome: Err(why.to_owned()),
            };
            self.outbox.push(reply);
        }
    }

    /// Waits for the line's inter-frame silence (RTU), so that devices see frame boundaries.
    async fn frame_gap(&self) {
        if let Endpoint::Rtu(line) = &self.endpoint {
            tokio::time::sleep_until((self.quiet_since + line.frame_gap).into()).await;
        }
    }

    /// Sends one read; `true` when the line is lost.
    async fn poll(&mut self, ctx: &mut Context, job: PollJob) -> bool {
        let Some(read) = self
            .schedule
            .devices
            .get(job.device)
            .and_then(|d| d.groups.get(job.group))
            .and_then(|g| g.reads.get(job.read))
            .cloned()
        else {
            return false;
        };
        let unit = self.devices[job.device].unit;
        let outcome = self.read(ctx, unit, &read).await;
        let now = Instant::now();
        let mut lost = false;
        match outcome {
            Outcome::Data(data) => {
                self.answered(job.device);
                self.decoded(job, &read, &data);
            }
            Outcome::Exception(code) => {
                self.answered(job.device);
                let model = Arc::clone(&self.devices[job.device].model);
                let covered = model.properties_of(&read);
                if code == ExceptionCode::IllegalDataAddress && covered.len() > 1 {
                    // One bad address must not hide its neighbours: read them one by one.
                    let parts: Vec<ReadRequest> =
                        covered.iter().filter_map(|p| model.read_back(p)).collect();
                    debug!(bus = %self.name, thing = %self.devices[job.device].thing,
                        table = %read.table, address = read.address, "merged read refused; reading its properties one by one");
                    self.schedule.split(job, parts);
                    return false;
                }
                let thing = self.devices[job.device].thing.as_str();
                let name = super::stats::EXCEPTION_NAMES
                    .get(super::stats::exception_slot(u8::from(code)))
                    .copied()
                    .unwrap_or("other");
                for property in &covered {
                    self.stats.fault(thing, property, name.to_owned());
                }
                if let LogPermit::Log { suppressed } = self.log.permit(now) {
                    warn!(bus = %self.name, %thing, properties = ?covered, exception = %code,
                        suppressed, "Modbus exception");
                }
            }
            Outcome::Timeout | Outcome::Protocol(_) => {
                if let Outcome::Protocol(why) = &outcome {
                    debug!(bus = %self.name, unit, "answer does not match its request: {why}");
                }
                self.failed(job.device, now);
            }
            Outcome::Transport(e) => {
                if let LogPermit::Log { suppressed } = self.log.permit(now) {
                    warn!(bus = %self.name, error = %e, suppressed, "Modbus bus lost");
                }
                lost = true;
            }
        }
        if lost {
            return true;
        }
        if let Some(values) = self.schedule.advance(job, Instant::now())
            && !values.is_empty()
        {
            let thing = self.devices[job.device].thing.clone();
            self.stats.reports();
            self.outbox.push(DeviceEvent::Reported {
                thing,
                values,
                at_ms: now_ms(),
            });
        }
        false
    }

    /// Sorts a read's values: state into the group's report, info to the hub when it changed.
    fn decoded(&mut self, job: PollJob, read: &ReadRequest, data: &Data) {
        let device = &mut self.devices[job.device];
        let model = Arc::clone(&device.model);
        let raw = data.as_read();
        let mut state = Vec::new();
        let mut info = Map::new();
        let mut errors = 0u64;
        let mut read_well = Vec::new();
        for (property, value) in model.decode(read, raw) {
            if value.is_ok() {
                read_well.push(property);
            }
            match value {
                Ok(v) if model.is_info(property) => {
                    if device.info.get(property) != Some(&v) {
                        device.info.insert(property.to_owned(), v.clone());
                        info.insert(property.to_owned(), v);
                    }
                }
                Ok(v) => state.push((property.to_owned(), v)),
                Err(e) => {
                    errors += 1;
                    self.stats
                        .fault(device.thing.as_str(), property, e.to_string());
                    if let LogPermit::Log { suppressed } = self.log.permit(Instant::now()) {
                        warn!(bus = %self.name, thing = %device.thing, property, error = %e,
                            suppressed, "Modbus value not reported");
                    }
                }
            }
        }
        self.stats.cleared(device.thing.as_str(), &read_well);
        if errors > 0 {
            self.stats.value_errors(errors);
        }
        self.schedule.collect(job, state);
        if !info.is_empty() {
            let thing = device.thing.clone();
            self.outbox.push(DeviceEvent::Info { thing, info });
        }
    }

    fn answered(&mut self, device: usize) {
        if self.schedule.answered(device) == Transition::WentOnline {
            self.update_online();
            let thing = self.devices[device].thing.clone();
            info!(bus = %self.name, %thing, "Modbus device answers");
            self.outbox.push(DeviceEvent::Online { thing });
        }
    }

    fn failed(&mut self, device: usize, now: Instant) {
        if self.schedule.failed(device, now) == Transition::WentOffline {
            self.update_online();
            let thing = self.devices[device].thing.clone();
            warn!(bus = %self.name, %thing, "Modbus device stopped answering");
            self.outbox.push(DeviceEvent::Offline { thing });
        }
    }

    fn update_online(&self) {
        let n = (0..self.devices.len())
            .filter(|&d| {
                matches!(
                    self.schedule.devices.get(d).map(|s| s.health),
                    Some(super::schedule::Health::Online)
                )
            })
            .count();
        self.stats.set_online(n as u64);
    }

    /// Runs a set or an action; `true` when the line is lost.
    async fn command(&mut self, ctx: &mut Context, cmd: DeviceCommand) -> bool {
        let Some(&device) = self.by_thing.get(cmd.thing()) else {
            self.refuse(cmd, "no such device on this bus");
            return false;
        };
        if self.schedule.is_offline(device) {
            self.refuse(cmd, "the device does not answer");
            return false;
        }
        let model = Arc::clone(&self.devices[device].model);
        match cmd {
            DeviceCommand::SetDesired { thing, values } => {
                let mut confirmed = Map::new();
                for (property, value) in &values {
                    let writes = match model.encode_set(property, value) {
                        Ok(w) => w,
                        Err(e) => {
                            self.stats.writes_failed();
                            warn!(bus = %self.name, %thing, property, error = %e, "desired value cannot be written");
                            continue;
                        }
                    };
                    match self.write_all(ctx, device, &writes).await {
                        Ok(()) => {}
                        Err(WriteFailure::Lost) => return true,
                        Err(WriteFailure::Refused(why)) => {
                            warn!(bus = %self.name, %thing, property, "desired value not written: {why}");
                            continue;
                        }
                    }
                    // Confirm by reading back what the device holds now.
                    if let Some(read) = model.read_back(property) {
                        let unit = self.devices[device].unit;
                        match self.read(ctx, unit, &read).await {
                            Outcome::Data(data) => {
                                for (p, v) in model.decode(&read, data.as_read()) {
                                    if let Ok(v) = v {
                                        confirmed.insert(p.to_owned(), v);
                                    }
                                }
                            }
                            Outcome::Transport(_) => return true,
                            _ => {}
                        }
                    }
                }
                if !confirmed.is_empty() {
                    self.stats.reports();
                    let report = DeviceEvent::Reported {
                        thing,
                        values: confirmed,
                        at_ms: now_ms(),
                    };
                    self.outbox.push(report);
                }
            }
            DeviceCommand::InvokeAction {
                thing,
                action,
                input,
                correlation,
                deadline_ms,
            } => {
                if now_ms() > deadline_ms {
                    self.stats.commands_refused();
                    debug!(bus = %self.name, %thing, action, "action dropped: its caller gave up");
                    return false;
                }
                let outcome = match model.encode_action(&action, &input) {
                    Err(e) => {
                        self.stats.writes_failed();
                        Err(e.to_string())
                    }
                    Ok(writes) => match self.write_all(ctx, device, &writes).await {
                        Ok(()) => Ok(Value::Null),
                        Err(WriteFailure::Lost) => {
                            let reply = DeviceEvent::ActionReply {
                                thing,
                                correlation,
                                outcome: Err("the Modbus bus was lost".into()),
                            };
                            self.outbox.push(reply);
                            return true;
                        }
                        Err(WriteFailure::Refused(why)) => Err(why),
                    },
                };
                let reply = DeviceEvent::ActionReply {
                    thing,
                    correlation,
                    outcome,
                };
                self.outbox.push(reply);
            }
        }
        false
    }

    /// Sends writes in order, stopping at the first that fails.
    async fn write_all(
        &mut self,
        ctx: &mut Context,
        device: usize,
        writes: &[Write],
    ) -> Result<(), WriteFailure> {
        let unit = self.devices[device].unit;
        for w in writes {
            let outcome = self.transact(ctx, unit, Op::Write(w)).await;
            if !matches!(outcome, Outcome::Data(_)) {
                self.stats.writes_failed();
            }
            match outcome {
                Outcome::Data(_) => {
                    self.stats.writes();
                    self.answered(device);
                }
                Outcome::Exception(code) => {
                    self.answered(device);
                    return Err(WriteFailure::Refused(format!(
                        "the device refused the write: {code}"
                    )));
                }
                Outcome::Timeout | Outcome::Protocol(_) => {
                    self.failed(device, Instant::now());
                    return Err(WriteFailure::Refused(
                        "the device did not answer the write".into(),
                    ));
                }
                Outcome::Transport(_) => return Err(WriteFailure::Lost),
            }
        }
        Ok(())
    }

    /// Sends one read to `unit` and classifies its answer, counting it.
    async fn read(&mut self, ctx: &mut Context, unit: u8, read: &ReadRequest) -> Outcome<Data> {
        self.transact(ctx, unit, Op::Read(read)).await
    }

    /// The one way a request goes on the line: after the frame gap, to `unit`, within the
    /// timeout; its outcome counted whatever it is.
    async fn transact(&mut self, ctx: &mut Context, unit: u8, op: Op<'_>) -> Outcome<Data> {
        self.frame_gap().await;
        ctx.set_slave(Slave(unit));
        self.stats.request();
        let result = tokio::time::timeout(self.timeout, call(ctx, op)).await;
        self.quiet_since = Instant::now();
        let outcome = classify(result);
        match &outcome {
            Outcome::Data(data) => {
                self.stats.answered();
                let n = match data {
                    Data::Bits(b) => b.len(),
                    Data::Registers(r) => r.len(),
                    Data::Written => 0,
                };
                self.stats.registers(n as u64);
            }
            Outcome::Exception(code) => self.stats.exception(u8::from(*code)),
            Outcome::Timeout => self.stats.timeouts(),
            Outcome::Protocol(_) => self.stats.protocol_errors(),
            Outcome::Transport(_) => self.stats.transport_errors(),
        }
        outcome
    }
}

/// A request: a read of a property range, or a write.
enum Op<'a> {
    Read(&'a ReadRequest),
    Write(&'a Write),
}

/// Why a write did not happen.
enum WriteFailure {
    /// The device refused it or did not answer; the reason is for the caller.
    Refused(String),
    /// The line was lost.
    Lost,
}

fn classify<T>(result: Result<tokio_modbus::Result<T>, tokio::time::error::Elapsed>) -> Outcome<T> {
    match result {
        Err(_) => Outcome::Timeout,
        Ok(Ok(Ok(data))) => Outcome::Data(data),
        // A gateway that says its target did not answer: the device is silent, not refusing.
        Ok(Ok(Err(ExceptionCode::GatewayTargetDevice | ExceptionCode::GatewayPathUnavailable))) => {
            Outcome::Timeout
        }
        Ok(Ok(Err(code))) => Outcome::Exception(code),
        Ok(Err(tokio_modbus::Error::Transport(e))) => Outcome::Transport(e),
        Ok(Err(tokio_modbus::Error::Protocol(e))) => Outcome::Protocol(e.to_string()),
    }
}

async fn call(ctx: &mut Context, op: Op<'_>) -> tokio_modbus::Result<Data> {
    let read = match op {
        Op::Read(read) => read,
        Op::Write(w) => {
            let written = match w {
                Write::Coil { address, value } => ctx.write_single_coil(*address, *value).await,
                Write::Register { address, value } => {
                    ctx.write_single_register(*address, *value).await
                }
                Write::Registers { address, values } => {
                    ctx.write_multiple_registers(*address, values).await
                }
                Write::Mask {
                    address,
                    and_mask,
                    or_mask,
                } => {
                    ctx.masked_write_register(*address, *and_mask, *or_mask)
                        .await
                }
            };
            return Ok(written?.map(|()| Data::Written));
        }
    };
    let (address, count) = (read.address, read.count);
    let n = usize::from(count);
    let bits = |mut b: Vec<bool>| {
        b.truncate(n);
        Data::Bits(b)
    };
    Ok(match read.table {
        Table::Coil => ctx.read_coils(address, count).await?.map(bits),
        Table::Discrete => ctx.read_discrete_inputs(address, count).await?.map(bits),
        Table::Input => ctx
            .read_input_registers(address, count)
            .await?
            .map(Data::Registers),
        Table::Holding => ctx
            .read_holding_registers(address, count)
            .await?
            .map(Data::Registers),
    })
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}
