//! Text templates with `{name}` placeholders (commands), and the id template that turns an id
//! field into a thing id and back (`"beacon-{:04x}"`).

use serde_json::Value;

/// Thing ids become WAMP URI components (`brume.thing.<id>.state`), so they are kept short and free
/// of the characters URIs reserve.
pub const MAX_THING_ID_LEN: usize = 128;

/// Whether `id` can name a thing: 1 to 128 bytes, no whitespace, control characters, `.` or `#`.
pub fn is_valid_thing_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_THING_ID_LEN
        && !id
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || c == '.' || c == '#')
}

/// A parsed text template.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct TextTemplate {
    parts: Vec<Part>,
}

#[derive(Debug, Clone, PartialEq)]
enum Part {
    Literal(String),
    Placeholder(String),
}

impl TextTemplate {
    /// Parses `{name}` placeholders; `{{` and `}}` are literal braces.
    pub(crate) fn parse(text: &str) -> Result<Self, &'static str> {
        let mut parts = Vec::new();
        let mut literal = String::new();
        let mut chars = text.chars().peekable();
        while let Some(c) = chars.next() {
            match c {
                '{' if chars.peek() == Some(&'{') => {
                    chars.next();
                    literal.push('{');
                }
                '}' if chars.peek() == Some(&'}') => {
                    chars.next();
                    literal.push('}');
                }
                '}' => return Err("unmatched `}` (write `}}` for a brace)"),
                '{' => {
                    let mut name = String::new();
                    loop {
                        match chars.next() {
                            Some('}') => break,
                            Some('{') => return Err("`{` inside a placeholder"),
                            Some(c) => name.push(c),
                            None => return Err("unclosed `{` (write `{{` for a brace)"),
                        }
                    }
                    let name = name.trim();
                    if name.is_empty() {
                        return Err("empty placeholder `{}`");
                    }
                    if !literal.is_empty() {
                        parts.push(Part::Literal(std::mem::take(&mut literal)));
                    }
                    parts.push(Part::Placeholder(name.to_owned()));
                }
                c => literal.push(c),
            }
        }
        if !literal.is_empty() {
            parts.push(Part::Literal(literal));
        }
        Ok(Self { parts })
    }

    /// Names of the placeholders, in order.
    pub(crate) fn placeholders(&self) -> impl Iterator<Item = &str> {
        self.parts.iter().filter_map(|part| match part {
            Part::Placeholder(name) => Some(name.as_str()),
            Part::Literal(_) => None,
        })
    }

    /// The placeholder's name when the template is exactly one placeholder.
    pub(crate) fn single_placeholder(&self) -> Option<&str> {
        match self.parts.as_slice() {
            [Part::Placeholder(name)] => Some(name),
            _ => None,
        }
    }

    /// Whether the template writes anything containing `needle` outside placeholders.
    pub(crate) fn literal_contains(&self, needle: char) -> bool {
        self.parts.iter().any(|part| match part {
            Part::Literal(text) => text.contains(needle),
            Part::Placeholder(_) => false,
        })
    }

    /// Fills in the placeholders.
    pub(crate) fn render<E>(
        &self,
        mut resolve: impl FnMut(&str) -> Result<String, E>,
    ) -> Result<String, E> {
        let mut out = String::new();
        for part in &self.parts {
            match part {
                Part::Literal(text) => out.push_str(text),
                Part::Placeholder(name) => out.push_str(&resolve(name)?),
            }
        }
        Ok(out)
    }
}

/// How an id field's value is written as a thing id: text around one placeholder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct IdTemplate {
    prefix: String,
    suffix: String,
    radix: Radix,
    width: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Radix {
    Decimal,
    HexLower,
    HexUpper,
}

impl Default for IdTemplate {
    fn default() -> Self {
        Self {
            prefix: String::new(),
            suffix: String::new(),
            radix: Radix::Decimal,
            width: 0,
        }
    }
}

impl IdTemplate {
    /// Parses `prefix{spec}suffix` where spec is empty, `:x`, `:X`, `:N`, `:0Nx` or `:0NX`.
    pub(crate) fn parse(text: &str) -> Result<Self, &'static str> {
        let (prefix, rest) = text.split_once('{').ok_or("needs a `{}` placeholder")?;
        let (spec, suffix) = rest.split_once('}').ok_or("unclosed `{`")?;
        if suffix.contains(['{', '}']) || prefix.contains('}') {
            return Err("only one placeholder is allowed");
        }
        let spec = match spec.strip_prefix(':') {
            Some(spec) => spec,
            None if spec.is_empty() => "",
            None => return Err("write `{}`, `{:x}`, `{:X}` or a width such as `{:04x}`"),
        };
        let (digits, radix) = if let Some(digits) = spec.strip_suffix('x') {
            (digits, Radix::HexLower)
        } else if let Some(digits) = spec.strip_suffix('X') {
            (digits, Radix::HexUpper)
        } else {
            (spec, Radix::Decimal)
        };
        let width = if digits.is_empty() {
            0
        } else {
            digits
                .parse::<usize>()
                .ok()
                .filter(|&w| w <= 32)
                .ok_or("the width must be a number up to 32, as in `{:04x}`")?
        };
        Ok(Self {
            prefix: prefix.to_owned(),
            suffix: suffix.to_owned(),
            radix,
            width,
        })
    }

    /// The thing id for an id field value: a string (inserted as it is; radix and width apply to
    /// numbers), or a non-negative integer (an integral float counts, for scaled fields). `None`
    /// for anything else.
    pub(crate) fn format(&self, value: &Value) -> Option<String> {
        let middle = match value {
            Value::String(text) => text.clone(),
            Value::Number(number) => {
                let n = number.as_u64().or_else(|| {
                    let f = number.as_f64()?;
                    (f >= 0.0 && f.fract() == 0.0 && f < 2f64.powi(53)).then_some(f as u64)
                })?;
                let width = self.width;
                match self.radix {
                    Radix::Decimal => format!("{n:0width$}"),
                    Radix::HexLower => format!("{n:0width$x}"),
                    Radix::HexUpper => format!("{n:0width$X}"),
                }
            }
            _ => return None,
        };
        Some(format!("{}{middle}{}", self.prefix, self.suffix))
    }

    /// The id field's text inside a thing id, if the id has the template's prefix and suffix.
    pub(crate) fn strip<'a>(&self, id: &'a str) -> Option<&'a str> {
        id.strip_prefix(self.prefix.as_str())?
            .strip_suffix(self.suffix.as_str())
    }

    /// The id field's value as a number, for binary id fields.
    pub(crate) fn parse_number(&self, id: &str) -> Option<u64> {
        let middle = self.strip(id)?;
        match self.radix {
            Radix::Decimal => middle.parse().ok(),
            Radix::HexLower | Radix::HexUpper => u64::from_str_radix(middle, 16).ok(),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn text_templates() {
        let template = TextTemplate::parse("SET {property}={value} {{raw}}").unwrap();
        assert_eq!(
            template.placeholders().collect::<Vec<_>>(),
            ["property", "value"]
        );
        let out: Result<String, ()> = template.render(|name| Ok(name.to_uppercase()));
        assert_eq!(out.unwrap(), "SET PROPERTY=VALUE {raw}");
        assert_eq!(
            TextTemplate::parse("{value}").unwrap().single_placeholder(),
            Some("value")
        );
        assert_eq!(
            TextTemplate::parse("x{value}")
                .unwrap()
                .single_placeholder(),
            None
        );
        assert!(TextTemplate::parse("a{b").is_err());
        assert!(TextTemplate::parse("a}b").is_err());
        assert!(TextTemplate::parse("{}").is_err());
        assert!(TextTemplate::parse("{a{b}}").is_err());
        assert!(
            TextTemplate::parse("")
                .unwrap()
                .render(|_| Err(()))
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn id_templates() {
        let plain = IdTemplate::default();
        assert_eq!(plain.format(&json!(17)), Some("17".to_owned()));
        assert_eq!(plain.format(&json!("abc")), Some("abc".to_owned()));
        assert_eq!(plain.format(&json!(-1)), None);
        assert_eq!(plain.format(&json!(1.5)), None);
        assert_eq!(plain.format(&json!(true)), None);
        let beacon = IdTemplate::parse("beacon-{}").unwrap();
        assert_eq!(beacon.format(&json!(42)), Some("beacon-42".to_owned()));
        assert_eq!(beacon.format(&json!(42.0)), Some("beacon-42".to_owned()));
        assert_eq!(beacon.parse_number("beacon-42"), Some(42));
        assert_eq!(beacon.parse_number("sensor-42"), None);
        let hex = IdTemplate::parse("node-{:04X}.x").unwrap();
        assert_eq!(hex.format(&json!(0xBE)), Some("node-00BE.x".to_owned()));
        assert_eq!(hex.format(&json!("be")), Some("node-be.x".to_owned()));
        assert_eq!(hex.parse_number("node-00BE.x"), Some(0xBE));
        assert_eq!(
            IdTemplate::parse("{:08}").unwrap().format(&json!(5)),
            Some("00000005".to_owned())
        );
        for bad in ["none", "{", "{}{}", "{:q}", "{:99x}", "{x}"] {
            assert!(IdTemplate::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn thing_ids() {
        assert!(is_valid_thing_id("beacon-42"));
        assert!(is_valid_thing_id("node_00:BE"));
        for bad in ["", "a.b", "a b", "a#b", "a\nb", &"x".repeat(129)] {
            assert!(!is_valid_thing_id(bad), "{bad:?}");
        }
    }
}
