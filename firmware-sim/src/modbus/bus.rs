//! [`SimBus`]: simulated devices keyed by unit id, the controls tests use on them, and the
//! dispatch every transport goes through.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio_modbus::{ExceptionCode, Request, Response, SlaveRequest};

use super::bank::Table;
use super::device::{DeviceKind, ModbusDevice};
use super::pdu::{self, BadRequest};

/// How many requests [`SimBus::requests`] keeps (the oldest are forgotten first).
pub const REQUEST_LOG: usize = 4096;

/// Which way a request came in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transport {
    /// Modbus TCP ([`SimBus::serve_tcp`]).
    Tcp,
    /// Modbus RTU on a serial line ([`SimBus::serve_rtu_pty`]).
    Rtu,
    /// A direct call ([`SimBus::request`], or the bus used as a tokio-modbus `Service`).
    Direct,
}

/// What came of one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// A normal response was sent.
    Answered,
    /// An exception response with this code was sent.
    Exception(u8),
    /// Nothing was sent: a dead unit, an unknown unit on RTU, or a broadcast.
    Silent,
}

/// One request as the bus saw it, for tests that check what a client sent (merged reads, the
/// order of writes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestRecord {
    /// When it was dispatched, from the bus's creation.
    pub at: Duration,
    /// How it came in.
    pub transport: Transport,
    /// The unit addressed.
    pub unit: u8,
    /// Its function code.
    pub function: u8,
    /// The first address it names, if its function has one.
    pub address: Option<u16>,
    /// How many coils or registers it names (1 for single writes), if its function has them.
    pub quantity: Option<u16>,
    /// What came of it.
    pub outcome: Outcome,
}

/// Counters of one unit since it was added (or since [`SimBus::reset_stats`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UnitStats {
    /// Requests addressed to the unit, answered or not.
    pub requests: u64,
    /// Requests answered normally.
    pub answered: u64,
    /// Requests answered with an exception.
    pub exceptions: u64,
    /// Requests that got no answer because the unit was dead.
    pub ignored: u64,
    /// Requests per function code.
    pub by_function: BTreeMap<u8, u64>,
}

/// Timing of the RTU line(s) of a bus, to check that a master keeps to one request at a time.
///
/// A request is *in flight* from the first byte of its frame until its answer has been written
/// (or, when nothing answers, until its frame is complete). The *gap* before a request runs from
/// the end of the previous one to the first byte of its own frame.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LineStats {
    /// Frames received with a good CRC, whatever unit they address.
    pub frames: u64,
    /// Bytes discarded: CRC errors and garbage between frames, counted per discarded run.
    pub bad_frames: u64,
    /// Most requests in flight at once; 1 for a master that waits for each answer.
    pub max_in_flight: u32,
    /// Requests whose first byte came while another was still in flight (on a real RS-485 line,
    /// a collision).
    pub overlaps: u64,
    /// Shortest gap seen between two requests.
    pub min_gap: Option<Duration>,
    /// The gap before the latest request.
    pub last_gap: Option<Duration>,
}

#[derive(Debug)]
struct Slot {
    device: ModbusDevice,
    alive: bool,
    delay: Duration,
    stats: UnitStats,
}

#[derive(Debug)]
struct State {
    units: BTreeMap<u8, Slot>,
    /// Time follows the wall clock (else only [`SimBus::advance`] moves it).
    wall: bool,
    /// Wall-clock instant the devices were last advanced to.
    synced: Instant,
    log: VecDeque<RequestRecord>,
    line: LineStats,
}

impl State {
    /// Advances every device to now, if time follows the wall clock.
    fn sync(&mut self) {
        if !self.wall {
            return;
        }
        let now = Instant::now();
        let dt = now.saturating_duration_since(self.synced);
        self.synced = now;
        for slot in self.units.values_mut() {
            slot.device.advance(dt);
        }
    }
}

#[derive(Debug)]
struct Shared {
    state: Mutex<State>,
    started: Instant,
}

/// Simulated Modbus devices sharing one bus, keyed by unit id (1..=247), served over Modbus TCP
/// and Modbus RTU at once if wanted. Cloning gives another handle on the same devices.
///
/// Unknown units: over TCP the bus answers *gateway target device failed to respond* (0x0B), as
/// a TCP-to-RTU gateway does when no device answers on its serial side (here at once, not after a
/// serial timeout), so a client can tell a wrong unit id from a dead device; over RTU nothing
/// answers at all, as on a real line. A dead unit ([`SimBus::set_alive`]) never answers over
/// either, so a client sees its own timeout. Unit 0 is the broadcast address on either transport:
/// every live device applies a write sent to it, and nothing answers.
#[derive(Debug, Clone)]
pub struct SimBus {
    shared: Arc<Shared>,
}

/// Why a device cannot join the bus.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BusError {
    /// Unit ids of devices are 1..=247 (0 is broadcast, 248..=255 are reserved).
    #[error("unit id {0} is outside 1..=247")]
    BadUnit(u8),
    /// Another device has that unit id.
    #[error("unit {0} is already on the bus")]
    Taken(u8),
}

/// Where a transport is told to send an answer, after `delay`.
pub(crate) struct Answer {
    pub(crate) pdu: Option<Vec<u8>>,
    pub(crate) delay: Duration,
}

impl Default for SimBus {
    fn default() -> Self {
        Self::new()
    }
}

impl SimBus {
    /// An empty bus whose devices' values move with the wall clock.
    pub fn new() -> Self {
        Self::with_clock(true)
    }

    /// An empty bus whose devices' values move only when [`SimBus::advance`] is called, for
    /// tests that need exact values.
    pub fn manual_clock() -> Self {
        Self::with_clock(false)
    }

    fn with_clock(wall: bool) -> Self {
        let now = Instant::now();
        SimBus {
            shared: Arc::new(Shared {
                state: Mutex::new(State {
                    units: BTreeMap::new(),
                    wall,
                    synced: now,
                    log: VecDeque::new(),
                    line: LineStats::default(),
                }),
                started: now,
            }),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves plain data behind; keep serving it.
        self.shared
            .state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Adds a device of `kind` at `unit`, alive, answering at once.
    pub fn add(&self, unit: u8, kind: DeviceKind) -> Result<(), BusError> {
        if !(1..=247).contains(&unit) {
            return Err(BusError::BadUnit(unit));
        }
        let mut state = self.state();
        state.sync();
        if state.units.contains_key(&unit) {
            return Err(BusError::Taken(unit));
        }
        state.units.insert(
            unit,
            Slot {
                device: ModbusDevice::new(unit, kind),
                alive: true,
                delay: Duration::ZERO,
                stats: UnitStats::default(),
            },
        );
        Ok(())
    }

    /// The devices on the bus, by unit id.
    pub fn units(&self) -> Vec<(u8, DeviceKind)> {
        self.state()
            .units
            .iter()
            .map(|(unit, slot)| (*unit, slot.device.kind()))
            .collect()
    }

    /// Marks a unit dead (it never answers, as if unpowered or cut off) or alive again; false if
    /// there is no such unit. Its values keep moving while dead.
    pub fn set_alive(&self, unit: u8, alive: bool) -> bool {
        match self.state().units.get_mut(&unit) {
            Some(slot) => {
                slot.alive = alive;
                tracing::info!(unit, alive, "unit liveness changed");
                true
            }
            None => false,
        }
    }

    /// Whether `unit` is on the bus and alive.
    pub fn is_alive(&self, unit: u8) -> bool {
        self.state().units.get(&unit).is_some_and(|s| s.alive)
    }

    /// Makes `unit` wait `delay` before each answer (on RTU, on top of the line's turnaround);
    /// false if there is no such unit. For tests of a client's timeouts.
    pub fn set_response_delay(&self, unit: u8, delay: Duration) -> bool {
        match self.state().units.get_mut(&unit) {
            Some(slot) => {
                slot.delay = delay;
                true
            }
            None => false,
        }
    }

    /// Moves every device's time on by `dt` (with either clock).
    pub fn advance(&self, dt: Duration) {
        let mut state = self.state();
        state.sync();
        for slot in state.units.values_mut() {
            slot.device.advance(dt);
        }
    }

    /// One value of `unit` as a client would read it now (0 or 1 for bits), bypassing the bus;
    /// `None` if the unit or the address does not exist. For checking what a client wrote.
    pub fn register(&self, unit: u8, table: Table, address: u16) -> Option<u16> {
        let mut state = self.state();
        state.sync();
        state.units.get(&unit)?.device.bank().get(table, address)
    }

    /// `count` values of `unit` from `address` (see [`SimBus::register`]); `None` unless all exist.
    pub fn registers(&self, unit: u8, table: Table, address: u16, count: u16) -> Option<Vec<u16>> {
        let mut state = self.state();
        state.sync();
        state
            .units
            .get(&unit)?
            .device
            .bank()
            .read(table, address, count)
            .ok()
    }

    /// Sets a value of `unit` from the device's side, whatever its access, to stage a test; false
    /// if the unit or the address does not exist. Live values are recomputed as time moves on.
    pub fn set_register(&self, unit: u8, table: Table, address: u16, value: u16) -> bool {
        let mut state = self.state();
        state.sync();
        state
            .units
            .get_mut(&unit)
            .is_some_and(|slot| slot.device.poke(table, address, value))
    }

    /// Trips the drive at `unit` (fault input on, run command dropped, motor coasting down until
    /// a fault reset); false if `unit` is not a drive.
    pub fn trip(&self, unit: u8) -> bool {
        let mut state = self.state();
        state.sync();
        state
            .units
            .get_mut(&unit)
            .is_some_and(|slot| slot.device.trip())
    }

    /// A copy of the device at `unit`, as it is now.
    pub fn device(&self, unit: u8) -> Option<ModbusDevice> {
        let mut state = self.state();
        state.sync();
        state.units.get(&unit).map(|slot| slot.device.clone())
    }

    /// The counters of `unit`.
    pub fn stats(&self, unit: u8) -> Option<UnitStats> {
        self.state().units.get(&unit).map(|slot| slot.stats.clone())
    }

    /// The latest requests (at most [`REQUEST_LOG`]), oldest first.
    pub fn requests(&self) -> Vec<RequestRecord> {
        self.state().log.iter().cloned().collect()
    }

    /// The RTU line timing (see [`LineStats`]); all zero until an RTU line is served.
    pub fn line_stats(&self) -> LineStats {
        self.state().line.clone()
    }

    /// Clears every unit's counters, the request log and the line timing.
    pub fn reset_stats(&self) {
        let mut state = self.state();
        for slot in state.units.values_mut() {
            slot.stats = UnitStats::default();
        }
        state.log.clear();
        state.line = LineStats::default();
    }

    /// Answers `request` for `unit` in-process: `Ok(Some(response))`, `Err(exception)` (0x0B
    /// for an unknown unit, as over TCP), or `Ok(None)` when nothing would answer (a dead unit, or
    /// a broadcast to unit 0). The unit's response delay is not applied.
    pub fn request(
        &self,
        unit: u8,
        request: &Request<'_>,
    ) -> Result<Option<Response>, ExceptionCode> {
        self.dispatch(unit, Transport::Direct, Ok(request))
    }

    /// Answers a request PDU that came in over `transport`.
    pub(crate) fn answer(&self, unit: u8, transport: Transport, pdu: &[u8]) -> Answer {
        let decoded = pdu::decode_request(pdu);
        let request = match &decoded {
            Ok(request) => Ok(request),
            Err(BadRequest::Ignore) => {
                tracing::debug!(unit, ?pdu, "unanswerable request ignored");
                return Answer {
                    pdu: None,
                    delay: Duration::ZERO,
                };
            }
            Err(BadRequest::Exception { function, code }) => Err((*function, *code)),
        };
        let function = match request {
            Ok(r) => pdu::function_code(r),
            Err((f, _)) => f,
        };
        let delay = self
            .state()
            .units
            .get(&unit)
            .map_or(Duration::ZERO, |s| s.delay);
        let pdu = match self.dispatch(unit, transport, request) {
            Ok(Some(response)) => Some(pdu::encode_response(&response)),
            Ok(None) => None,
            Err(code) => Some(pdu::encode_exception(function, code)),
        };
        Answer { pdu, delay }
    }

    /// The one place requests are answered: liveness, unknown units, counters and the log.
    fn dispatch(
        &self,
        unit: u8,
        transport: Transport,
        request: Result<&Request<'_>, (u8, ExceptionCode)>,
    ) -> Result<Option<Response>, ExceptionCode> {
        let (function, span) = match request {
            Ok(r) => (pdu::function_code(r), pdu::span(r)),
            Err((f, _)) => (f, None),
        };
        let at = self.shared.started.elapsed();
        let mut state = self.state();
        state.sync();
        let result = if unit == 0 {
            // Broadcast: every live device applies writes; nobody answers.
            if let Ok(r) = request {
                for slot in state.units.values_mut().filter(|s| s.alive) {
                    slot.device.broadcast(r);
                }
            }
            Ok(None)
        } else if let Some(slot) = state.units.get_mut(&unit) {
            slot.stats.requests += 1;
            *slot.stats.by_function.entry(function).or_default() += 1;
            if !slot.alive {
                slot.stats.ignored += 1;
                Ok(None)
            } else {
                let result = match request {
                    Ok(r) => slot.device.execute(r).map(Some),
                    Err((_, code)) => Err(code),
                };
                match &result {
                    Ok(_) => slot.stats.answered += 1,
                    Err(_) => slot.stats.exceptions += 1,
                }
                result
            }
        } else if transport == Transport::Rtu {
            Ok(None)
        } else {
            Err(ExceptionCode::GatewayTargetDevice)
        };
        let outcome = match &result {
            Ok(Some(_)) => Outcome::Answered,
            Ok(None) => Outcome::Silent,
            Err(code) => Outcome::Exception(u8::from(*code)),
        };
        tracing::debug!(unit, function, ?span, ?outcome, ?transport, "request");
        if state.log.len() >= REQUEST_LOG {
            state.log.pop_front();
        }
        state.log.push_back(RequestRecord {
            at,
            transport,
            unit,
            function,
            address: span.map(|(a, _)| a),
            quantity: span.map(|(_, q)| q),
            outcome,
        });
        result
    }

    /// Updates the RTU line timing.
    pub(crate) fn line(&self, f: impl FnOnce(&mut LineStats)) {
        f(&mut self.state().line);
    }
}

/// The bus as a tokio-modbus server service, to serve it with tokio-modbus's own servers (RTU
/// over TCP, say). `Ok(None)` means no answer. Response delays are not applied.
impl tokio_modbus::server::Service for SimBus {
    type Request = SlaveRequest<'static>;
    type Response = Option<Response>;
    type Exception = ExceptionCode;
    type Future = std::future::Ready<Result<Option<Response>, ExceptionCode>>;

    fn call(&self, req: Self::Request) -> Self::Future {
        std::future::ready(self.request(req.slave, &req.request))
    }
}
