//! Per-bus counters, read by the hub's `/metrics` and status: every request has an outcome, and
//! every value or command that does not reach its destination is counted under its cause.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;

/// Counters of one bus. Atomics, so the bus task never waits for a reader.
#[derive(Debug, Default)]
pub struct BusStats {
    requests: AtomicU64,
    answered: AtomicU64,
    timeouts: AtomicU64,
    transport_errors: AtomicU64,
    protocol_errors: AtomicU64,
    exceptions: [AtomicU64; EXCEPTION_KINDS],
    registers_read: AtomicU64,
    reports: AtomicU64,
    value_errors: AtomicU64,
    writes: AtomicU64,
    writes_failed: AtomicU64,
    commands_refused: AtomicU64,
    connects: AtomicU64,
    connect_failures: AtomicU64,
    devices_online: AtomicU64,
    /// Properties whose last read failed, by thing then property. A short lock, never held
    /// across an `.await`.
    faults: Mutex<BTreeMap<(String, String), PropertyFault>>,
}

/// A property whose value cannot be read now: the device answered its read with an exception,
/// or the registers did not decode (NaN, bad text). Cleared when it reads well again.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PropertyFault {
    /// The thing.
    pub thing: String,
    /// The property.
    pub property: String,
    /// The last error (`illegal_data_address`, or the decoding error).
    pub error: String,
    /// Failed reads in a row.
    pub count: u64,
}

/// Exception codes counted apart; the last slot holds every other code.
pub const EXCEPTION_NAMES: [&str; EXCEPTION_KINDS] = [
    "illegal_function",
    "illegal_data_address",
    "illegal_data_value",
    "server_device_failure",
    "server_device_busy",
    "gateway_path_unavailable",
    "gateway_target_failed",
    "other",
];

const EXCEPTION_KINDS: usize = 8;

/// The slot of an exception code in [`EXCEPTION_NAMES`].
pub(super) fn exception_slot(code: u8) -> usize {
    match code {
        0x01 => 0,
        0x02 => 1,
        0x03 => 2,
        0x04 => 3,
        0x06 => 4,
        0x0A => 5,
        0x0B => 6,
        _ => 7,
    }
}

/// A copy of the counters at one moment.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct BusSnapshot {
    /// Requests sent (reads and writes).
    pub requests: u64,
    /// Requests answered, with data or with an exception.
    pub answered: u64,
    /// Requests not answered in time.
    pub timeouts: u64,
    /// Requests lost with the connection or port.
    pub transport_errors: u64,
    /// Answers that did not match their request (header or function code).
    pub protocol_errors: u64,
    /// Exception answers by kind (see [`EXCEPTION_NAMES`]).
    pub exceptions: Vec<(&'static str, u64)>,
    /// Registers and bits read.
    pub registers_read: u64,
    /// Reports handed to the hub.
    pub reports: u64,
    /// Values that could not be decoded (NaN, bad text...): not reported.
    pub value_errors: u64,
    /// Write requests that succeeded.
    pub writes: u64,
    /// Writes that failed (exception, timeout, value out of range for its registers).
    pub writes_failed: u64,
    /// Commands refused before any request: device offline, queue full, deadline passed.
    pub commands_refused: u64,
    /// Connections or port openings that succeeded.
    pub connects: u64,
    /// Connection or port opening attempts that failed.
    pub connect_failures: u64,
    /// Devices answering now.
    pub devices_online: u64,
    /// Properties that cannot be read now, with why.
    pub faults: Vec<PropertyFault>,
}

macro_rules! bump {
    ($($name:ident),*) => {
        $(
            #[doc = concat!("Counts one `", stringify!($name), "`.")]
            pub(super) fn $name(&self) {
                self.$name.fetch_add(1, Ordering::Relaxed);
            }
        )*
    };
}

impl BusStats {
    bump!(
        answered,
        timeouts,
        transport_errors,
        protocol_errors,
        reports,
        writes,
        writes_failed,
        commands_refused,
        connects,
        connect_failures
    );

    /// Counts a request sent.
    pub(super) fn request(&self) {
        self.requests.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts an exception answer.
    pub(super) fn exception(&self, code: u8) {
        self.answered.fetch_add(1, Ordering::Relaxed);
        if let Some(slot) = self.exceptions.get(exception_slot(code)) {
            slot.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Counts registers or bits read.
    pub(super) fn registers(&self, n: u64) {
        self.registers_read.fetch_add(n, Ordering::Relaxed);
    }

    /// Counts values that could not be decoded.
    pub(super) fn value_errors(&self, n: u64) {
        self.value_errors.fetch_add(n, Ordering::Relaxed);
    }

    /// Sets how many devices answer now.
    pub(super) fn set_online(&self, n: u64) {
        self.devices_online.store(n, Ordering::Relaxed);
    }

    /// Records that `property` of `thing` could not be read, and why.
    pub(super) fn fault(&self, thing: &str, property: &str, error: String) {
        let Ok(mut faults) = self.faults.lock() else {
            return;
        };
        let fault = faults
            .entry((thing.to_owned(), property.to_owned()))
            .or_insert_with(|| PropertyFault {
                thing: thing.to_owned(),
                property: property.to_owned(),
                error: String::new(),
                count: 0,
            });
        fault.error = error;
        fault.count = fault.count.saturating_add(1);
    }

    /// Records that these properties of `thing` were read well (one short lock per read).
    pub(super) fn cleared(&self, thing: &str, properties: &[&str]) {
        if properties.is_empty() {
            return;
        }
        if let Ok(mut faults) = self.faults.lock()
            && !faults.is_empty()
        {
            faults.retain(|(t, p), _| t != thing || !properties.contains(&p.as_str()));
        }
    }

    /// A consistent-enough copy for metrics.
    pub fn snapshot(&self) -> BusSnapshot {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        BusSnapshot {
            requests: get(&self.requests),
            answered: get(&self.answered),
            timeouts: get(&self.timeouts),
            transport_errors: get(&self.transport_errors),
            protocol_errors: get(&self.protocol_errors),
            exceptions: EXCEPTION_NAMES
                .iter()
                .zip(&self.exceptions)
                .map(|(n, c)| (*n, get(c)))
                .collect(),
            registers_read: get(&self.registers_read),
            reports: get(&self.reports),
            value_errors: get(&self.value_errors),
            writes: get(&self.writes),
            writes_failed: get(&self.writes_failed),
            commands_refused: get(&self.commands_refused),
            connects: get(&self.connects),
            connect_failures: get(&self.connect_failures),
            devices_online: get(&self.devices_online),
            faults: self
                .faults
                .lock()
                .map(|f| f.values().cloned().collect())
                .unwrap_or_default(),
        }
    }
}
