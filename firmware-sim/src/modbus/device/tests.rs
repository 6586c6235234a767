use std::borrow::Cow;

use super::*;

fn ok(d: &mut ModbusDevice, r: Request<'_>) -> Response {
    d.execute(&r)
        .unwrap_or_else(|e| panic!("{r:?} failed: {e:?}"))
}

fn exception(d: &mut ModbusDevice, r: Request<'_>) -> ExceptionCode {
    match d.execute(&r) {
        Ok(resp) => panic!("{r:?} answered {resp:?}"),
        Err(e) => e,
    }
}

fn input(d: &mut ModbusDevice, address: u16, count: u16) -> Vec<u16> {
    match ok(d, Request::ReadInputRegisters(address, count)) {
        Response::ReadInputRegisters(w) => w,
        other => panic!("{other:?}"),
    }
}

fn holding(d: &mut ModbusDevice, address: u16, count: u16) -> Vec<u16> {
    match ok(d, Request::ReadHoldingRegisters(address, count)) {
        Response::ReadHoldingRegisters(w) => w,
        other => panic!("{other:?}"),
    }
}

fn f32_at(words: &[u16], at: usize) -> f32 {
    f32::from_bits((u32::from(words[at]) << 16) | u32::from(words[at + 1]))
}

fn u32_at(words: &[u16], at: usize) -> u32 {
    (u32::from(words[at]) << 16) | u32::from(words[at + 1])
}

#[test]
fn meter_reports_plausible_consistent_values() {
    let mut m = ModbusDevice::new(1, DeviceKind::Meter);
    let w = input(&mut m, meter::VOLTAGE, 9);
    let (v, i, p) = (f32_at(&w, 0), f32_at(&w, 2), f32_at(&w, 4));
    assert!((228.0..232.0).contains(&v), "voltage {v}");
    assert!((3.8..4.6).contains(&i), "current {i}");
    assert!((p - v * i).abs() < 0.01 * p, "power {p} != {v} * {i}");
    assert_eq!(
        u32_at(&w, 6),
        13_345,
        "energy starts at 12345 + 1000 * unit"
    );
    assert!((4997..=5003).contains(&w[8]), "frequency {}", w[8]);
    assert_eq!(holding(&mut m, meter::CT_RATIO, 1), [1]);
    assert_eq!(
        m.bank()
            .get_string(Table::Holding, meter::SERIAL, meter::SERIAL_COUNT),
        Some("MTR-1".to_owned())
    );
    // Serial number and firmware are adjacent: one read covers both.
    let both = holding(&mut m, meter::SERIAL, 12);
    assert_eq!(both[0], u16::from_be_bytes(*b"MT"));
    assert_eq!(both[8], u16::from_be_bytes(*b"1."));
    assert_eq!(
        m.bank()
            .get_string(Table::Holding, meter::FIRMWARE, meter::FIRMWARE_COUNT),
        Some(meter::FIRMWARE_VERSION.to_owned())
    );
}

#[test]
fn meter_values_drift_and_energy_integrates_power() {
    let mut m = ModbusDevice::new(3, DeviceKind::Meter);
    let start = input(&mut m, 0, 9);
    m.advance(Duration::from_secs(3600));
    let later = input(&mut m, 0, 9);
    assert_ne!(f32_at(&start, 0), f32_at(&later, 0), "voltage drifts");
    let used = u32_at(&later, 6) - u32_at(&start, 6);
    // About 4.2 A at 230 V for an hour.
    assert!((900..1050).contains(&used), "{used} Wh in an hour");
    // Deterministic: the same history gives the same registers.
    let mut again = ModbusDevice::new(3, DeviceKind::Meter);
    for _ in 0..36 {
        again.advance(Duration::from_secs(100));
    }
    assert_eq!(input(&mut again, 0, 9), later);
}

#[test]
fn meter_ct_ratio_scales_current_and_reset_zeroes_energy() {
    let mut m = ModbusDevice::new(1, DeviceKind::Meter);
    let before = f32_at(&input(&mut m, 0, 4), 2);
    assert_eq!(
        ok(&mut m, Request::WriteSingleRegister(meter::CT_RATIO, 10)),
        Response::WriteSingleRegister(meter::CT_RATIO, 10)
    );
    let after = f32_at(&input(&mut m, 0, 4), 2);
    assert!((after / before - 10.0).abs() < 1e-3, "{before} -> {after}");
    assert_eq!(
        exception(&mut m, Request::WriteSingleRegister(meter::CT_RATIO, 0)),
        ExceptionCode::IllegalDataValue
    );
    assert_eq!(
        holding(&mut m, meter::CT_RATIO, 1),
        [10],
        "a refused write changes nothing"
    );

    m.advance(Duration::from_secs(60));
    assert!(u32_at(&input(&mut m, 0, 9), 6) > 13_345);
    assert_eq!(
        ok(&mut m, Request::WriteSingleCoil(meter::RESET_ENERGY, true)),
        Response::WriteSingleCoil(meter::RESET_ENERGY, true)
    );
    assert_eq!(u32_at(&input(&mut m, 0, 9), 6), 0);
    assert_eq!(
        ok(&mut m, Request::ReadCoils(meter::RESET_ENERGY, 1)),
        Response::ReadCoils(vec![false]),
        "the reset coil falls back"
    );
}

#[test]
fn meter_exceptions_follow_the_map() {
    let mut m = ModbusDevice::new(1, DeviceKind::Meter);
    let e = |m: &mut ModbusDevice, r| exception(m, r);
    // Unmapped, and reads running past the end of a block.
    assert_eq!(
        e(&mut m, Request::ReadInputRegisters(9, 1)),
        ExceptionCode::IllegalDataAddress
    );
    assert_eq!(
        e(&mut m, Request::ReadInputRegisters(8, 2)),
        ExceptionCode::IllegalDataAddress
    );
    assert_eq!(
        e(&mut m, Request::ReadHoldingRegisters(99, 2)),
        ExceptionCode::IllegalDataAddress
    );
    assert_eq!(
        e(&mut m, Request::ReadHoldingRegisters(205, 8)),
        ExceptionCode::IllegalDataAddress
    );
    assert_eq!(
        e(&mut m, Request::ReadDiscreteInputs(0, 1)),
        ExceptionCode::IllegalDataAddress
    );
    assert_eq!(
        e(&mut m, Request::ReadCoils(9, 2)),
        ExceptionCode::IllegalDataAddress
    );
    assert_eq!(
        e(&mut m, Request::ReadHoldingRegisters(65535, 2)),
        ExceptionCode::IllegalDataAddress
    );
    // Read-only registers.
    assert_eq!(
        e(&mut m, Request::WriteSingleRegister(meter::SERIAL, 1)),
        ExceptionCode::IllegalDataAddress
    );
    // Quantities: checked before addresses.
    assert_eq!(
        e(&mut m, Request::ReadInputRegisters(0, 0)),
        ExceptionCode::IllegalDataValue
    );
    assert_eq!(
        e(&mut m, Request::ReadInputRegisters(0, 126)),
        ExceptionCode::IllegalDataValue
    );
    assert_eq!(
        e(&mut m, Request::ReadCoils(10, 2001)),
        ExceptionCode::IllegalDataValue
    );
    assert_eq!(
        e(
            &mut m,
            Request::WriteMultipleRegisters(100, Cow::Owned(vec![1; 124]))
        ),
        ExceptionCode::IllegalDataValue
    );
    // Functions it does not implement.
    assert_eq!(
        e(&mut m, Request::ReportServerId),
        ExceptionCode::IllegalFunction
    );
    assert_eq!(
        e(
            &mut m,
            Request::ReadWriteMultipleRegisters(0, 1, 100, Cow::Owned(vec![2]))
        ),
        ExceptionCode::IllegalFunction
    );
    assert_eq!(
        e(&mut m, Request::Custom(0x41, Cow::Owned(vec![]))),
        ExceptionCode::IllegalFunction
    );
    // The largest legal read works where the map allows it.
    assert_eq!(holding(&mut m, meter::SERIAL, 12).len(), 12);
}

#[test]
fn drive_ramps_towards_the_setpoint_while_running() {
    let mut d = ModbusDevice::new(2, DeviceKind::Drive);
    let status = |d: &mut ModbusDevice| holding(d, drive::STATUS, 1)[0];
    let mode = |s: u16| (s >> drive::STATUS_MODE_SHIFT) & 0xF;
    assert_eq!(holding(&mut d, drive::SPEED_SETPOINT, 2), [0, 50]);
    assert_eq!(status(&mut d), drive::STATUS_READY, "ready, stopped");
    assert_eq!(input(&mut d, 0, 3), [0, 0, 250]);

    // 1 s from 0 to 3000 rpm; 1500 rpm with FC 16, acceleration with FC 6.
    ok(
        &mut d,
        Request::WriteMultipleRegisters(drive::SPEED_SETPOINT, Cow::Owned(vec![1500, 10])),
    );
    assert_eq!(holding(&mut d, drive::SPEED_SETPOINT, 2), [1500, 10]);
    ok(&mut d, Request::WriteSingleCoil(drive::RUN, true));
    d.advance(Duration::from_millis(250));
    let s = status(&mut d);
    assert_eq!(s & drive::STATUS_RUNNING, drive::STATUS_RUNNING);
    assert_eq!(mode(s), DriveMode::Accelerating as u16);
    let live = input(&mut d, 0, 3);
    assert_eq!(live[0], 750);
    assert_eq!(
        live[1] as i16, 61,
        "1.5 A + 6.5 A * 750/3000 + 3 A accelerating"
    );
    d.advance(Duration::from_secs(1));
    assert_eq!(input(&mut d, 0, 1), [1500]);
    assert_eq!(mode(status(&mut d)), DriveMode::AtSpeed as u16);
    d.advance(Duration::from_secs(600));
    let warm = input(&mut d, 2, 1)[0] as i16;
    assert!(
        (400..=500).contains(&warm),
        "settles near 25 + 4 * 4.75 °C: {warm}"
    );

    // Stop: decelerates to 0.
    ok(&mut d, Request::WriteSingleCoil(drive::RUN, false));
    d.advance(Duration::from_millis(100));
    assert_eq!(mode(status(&mut d)), DriveMode::Decelerating as u16);
    d.advance(Duration::from_secs(1));
    assert_eq!(input(&mut d, 0, 2), [0, 0]);
    assert_eq!(status(&mut d), drive::STATUS_READY);
}

#[test]
fn drive_checks_values_and_masks_bits() {
    let mut d = ModbusDevice::new(2, DeviceKind::Drive);
    assert_eq!(
        exception(
            &mut d,
            Request::WriteSingleRegister(drive::SPEED_SETPOINT, 3001)
        ),
        ExceptionCode::IllegalDataValue
    );
    assert_eq!(
        exception(&mut d, Request::WriteSingleRegister(drive::STATUS, 0)),
        ExceptionCode::IllegalDataAddress,
        "the status word is read-only"
    );
    assert_eq!(
        exception(&mut d, Request::MaskWriteRegister(drive::STATUS, 0xFFF7, 0)),
        ExceptionCode::IllegalDataAddress
    );
    // Mask write: (current AND and_mask) OR (or_mask AND NOT and_mask).
    ok(
        &mut d,
        Request::WriteSingleRegister(drive::SPEED_SETPOINT, 0x0A0A),
    );
    assert_eq!(
        ok(
            &mut d,
            Request::MaskWriteRegister(drive::SPEED_SETPOINT, 0xFF00, 0x00A0)
        ),
        Response::MaskWriteRegister(drive::SPEED_SETPOINT, 0xFF00, 0x00A0)
    );
    assert_eq!(holding(&mut d, drive::SPEED_SETPOINT, 1), [0x0AA0]);
    assert_eq!(
        exception(
            &mut d,
            Request::MaskWriteRegister(drive::SPEED_SETPOINT, 0x0000, 0xFFFF)
        ),
        ExceptionCode::IllegalDataValue,
        "the result is range-checked"
    );
    // Coils 0 and 5 only: a write spanning 1..=4 is refused whole.
    assert_eq!(
        exception(
            &mut d,
            Request::WriteMultipleCoils(0, Cow::Owned(vec![true; 6]))
        ),
        ExceptionCode::IllegalDataAddress
    );
    assert_eq!(
        ok(&mut d, Request::ReadCoils(drive::RUN, 1)),
        Response::ReadCoils(vec![false])
    );
    assert_eq!(
        exception(&mut d, Request::ReadDiscreteInputs(0, 4)),
        ExceptionCode::IllegalDataAddress
    );
    assert_eq!(
        ok(&mut d, Request::ReadDiscreteInputs(drive::FAULT, 1)),
        Response::ReadDiscreteInputs(vec![false])
    );
}

#[test]
fn drive_faults_until_reset() {
    let mut d = ModbusDevice::new(2, DeviceKind::Drive);
    ok(
        &mut d,
        Request::WriteSingleRegister(drive::SPEED_SETPOINT, 1200),
    );
    ok(&mut d, Request::WriteSingleCoil(drive::RUN, true));
    d.advance(Duration::from_secs(10));
    assert_eq!(input(&mut d, 0, 1), [1200]);
    assert!(d.trip());
    assert_eq!(
        ok(&mut d, Request::ReadDiscreteInputs(drive::FAULT, 1)),
        Response::ReadDiscreteInputs(vec![true])
    );
    let s = holding(&mut d, drive::STATUS, 1)[0];
    assert_eq!(
        s,
        (DriveMode::Faulted as u16) << drive::STATUS_MODE_SHIFT,
        "not running, not ready"
    );
    // A faulted drive drops a run command.
    ok(&mut d, Request::WriteSingleCoil(drive::RUN, true));
    assert_eq!(
        ok(&mut d, Request::ReadCoils(drive::RUN, 1)),
        Response::ReadCoils(vec![false])
    );
    d.advance(Duration::from_secs(10));
    assert_eq!(input(&mut d, 0, 1), [0], "coasted down");

    ok(&mut d, Request::WriteSingleCoil(drive::FAULT_RESET, true));
    assert_eq!(
        ok(&mut d, Request::ReadDiscreteInputs(drive::FAULT, 1)),
        Response::ReadDiscreteInputs(vec![false])
    );
    assert_eq!(
        ok(&mut d, Request::ReadCoils(drive::FAULT_RESET, 1)),
        Response::ReadCoils(vec![false]),
        "the reset coil falls back"
    );
    assert_eq!(holding(&mut d, drive::STATUS, 1), [drive::STATUS_READY]);
    let mut meter = ModbusDevice::new(1, DeviceKind::Meter);
    assert!(!meter.trip(), "meters do not trip");
}

#[test]
fn broadcasts_apply_writes_only() {
    let mut d = ModbusDevice::new(2, DeviceKind::Drive);
    d.broadcast(&Request::WriteSingleRegister(drive::SPEED_SETPOINT, 900));
    d.broadcast(&Request::WriteSingleRegister(drive::STATUS, 1));
    assert_eq!(holding(&mut d, drive::SPEED_SETPOINT, 1), [900]);
    assert_eq!(holding(&mut d, drive::STATUS, 1), [drive::STATUS_READY]);
}
