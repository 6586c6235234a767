//! Paths to a key inside a document (`properties.setpoint.minimum`, `zones[2].name`), so that an
//! error can say exactly where a definition or a value went wrong.

use std::fmt;

/// One step of a [`KeyPath`]: a table key or an array index.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum PathSegment {
    /// A key of a table (TOML) or object (JSON).
    Key(String),
    /// An index into an array.
    Index(usize),
}

/// A path from the root of a document to one of its keys.
///
/// Displays as dotted keys with `[i]` for array indices; a key that is not a bare word is quoted,
/// so the path can be read back unambiguously. The empty path displays as nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct KeyPath(Vec<PathSegment>);

impl KeyPath {
    /// The path of the document root.
    pub fn root() -> Self {
        Self(Vec::new())
    }

    /// This path extended by a key.
    #[must_use]
    pub fn key(&self, key: &str) -> Self {
        let mut next = self.clone();
        next.0.push(PathSegment::Key(key.to_owned()));
        next
    }

    /// This path extended by an array index.
    #[must_use]
    pub fn index(&self, index: usize) -> Self {
        let mut next = self.clone();
        next.0.push(PathSegment::Index(index));
        next
    }

    /// The segments from the root.
    pub fn segments(&self) -> &[PathSegment] {
        &self.0
    }

    /// True for the root path.
    pub fn is_root(&self) -> bool {
        self.0.is_empty()
    }
}

impl FromIterator<PathSegment> for KeyPath {
    fn from_iter<I: IntoIterator<Item = PathSegment>>(iter: I) -> Self {
        Self(iter.into_iter().collect())
    }
}

fn is_bare(key: &str) -> bool {
    !key.is_empty()
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

impl fmt::Display for KeyPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, segment) in self.0.iter().enumerate() {
            match segment {
                PathSegment::Key(key) => {
                    if i > 0 {
                        f.write_str(".")?;
                    }
                    if is_bare(key) {
                        f.write_str(key)?;
                    } else {
                        write!(f, "{key:?}")?;
                    }
                }
                PathSegment::Index(index) => write!(f, "[{index}]")?,
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn displays_dotted_keys_indices_and_quoted_keys() {
        let cases = [
            (KeyPath::root(), ""),
            (
                KeyPath::root().key("properties").key("setpoint"),
                "properties.setpoint",
            ),
            (KeyPath::root().key("enum").index(2), "enum[2]"),
            (
                KeyPath::root().key("zones").index(0).key("name"),
                "zones[0].name",
            ),
            (KeyPath::root().key("a.b").key("c d"), "\"a.b\".\"c d\""),
            (KeyPath::root().key(""), "\"\""),
        ];
        for (path, want) in cases {
            assert_eq!(path.to_string(), want);
        }
    }
}
