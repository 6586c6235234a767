//! Authentication: establishing who a session is, between HELLO and WELCOME.
//!
//! - [`handshake`]: the router's side of HELLO → (CHALLENGE → AUTHENTICATE) → WELCOME, as plain
//!   functions that return what to send; the session state machine drives them.
//! - [`principal`]: a realm's principals (authid, role, credentials) and decoys for unknown authids.
//! - [`ticket`]: salted PBKDF2 ticket hashes in a self-describing string.
//! - [`wampcra`]: WAMP-CRA challenge text, derived keys and signatures, plain and salted.
//! - [`cryptosign`]: Ed25519 challenges and signatures, with TLS channel binding.
//! - [`generate`]: new principals with fresh secrets, for `brume new-principal`.
//! - [`secret`]: a string whose `Debug` hides it, and the hex/base64/random helpers.
//!
//! Every failure after HELLO is answered the same way (ABORT `wamp.error.authentication_failed`,
//! no detail) and logged with the peer, authid and cause, so the operator learns what the client
//! does not.

pub mod cryptosign;
pub mod generate;
pub mod handshake;
pub mod principal;
pub mod secret;
pub mod ticket;
pub mod wampcra;

pub use handshake::{Failure, Pending, Refusal, Step};
pub use principal::{Principal, PrincipalError, PrincipalStore};
pub use secret::Secret;

/// The authentication methods the router implements.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AuthMethod {
    Anonymous,
    Ticket,
    #[serde(rename = "wampcra")]
    WampCra,
    Cryptosign,
}

impl AuthMethod {
    /// Every method, in the order `brume new-principal` lists them.
    pub const ALL: [AuthMethod; 4] = [
        AuthMethod::Anonymous,
        AuthMethod::Ticket,
        AuthMethod::WampCra,
        AuthMethod::Cryptosign,
    ];

    /// The name used in HELLO.Details.authmethods and WELCOME.Details.authmethod.
    pub fn as_str(self) -> &'static str {
        match self {
            AuthMethod::Anonymous => "anonymous",
            AuthMethod::Ticket => "ticket",
            AuthMethod::WampCra => "wampcra",
            AuthMethod::Cryptosign => "cryptosign",
        }
    }

    /// The method with this wire name.
    pub fn parse(s: &str) -> Option<AuthMethod> {
        AuthMethod::ALL.into_iter().find(|m| m.as_str() == s)
    }
}

impl std::fmt::Display for AuthMethod {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Runs `f`, a computation of milliseconds (a PBKDF2 ticket check), without holding up the other
/// tasks of the runtime thread it is called on: on the multi-thread runtime they move to another
/// thread while `f` runs (`block_in_place`; with one runtime thread, the hub's default on two
/// cores, they would otherwise all wait); elsewhere (a current-thread runtime in tests) it just
/// runs.
pub fn off_the_runtime<R>(f: impl FnOnce() -> R) -> R {
    match tokio::runtime::Handle::try_current() {
        Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(f)
        }
        _ => f(),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc;
    use std::time::Duration;

    /// With one runtime thread, a task that runs a long computation through
    /// [`off_the_runtime`](super::off_the_runtime) lets another task of that thread run meanwhile:
    /// here the computation waits for the other task, which could never run if the computation
    /// held the thread.
    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn a_long_check_lets_the_threads_other_tasks_run() {
        let (tx, rx) = mpsc::channel();
        let (go_tx, go_rx) = tokio::sync::oneshot::channel::<()>();
        let other = tokio::spawn(async move {
            let _ = go_rx.await;
            let _ = tx.send(());
        });
        let check = tokio::spawn(async move {
            super::off_the_runtime(move || {
                let _ = go_tx.send(());
                rx.recv_timeout(Duration::from_secs(5)).is_ok()
            })
        });
        assert!(check.await.unwrap(), "the other task did not run");
        other.await.unwrap();
    }
}
