//! The things service's WAMP session: joins the realm in-process as a trusted session, registers
//! the procedures, and joins again when the session ends while the hub runs (an administrator's
//! `wamp.session.kill_all` ends it like any other). It carries calls only: the service publishes
//! straight into the realm's broker (see [`super::service::Publish`]), so state events keep
//! flowing while this session is away.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Semaphore, mpsc};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::api::{self, Procedure};
use super::request::{Reply, Request};
use crate::client::{Client, ClientError, Registration};
use crate::router::{AuthInfo, Router};

/// Longest wait between two attempts to join again.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Joins `realm` and registers every procedure.
pub async fn join(
    router: &Arc<Router>,
    realm: &str,
) -> Result<(Client, Vec<(Procedure, Registration)>), ClientError> {
    let client = Client::local(
        router,
        realm,
        AuthInfo {
            authid: crate::wamp::uris::things::SERVICE_AUTHID.into(),
            authrole: "trusted".into(),
            authmethod: "trusted".into(),
            authprovider: "internal".into(),
        },
    )?;
    let registrations = api::register_all(&client).await?;
    Ok((client, registrations))
}

/// What the session task needs to serve and, when needed, join again.
pub struct SessionTask {
    pub router: Arc<Router>,
    pub realm: String,
    pub requests: mpsc::Sender<(Request, Reply)>,
    pub tracker: TaskTracker,
    pub shutdown: CancellationToken,
}

impl SessionTask {
    /// Serves the session joined at start, then any later one, until shutdown.
    pub async fn run(self, first: (Client, Vec<(Procedure, Registration)>)) {
        device_models::fault::inject("things_session");
        let permits = Arc::new(Semaphore::new(api::MAX_IN_FLIGHT));
        let mut session = Some(first);
        let mut backoff = Duration::from_millis(50);
        loop {
            let (client, registrations) = match session.take() {
                Some(s) => s,
                None => match join(&self.router, &self.realm).await {
                    Ok(s) => {
                        tracing::info!("the things service joined its realm again");
                        backoff = Duration::from_millis(50);
                        s
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, retry_in = ?backoff, "the things service cannot join its realm");
                        tokio::select! {
                            _ = self.shutdown.cancelled() => return,
                            _ = tokio::time::sleep(backoff) => {}
                        }
                        backoff = (backoff * 2).min(MAX_BACKOFF);
                        continue;
                    }
                },
            };
            for (proc, reg) in registrations {
                self.tracker.spawn(api::serve(
                    proc,
                    reg,
                    self.requests.clone(),
                    permits.clone(),
                    self.tracker.clone(),
                    self.shutdown.clone(),
                ));
            }
            tokio::select! {
                _ = self.shutdown.cancelled() => return,
                reason = client.closed() => {
                    let reason = reason.unwrap_or_else(|| "closed".into());
                    tracing::warn!(%reason, "the things service's WAMP session ended; joining again");
                }
            }
        }
    }
}
