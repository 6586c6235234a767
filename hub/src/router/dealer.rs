//! The dealer: registrations, and calls routed from callers to callees and back.
//!
//! A call is matched to one registration (exact, then longest prefix, then wildcard), one of its
//! callees is chosen by the registration's invocation policy, and the call is remembered as a
//! pending invocation keyed by (callee session, invocation request id) until the callee answers or
//! either side leaves.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::SystemTime;

use super::outbound::{Outgoing, SessionHandle};
use super::patterns::PatternIndex;
use crate::wamp::message::{code, opt_bool};
use crate::wamp::{Dict, Id, MatchPolicy, Message, Payload, Value, uris};

/// How a shared registration picks a callee.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InvokePolicy {
    Single,
    RoundRobin,
    Random,
    First,
    Last,
}

impl InvokePolicy {
    /// The policy named by the `invoke` option; absent means single.
    pub fn from_options(options: &Dict) -> Result<InvokePolicy, String> {
        match options.get("invoke") {
            None => Ok(InvokePolicy::Single),
            Some(v) => match v.as_str() {
                Some("single") => Ok(InvokePolicy::Single),
                Some("roundrobin") => Ok(InvokePolicy::RoundRobin),
                Some("random") => Ok(InvokePolicy::Random),
                Some("first") => Ok(InvokePolicy::First),
                Some("last") => Ok(InvokePolicy::Last),
                _ => Err(format!("unknown invocation policy {v:?}")),
            },
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            InvokePolicy::Single => "single",
            InvokePolicy::RoundRobin => "roundrobin",
            InvokePolicy::Random => "random",
            InvokePolicy::First => "first",
            InvokePolicy::Last => "last",
        }
    }
}

/// One session registered for a procedure.
#[derive(Debug)]
pub struct Callee {
    pub session: Arc<SessionHandle>,
    /// Disclose every caller to this callee (`REGISTER.disclose_caller`).
    pub disclose_caller: bool,
}

/// A registration and its callees, in registration order.
#[derive(Debug)]
pub struct Registration {
    pub id: Id,
    pub uri: String,
    pub policy: MatchPolicy,
    pub invoke: InvokePolicy,
    pub created: SystemTime,
    pub callees: Vec<Callee>,
    next: usize,
}

impl Registration {
    fn pick(&mut self) -> Option<&Callee> {
        let n = self.callees.len();
        if n == 0 {
            return None;
        }
        let i = match self.invoke {
            InvokePolicy::Single | InvokePolicy::First => 0,
            InvokePolicy::Last => n - 1,
            InvokePolicy::Random => rand::random_range(0..n),
            InvokePolicy::RoundRobin => {
                let i = self.next % n;
                self.next = (i + 1) % n;
                i
            }
        };
        self.callees.get(i)
    }
}

/// A call in flight.
#[derive(Debug)]
struct Pending {
    caller: Arc<SessionHandle>,
    call_request: Id,
    callee: Arc<SessionHandle>,
    /// The caller asked for progressive results and the callee may send them.
    progress: bool,
}

/// What [`Dealer::register`] did.
#[derive(Debug, PartialEq, Eq)]
pub struct Registered {
    pub id: Id,
    pub created: bool,
}

/// A refusal with a WAMP error URI and a human-readable message.
#[derive(Debug, PartialEq, Eq)]
pub struct Refusal {
    pub error: &'static str,
    pub message: String,
}

impl Refusal {
    fn new(error: &'static str, message: impl Into<String>) -> Self {
        Refusal {
            error,
            message: message.into(),
        }
    }
}

/// What a leaving session took with it.
#[derive(Debug, Default)]
pub struct Departure {
    /// Registrations it was removed from, and whether each was deleted.
    pub registrations: Vec<(Id, bool)>,
}

/// All registrations and pending calls of one realm.
#[derive(Debug, Default)]
pub struct Dealer {
    index: PatternIndex<Registration>,
    by_id: HashMap<Id, (String, MatchPolicy)>,
    pending: HashMap<(Id, Id), Pending>,
}

impl Dealer {
    /// Registers `session` for (uri, policy). A second registrant is admitted only when both use
    /// the same shared invocation policy.
    pub fn register(
        &mut self,
        uri: &str,
        policy: MatchPolicy,
        options: &Dict,
        session: &Arc<SessionHandle>,
        new_id: impl FnOnce() -> Id,
    ) -> Result<Registered, Refusal> {
        let invoke = InvokePolicy::from_options(options)
            .map_err(|m| Refusal::new(uris::INVALID_ARGUMENT, m))?;
        let callee = Callee {
            session: session.clone(),
            disclose_caller: opt_bool(options, "disclose_caller", false),
        };
        if let Some(reg) = self.index.get_mut(uri, policy) {
            if reg.callees.iter().any(|c| c.session.id == session.id) {
                return Err(Refusal::new(
                    uris::PROCEDURE_ALREADY_EXISTS,
                    format!("this session already registered {uri}"),
                ));
            }
            if reg.invoke == InvokePolicy::Single || reg.invoke != invoke {
                return Err(Refusal::new(
                    uris::PROCEDURE_ALREADY_EXISTS,
                    format!(
                        "{uri} is registered with invoke={}; a shared registration needs the same policy",
                        reg.invoke.as_str()
                    ),
                ));
            }
            reg.callees.push(callee);
            return Ok(Registered {
                id: reg.id,
                created: false,
            });
        }
        let id = new_id();
        self.index.insert(
            uri,
            policy,
            Registration {
                id,
                uri: uri.to_owned(),
                policy,
                invoke,
                created: SystemTime::now(),
                callees: vec![callee],
                next: 0,
            },
        );
        self.by_id.insert(id, (uri.to_owned(), policy));
        Ok(Registered { id, created: true })
    }

    /// Removes `session` as a callee of registration `id`; `None` if it was not one, else whether
    /// the registration was deleted.
    pub fn unregister(&mut self, id: Id, session: Id) -> Option<bool> {
        let (uri, policy) = self.by_id.get(&id)?.clone();
        let reg = self.index.get_mut(&uri, policy)?;
        let pos = reg.callees.iter().position(|c| c.session.id == session)?;
        reg.callees.remove(pos);
        if reg.callees.is_empty() {
            self.index.remove(&uri, policy);
            self.by_id.remove(&id);
            return Some(true);
        }
        Some(false)
    }

    /// Routes a CALL to a callee as an INVOCATION.
    pub fn call(
        &mut self,
        caller: &Arc<SessionHandle>,
        request: Id,
        procedure: &str,
        options: &Dict,
        payload: Payload,
    ) -> Result<(), Refusal> {
        let Some(reg) = self.best_match_mut(procedure) else {
            return Err(Refusal::new(
                uris::NO_SUCH_PROCEDURE,
                format!("no callee registered procedure {procedure}"),
            ));
        };
        let reg_id = reg.id;
        let pattern = reg.policy != MatchPolicy::Exact;
        let Some(callee) = reg.pick() else {
            return Err(Refusal::new(
                uris::NO_AVAILABLE_CALLEE,
                "no callee available",
            ));
        };
        let callee_session = callee.session.clone();
        let mut details = Dict::new();
        if pattern {
            details.insert("procedure".into(), Value::from(procedure));
        }
        if callee.disclose_caller || opt_bool(options, "disclose_me", false) {
            details.insert("caller".into(), Value::from(caller.id));
            details.insert(
                "caller_authid".into(),
                Value::from(caller.auth.authid.as_str()),
            );
            details.insert(
                "caller_authrole".into(),
                Value::from(caller.auth.authrole.as_str()),
            );
        }
        let progress = opt_bool(options, "receive_progress", false)
            && callee_session.features.progressive_call_results;
        if progress {
            details.insert("receive_progress".into(), Value::Bool(true));
        }
        let inv = callee_session.next_invocation_id();
        let msg = Message::Invocation {
            request: inv,
            registration: reg_id,
            details,
            payload,
        };
        self.pending.insert(
            (callee_session.id, inv),
            Pending {
                caller: caller.clone(),
                call_request: request,
                callee: callee_session.clone(),
                progress,
            },
        );
        if !callee_session.send(Outgoing::new(msg)) {
            self.pending.remove(&(callee_session.id, inv));
            return Err(Refusal::new(
                uris::UNAVAILABLE,
                "the callee cannot take more invocations",
            ));
        }
        Ok(())
    }

    /// Handles a YIELD from a callee: the result goes to the caller. Unknown invocations (the
    /// caller left, or the call was canceled) are ignored.
    pub fn yield_result(&mut self, callee: Id, request: Id, options: &Dict, payload: Payload) {
        let key = (callee, request);
        let progress = opt_bool(options, "progress", false);
        let Some(p) = self.pending.get(&key) else {
            tracing::debug!(callee, request, "YIELD for no pending invocation; ignored");
            return;
        };
        if progress && !p.progress {
            // The caller did not ask for progressive results: drop intermediate ones.
            return;
        }
        let mut details = Dict::new();
        if progress {
            details.insert("progress".into(), Value::Bool(true));
        }
        let msg = Message::Result {
            request: p.call_request,
            details,
            payload,
        };
        p.caller.send(Outgoing::new(msg));
        if !progress {
            self.pending.remove(&key);
        }
    }

    /// Handles an ERROR answering an INVOCATION: the error goes to the caller.
    pub fn invocation_error(
        &mut self,
        callee: Id,
        request: Id,
        details: Dict,
        error: String,
        payload: Payload,
    ) {
        let Some(p) = self.pending.remove(&(callee, request)) else {
            tracing::debug!(callee, request, "ERROR for no pending invocation; ignored");
            return;
        };
        p.caller.send(Outgoing::new(Message::Error {
            request_type: code::CALL,
            request: p.call_request,
            details,
            error,
            payload,
        }));
    }

    /// Removes a leaving session: its registrations go, calls it was serving fail with
    /// `wamp.error.canceled`, and calls it made are forgotten (their callees are interrupted if
    /// they support canceling).
    pub fn remove_session(&mut self, session: Id) -> Departure {
        let regs: Vec<Id> = self
            .index
            .iter()
            .filter(|(_, _, r)| r.callees.iter().any(|c| c.session.id == session))
            .map(|(_, _, r)| r.id)
            .collect();
        let registrations = regs
            .into_iter()
            .filter_map(|id| self.unregister(id, session).map(|d| (id, d)))
            .collect();
        self.pending.retain(|(callee, inv), p| {
            if *callee == session {
                p.caller.send(Outgoing::new(Message::error(
                    code::CALL,
                    p.call_request,
                    uris::CANCELED,
                    Some("the callee left".into()),
                )));
                return false;
            }
            if p.caller.id == session {
                if p.callee.features.call_canceling {
                    p.callee.send(Outgoing::new(Message::Interrupt {
                        request: *inv,
                        options: crate::wamp::dict([("mode", Value::from("killnowait"))]),
                    }));
                }
                return false;
            }
            true
        });
        Departure { registrations }
    }

    fn best_match_mut(&mut self, procedure: &str) -> Option<&mut Registration> {
        let (uri, policy) = {
            let r = self.index.best_match(procedure)?;
            (r.uri.clone(), r.policy)
        };
        self.index.get_mut(&uri, policy)
    }

    /// Looks up a registration by id.
    pub fn get(&self, id: Id) -> Option<&Registration> {
        let (uri, policy) = self.by_id.get(&id)?;
        self.index.get(uri, *policy)
    }

    /// Every registration.
    pub fn iter(&self) -> impl Iterator<Item = &Registration> {
        self.index.iter().map(|(_, _, r)| r)
    }

    /// The registration for exactly (uri, policy).
    pub fn lookup(&self, uri: &str, policy: MatchPolicy) -> Option<&Registration> {
        self.index.get(uri, policy)
    }

    /// The registration a call to `procedure` would reach.
    pub fn matching(&self, procedure: &str) -> Option<&Registration> {
        self.index.best_match(procedure)
    }

    /// Number of calls in flight.
    pub fn pending_calls(&self) -> usize {
        self.pending.len()
    }
}
