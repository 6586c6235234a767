//! [`ModbusDevice`]: one simulated device (an energy [`meter`], a motor [`drive`], or the
//! [`bench`] device the benchmark reads) as plain logic: a [`RegisterBank`] laid out as the device's map, values advanced by
//! [`ModbusDevice::advance`], and requests answered by [`ModbusDevice::execute`] with the
//! exceptions a real device gives.
//!
//! Everything but the bench device's clock stamp is deterministic: the values are a function of the elapsed time fed in and of the
//! writes received, so a test that advances the clock by hand gets the same numbers every run.

use std::f64::consts::TAU;
use std::time::Duration;

use tokio_modbus::{ExceptionCode, Request, Response};

use super::bank::{Access, RegisterBank, Table};

/// The register map of the energy meter (addresses are PDU addresses, 0-based).
pub mod meter {
    /// Input registers 0-1: voltage, V, `f32`.
    pub const VOLTAGE: u16 = 0;
    /// Input registers 2-3: current, A, `f32` (the primary current: secondary current times
    /// the CT ratio).
    pub const CURRENT: u16 = 2;
    /// Input registers 4-5: active power, W, `f32` (voltage times current).
    pub const POWER: u16 = 4;
    /// Input registers 6-7: energy, Wh, `u32`, increasing with power over time.
    pub const ENERGY: u16 = 6;
    /// Input register 8: frequency, 0.01 Hz, `u16`.
    pub const FREQUENCY: u16 = 8;
    /// Holding register 100: current transformer ratio, `u16`, writable 1..=10000.
    pub const CT_RATIO: u16 = 100;
    /// Holding registers 200-207: serial number, string (`MTR-<unit>`).
    pub const SERIAL: u16 = 200;
    /// Registers in the serial number.
    pub const SERIAL_COUNT: u16 = 8;
    /// Holding registers 208-211: firmware version, string.
    pub const FIRMWARE: u16 = 208;
    /// Registers in the firmware version.
    pub const FIRMWARE_COUNT: u16 = 4;
    /// The firmware version the meter reports.
    pub const FIRMWARE_VERSION: &str = "1.4.2";
    /// Coil 10: reset energy; writing it on zeroes the energy counter, then it reads off again.
    pub const RESET_ENERGY: u16 = 10;
}

/// The register map of the motor drive (addresses are PDU addresses, 0-based).
pub mod drive {
    /// Coil 0: run command, writable.
    pub const RUN: u16 = 0;
    /// Coil 5: fault reset; writing it on clears a fault, then it reads off again.
    pub const FAULT_RESET: u16 = 5;
    /// Discrete input 3: faulted.
    pub const FAULT: u16 = 3;
    /// Input register 0: actual speed, rpm, `u16`; ramps towards the setpoint while running,
    /// towards 0 otherwise.
    pub const ACTUAL_SPEED: u16 = 0;
    /// Input register 1: motor current, 0.1 A, `i16`.
    pub const MOTOR_CURRENT: u16 = 1;
    /// Input register 2: temperature, 0.1 °C, `i16`.
    pub const TEMPERATURE: u16 = 2;
    /// Holding register 10: speed setpoint, rpm, `u16`, writable 0..=[`MAX_SPEED`].
    pub const SPEED_SETPOINT: u16 = 10;
    /// Holding register 11: acceleration, 0.1 s from 0 to [`MAX_SPEED`] (and back), `u16`,
    /// writable 0..=6000 (0: immediate).
    pub const ACCELERATION: u16 = 11;
    /// Holding register 50: status word, read-only: bit 0 running, bit 3 ready, bits 4..8 mode
    /// (see [`DriveMode`](super::DriveMode)).
    pub const STATUS: u16 = 50;
    /// Holding registers 60-63: firmware version, string.
    pub const FIRMWARE: u16 = 60;
    /// Registers in the firmware version.
    pub const FIRMWARE_COUNT: u16 = 4;
    /// The firmware version the drive reports.
    pub const FIRMWARE_VERSION: &str = "2.1.0";
    /// Highest speed setpoint, rpm.
    pub const MAX_SPEED: u16 = 3000;
    /// Status word bit: running (run commanded and not faulted).
    pub const STATUS_RUNNING: u16 = 1 << 0;
    /// Status word bit: ready (not faulted).
    pub const STATUS_READY: u16 = 1 << 3;
    /// Status word: the first bit of the mode field (bits 4..8).
    pub const STATUS_MODE_SHIFT: u16 = 4;
}

/// The register map of the benchmark device (addresses are PDU addresses, 0-based): blocks of
/// read-only holding registers, each starting with a stamp of the wall clock taken when the
/// device answers a read, so that a client can tell how long a value took to reach it.
pub mod bench {
    /// Holding registers in one block.
    pub const BLOCK: u16 = 100;
    /// Blocks: holding registers `0 .. BLOCKS * BLOCK`.
    pub const BLOCKS: u16 = 50;
    /// Registers of the stamp at the start of each block: a `u64` (big word order), the wall
    /// clock in microseconds since the Unix epoch at the moment of the read that returns it
    /// (a read of holding registers sets the stamps of the blocks it covers).
    pub const STAMP_COUNT: u16 = 4;

    /// The fixed value of a holding register outside the stamps: its address plus 1000 times
    /// the unit, wrapping.
    pub fn filler(unit: u8, address: u16) -> u16 {
        address.wrapping_add(u16::from(unit).wrapping_mul(1000))
    }

    /// Whether `address` is inside a stamp.
    pub fn is_stamp(address: u16) -> bool {
        address % BLOCK < STAMP_COUNT
    }
}

/// The kinds of simulated device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DeviceKind {
    /// An energy meter (see [`meter`]).
    Meter,
    /// A motor drive (see [`drive`]).
    Drive,
    /// The benchmark device (see [`bench`]): no bundled thing type; the benchmark writes its own.
    Bench,
}

impl DeviceKind {
    /// The name used on the command line and in thing type ids (`meter`, `drive`).
    pub fn name(self) -> &'static str {
        match self {
            DeviceKind::Meter => "meter",
            DeviceKind::Drive => "drive",
            DeviceKind::Bench => "bench",
        }
    }

    /// The thing type whose `[bindings.modbus]` describes this map (for the bench device, the
    /// id of the type `brume-sim bench` writes, [`crate::load::modbus::bench_type`]).
    pub fn type_id(self) -> &'static str {
        match self {
            DeviceKind::Meter => "modbus_meter",
            DeviceKind::Drive => "modbus_drive",
            DeviceKind::Bench => "modbus_bench",
        }
    }
}

impl std::fmt::Display for DeviceKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for DeviceKind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "meter" => Ok(DeviceKind::Meter),
            "drive" => Ok(DeviceKind::Drive),
            "bench" => Ok(DeviceKind::Bench),
            other => Err(format!(
                "unknown device kind {other:?} (meter, drive, bench)"
            )),
        }
    }
}

/// The drive's mode, bits 4..8 of its status word.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u16)]
pub enum DriveMode {
    /// Standing still.
    Stopped = 0,
    /// Speeding up towards the setpoint.
    Accelerating = 1,
    /// At the setpoint.
    AtSpeed = 2,
    /// Slowing down (towards a lower setpoint, or to a stop).
    Decelerating = 3,
    /// Tripped; needs a fault reset.
    Faulted = 4,
}

/// Longest step the models integrate over at once, so that a long idle period gives the same
/// values as many short ones.
const STEP: Duration = Duration::from_millis(100);

#[derive(Debug, Clone)]
struct MeterState {
    energy_wh: f64,
}

#[derive(Debug, Clone)]
struct DriveState {
    speed: f64,
    temperature: f64,
    fault: bool,
    mode: DriveMode,
}

#[derive(Debug, Clone)]
enum Model {
    Meter(MeterState),
    Drive(DriveState),
    /// Nothing moves but the clock, stamped at each read.
    Bench,
}

/// One simulated Modbus device.
#[derive(Debug, Clone)]
pub struct ModbusDevice {
    unit: u8,
    kind: DeviceKind,
    bank: RegisterBank,
    model: Model,
    /// Time simulated so far.
    elapsed: Duration,
}

/// Highest quantity of one read of bits (FC 1, 2).
pub const MAX_READ_BITS: u16 = 2000;
/// Highest quantity of one read of registers (FC 3, 4).
pub const MAX_READ_REGISTERS: u16 = 125;
/// Highest quantity of one write of coils (FC 15).
pub const MAX_WRITE_BITS: u16 = 1968;
/// Highest quantity of one write of registers (FC 16).
pub const MAX_WRITE_REGISTERS: u16 = 123;

fn quantity(q: usize, max: u16) -> Result<u16, ExceptionCode> {
    u16::try_from(q)
        .ok()
        .filter(|q| (1..=max).contains(q))
        .ok_or(ExceptionCode::IllegalDataValue)
}

impl ModbusDevice {
    /// A device of `kind` at `unit`, at time zero.
    pub fn new(unit: u8, kind: DeviceKind) -> Self {
        let mut bank = RegisterBank::new();
        let model = match kind {
            DeviceKind::Meter => {
                use meter::*;
                bank.map(Table::Input, VOLTAGE, 9, Access::ReadOnly);
                bank.map(
                    Table::Holding,
                    CT_RATIO,
                    1,
                    Access::Writable { min: 1, max: 10000 },
                );
                bank.map(Table::Holding, SERIAL, SERIAL_COUNT, Access::ReadOnly);
                bank.map(Table::Holding, FIRMWARE, FIRMWARE_COUNT, Access::ReadOnly);
                bank.map(Table::Coil, RESET_ENERGY, 1, Access::BIT);
                bank.set(Table::Holding, CT_RATIO, 1);
                bank.set_string(Table::Holding, SERIAL, SERIAL_COUNT, &format!("MTR-{unit}"));
                bank.set_string(Table::Holding, FIRMWARE, FIRMWARE_COUNT, FIRMWARE_VERSION);
                Model::Meter(MeterState {
                    // A meter that has been in service for a while.
                    energy_wh: 12_345.0 + 1000.0 * f64::from(unit),
                })
            }
            DeviceKind::Drive => {
                use drive::*;
                bank.map(Table::Coil, RUN, 1, Access::BIT);
                bank.map(Table::Coil, FAULT_RESET, 1, Access::BIT);
                bank.map(Table::Discrete, FAULT, 1, Access::ReadOnly);
                bank.map(Table::Input, ACTUAL_SPEED, 3, Access::ReadOnly);
                bank.map(
                    Table::Holding,
                    SPEED_SETPOINT,
                    1,
                    Access::Writable {
                        min: 0,
                        max: MAX_SPEED,
                    },
                );
                bank.map(
                    Table::Holding,
                    ACCELERATION,
                    1,
                    Access::Writable { min: 0, max: 6000 },
                );
                bank.map(Table::Holding, STATUS, 1, Access::ReadOnly);
                bank.map(Table::Holding, FIRMWARE, FIRMWARE_COUNT, Access::ReadOnly);
                bank.set(Table::Holding, ACCELERATION, 50);
                bank.set_string(Table::Holding, FIRMWARE, FIRMWARE_COUNT, FIRMWARE_VERSION);
                Model::Drive(DriveState {
                    speed: 0.0,
                    temperature: AMBIENT,
                    fault: false,
                    mode: DriveMode::Stopped,
                })
            }
            DeviceKind::Bench => {
                let count = bench::BLOCK * bench::BLOCKS;
                bank.map(Table::Holding, 0, count, Access::ReadOnly);
                for address in (0..count).filter(|a| !bench::is_stamp(*a)) {
                    bank.set(Table::Holding, address, bench::filler(unit, address));
                }
                Model::Bench
            }
        };
        let mut device = ModbusDevice {
            unit,
            kind,
            bank,
            model,
            elapsed: Duration::ZERO,
        };
        device.publish();
        device
    }

    /// Its unit id.
    pub fn unit(&self) -> u8 {
        self.unit
    }

    /// Its kind.
    pub fn kind(&self) -> DeviceKind {
        self.kind
    }

    /// Its registers, as a client would read them now.
    pub fn bank(&self) -> &RegisterBank {
        &self.bank
    }

    /// Time simulated so far.
    pub fn elapsed(&self) -> Duration {
        self.elapsed
    }

    /// Sets a value from the device's side, whatever its access (to stage a test); false if
    /// unmapped. Live values computed by the model are overwritten at the next advance.
    pub fn poke(&mut self, table: Table, address: u16, value: u16) -> bool {
        let done = self.bank.set(table, address, value);
        self.publish();
        done
    }

    /// Trips a drive (fault input on, motor coasting down, run command dropped); false for a
    /// meter, which has no faults.
    pub fn trip(&mut self) -> bool {
        let Model::Drive(state) = &mut self.model else {
            return false;
        };
        state.fault = true;
        state.mode = DriveMode::Faulted;
        self.bank.set(Table::Coil, drive::RUN, 0);
        self.publish();
        true
    }

    /// Moves the device's time on by `dt`, in steps of at most 100 ms.
    pub fn advance(&mut self, dt: Duration) {
        let mut left = dt;
        while !left.is_zero() {
            let step = left.min(STEP);
            self.step(step);
            self.elapsed += step;
            left -= step;
        }
        self.publish();
    }

    fn step(&mut self, dt: Duration) {
        let dt_s = dt.as_secs_f64();
        match &mut self.model {
            Model::Meter(state) => {
                // Energy over the step from the power at its middle.
                let mid = self.elapsed.as_secs_f64() + dt_s / 2.0;
                let ct = f64::from(self.bank.get(Table::Holding, meter::CT_RATIO).unwrap_or(1));
                let (v, i) = meter_readings(self.unit, mid, ct);
                state.energy_wh += v * i * dt_s / 3600.0;
            }
            Model::Drive(state) => {
                let run = self.bank.get(Table::Coil, drive::RUN) == Some(1);
                let setpoint = f64::from(
                    self.bank
                        .get(Table::Holding, drive::SPEED_SETPOINT)
                        .unwrap_or(0),
                );
                let accel = self
                    .bank
                    .get(Table::Holding, drive::ACCELERATION)
                    .unwrap_or(0);
                let target = if run && !state.fault { setpoint } else { 0.0 };
                let rate = if accel == 0 {
                    f64::INFINITY
                } else {
                    f64::from(drive::MAX_SPEED) / (f64::from(accel) * 0.1)
                };
                let before = state.speed;
                let reach = rate * dt_s;
                state.speed = if (target - before).abs() <= reach {
                    target
                } else if target > before {
                    before + reach
                } else {
                    before - reach
                };
                state.mode = if state.fault {
                    DriveMode::Faulted
                } else if state.speed > before {
                    DriveMode::Accelerating
                } else if state.speed < before {
                    DriveMode::Decelerating
                } else if state.speed > 0.0 {
                    DriveMode::AtSpeed
                } else {
                    DriveMode::Stopped
                };
                // The winding heats towards a level set by the current, with a five-minute time
                // constant (exact for any step length, as the current is constant over a step).
                let current = drive_current(state.speed, state.mode, run && !state.fault);
                let settle = AMBIENT + 4.0 * current;
                state.temperature += (settle - state.temperature) * (1.0 - (-dt_s / 300.0).exp());
            }
            Model::Bench => {}
        }
    }

    /// Writes the model's live values into the registers.
    fn publish(&mut self) {
        let t = self.elapsed.as_secs_f64();
        match &self.model {
            Model::Meter(state) => {
                let ct = f64::from(self.bank.get(Table::Holding, meter::CT_RATIO).unwrap_or(1));
                let (v, i) = meter_readings(self.unit, t, ct);
                let b = &mut self.bank;
                b.set_f32(Table::Input, meter::VOLTAGE, v as f32);
                b.set_f32(Table::Input, meter::CURRENT, i as f32);
                b.set_f32(Table::Input, meter::POWER, (v * i) as f32);
                // A counter register wraps as the device's does.
                b.set_u32(
                    Table::Input,
                    meter::ENERGY,
                    (state.energy_wh.max(0.0) as u64 % (1u64 << 32)) as u32,
                );
                let hz = 5000.0 + 2.0 * (TAU * t / 45.0 + f64::from(self.unit)).sin();
                b.set(Table::Input, meter::FREQUENCY, hz.round() as u16);
            }
            Model::Drive(state) => {
                let run = self.bank.get(Table::Coil, drive::RUN) == Some(1);
                let current = drive_current(state.speed, state.mode, run && !state.fault);
                let b = &mut self.bank;
                b.set(
                    Table::Input,
                    drive::ACTUAL_SPEED,
                    state.speed.round() as u16,
                );
                b.set(
                    Table::Input,
                    drive::MOTOR_CURRENT,
                    (current * 10.0).round() as i16 as u16,
                );
                b.set(
                    Table::Input,
                    drive::TEMPERATURE,
                    (state.temperature * 10.0).round() as i16 as u16,
                );
                b.set(Table::Discrete, drive::FAULT, u16::from(state.fault));
                let mut status = (state.mode as u16) << drive::STATUS_MODE_SHIFT;
                if run && !state.fault {
                    status |= drive::STATUS_RUNNING;
                }
                if !state.fault {
                    status |= drive::STATUS_READY;
                }
                b.set(Table::Holding, drive::STATUS, status);
            }
            // The stamps are taken when a read is answered.
            Model::Bench => {}
        }
    }

    /// The bench device: the stamps of the blocks that `address .. address + quantity` covers
    /// set to the wall clock now.
    fn stamp(&mut self, address: u16, quantity: u16) {
        let micros = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX));
        let end = u32::from(address) + u32::from(quantity);
        let first = address / bench::BLOCK;
        for block in first..bench::BLOCKS {
            let at = block * bench::BLOCK;
            if u32::from(at) >= end {
                break;
            }
            for (i, shift) in [48u32, 32, 16, 0].into_iter().enumerate() {
                self.bank
                    .set(Table::Holding, at + i as u16, (micros >> shift) as u16);
            }
        }
    }

    /// What the device does after a client's write landed: momentary coils act and fall back.
    fn after_write(&mut self, table: Table, address: u16, count: u16) {
        let touched =
            |a: u16| table == Table::Coil && (address..address.saturating_add(count)).contains(&a);
        match &mut self.model {
            Model::Meter(state) => {
                if touched(meter::RESET_ENERGY)
                    && self.bank.get(Table::Coil, meter::RESET_ENERGY) == Some(1)
                {
                    state.energy_wh = 0.0;
                    self.bank.set(Table::Coil, meter::RESET_ENERGY, 0);
                    tracing::info!(unit = self.unit, "energy counter reset");
                }
            }
            Model::Drive(state) => {
                if touched(drive::FAULT_RESET)
                    && self.bank.get(Table::Coil, drive::FAULT_RESET) == Some(1)
                {
                    if state.fault {
                        tracing::info!(unit = self.unit, "fault reset");
                    }
                    state.fault = false;
                    if state.mode == DriveMode::Faulted {
                        state.mode = DriveMode::Stopped;
                    }
                    self.bank.set(Table::Coil, drive::FAULT_RESET, 0);
                }
                // A faulted drive refuses to start: the run command is dropped until a reset.
                if touched(drive::RUN) && state.fault {
                    self.bank.set(Table::Coil, drive::RUN, 0);
                }
            }
            Model::Bench => {}
        }
        self.publish();
    }

    fn write(&mut self, table: Table, address: u16, values: &[u16]) -> Result<(), ExceptionCode> {
        self.bank.write(table, address, values)?;
        let count = u16::try_from(values.len()).unwrap_or(u16::MAX);
        self.after_write(table, address, count);
        Ok(())
    }

    /// Answers one request as the device would: the response, or the exception code
    /// (illegal function 0x01 for functions other than 1, 2, 3, 4, 5, 6, 15, 16 and 22; illegal
    /// data value 0x03 for a bad quantity or a value out of range; illegal data address 0x02 for
    /// an unmapped or read-only address).
    ///
    /// The bench device stamps the wall clock into its stamps before answering a read of
    /// holding registers.
    pub fn execute(&mut self, request: &Request<'_>) -> Result<Response, ExceptionCode> {
        if let (Model::Bench, Request::ReadHoldingRegisters(address, quantity)) =
            (&self.model, request)
        {
            self.stamp(*address, *quantity);
        }
        let bits = |words: Vec<u16>| words.into_iter().map(|w| w != 0).collect::<Vec<bool>>();
        match request {
            Request::ReadCoils(address, q) => {
                let q = quantity(usize::from(*q), MAX_READ_BITS)?;
                Ok(Response::ReadCoils(bits(self.bank.read(
                    Table::Coil,
                    *address,
                    q,
                )?)))
            }
            Request::ReadDiscreteInputs(address, q) => {
                let q = quantity(usize::from(*q), MAX_READ_BITS)?;
                Ok(Response::ReadDiscreteInputs(bits(self.bank.read(
                    Table::Discrete,
                    *address,
                    q,
                )?)))
            }
            Request::ReadHoldingRegisters(address, q) => {
                let q = quantity(usize::from(*q), MAX_READ_REGISTERS)?;
                Ok(Response::ReadHoldingRegisters(self.bank.read(
                    Table::Holding,
                    *address,
                    q,
                )?))
            }
            Request::ReadInputRegisters(address, q) => {
                let q = quantity(usize::from(*q), MAX_READ_REGISTERS)?;
                Ok(Response::ReadInputRegisters(self.bank.read(
                    Table::Input,
                    *address,
                    q,
                )?))
            }
            Request::WriteSingleCoil(address, on) => {
                self.write(Table::Coil, *address, &[u16::from(*on)])?;
                Ok(Response::WriteSingleCoil(*address, *on))
            }
            Request::WriteSingleRegister(address, value) => {
                self.write(Table::Holding, *address, &[*value])?;
                Ok(Response::WriteSingleRegister(*address, *value))
            }
            Request::WriteMultipleCoils(address, coils) => {
                let q = quantity(coils.len(), MAX_WRITE_BITS)?;
                let values: Vec<u16> = coils.iter().map(|c| u16::from(*c)).collect();
                self.write(Table::Coil, *address, &values)?;
                Ok(Response::WriteMultipleCoils(*address, q))
            }
            Request::WriteMultipleRegisters(address, words) => {
                let q = quantity(words.len(), MAX_WRITE_REGISTERS)?;
                self.write(Table::Holding, *address, words)?;
                Ok(Response::WriteMultipleRegisters(*address, q))
            }
            Request::MaskWriteRegister(address, and_mask, or_mask) => {
                let current = self
                    .bank
                    .read(Table::Holding, *address, 1)?
                    .first()
                    .copied()
                    .ok_or(ExceptionCode::IllegalDataAddress)?;
                let value = (current & and_mask) | (or_mask & !and_mask);
                self.write(Table::Holding, *address, &[value])?;
                Ok(Response::MaskWriteRegister(*address, *and_mask, *or_mask))
            }
            _ => Err(ExceptionCode::IllegalFunction),
        }
    }

    /// Applies a broadcast (unit 0) request: writes only, no answer; other functions are
    /// ignored, as devices ignore broadcast reads.
    pub fn broadcast(&mut self, request: &Request<'_>) {
        let write = matches!(
            request,
            Request::WriteSingleCoil(..)
                | Request::WriteSingleRegister(..)
                | Request::WriteMultipleCoils(..)
                | Request::WriteMultipleRegisters(..)
                | Request::MaskWriteRegister(..)
        );
        if write {
            let _ = self.execute(request);
        }
    }
}

/// °C around the drive.
const AMBIENT: f64 = 25.0;

/// The drive's motor current, A: magnetizing current while energized, a load share growing with
/// speed, and extra torque while accelerating.
fn drive_current(speed: f64, mode: DriveMode, energized: bool) -> f64 {
    if !energized && speed <= 0.0 {
        return 0.0;
    }
    let accel = if mode == DriveMode::Accelerating {
        3.0
    } else {
        0.0
    };
    1.5 + 6.5 * speed / f64::from(drive::MAX_SPEED) + accel
}

/// The meter's voltage (V) and primary current (A) at `t` seconds: slow deterministic drifts
/// around 230 V and 4.2 A (secondary), phase-shifted per unit so that meters differ.
fn meter_readings(unit: u8, t: f64, ct_ratio: f64) -> (f64, f64) {
    let phase = f64::from(unit);
    let v = 230.0 + 1.2 * (TAU * t / 60.0 + phase).sin() + 0.3 * (TAU * t / 7.3).sin();
    let i = (4.2 + 0.35 * (TAU * t / 37.0 + 1.0 + phase).sin()) * ct_ratio;
    (v, i)
}

#[cfg(test)]
mod tests;
