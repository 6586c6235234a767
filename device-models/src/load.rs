//! Reading a [`ThingType`] from TOML text, and [`LoadError`]: every way a type file can be
//! rejected, each naming the file, the line when known, and the key path.

use std::fmt;
use std::io;
use std::path::PathBuf;

use thiserror::Error;
use toml::de::{DeTable, DeValue};

use crate::key_path::{KeyPath, PathSegment};
use crate::schema::DefinitionError;
use crate::thing_type::ThingType;

/// Where in which file a problem is: `thermostat.toml:12`, or just the file when no line is known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceLocation {
    /// The file as shown to people (a path, or the name of a built-in type file).
    pub file: String,
    /// 1-based line, when known.
    pub line: Option<usize>,
}

impl fmt::Display for SourceLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "{}:{line}", self.file),
            None => f.write_str(&self.file),
        }
    }
}

/// Why a type file or directory could not be loaded.
#[derive(Debug, Error)]
pub enum LoadError {
    /// The directory of type files could not be listed.
    #[error("{}: cannot list type files: {source}", dir.display())]
    ReadDir {
        /// The directory.
        dir: PathBuf,
        /// The I/O failure.
        #[source]
        source: io::Error,
    },
    /// A type file could not be read (missing, unreadable, not UTF-8).
    #[error("{}: cannot read: {source}", file.display())]
    Read {
        /// The file.
        file: PathBuf,
        /// The I/O failure.
        #[source]
        source: io::Error,
    },
    /// A type file is larger than [`MAX_TYPE_FILE_BYTES`](crate::catalog::MAX_TYPE_FILE_BYTES).
    #[error("{}: larger than {max} bytes", file.display())]
    TooLarge {
        /// The file.
        file: PathBuf,
        /// The limit.
        max: u64,
    },
    /// The text is not valid TOML.
    #[error("{at}: invalid TOML: {message}")]
    Syntax {
        /// File and line.
        at: SourceLocation,
        /// The parser's message, on one line.
        message: String,
        /// The parser's error.
        #[source]
        source: Box<toml::de::Error>,
    },
    /// The TOML does not have the shape of a thing type: an unknown key, a missing key, a value
    /// of the wrong type.
    #[error("{at}: {}{message}", path_prefix(path))]
    Structure {
        /// File and line.
        at: SourceLocation,
        /// Key path of the offending key.
        path: KeyPath,
        /// What is wrong, e.g. "unknown field `minimun`, expected one of ...".
        message: String,
        /// The deserializer's error.
        #[source]
        source: Box<toml::de::Error>,
    },
    /// The type is well formed but incoherent, e.g. `minimum` above `maximum`.
    #[error("{at}: {error}")]
    Invalid {
        /// File and line.
        at: SourceLocation,
        /// The key path and the rule broken.
        error: DefinitionError,
    },
    /// Two user type files define the same type id.
    #[error("{}: type {id:?} is already defined by {}", second.display(), first.display())]
    DuplicateId {
        /// The type id.
        id: String,
        /// The file loaded first.
        first: PathBuf,
        /// The file that repeats the id.
        second: PathBuf,
    },
}

fn path_prefix(path: &KeyPath) -> String {
    if path.is_root() {
        String::new()
    } else {
        format!("{path}: ")
    }
}

impl ThingType {
    /// Parses and validates a thing type from TOML. `file` names the source in errors.
    ///
    /// Unknown keys are errors. Never panics, whatever the text.
    pub fn from_toml(text: &str, file: &str) -> Result<Self, LoadError> {
        let at = |span: Option<std::ops::Range<usize>>| SourceLocation {
            file: file.to_owned(),
            line: span.map(|s| line_of(text, s.start)),
        };
        let deserializer = toml::Deserializer::parse(text).map_err(|source| LoadError::Syntax {
            at: at(source.span()),
            message: one_line(source.message()),
            source: Box::new(source),
        })?;
        let ty: ThingType = serde_path_to_error::deserialize(deserializer).map_err(|error| {
            let path = key_path_of(error.path());
            let source = error.into_inner();
            LoadError::Structure {
                at: at(source.span()),
                path,
                message: one_line(source.message()),
                source: Box::new(source),
            }
        })?;
        ty.validate().map_err(|error| LoadError::Invalid {
            at: SourceLocation {
                file: file.to_owned(),
                line: locate(text, &error.path),
            },
            error,
        })?;
        Ok(ty)
    }

    /// The type as TOML, in the format [`ThingType::from_toml`] reads.
    pub fn to_toml(&self) -> Result<String, toml::ser::Error> {
        toml::to_string_pretty(self)
    }
}

fn one_line(message: &str) -> String {
    message.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn line_of(text: &str, offset: usize) -> usize {
    let end = offset.min(text.len());
    text.as_bytes()[..end]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

fn key_path_of(path: &serde_path_to_error::Path) -> KeyPath {
    use serde_path_to_error::Segment;
    path.iter()
        .map(|segment| match segment {
            Segment::Seq { index } => PathSegment::Index(*index),
            Segment::Map { key } => PathSegment::Key(key.clone()),
            Segment::Enum { variant } => PathSegment::Key(variant.clone()),
            Segment::Unknown => PathSegment::Key("?".to_owned()),
        })
        .collect()
}

/// The line of the deepest key of `path` present in the TOML text, to point at a definition error.
fn locate(text: &str, path: &KeyPath) -> Option<usize> {
    let root = DeTable::parse(text).ok()?;
    let mut value = DeValue::Table(root.into_inner());
    let mut offset = None;
    for segment in path.segments() {
        let next = match (segment, &value) {
            (PathSegment::Key(key), DeValue::Table(table)) => table
                .iter()
                .find(|(k, _)| k.get_ref().as_ref() == key.as_str())
                .map(|(k, v)| (k.span().start, v.get_ref().clone())),
            (PathSegment::Index(index), DeValue::Array(array)) => array
                .get(*index)
                .map(|v| (v.span().start, v.get_ref().clone())),
            _ => None,
        };
        let Some((start, inner)) = next else { break };
        offset = Some(start);
        value = inner;
    }
    offset.map(|o| line_of(text, o))
}

#[cfg(test)]
mod tests;
