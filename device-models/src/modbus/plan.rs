//! The read plan: which Modbus reads fetch a poll group's properties, with neighbours merged into
//! one request so that a poll takes as few round trips as the binding's caps allow.

use std::time::Duration;

use super::config::Table;

/// Properties polled at one interval, and the reads that fetch them.
#[derive(Clone, Debug, PartialEq)]
pub struct PollGroup {
    /// The group's name (`default`, or a key of `groups`).
    pub name: String,
    /// How often the group is read.
    pub interval: Duration,
    /// The reads of one poll, by table (coils, discrete inputs, input registers, holding
    /// registers) then address.
    pub reads: Vec<ReadRequest>,
}

/// One Modbus read (FC 1, 2, 3 or 4) and which properties sit where in its answer.
///
/// Built by [`ModbusModel`](super::ModbusModel) (its poll groups, or
/// [`read_back`](super::ModbusModel::read_back)); hand its answer to
/// [`ModbusModel::decode`](super::ModbusModel::decode) of the same model.
#[derive(Clone, Debug, PartialEq)]
pub struct ReadRequest {
    /// The table read.
    pub table: Table,
    /// The first address read.
    pub address: u16,
    /// Registers or bits read.
    pub count: u16,
    /// The properties in the answer, in address order.
    pub(crate) slots: Vec<Slot>,
}

impl ReadRequest {
    /// How many properties the answer carries.
    pub fn property_count(&self) -> usize {
        self.slots.len()
    }
}

/// One property in a read's answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Slot {
    /// Index of the property in the model.
    pub(crate) property: usize,
    /// Where its first register or bit is in the answer.
    pub(crate) offset: u16,
}

/// The answer to a [`ReadRequest`]: bits for coils and discrete inputs, registers (as received,
/// first byte high) for input and holding registers.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum ReadData<'a> {
    /// Coils or discrete inputs, from the request's first address on.
    Bits(&'a [bool]),
    /// Registers, from the request's first address on.
    Registers(&'a [u16]),
}

/// A property to plan a read for.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Item {
    pub(crate) property: usize,
    pub(crate) address: u16,
    pub(crate) len: u16,
}

/// The reads of one table that cover `items`: sorted by address, neighbours at most `max_gap`
/// apart merged while the merged span stays within `cap` (each item must fit `cap` alone).
pub(crate) fn plan_table(table: Table, items: &[Item], cap: u16, max_gap: u16) -> Vec<ReadRequest> {
    let mut sorted = items.to_vec();
    sorted.sort_by_key(|item| (item.address, item.len, item.property));
    let mut reads = Vec::new();
    // (start, end exclusive, items) of the read being built; u32 so that 65535 + len cannot overflow.
    let mut current: Option<(u32, u32, Vec<Item>)> = None;
    for item in sorted {
        let start = u32::from(item.address);
        let end = start + u32::from(item.len);
        if let Some((first, last, members)) = &mut current {
            let merged_end = (*last).max(end);
            if start <= *last + u32::from(max_gap) && merged_end - *first <= u32::from(cap) {
                *last = merged_end;
                members.push(item);
                continue;
            }
        }
        if let Some(done) = current.replace((start, end, vec![item])) {
            reads.push(finish(table, done));
        }
    }
    if let Some(done) = current {
        reads.push(finish(table, done));
    }
    reads
}

fn finish(table: Table, (start, end, members): (u32, u32, Vec<Item>)) -> ReadRequest {
    let address = u16::try_from(start).unwrap_or(u16::MAX);
    ReadRequest {
        table,
        address,
        // At most the cap, itself at most 2000.
        count: u16::try_from(end - start).unwrap_or(u16::MAX),
        slots: members
            .into_iter()
            .map(|item| Slot {
                property: item.property,
                offset: item.address.saturating_sub(address),
            })
            .collect(),
    }
}
