//! [`TypeCatalog`]: the thing types a hub knows, the built-in ones shipped in the binary plus the
//! user's from a directory of TOML files read at start.

use std::collections::BTreeMap;
use std::collections::btree_map::Entry;
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::load::LoadError;
use crate::thing_type::ThingType;

/// Largest type file read, in bytes; a type is a page of TOML, so anything larger is a mistake.
pub const MAX_TYPE_FILE_BYTES: u64 = 1 << 20;

/// The built-in type files: (file name, TOML text).
const BUILTIN: &[(&str, &str)] = &[
    (
        "temperature_sensor.toml",
        include_str!("../types/temperature_sensor.toml"),
    ),
    ("thermostat.toml", include_str!("../types/thermostat.toml")),
    ("relay.toml", include_str!("../types/relay.toml")),
    ("alarm.toml", include_str!("../types/alarm.toml")),
    (
        "tasmota_plug.toml",
        include_str!("../types/tasmota_plug.toml"),
    ),
    (
        "modbus_meter.toml",
        include_str!("../types/modbus_meter.toml"),
    ),
    (
        "modbus_drive.toml",
        include_str!("../types/modbus_drive.toml"),
    ),
];

/// Where a type in the catalog came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TypeOrigin {
    /// Shipped inside the binary.
    Builtin,
    /// Read from this user file.
    File(PathBuf),
}

#[derive(Debug, Clone)]
struct CatalogEntry {
    ty: Arc<ThingType>,
    origin: TypeOrigin,
}

/// Thing types by id.
///
/// Types are shared as `Arc` so a thing can hold its type without copying it.
#[derive(Debug, Clone, Default)]
pub struct TypeCatalog {
    types: BTreeMap<String, CatalogEntry>,
}

impl TypeCatalog {
    /// An empty catalog.
    pub fn new() -> Self {
        Self::default()
    }

    /// The built-in types (`temperature_sensor`, `thermostat`, `relay`, `alarm`, `tasmota_plug`,
    /// `modbus_meter`, `modbus_drive`).
    ///
    /// They are checked by this crate's tests, so an error here means a broken build.
    pub fn builtin() -> Result<Self, LoadError> {
        let mut catalog = Self::new();
        for (file, text) in BUILTIN {
            let ty = ThingType::from_toml(text, &format!("{file} (built-in)"))?;
            catalog.types.insert(
                ty.id.clone(),
                CatalogEntry {
                    ty: Arc::new(ty),
                    origin: TypeOrigin::Builtin,
                },
            );
        }
        Ok(catalog)
    }

    /// The built-in types, then the user's types from `dir` (see [`TypeCatalog::load_dir`]).
    pub fn with_dir(dir: impl AsRef<Path>) -> Result<Self, LoadError> {
        let mut catalog = Self::builtin()?;
        catalog.load_dir(dir)?;
        Ok(catalog)
    }

    /// Loads every `*.toml` file directly in `dir` (no recursion; names starting with `.` are
    /// skipped), in file name order, and returns the ids loaded.
    ///
    /// **A user type with the same id as a built-in type replaces the built-in one**, so a site can
    /// adapt a shipped type without renaming it. Two user files with the same id, in this call or
    /// across calls, are an error. Loading is all or nothing: on any error the catalog is left as
    /// it was.
    pub fn load_dir(&mut self, dir: impl AsRef<Path>) -> Result<Vec<String>, LoadError> {
        let dir = dir.as_ref();
        let read_dir_error = |source| LoadError::ReadDir {
            dir: dir.to_owned(),
            source,
        };
        let mut files = Vec::new();
        for entry in fs::read_dir(dir).map_err(read_dir_error)? {
            let path = entry.map_err(read_dir_error)?.path();
            let visible = path
                .file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| !n.starts_with('.'));
            if visible && path.extension().is_some_and(|e| e == "toml") && path.is_file() {
                files.push(path);
            }
        }
        files.sort();

        let mut staged: BTreeMap<String, (ThingType, PathBuf)> = BTreeMap::new();
        for path in files {
            let text = read_type_file(&path)?;
            let ty = ThingType::from_toml(&text, &path.display().to_string())?;
            let earlier = staged.get(&ty.id).map(|(_, p)| p.clone()).or_else(|| {
                match self.types.get(&ty.id).map(|e| &e.origin) {
                    Some(TypeOrigin::File(p)) => Some(p.clone()),
                    _ => None,
                }
            });
            if let Some(first) = earlier {
                return Err(LoadError::DuplicateId {
                    id: ty.id,
                    first,
                    second: path,
                });
            }
            staged.insert(ty.id.clone(), (ty, path));
        }

        let ids: Vec<String> = staged.keys().cloned().collect();
        for (id, (ty, path)) in staged {
            self.types.insert(
                id,
                CatalogEntry {
                    ty: Arc::new(ty),
                    origin: TypeOrigin::File(path),
                },
            );
        }
        Ok(ids)
    }

    /// Adds a type built in code, after validating it; replaces a type with the same id and
    /// returns it.
    pub fn insert(
        &mut self,
        ty: ThingType,
        origin: TypeOrigin,
    ) -> Result<Option<Arc<ThingType>>, crate::schema::DefinitionError> {
        ty.validate()?;
        let entry = CatalogEntry {
            ty: Arc::new(ty),
            origin,
        };
        Ok(match self.types.entry(entry.ty.id.clone()) {
            Entry::Occupied(mut slot) => Some(std::mem::replace(slot.get_mut(), entry).ty),
            Entry::Vacant(slot) => {
                slot.insert(entry);
                None
            }
        })
    }

    /// The type with this id.
    pub fn get(&self, id: &str) -> Option<&Arc<ThingType>> {
        self.types.get(id).map(|e| &e.ty)
    }

    /// Where the type with this id came from.
    pub fn origin(&self, id: &str) -> Option<&TypeOrigin> {
        self.types.get(id).map(|e| &e.origin)
    }

    /// All types, in id order.
    pub fn list(&self) -> impl Iterator<Item = &Arc<ThingType>> {
        self.types.values().map(|e| &e.ty)
    }

    /// Number of types.
    pub fn len(&self) -> usize {
        self.types.len()
    }

    /// True when the catalog has no type.
    pub fn is_empty(&self) -> bool {
        self.types.is_empty()
    }
}

/// Reads a type file as UTF-8, refusing files over [`MAX_TYPE_FILE_BYTES`].
fn read_type_file(path: &Path) -> Result<String, LoadError> {
    let read_error = |source| LoadError::Read {
        file: path.to_owned(),
        source,
    };
    let file = fs::File::open(path).map_err(read_error)?;
    let mut text = String::new();
    file.take(MAX_TYPE_FILE_BYTES + 1)
        .read_to_string(&mut text)
        .map_err(read_error)?;
    if text.len() as u64 > MAX_TYPE_FILE_BYTES {
        return Err(LoadError::TooLarge {
            file: path.to_owned(),
            max: MAX_TYPE_FILE_BYTES,
        });
    }
    Ok(text)
}

#[cfg(test)]
mod tests;
