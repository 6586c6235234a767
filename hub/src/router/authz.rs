//! Authorization: what a session may do, decided by its role.
//!
//! A realm lists roles, each with rules `{uri, match, allow}`; for an action on a URI the most
//! specific matching rule of the session's role decides (exact, then the longest prefix, then the
//! wildcard whose literal components match earliest: the dealer's precedence, through the same
//! [`PatternIndex`]). No matching rule, or a role the realm does not list, means denied.
//!
//! - A realm with no roles configured allows everything (the backward-compatible default).
//! - In-process sessions ([`crate::client::Client::local`], role `trusted`) are always allowed.
//! - Subscribing or registering with a pattern is checked against rules that cover the whole
//!   pattern: a prefix pattern only by prefix rules, a wildcard pattern by prefix and wildcard
//!   rules, matched against the pattern text. The check happens once, at subscribe or register
//!   time: a prefix subscription allowed by a prefix rule then receives every event under it,
//!   even on topics a more specific rule denies to exact subscribers.
//!
//! The rules are built once from the config and shared read-only, so checks take no lock.

use std::collections::HashMap;

use super::outbound::SessionHandle;
use super::patterns::PatternIndex;
use crate::wamp::{Dict, MatchPolicy};

/// The role of in-process sessions, which are never restricted. Reserved in configs.
pub const TRUSTED_ROLE: &str = "trusted";
/// The role anonymous sessions get.
pub const ANONYMOUS_ROLE: &str = "anonymous";

/// Something a session may be allowed to do with a URI.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Call,
    Register,
    Publish,
    Subscribe,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Call => "call",
            Action::Register => "register",
            Action::Publish => "publish",
            Action::Subscribe => "subscribe",
        }
    }

    fn bit(self) -> u8 {
        1 << (self as u8)
    }
}

impl std::fmt::Display for Action {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One rule: the actions allowed on URIs matching `uri` by `policy`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rule {
    pub uri: String,
    pub policy: MatchPolicy,
    pub allow: Vec<Action>,
}

/// A set of actions.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Allowed(u8);

impl Allowed {
    fn of(actions: &[Action]) -> Allowed {
        Allowed(actions.iter().fold(0, |acc, a| acc | a.bit()))
    }

    fn contains(self, a: Action) -> bool {
        self.0 & a.bit() != 0
    }
}

/// One role's rules, indexed three ways: all rules (for exact URIs), prefix and wildcard rules
/// (for wildcard patterns), prefix rules only (for prefix patterns).
#[derive(Debug)]
struct RoleRules {
    rules: Vec<Rule>,
    all: PatternIndex<Allowed>,
    patterns: PatternIndex<Allowed>,
    prefixes: PatternIndex<Allowed>,
}

/// Why a set of roles was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AuthzError {
    #[error("role {role:?} has two rules for {policy} URI {uri:?}")]
    DuplicateRule {
        role: String,
        uri: String,
        policy: &'static str,
    },
    #[error("role \"trusted\" is reserved for in-process sessions")]
    ReservedRole,
}

/// A realm's roles and rules.
#[derive(Debug, Default)]
pub struct Authorizer {
    /// `None`: no roles configured, everything is allowed.
    roles: Option<HashMap<String, RoleRules>>,
}

impl Authorizer {
    /// No restrictions (a realm without roles).
    pub fn allow_all() -> Authorizer {
        Authorizer { roles: None }
    }

    /// Restricts sessions to the rules of their role. An empty list still restricts: every
    /// role is unknown, so everything is denied.
    pub fn new(
        roles: impl IntoIterator<Item = (String, Vec<Rule>)>,
    ) -> Result<Authorizer, AuthzError> {
        let mut map = HashMap::new();
        for (name, rules) in roles {
            if name == TRUSTED_ROLE {
                return Err(AuthzError::ReservedRole);
            }
            let mut role = RoleRules {
                rules: rules.clone(),
                all: PatternIndex::default(),
                patterns: PatternIndex::default(),
                prefixes: PatternIndex::default(),
            };
            for rule in rules {
                let allowed = Allowed::of(&rule.allow);
                if role.all.insert(&rule.uri, rule.policy, allowed).is_some() {
                    return Err(AuthzError::DuplicateRule {
                        role: name,
                        uri: rule.uri,
                        policy: rule.policy.as_str(),
                    });
                }
                if rule.policy != MatchPolicy::Exact {
                    role.patterns.insert(&rule.uri, rule.policy, allowed);
                }
                if rule.policy == MatchPolicy::Prefix {
                    role.prefixes.insert(&rule.uri, rule.policy, allowed);
                }
            }
            map.insert(name, role);
        }
        Ok(Authorizer { roles: Some(map) })
    }

    /// Whether any restriction applies.
    pub fn restricts(&self) -> bool {
        self.roles.is_some()
    }

    /// Whether `role` is listed (always true when nothing is restricted).
    pub fn has_role(&self, role: &str) -> bool {
        self.roles.as_ref().is_none_or(|r| r.contains_key(role))
    }

    /// Whether `role` may do `action` on `uri`, which is a pattern when `policy` is not exact.
    pub fn allows(&self, role: &str, action: Action, uri: &str, policy: MatchPolicy) -> bool {
        let Some(roles) = &self.roles else {
            return true;
        };
        let Some(rules) = roles.get(role) else {
            return false;
        };
        let index = match policy {
            MatchPolicy::Exact => &rules.all,
            MatchPolicy::Prefix => &rules.prefixes,
            MatchPolicy::Wildcard => &rules.patterns,
        };
        index.best_match(uri).is_some_and(|a| a.contains(action))
    }
}

impl PartialEq for Authorizer {
    fn eq(&self, other: &Self) -> bool {
        fn rules(a: &Authorizer) -> Option<Vec<(&String, &Vec<Rule>)>> {
            a.roles.as_ref().map(|m| {
                let mut v: Vec<(&String, &Vec<Rule>)> =
                    m.iter().map(|(k, r)| (k, &r.rules)).collect();
                v.sort_by(|x, y| x.0.cmp(y.0));
                v
            })
        }
        rules(self) == rules(other)
    }
}

impl Eq for Authorizer {}

/// Checks an action of an established session; `Err` carries the message for the ERROR.
/// `options` are the SUBSCRIBE or REGISTER options (their `match`); an invalid `match` passes
/// here, since the handler refuses it itself.
pub fn check(
    authz: &Authorizer,
    session: &SessionHandle,
    action: Action,
    uri: &str,
    options: &Dict,
) -> Result<(), String> {
    if !authz.restricts() || session.transport.kind == "local" {
        return Ok(());
    }
    let policy = match action {
        Action::Call | Action::Publish => MatchPolicy::Exact,
        Action::Subscribe | Action::Register => match MatchPolicy::from_options(options) {
            Ok(p) => p,
            Err(_) => return Ok(()),
        },
    };
    if authz.allows(&session.auth.authrole, action, uri, policy) {
        return Ok(());
    }
    tracing::debug!(
        session = session.id,
        authid = %session.auth.authid,
        authrole = %session.auth.authrole,
        action = action.as_str(),
        uri,
        policy = policy.as_str(),
        "not authorized"
    );
    let to = match action {
        Action::Call => "call",
        Action::Register => "register",
        Action::Publish => "publish to",
        Action::Subscribe => "subscribe to",
    };
    Err(format!(
        "role {:?} is not authorized to {to} {uri:?}",
        session.auth.authrole
    ))
}

#[cfg(test)]
mod tests {
    use super::Action::*;
    use super::*;
    use crate::wamp::MatchPolicy::{Exact, Prefix, Wildcard};

    fn rule(uri: &str, policy: MatchPolicy, allow: &[Action]) -> Rule {
        Rule {
            uri: uri.into(),
            policy,
            allow: allow.to_vec(),
        }
    }

    fn authz() -> Authorizer {
        Authorizer::new([
            (
                "app".to_owned(),
                vec![
                    rule("brume.", Prefix, &[Call, Subscribe]),
                    rule("brume.things.", Prefix, &[Call, Register, Subscribe]),
                    rule("brume.things.delete", Exact, &[]),
                    rule("brume.thing..state", Wildcard, &[Subscribe, Publish]),
                    rule("brume.thing.x7.", Prefix, &[Publish]),
                ],
            ),
            ("empty".to_owned(), vec![]),
        ])
        .unwrap()
    }

    #[test]
    fn precedence_table() {
        let a = authz();
        let cases: &[(&str, Action, &str, MatchPolicy, bool)] = &[
            // Longest prefix decides.
            ("app", Call, "brume.things.list", Exact, true),
            ("app", Register, "brume.things.list", Exact, true),
            ("app", Register, "brume.other", Exact, false),
            ("app", Call, "brume.other", Exact, true),
            // Exact beats any prefix.
            ("app", Call, "brume.things.delete", Exact, false),
            ("app", Call, "brume.things.delete2", Exact, true),
            // Wildcard applies when no prefix rule matches better: here the prefix `brume.`
            // matches first, so publishing is denied...
            ("app", Publish, "brume.thing.a1.state", Exact, false),
            // ...while a longer prefix decides for x7.
            ("app", Publish, "brume.thing.x7.state", Exact, true),
            // Nothing matches.
            ("app", Call, "com.example", Exact, false),
            // Unknown and empty roles deny.
            ("nobody", Call, "brume.things.list", Exact, false),
            ("empty", Call, "brume.things.list", Exact, false),
            // A prefix pattern only by prefix rules.
            ("app", Subscribe, "brume.things.", Prefix, true),
            ("app", Subscribe, "brume", Prefix, false),
            ("app", Subscribe, "brume.things.delete", Prefix, true),
            // A wildcard pattern by the rules covering it.
            ("app", Subscribe, "brume.things..x", Wildcard, true),
            ("app", Subscribe, "..state", Wildcard, false),
        ];
        for &(role, action, uri, policy, expected) in cases {
            assert_eq!(
                a.allows(role, action, uri, policy),
                expected,
                "{role} {action} {uri} ({})",
                policy.as_str()
            );
        }
    }

    #[test]
    fn wildcard_rules_alone() {
        let a = Authorizer::new([(
            "dev".to_owned(),
            vec![rule("brume.thing..state", Wildcard, &[Publish, Subscribe])],
        )])
        .unwrap();
        assert!(a.allows("dev", Publish, "brume.thing.a.state", Exact));
        assert!(!a.allows("dev", Publish, "brume.thing.a.event", Exact));
        assert!(!a.allows("dev", Publish, "brume.thing.a.b.state", Exact));
        assert!(a.allows("dev", Subscribe, "brume.thing..state", Wildcard));
        // A narrower wildcard pattern is covered; a broader one or a prefix is not.
        assert!(!a.allows("dev", Subscribe, "brume...state", Wildcard));
        assert!(!a.allows("dev", Subscribe, "brume.thing.", Prefix));
    }

    #[test]
    fn allow_all_and_refusals() {
        let open = Authorizer::allow_all();
        assert!(!open.restricts());
        assert!(open.allows("whoever", Register, "x", Exact));
        assert!(open.has_role("whoever"));
        assert_eq!(
            Authorizer::new([("trusted".to_owned(), vec![])]).unwrap_err(),
            AuthzError::ReservedRole
        );
        let dup = Authorizer::new([(
            "r".to_owned(),
            vec![rule("a", Exact, &[Call]), rule("a", Exact, &[Publish])],
        )]);
        assert!(matches!(dup, Err(AuthzError::DuplicateRule { .. })));
        // Same URI under different policies is fine.
        assert!(
            Authorizer::new([(
                "r".to_owned(),
                vec![rule("a", Exact, &[Call]), rule("a", Prefix, &[Publish])],
            )])
            .is_ok()
        );
    }

    #[test]
    fn equality_ignores_order_of_roles() {
        let a = Authorizer::new([
            ("x".to_owned(), vec![rule("a", Exact, &[Call])]),
            ("y".to_owned(), vec![]),
        ])
        .unwrap();
        let b = Authorizer::new([
            ("y".to_owned(), vec![]),
            ("x".to_owned(), vec![rule("a", Exact, &[Call])]),
        ])
        .unwrap();
        assert_eq!(a, b);
        assert_ne!(a, Authorizer::allow_all());
    }
}
