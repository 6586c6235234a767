//! The dealer: registrations, and calls routed from callers to callees and back.
//!
//! A call is matched to one registration (exact, then longest prefix, then wildcard), one of its
//! callees is chosen by the registration's invocation policy, and the call is remembered as a
//! pending invocation keyed by (callee session, invocation request id) until the callee answers or
//! either side leaves.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use super::outbound::{Outgoing, SessionHandle};
use super::patterns::PatternIndex;
use super::realm::Traffic;
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
    /// Most invocations this callee may have in flight (`REGISTER.concurrency`).
    pub concurrency: Option<u32>,
    pub in_flight: u32,
}

impl Callee {
    fn available(&self) -> bool {
        self.concurrency.is_none_or(|c| self.in_flight < c)
    }
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
    /// Picks a callee by the invocation policy among those under their concurrency cap.
    fn pick(&mut self) -> Option<usize> {
        let n = self.callees.len();
        let free: Vec<usize> = (0..n).filter(|&i| self.callees[i].available()).collect();
        if free.is_empty() {
            return None;
        }
        let i = match self.invoke {
            InvokePolicy::Single | InvokePolicy::First => free[0],
            InvokePolicy::Last => free[free.len() - 1],
            InvokePolicy::Random => free[rand::random_range(0..free.len())],
            InvokePolicy::RoundRobin => {
                let i = free
                    .iter()
                    .copied()
                    .find(|&i| i >= self.next)
                    .unwrap_or(free[0]);
                self.next = (i + 1) % n;
                i
            }
        };
        Some(i)
    }

    fn callee_mut(&mut self, session: Id) -> Option<&mut Callee> {
        self.callees.iter_mut().find(|c| c.session.id == session)
    }
}

/// A call in flight, keyed by (callee session, invocation request id).
#[derive(Debug)]
struct Pending {
    caller: Arc<SessionHandle>,
    call_request: Id,
    callee: Arc<SessionHandle>,
    registration: Id,
    /// The caller asked for progressive results and the callee may send them.
    progress: bool,
    /// The call's timeout, restarted by every progressive result.
    timeout: Option<Duration>,
    deadline: Option<Instant>,
    /// The caller canceled with mode `kill`: the callee's answer to the INTERRUPT reaches the
    /// caller as `wamp.error.canceled`.
    killed: bool,
}

/// What [`Dealer::register`] did.
#[derive(Debug, PartialEq, Eq)]
pub struct Registered {
    pub id: Id,
    pub created: bool,
    /// Callees displaced by `force_reregister` (they get a revocation).
    pub revoked: Vec<Id>,
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

/// A call with a timeout: the caller of [`Dealer::call`] arms a timer and, when it fires, asks
/// [`Dealer::check_timeout`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CallTimer {
    pub key: (Id, Id),
    pub deadline: Instant,
}

/// What a fired timer found.
#[derive(Debug, PartialEq, Eq)]
pub enum TimeoutCheck {
    /// The call is done; nothing to do.
    Gone,
    /// A progressive result restarted the timer: wait until this instant.
    Extended(Instant),
    /// The call timed out: the caller got `wamp.error.timeout`.
    Expired,
}

/// How a CANCEL is carried out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CancelMode {
    Skip,
    Kill,
    KillNoWait,
}

impl CancelMode {
    pub fn from_options(options: &Dict) -> Result<CancelMode, String> {
        match options.get("mode").and_then(Value::as_str) {
            None | Some("kill") => Ok(CancelMode::Kill),
            Some("skip") => Ok(CancelMode::Skip),
            Some("killnowait") => Ok(CancelMode::KillNoWait),
            Some(other) => Err(format!("unknown cancel mode {other:?}")),
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
    /// (caller session, call request) → pending key, for CANCEL.
    by_call: HashMap<(Id, Id), (Id, Id)>,
    traffic: Arc<Traffic>,
}

impl Dealer {
    /// The same dealer, counting calls and their outcomes in `traffic`.
    pub(crate) fn with_traffic(mut self, traffic: Arc<Traffic>) -> Dealer {
        self.traffic = traffic;
        self
    }

    /// Registers `session` for (uri, policy). A second registrant is admitted only when both use
    /// the same shared invocation policy, or when it asks `force_reregister` (then it replaces
    /// every current callee, who get a revocation).
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
        let concurrency = match options.get("concurrency") {
            None => None,
            Some(v) => match v.as_u64() {
                Some(c) if (1..=u64::from(u32::MAX)).contains(&c) => Some(c as u32),
                _ => {
                    return Err(Refusal::new(
                        uris::INVALID_ARGUMENT,
                        "concurrency must be a positive integer",
                    ));
                }
            },
        };
        let force = opt_bool(options, "force_reregister", false);
        let callee = Callee {
            session: session.clone(),
            disclose_caller: opt_bool(options, "disclose_caller", false),
            concurrency,
            in_flight: 0,
        };
        if let Some(reg) = self.index.get_mut(uri, policy) {
            if reg.callees.iter().any(|c| c.session.id == session.id) {
                return Err(Refusal::new(
                    uris::PROCEDURE_ALREADY_EXISTS,
                    format!("this session already registered {uri}"),
                ));
            }
            if force {
                let revoked: Vec<Id> = reg.callees.iter().map(|c| c.session.id).collect();
                // Only callees that announced `registration_revocation` may get UNREGISTERED.
                for c in reg
                    .callees
                    .iter()
                    .filter(|c| c.session.features.registration_revocation)
                {
                    c.session.send(Outgoing::new(Message::Unregistered {
                        request: 0,
                        details: Some(crate::wamp::dict([
                            ("registration", Value::from(reg.id)),
                            ("reason", Value::from(uris::REVOKED_FORCE_REREGISTERED)),
                        ])),
                    }));
                }
                reg.callees = vec![callee];
                reg.invoke = invoke;
                reg.next = 0;
                return Ok(Registered {
                    id: reg.id,
                    created: false,
                    revoked,
                });
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
                revoked: Vec::new(),
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
        Ok(Registered {
            id,
            created: true,
            revoked: Vec::new(),
        })
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

    /// Routes a CALL to a callee as an INVOCATION. Returns a timer to arm if the call has a
    /// timeout.
    pub fn call(
        &mut self,
        caller: &Arc<SessionHandle>,
        request: Id,
        procedure: &str,
        options: &Dict,
        payload: Payload,
    ) -> Result<Option<CallTimer>, Refusal> {
        Traffic::add(&self.traffic.calls, 1);
        let routed = self.route(caller, request, procedure, options, payload);
        if routed.is_err() {
            Traffic::add(&self.traffic.refused, 1);
        }
        routed
    }

    fn route(
        &mut self,
        caller: &Arc<SessionHandle>,
        request: Id,
        procedure: &str,
        options: &Dict,
        payload: Payload,
    ) -> Result<Option<CallTimer>, Refusal> {
        let timeout = match options.get("timeout") {
            None => None,
            Some(v) => match v.as_u64() {
                Some(0) => None,
                Some(ms) => Some(Duration::from_millis(ms)),
                None => {
                    return Err(Refusal::new(
                        uris::INVALID_ARGUMENT,
                        "timeout must be a non-negative integer (ms)",
                    ));
                }
            },
        };
        let Some(reg) = self.best_match_mut(procedure) else {
            return Err(Refusal::new(
                uris::NO_SUCH_PROCEDURE,
                format!("no callee registered procedure {procedure}"),
            ));
        };
        let reg_id = reg.id;
        let pattern = reg.policy != MatchPolicy::Exact;
        let Some(i) = reg.pick() else {
            return Err(Refusal::new(
                uris::NO_AVAILABLE_CALLEE,
                "every callee is at its concurrency limit",
            ));
        };
        let callee = &mut reg.callees[i];
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
        // A callee that announced `call_timeout` learns the deadline, so it can bound its own
        // work by it (the dealer still enforces it).
        if let Some(t) = timeout
            && callee_session.features.call_timeout
        {
            details.insert(
                "timeout".into(),
                Value::from(u64::try_from(t.as_millis()).unwrap_or(u64::MAX)),
            );
        }
        let inv = callee_session.next_invocation_id();
        if !callee_session.send(Outgoing::new(Message::Invocation {
            request: inv,
            registration: reg_id,
            details,
            payload,
        })) {
            return Err(Refusal::new(
                uris::UNAVAILABLE,
                "the callee cannot take more invocations",
            ));
        }
        callee.in_flight += 1;
        let key = (callee_session.id, inv);
        let deadline = timeout.map(|t| Instant::now() + t);
        self.pending.insert(
            key,
            Pending {
                caller: caller.clone(),
                call_request: request,
                callee: callee_session,
                registration: reg_id,
                progress,
                timeout,
                deadline,
                killed: false,
            },
        );
        self.by_call.insert((caller.id, request), key);
        Ok(deadline.map(|deadline| CallTimer { key, deadline }))
    }

    /// Forgets a pending call and releases its callee's concurrency slot.
    fn finish(&mut self, key: (Id, Id)) -> Option<Pending> {
        let p = self.pending.remove(&key)?;
        self.by_call.remove(&(p.caller.id, p.call_request));
        if let Some((uri, policy)) = self.by_id.get(&p.registration).cloned()
            && let Some(c) = self
                .index
                .get_mut(&uri, policy)
                .and_then(|r| r.callee_mut(p.callee.id))
        {
            c.in_flight = c.in_flight.saturating_sub(1);
        }
        Some(p)
    }

    /// Handles a YIELD from a callee: the result goes to the caller. Unknown invocations (the
    /// caller left, or the call was canceled or timed out) are ignored.
    pub fn yield_result(&mut self, callee: Id, request: Id, options: &Dict, payload: Payload) {
        let key = (callee, request);
        let progress = opt_bool(options, "progress", false);
        let Some(p) = self.pending.get_mut(&key) else {
            tracing::debug!(callee, request, "YIELD for no pending invocation; ignored");
            return;
        };
        if progress {
            if !p.progress {
                // The caller did not ask for progressive results: drop intermediate ones.
                return;
            }
            if let Some(t) = p.timeout {
                p.deadline = Some(Instant::now() + t);
            }
            p.caller.send(Outgoing::new(Message::Result {
                request: p.call_request,
                details: crate::wamp::dict([("progress", Value::Bool(true))]),
                payload,
            }));
            return;
        }
        if let Some(p) = self.finish(key) {
            Traffic::add(&self.traffic.results, 1);
            p.caller.send(Outgoing::new(Message::Result {
                request: p.call_request,
                details: Dict::new(),
                payload,
            }));
        }
    }

    /// Handles an ERROR answering an INVOCATION: the error goes to the caller, as
    /// `wamp.error.canceled` (with the callee's arguments) when the caller canceled with `kill`.
    pub fn invocation_error(
        &mut self,
        callee: Id,
        request: Id,
        details: Dict,
        error: String,
        payload: Payload,
    ) {
        let Some(p) = self.finish((callee, request)) else {
            tracing::debug!(callee, request, "ERROR for no pending invocation; ignored");
            return;
        };
        let error = if p.killed {
            Traffic::add(&self.traffic.canceled, 1);
            uris::CANCELED.to_owned()
        } else {
            Traffic::add(&self.traffic.errors, 1);
            error
        };
        p.caller.send(Outgoing::new(Message::Error {
            request_type: code::CALL,
            request: p.call_request,
            details,
            error,
            payload,
        }));
    }

    /// Handles a CANCEL from a caller. `skip` answers the caller now and lets the callee finish
    /// unheard; `kill` interrupts the callee and passes on whatever it answers; `killnowait`
    /// answers the caller now and interrupts the callee. A callee that does not support canceling
    /// always gets `skip`.
    pub fn cancel(&mut self, caller: Id, request: Id, mode: CancelMode) {
        self.cancel_because(
            caller,
            request,
            mode,
            uris::CANCELED,
            "the call was canceled".into(),
        );
    }

    /// Cancels as [`Dealer::cancel`] does, answering the caller (when it is answered now) with
    /// `error` and `message`: the router's own reason for ending a call it cannot complete.
    pub fn cancel_because(
        &mut self,
        caller: Id,
        request: Id,
        mode: CancelMode,
        error: &str,
        message: String,
    ) {
        let Some(&key) = self.by_call.get(&(caller, request)) else {
            return;
        };
        let Some(p) = self.pending.get_mut(&key) else {
            return;
        };
        let mode = if p.callee.features.call_canceling {
            mode
        } else {
            CancelMode::Skip
        };
        let interrupt = |p: &Pending, mode: &str| {
            p.callee.send(Outgoing::new(Message::Interrupt {
                request: key.1,
                options: crate::wamp::dict([
                    ("mode", Value::from(mode)),
                    ("reason", Value::from(uris::CANCELED)),
                ]),
            }));
        };
        match mode {
            CancelMode::Kill => {
                p.killed = true;
                interrupt(p, "kill");
            }
            CancelMode::Skip | CancelMode::KillNoWait => {
                if let Some(p) = self.finish(key) {
                    Traffic::add(&self.traffic.canceled, 1);
                    if mode == CancelMode::KillNoWait {
                        interrupt(&p, "killnowait");
                    }
                    p.caller.send(Outgoing::new(Message::error(
                        code::CALL,
                        p.call_request,
                        error,
                        Some(message),
                    )));
                }
            }
        }
    }

    /// Checks a call whose timer fired: expires it (`wamp.error.timeout` to the caller, INTERRUPT
    /// `killnowait` to a callee that supports canceling) unless it finished or was extended.
    pub fn check_timeout(&mut self, key: (Id, Id), now: Instant) -> TimeoutCheck {
        let Some(p) = self.pending.get(&key) else {
            return TimeoutCheck::Gone;
        };
        match p.deadline {
            None => return TimeoutCheck::Gone,
            Some(d) if d > now => return TimeoutCheck::Extended(d),
            Some(_) => {}
        }
        let Some(p) = self.finish(key) else {
            return TimeoutCheck::Gone;
        };
        Traffic::add(&self.traffic.timeouts, 1);
        if p.callee.features.call_canceling {
            p.callee.send(Outgoing::new(Message::Interrupt {
                request: key.1,
                options: crate::wamp::dict([
                    ("mode", Value::from("killnowait")),
                    ("reason", Value::from(uris::TIMEOUT)),
                ]),
            }));
        }
        p.caller.send(Outgoing::new(Message::error(
            code::CALL,
            p.call_request,
            uris::TIMEOUT,
            Some("the callee did not answer in time".into()),
        )));
        TimeoutCheck::Expired
    }

    /// Removes a leaving session: its registrations go, calls it was serving fail with
    /// `wamp.error.canceled`, and calls it made are forgotten (their callees are interrupted with
    /// `killnowait` if they support canceling).
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
        let keys: Vec<(Id, Id)> = self
            .pending
            .iter()
            .filter(|((callee, _), p)| *callee == session || p.caller.id == session)
            .map(|(k, _)| *k)
            .collect();
        for key in keys {
            let Some(p) = self.finish(key) else { continue };
            Traffic::add(&self.traffic.canceled, 1);
            if key.0 == session {
                p.caller.send(Outgoing::new(Message::error(
                    code::CALL,
                    p.call_request,
                    uris::CANCELED,
                    Some("the callee left".into()),
                )));
            } else if p.callee.features.call_canceling {
                p.callee.send(Outgoing::new(Message::Interrupt {
                    request: key.1,
                    options: crate::wamp::dict([
                        ("mode", Value::from("killnowait")),
                        ("reason", Value::from(uris::CANCELED)),
                    ]),
                }));
            }
        }
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
