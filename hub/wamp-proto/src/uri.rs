//! URI rules and match policies.
//!
//! WAMP URIs are dotted names shared by topics, procedures and errors. The loose rule (no empty
//! component, no `.`, `#` or whitespace inside one) is the default; the strict rule (components of
//! `[0-9a-z_]` only) is a per-realm option. Patterns relax the rule: a prefix pattern may end in an
//! empty component, a wildcard pattern may have empty components anywhere.

use super::value::Dict;

/// How a subscription or registration URI is matched against a topic or procedure.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum MatchPolicy {
    Exact,
    Prefix,
    Wildcard,
}

impl MatchPolicy {
    /// The policy named by the `match` option; absent means exact.
    pub fn from_options(options: &Dict) -> Result<MatchPolicy, String> {
        match options.get("match") {
            None => Ok(MatchPolicy::Exact),
            Some(v) => match v.as_str() {
                Some("exact") => Ok(MatchPolicy::Exact),
                Some("prefix") => Ok(MatchPolicy::Prefix),
                Some("wildcard") => Ok(MatchPolicy::Wildcard),
                _ => Err(format!("unknown match policy {v:?}")),
            },
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            MatchPolicy::Exact => "exact",
            MatchPolicy::Prefix => "prefix",
            MatchPolicy::Wildcard => "wildcard",
        }
    }
}

/// Longest URI accepted anywhere; protects maps and tries from absurd keys.
pub const MAX_URI_LEN: usize = 1024;

/// Whether `uri` is valid for use with `policy` under the loose (or, if `strict`, the strict) rule.
pub fn is_valid(uri: &str, policy: MatchPolicy, strict: bool) -> bool {
    if uri.len() > MAX_URI_LEN {
        return false;
    }
    let last = uri.split('.').count() - 1;
    uri.split('.').enumerate().all(|(i, c)| {
        let empty_ok = match policy {
            MatchPolicy::Exact => false,
            MatchPolicy::Prefix => i == last,
            MatchPolicy::Wildcard => true,
        };
        if c.is_empty() {
            return empty_ok;
        }
        if strict {
            c.bytes()
                .all(|b| b.is_ascii_digit() || b.is_ascii_lowercase() || b == b'_')
        } else {
            !c.chars().any(|ch| ch == '#' || ch.is_whitespace())
        }
    })
}

/// Whether a wildcard pattern matches a URI: same number of components, each empty pattern
/// component matching anything.
pub fn wildcard_matches(pattern: &str, uri: &str) -> bool {
    let mut p = pattern.split('.');
    let mut u = uri.split('.');
    loop {
        match (p.next(), u.next()) {
            (None, None) => return true,
            (Some(pc), Some(uc)) => {
                if !pc.is_empty() && pc != uc {
                    return false;
                }
            }
            _ => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::MatchPolicy::*;
    use super::*;

    #[test]
    fn validity_table() {
        let cases: &[(&str, MatchPolicy, bool, bool)] = &[
            ("com.myapp.topic1", Exact, false, true),
            ("com.myapp.topic1", Exact, true, true),
            ("com.MyApp.topic-1", Exact, false, true),
            ("com.MyApp.topic1", Exact, true, false),
            ("com.my-app", Exact, true, false),
            ("com..topic", Exact, false, false),
            ("com..topic", Wildcard, false, true),
            ("com..topic", Prefix, false, false),
            ("com.myapp.", Prefix, false, true),
            ("com.myapp.", Exact, false, false),
            ("", Exact, false, false),
            ("", Prefix, false, true),
            (".", Wildcard, false, true),
            ("a b", Exact, false, false),
            ("a#b", Exact, false, false),
            ("a.\tb", Exact, false, false),
            ("brume.thing..state", Wildcard, true, true),
            ("ünï.cöde", Exact, false, true),
            ("ünï.cöde", Exact, true, false),
        ];
        for (uri, policy, strict, want) in cases {
            assert_eq!(
                is_valid(uri, *policy, *strict),
                *want,
                "{uri:?} {policy:?} strict={strict}"
            );
        }
        assert!(!is_valid(&"a".repeat(MAX_URI_LEN + 1), Exact, false));
    }

    #[test]
    fn wildcard_table() {
        let cases: &[(&str, &str, bool)] = &[
            ("a..c", "a.b.c", true),
            ("a..c", "a.x.c", true),
            ("a..c", "a.b.d", false),
            ("a..c", "a.b.c.d", false),
            ("a..c", "a.c", false),
            ("..", "x.y.z", true),
            ("brume.thing..state", "brume.thing.t1.state", true),
            ("brume.thing..state", "brume.thing.t1.event", false),
            ("a.b", "a.b", true),
        ];
        for (p, u, want) in cases {
            assert_eq!(wildcard_matches(p, u), *want, "{p} vs {u}");
        }
    }

    #[test]
    fn match_option_parsing() {
        use crate::message::dict;
        use crate::value::Value;
        assert_eq!(MatchPolicy::from_options(&Dict::new()), Ok(Exact));
        assert_eq!(
            MatchPolicy::from_options(&dict([("match", Value::from("prefix"))])),
            Ok(Prefix)
        );
        assert!(MatchPolicy::from_options(&dict([("match", Value::from("regex"))])).is_err());
        assert!(MatchPolicy::from_options(&dict([("match", Value::Int(1))])).is_err());
    }
}
