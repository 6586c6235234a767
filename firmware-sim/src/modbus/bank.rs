//! [`RegisterBank`]: the four Modbus data tables of one device, holding only the addresses its map
//! defines, each read-only or writable within a range, so that requests fail as on a real device.

use std::collections::BTreeMap;

use tokio_modbus::ExceptionCode;

/// The four Modbus data tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Table {
    /// Coils: single bits, read with FC 1, written with FC 5 and 15.
    Coil,
    /// Discrete inputs: single read-only bits, FC 2.
    Discrete,
    /// Input registers: read-only 16-bit words, FC 4.
    Input,
    /// Holding registers: 16-bit words, FC 3, written with FC 6, 16 and 22.
    Holding,
}

impl Table {
    /// All four, in the order above.
    pub const ALL: [Table; 4] = [Table::Coil, Table::Discrete, Table::Input, Table::Holding];

    /// Whether the table holds bits (coils, discrete inputs) rather than words.
    pub fn is_bits(self) -> bool {
        matches!(self, Table::Coil | Table::Discrete)
    }

    /// The name used in `[bindings.modbus]` (`coil`, `discrete`, `input`, `holding`).
    pub fn name(self) -> &'static str {
        match self {
            Table::Coil => "coil",
            Table::Discrete => "discrete",
            Table::Input => "input",
            Table::Holding => "holding",
        }
    }

    fn index(self) -> usize {
        match self {
            Table::Coil => 0,
            Table::Discrete => 1,
            Table::Input => 2,
            Table::Holding => 3,
        }
    }
}

impl std::fmt::Display for Table {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// What a client may do with one mapped address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Readable; a write is refused with illegal data address (0x02), as most devices do.
    ReadOnly,
    /// Readable and writable with a value in `min..=max`; other values are refused with
    /// illegal data value (0x03). Bits use `0..=1`.
    Writable {
        /// Smallest accepted raw value.
        min: u16,
        /// Largest accepted raw value.
        max: u16,
    },
}

impl Access {
    /// Writable with any value.
    pub const ANY: Access = Access::Writable {
        min: 0,
        max: u16::MAX,
    };
    /// A writable bit.
    pub const BIT: Access = Access::Writable { min: 0, max: 1 };
}

#[derive(Debug, Clone, Copy)]
struct Cell {
    value: u16,
    access: Access,
}

/// The data tables of one device: only mapped addresses exist; bits are stored as 0 or 1.
#[derive(Debug, Clone, Default)]
pub struct RegisterBank {
    tables: [BTreeMap<u16, Cell>; 4],
}

/// The addresses `address .. address + quantity`, or illegal data address if that runs past
/// 65535 (or is empty).
fn span(address: u16, quantity: u16) -> Result<std::ops::RangeInclusive<u16>, ExceptionCode> {
    let last = quantity
        .checked_sub(1)
        .and_then(|q| address.checked_add(q))
        .ok_or(ExceptionCode::IllegalDataAddress)?;
    Ok(address..=last)
}

impl RegisterBank {
    /// An empty bank (every request fails with illegal data address).
    pub fn new() -> Self {
        Self::default()
    }

    /// Maps `count` addresses from `address` in `table`, initially 0, all with `access`.
    /// Addresses past 65535 are left out.
    pub fn map(&mut self, table: Table, address: u16, count: u16, access: Access) {
        let cells = &mut self.tables[table.index()];
        for offset in 0..count {
            if let Some(a) = address.checked_add(offset) {
                cells.insert(a, Cell { value: 0, access });
            }
        }
    }

    /// Whether `address` is mapped in `table`.
    pub fn is_mapped(&self, table: Table, address: u16) -> bool {
        self.tables[table.index()].contains_key(&address)
    }

    /// The mapped addresses of `table`, in order.
    pub fn addresses(&self, table: Table) -> impl Iterator<Item = u16> + '_ {
        self.tables[table.index()].keys().copied()
    }

    /// The value at `address` (0 or 1 for bits), if mapped.
    pub fn get(&self, table: Table, address: u16) -> Option<u16> {
        self.tables[table.index()].get(&address).map(|c| c.value)
    }

    /// Sets a mapped value from the device's side, whatever its access; false if unmapped.
    /// Bits store `value != 0`.
    pub fn set(&mut self, table: Table, address: u16, value: u16) -> bool {
        match self.tables[table.index()].get_mut(&address) {
            Some(cell) => {
                cell.value = if table.is_bits() {
                    u16::from(value != 0)
                } else {
                    value
                };
                true
            }
            None => false,
        }
    }

    /// Reads `quantity` values from `address`, as a client does: illegal data address (0x02) unless
    /// every address is mapped. Quantity limits are the caller's (they depend on the function).
    pub fn read(
        &self,
        table: Table,
        address: u16,
        quantity: u16,
    ) -> Result<Vec<u16>, ExceptionCode> {
        let cells = &self.tables[table.index()];
        span(address, quantity)?
            .map(|a| {
                cells
                    .get(&a)
                    .map(|c| c.value)
                    .ok_or(ExceptionCode::IllegalDataAddress)
            })
            .collect()
    }

    /// Whether a client may write `values` from `address`: illegal data address (0x02) for an
    /// unmapped or read-only address, illegal data value (0x03) for a value out of range.
    pub fn check_write(
        &self,
        table: Table,
        address: u16,
        values: &[u16],
    ) -> Result<(), ExceptionCode> {
        if matches!(table, Table::Discrete | Table::Input) {
            return Err(ExceptionCode::IllegalDataAddress);
        }
        let quantity = u16::try_from(values.len()).map_err(|_| ExceptionCode::IllegalDataValue)?;
        let cells = &self.tables[table.index()];
        let mut out_of_range = false;
        for (a, value) in span(address, quantity)?.zip(values) {
            match cells.get(&a).map(|c| c.access) {
                None | Some(Access::ReadOnly) => return Err(ExceptionCode::IllegalDataAddress),
                Some(Access::Writable { min, max }) => {
                    out_of_range |= !(min..=max).contains(value);
                }
            }
        }
        if out_of_range {
            return Err(ExceptionCode::IllegalDataValue);
        }
        Ok(())
    }

    /// Writes `values` from `address` as a client does: all or nothing (see
    /// [`RegisterBank::check_write`]).
    pub fn write(
        &mut self,
        table: Table,
        address: u16,
        values: &[u16],
    ) -> Result<(), ExceptionCode> {
        self.check_write(table, address, values)?;
        for (a, value) in (address..=u16::MAX).zip(values) {
            self.set(table, a, *value);
        }
        Ok(())
    }

    /// Stores `value` in two registers, most significant word first (big word order).
    pub fn set_u32(&mut self, table: Table, address: u16, value: u32) {
        let [a, b, c, d] = value.to_be_bytes();
        self.set(table, address, u16::from_be_bytes([a, b]));
        if let Some(next) = address.checked_add(1) {
            self.set(table, next, u16::from_be_bytes([c, d]));
        }
    }

    /// Reads two registers as a big-word-order `u32`, if both are mapped.
    pub fn get_u32(&self, table: Table, address: u16) -> Option<u32> {
        let high = self.get(table, address)?;
        let low = self.get(table, address.checked_add(1)?)?;
        Some((u32::from(high) << 16) | u32::from(low))
    }

    /// Stores an IEEE 754 `f32` in two registers, big word order.
    pub fn set_f32(&mut self, table: Table, address: u16, value: f32) {
        self.set_u32(table, address, value.to_bits());
    }

    /// Reads two registers as a big-word-order `f32`, if both are mapped.
    pub fn get_f32(&self, table: Table, address: u16) -> Option<f32> {
        self.get_u32(table, address).map(f32::from_bits)
    }

    /// Stores `text` in `count` registers, two bytes per register, first byte high; cut to fit
    /// and padded with NUL.
    pub fn set_string(&mut self, table: Table, address: u16, count: u16, text: &str) {
        let bytes = text.as_bytes();
        for i in 0..count {
            let at = usize::from(i) * 2;
            let high = bytes.get(at).copied().unwrap_or(0);
            let low = bytes.get(at + 1).copied().unwrap_or(0);
            if let Some(a) = address.checked_add(i) {
                self.set(table, a, u16::from_be_bytes([high, low]));
            }
        }
    }

    /// Reads `count` registers as a string (see [`RegisterBank::set_string`]), trailing NULs and
    /// spaces trimmed; `None` if an address is unmapped or the bytes are not UTF-8.
    pub fn get_string(&self, table: Table, address: u16, count: u16) -> Option<String> {
        let words = self.read(table, address, count).ok()?;
        let bytes: Vec<u8> = words.iter().flat_map(|w| w.to_be_bytes()).collect();
        let text = String::from_utf8(bytes).ok()?;
        Some(text.trim_end_matches(['\0', ' ']).to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bank() -> RegisterBank {
        let mut b = RegisterBank::new();
        b.map(Table::Holding, 10, 2, Access::Writable { min: 0, max: 100 });
        b.map(Table::Holding, 12, 1, Access::ReadOnly);
        b.map(Table::Coil, 0, 1, Access::BIT);
        b.map(Table::Input, 65534, 4, Access::ReadOnly);
        b
    }

    #[test]
    fn reads_need_every_address_mapped() {
        let b = bank();
        assert_eq!(b.read(Table::Holding, 10, 3), Ok(vec![0, 0, 0]));
        assert_eq!(
            b.read(Table::Holding, 9, 2),
            Err(ExceptionCode::IllegalDataAddress)
        );
        assert_eq!(
            b.read(Table::Holding, 12, 2),
            Err(ExceptionCode::IllegalDataAddress)
        );
        // Mapping stops at 65535; a read past it is an address error, not a wrap.
        assert_eq!(b.read(Table::Input, 65534, 2), Ok(vec![0, 0]));
        assert_eq!(
            b.read(Table::Input, 65535, 2),
            Err(ExceptionCode::IllegalDataAddress)
        );
        assert_eq!(
            b.read(Table::Discrete, 0, 1),
            Err(ExceptionCode::IllegalDataAddress)
        );
    }

    #[test]
    fn writes_check_access_and_range_all_or_nothing() {
        let mut b = bank();
        assert_eq!(b.write(Table::Holding, 10, &[5, 6]), Ok(()));
        assert_eq!(b.read(Table::Holding, 10, 2), Ok(vec![5, 6]));
        assert_eq!(
            b.write(Table::Holding, 11, &[7, 8]),
            Err(ExceptionCode::IllegalDataAddress),
            "12 is read-only"
        );
        assert_eq!(
            b.write(Table::Holding, 10, &[9, 101]),
            Err(ExceptionCode::IllegalDataValue)
        );
        assert_eq!(b.read(Table::Holding, 10, 2), Ok(vec![5, 6]), "untouched");
        assert_eq!(
            b.write(Table::Input, 65534, &[1]),
            Err(ExceptionCode::IllegalDataAddress)
        );
        assert_eq!(b.write(Table::Coil, 0, &[1]), Ok(()));
        assert_eq!(b.get(Table::Coil, 0), Some(1));
    }

    #[test]
    fn typed_values_use_big_endian_big_word_order() {
        let mut b = RegisterBank::new();
        b.map(Table::Holding, 0, 12, Access::ANY);
        b.set_f32(Table::Holding, 0, 230.5);
        assert_eq!(b.read(Table::Holding, 0, 2), Ok(vec![0x4366, 0x8000]));
        assert_eq!(b.get_f32(Table::Holding, 0), Some(230.5));
        b.set_u32(Table::Holding, 2, 0x0001_E240);
        assert_eq!(b.read(Table::Holding, 2, 2), Ok(vec![0x0001, 0xE240]));
        b.set_string(Table::Holding, 4, 8, "MTR-7");
        assert_eq!(
            b.read(Table::Holding, 4, 4),
            Ok(vec![0x4D54, 0x522D, 0x3700, 0])
        );
        assert_eq!(b.get_string(Table::Holding, 4, 8).as_deref(), Some("MTR-7"));
    }
}
