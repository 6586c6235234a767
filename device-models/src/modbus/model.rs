//! [`ModbusModel`]: a `[bindings.modbus]` table checked against its thing type and compiled into
//! poll groups with their read plans, property decoders and the writes of sets and actions.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::Value;

use crate::key_path::KeyPath;
use crate::names::is_valid_name;
use crate::schema::{DataSchema, SchemaType};
use crate::thing_type::{PropertyKind, ThingType};

use super::MODBUS_BINDING;
use super::codec::{Codec, ModbusValueError, Write};
use super::config::{
    DEFAULT_GROUP, MAX_GAP, MAX_POLL_MS, MAX_READ_BITS, MAX_READ_REGISTERS, MAX_WRITE_REGISTERS,
    MIN_POLL_MS, ModbusBinding, ModbusConfigError, ModbusConfigProblem, Order, Table, ValueType,
    WriteMapping,
};
use super::plan::{Item, PollGroup, ReadData, ReadRequest, Slot, plan_table};

/// A type's `[bindings.modbus]`, checked against the type and compiled: what to poll and how often,
/// how answers become property values, and how sets and actions become writes.
///
/// Immutable and cheap to share (`Arc`) between the devices of one type. Everything is synchronous,
/// does no I/O and never panics on what a device answers.
#[derive(Debug, Clone)]
pub struct ModbusModel {
    type_id: String,
    /// In name order.
    properties: Vec<MappedProperty>,
    groups: Vec<PollGroup>,
    actions: BTreeMap<String, Vec<ActionWrite>>,
}

#[derive(Debug, Clone)]
struct MappedProperty {
    name: String,
    table: Table,
    address: u16,
    codec: Codec,
    writable: bool,
    info: bool,
}

#[derive(Debug, Clone)]
struct ActionWrite {
    address: u16,
    codec: Codec,
    source: Source,
}

#[derive(Debug, Clone)]
enum Source {
    /// A constant, encoded when the model was built.
    Constant(Write),
    /// A JSON pointer into the action's input.
    Input(String),
}

fn invalid(at: KeyPath, problem: ModbusConfigProblem) -> ModbusConfigError {
    ModbusConfigError::invalid(at, problem)
}

fn check_range(at: KeyPath, value: u64, min: u64, max: u64) -> Result<(), ModbusConfigError> {
    if (min..=max).contains(&value) {
        Ok(())
    } else {
        Err(invalid(
            at,
            ModbusConfigProblem::OutOfRange { value, min, max },
        ))
    }
}

/// A cap checked to be within `1..=limit` (at most 2000), as a u16.
fn cap(at: KeyPath, value: u64, limit: u64) -> Result<u16, ModbusConfigError> {
    check_range(at.clone(), value, 1, limit)?;
    u16::try_from(value).map_err(|_| {
        invalid(
            at,
            ModbusConfigProblem::OutOfRange {
                value,
                min: 1,
                max: limit,
            },
        )
    })
}

/// The schema a JSON pointer leads to through `properties` of objects and `items` of arrays.
fn schema_at<'s>(schema: &'s DataSchema, pointer: &str) -> Option<&'s DataSchema> {
    if pointer.is_empty() {
        return Some(schema);
    }
    let mut current = schema;
    for token in pointer.split('/').skip(1) {
        let token = token.replace("~1", "/").replace("~0", "~");
        current = match current.schema_type {
            SchemaType::Object => current.properties.get(&token)?,
            SchemaType::Array => {
                token.parse::<usize>().ok()?;
                current.items.as_deref()?
            }
            _ => return None,
        };
    }
    Some(current)
}

fn check_schema(codec: &Codec, schema: SchemaType, at: KeyPath) -> Result<(), ModbusConfigError> {
    if codec.fits_schema(schema) {
        Ok(())
    } else {
        Err(invalid(
            at,
            ModbusConfigProblem::SchemaMismatch {
                ty: codec.ty(),
                scaled: codec.scaled_note(),
                reads: codec.reads_as(),
                schema,
            },
        ))
    }
}

/// A value written with one request: at most one "write multiple registers" of registers.
fn check_writable_size(
    mapping_ty: ValueType,
    count: Option<u64>,
    at: KeyPath,
) -> Result<(), ModbusConfigError> {
    match count {
        Some(count) if mapping_ty == ValueType::String && count > MAX_WRITE_REGISTERS => {
            Err(invalid(
                at,
                ModbusConfigProblem::TooLongToWrite {
                    count,
                    max: MAX_WRITE_REGISTERS,
                },
            ))
        }
        _ => Ok(()),
    }
}

impl ModbusModel {
    /// Reads `bindings.modbus` of the type and checks it against the type's properties and actions.
    ///
    /// Fails when the table is absent or wrong; the message names the type id and the key
    /// (relative to `[bindings.modbus]`) of the first problem.
    pub fn new(thing_type: &ThingType) -> Result<Self, ModbusConfigError> {
        let table =
            thing_type
                .binding(MODBUS_BINDING)
                .ok_or_else(|| ModbusConfigError::Missing {
                    type_id: thing_type.id.clone(),
                })?;
        let binding =
            ModbusBinding::from_toml(table).map_err(|error| error.in_type(&thing_type.id))?;
        Self::with_binding(thing_type, &binding)
    }

    /// Checks a parsed binding against a thing type and compiles it, as [`ModbusModel::new`] does
    /// with the type's own table.
    pub fn with_binding(
        thing_type: &ThingType,
        binding: &ModbusBinding,
    ) -> Result<Self, ModbusConfigError> {
        Self::compile(thing_type, binding).map_err(|error| error.in_type(&thing_type.id))
    }

    fn compile(thing_type: &ThingType, binding: &ModbusBinding) -> Result<Self, ModbusConfigError> {
        let root = KeyPath::root();
        let max_registers = cap(
            root.key("max_registers"),
            binding.max_registers,
            MAX_READ_REGISTERS,
        )?;
        let max_bits = cap(root.key("max_bits"), binding.max_bits, MAX_READ_BITS)?;
        check_range(root.key("max_gap"), binding.max_gap, 0, MAX_GAP)?;
        let max_gap = u16::try_from(binding.max_gap).unwrap_or(0);
        check_range(
            root.key("poll_ms"),
            binding.poll_ms,
            MIN_POLL_MS,
            MAX_POLL_MS,
        )?;
        let mut intervals = vec![(DEFAULT_GROUP.to_owned(), binding.poll_ms)];
        for (name, group) in &binding.groups {
            let at = root.key("groups").key(name);
            if name == DEFAULT_GROUP {
                return Err(invalid(at, ModbusConfigProblem::DefaultGroupDefined));
            }
            if !is_valid_name(name) {
                return Err(invalid(at, ModbusConfigProblem::InvalidName(name.clone())));
            }
            check_range(at.key("poll_ms"), group.poll_ms, MIN_POLL_MS, MAX_POLL_MS)?;
            intervals.push((name.clone(), group.poll_ms));
        }
        let orders = (binding.byte_order, binding.word_order);

        let mut properties = Vec::with_capacity(binding.properties.len());
        // Per property (same index): its group's index in `intervals`.
        let mut group_of = Vec::with_capacity(binding.properties.len());
        for (name, mapping) in &binding.properties {
            let at = root.key("properties").key(name);
            let Some(property) = thing_type.property(name) else {
                return Err(invalid(
                    at,
                    ModbusConfigProblem::NoSuchProperty(name.clone()),
                ));
            };
            let codec = Codec::compile(&mapping.location(), orders, &at)?;
            let group = mapping.group.as_deref().unwrap_or(DEFAULT_GROUP);
            let Some(group_index) = intervals.iter().position(|(g, _)| g == group) else {
                return Err(invalid(
                    at.key("group"),
                    ModbusConfigProblem::NoSuchGroup(group.to_owned()),
                ));
            };
            check_schema(&codec, property.schema.schema_type, at.key("type"))?;
            if property.writable {
                if !mapping.table.is_writable() {
                    return Err(invalid(
                        at.key("table"),
                        ModbusConfigProblem::WritableOnReadOnlyTable(mapping.table),
                    ));
                }
                check_writable_size(mapping.ty, mapping.count, at.key("count"))?;
            }
            let (limit, cap_key, unit) = if mapping.table.is_bits() {
                (max_bits, "max_bits", "bits")
            } else {
                (max_registers, "max_registers", "registers")
            };
            if codec.len() > limit {
                let key = if mapping.ty == ValueType::String {
                    "count"
                } else {
                    "type"
                };
                return Err(invalid(
                    at.key(key),
                    ModbusConfigProblem::LargerThanRead {
                        len: u64::from(codec.len()),
                        unit,
                        cap_key,
                        cap: u64::from(limit),
                    },
                ));
            }
            properties.push(MappedProperty {
                name: name.clone(),
                table: mapping.table,
                // Checked by the codec to be at most 65535.
                address: u16::try_from(mapping.address).unwrap_or(u16::MAX),
                codec,
                writable: property.writable,
                info: property.kind == PropertyKind::Info,
            });
            group_of.push(group_index);
        }
        check_overlaps(&properties)?;

        let mut groups = Vec::new();
        for (group_index, (name, poll_ms)) in intervals.iter().enumerate() {
            let mut reads = Vec::new();
            for table in [Table::Coil, Table::Discrete, Table::Input, Table::Holding] {
                let items: Vec<Item> = properties
                    .iter()
                    .enumerate()
                    .filter(|(i, p)| p.table == table && group_of.get(*i) == Some(&group_index))
                    .map(|(i, p)| Item {
                        property: i,
                        address: p.address,
                        len: p.codec.len(),
                    })
                    .collect();
                let limit = if table.is_bits() {
                    max_bits
                } else {
                    max_registers
                };
                reads.extend(plan_table(table, &items, limit, max_gap));
            }
            if !reads.is_empty() {
                groups.push(PollGroup {
                    name: name.clone(),
                    interval: Duration::from_millis(*poll_ms),
                    reads,
                });
            }
        }

        let mut actions = BTreeMap::new();
        for (name, mapping) in &binding.actions {
            let at = root.key("actions").key(name);
            let Some(action) = thing_type.action(name) else {
                return Err(invalid(at, ModbusConfigProblem::NoSuchAction(name.clone())));
            };
            if action.output.is_some() {
                return Err(invalid(at, ModbusConfigProblem::ActionHasOutput));
            }
            if mapping.writes.is_empty() {
                return Err(invalid(at.key("writes"), ModbusConfigProblem::Empty));
            }
            let mut writes = Vec::with_capacity(mapping.writes.len());
            for (index, write) in mapping.writes.iter().enumerate() {
                let at = at.key("writes").index(index);
                writes.push(compile_write(write, action.input.as_ref(), orders, &at)?);
            }
            actions.insert(name.clone(), writes);
        }

        Ok(Self {
            type_id: thing_type.id.clone(),
            properties,
            groups,
            actions,
        })
    }

    /// The id of the thing type this model was built for.
    pub fn type_id(&self) -> &str {
        &self.type_id
    }

    /// The poll groups: `default` first, then the named groups by name; only groups that have
    /// properties.
    pub fn groups(&self) -> &[PollGroup] {
        &self.groups
    }

    /// The names of the mapped properties, in name order.
    pub fn properties(&self) -> impl Iterator<Item = &str> {
        self.properties.iter().map(|p| p.name.as_str())
    }

    fn property(&self, name: &str) -> Option<(usize, &MappedProperty)> {
        let index = self
            .properties
            .binary_search_by(|p| p.name.as_str().cmp(name))
            .ok()?;
        self.properties.get(index).map(|p| (index, p))
    }

    /// The properties a request covers, in address order: what a failed read left unread, and
    /// what to [`read_back`](Self::read_back) one by one when a device refuses a merged read.
    pub fn properties_of(&self, read: &ReadRequest) -> Vec<&str> {
        read.slots
            .iter()
            .filter_map(|slot| self.properties.get(slot.property))
            .map(|p| p.name.as_str())
            .collect()
    }

    /// Reads the values of the properties a request covers from its answer.
    ///
    /// One entry per property, in address order: its value, or why it cannot be read (the answer
    /// is too short for it, holds NaN, text that is not UTF-8, ...). Never panics, whatever `data`
    /// holds. `read` must come from this model.
    pub fn decode<'a>(
        &'a self,
        read: &ReadRequest,
        data: ReadData<'_>,
    ) -> Vec<(&'a str, Result<Value, ModbusValueError>)> {
        read.slots
            .iter()
            .filter_map(|slot| {
                let property = self.properties.get(slot.property)?;
                Some((
                    property.name.as_str(),
                    self.decode_slot(read, *slot, property, data),
                ))
            })
            .collect()
    }

    fn decode_slot(
        &self,
        read: &ReadRequest,
        slot: Slot,
        property: &MappedProperty,
        data: ReadData<'_>,
    ) -> Result<Value, ModbusValueError> {
        let start = usize::from(slot.offset);
        let end = start.saturating_add(usize::from(property.codec.len()));
        match (read.table.is_bits(), data) {
            (true, ReadData::Bits(bits)) => match bits.get(start) {
                Some(bit) => Ok(property.codec.decode_bit(*bit)),
                None => Err(ModbusValueError::ShortData {
                    needed: end,
                    got: bits.len(),
                }),
            },
            (false, ReadData::Registers(registers)) => match registers.get(start..end) {
                Some(registers) => property.codec.decode_registers(registers),
                None => Err(ModbusValueError::ShortData {
                    needed: end,
                    got: registers.len(),
                }),
            },
            (true, ReadData::Registers(_)) => Err(ModbusValueError::WrongData {
                table: read.table,
                expected: "bits",
            }),
            (false, ReadData::Bits(_)) => Err(ModbusValueError::WrongData {
                table: read.table,
                expected: "registers",
            }),
        }
    }

    /// Whether the property is of the info kind: its values go to the thing's info (an Info event),
    /// not to its reported state.
    pub fn is_info(&self, property: &str) -> bool {
        self.property(property).is_some_and(|(_, p)| p.info)
    }

    /// Whether the property is mapped and writable in the type.
    pub fn is_writable(&self, property: &str) -> bool {
        self.property(property).is_some_and(|(_, p)| p.writable)
    }

    /// The writes that set a property to `value` (a desired value): the scaling inverted, the raw
    /// value rounded and range-checked; bits and bit fields by a mask write, so the register's
    /// other bits are kept.
    pub fn encode_set(
        &self,
        property: &str,
        value: &Value,
    ) -> Result<Vec<Write>, ModbusValueError> {
        let (_, mapped) = self
            .property(property)
            .ok_or_else(|| ModbusValueError::UnknownProperty(property.to_owned()))?;
        if !mapped.writable {
            return Err(ModbusValueError::ReadOnly(property.to_owned()));
        }
        Ok(vec![mapped.codec.encode(mapped.address, value)?])
    }

    /// A read of just this property, to confirm a write by reading it back; `None` when the
    /// property is not mapped.
    pub fn read_back(&self, property: &str) -> Option<ReadRequest> {
        let (index, mapped) = self.property(property)?;
        Some(ReadRequest {
            table: mapped.table,
            address: mapped.address,
            count: mapped.codec.len(),
            slots: vec![Slot {
                property: index,
                offset: 0,
            }],
        })
    }

    /// The writes that perform an action with this input, to be sent in order; the action's reply
    /// is null once all of them succeeded.
    pub fn encode_action(
        &self,
        action: &str,
        input: &Value,
    ) -> Result<Vec<Write>, ModbusValueError> {
        let writes = self
            .actions
            .get(action)
            .ok_or_else(|| ModbusValueError::UnknownAction(action.to_owned()))?;
        writes
            .iter()
            .map(|write| match &write.source {
                Source::Constant(encoded) => Ok(encoded.clone()),
                Source::Input(pointer) => {
                    let value =
                        input
                            .pointer(pointer)
                            .ok_or_else(|| ModbusValueError::MissingInput {
                                pointer: pointer.clone(),
                            })?;
                    write.codec.encode(write.address, value).map_err(|error| {
                        ModbusValueError::Input {
                            pointer: pointer.clone(),
                            error: Box::new(error),
                        }
                    })
                }
            })
            .collect()
    }

    /// Whether the binding maps this action.
    pub fn has_action(&self, action: &str) -> bool {
        self.actions.contains_key(action)
    }

    /// The names of the mapped actions, in name order.
    pub fn actions(&self) -> impl Iterator<Item = &str> {
        self.actions.keys().map(String::as_str)
    }
}

/// Compiles one action write: location, table, and its value's source against the input schema.
fn compile_write(
    write: &WriteMapping,
    input: Option<&DataSchema>,
    orders: (Order, Order),
    at: &KeyPath,
) -> Result<ActionWrite, ModbusConfigError> {
    let codec = Codec::compile(&write.location(), orders, at)?;
    if !write.table.is_writable() {
        return Err(invalid(
            at.key("table"),
            ModbusConfigProblem::WriteToReadOnlyTable(write.table),
        ));
    }
    check_writable_size(write.ty, write.count, at.key("count"))?;
    // Checked by the codec to be at most 65535.
    let address = u16::try_from(write.address).unwrap_or(u16::MAX);
    let source = match (&write.value, &write.input) {
        (Some(value), None) => {
            let encoded = codec
                .encode(address, value)
                .map_err(|error| invalid(at.key("value"), ModbusConfigProblem::BadValue(error)))?;
            Source::Constant(encoded)
        }
        (None, Some(pointer)) => {
            let at = at.key("input");
            if !pointer.is_empty() && !pointer.starts_with('/') {
                return Err(invalid(
                    at,
                    ModbusConfigProblem::BadPointer(pointer.clone()),
                ));
            }
            let Some(schema) = input else {
                return Err(invalid(at, ModbusConfigProblem::NoInput));
            };
            let Some(schema) = schema_at(schema, pointer) else {
                return Err(invalid(
                    at,
                    ModbusConfigProblem::NotInInput(pointer.clone()),
                ));
            };
            check_schema(&codec, schema.schema_type, at)?;
            Source::Input(pointer.clone())
        }
        _ => return Err(invalid(at.clone(), ModbusConfigProblem::ValueOrInput)),
    };
    Ok(ActionWrite {
        address,
        codec,
        source,
    })
}

/// Refuses two properties that share registers or bits of one table, except bits and bit fields
/// of one register whose bits are distinct. The error names the later property (in name order).
fn check_overlaps(properties: &[MappedProperty]) -> Result<(), ModbusConfigError> {
    for (later_index, later) in properties.iter().enumerate() {
        let later_start = u32::from(later.address);
        let later_end = later_start + u32::from(later.codec.len());
        for earlier in properties.iter().take(later_index) {
            if earlier.table != later.table {
                continue;
            }
            let earlier_start = u32::from(earlier.address);
            let earlier_end = earlier_start + u32::from(earlier.codec.len());
            if later_start >= earlier_end || earlier_start >= later_end {
                continue;
            }
            let shared = match (earlier.codec.register_bits(), later.codec.register_bits()) {
                (Some(a), Some(b)) => a & b == 0,
                _ => false,
            };
            if !shared {
                return Err(invalid(
                    KeyPath::root()
                        .key("properties")
                        .key(&later.name)
                        .key("address"),
                    ModbusConfigProblem::Overlaps(earlier.name.clone()),
                ));
            }
        }
    }
    Ok(())
}
