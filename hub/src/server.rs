//! Starting and stopping the hub: bind every listener (failing before any serves if one cannot
//! bind), serve, and on shutdown give every session GOODBYE and every task a grace period.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::{Config, ListenerKind};
use crate::router::Router;
use crate::transport::listener;

/// Why the hub could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error("cannot create data directory {path}: {source}")]
    DataDir {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("uplink: {0}")]
    Uplink(#[from] crate::uplink::UplinkError),
    #[error("listener {name}: cannot bind {address}: {source}")]
    Bind {
        name: String,
        address: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// A running hub.
#[derive(Debug)]
pub struct Hub {
    router: Arc<Router>,
    addrs: Vec<(String, SocketAddr)>,
    shutdown: CancellationToken,
    tracker: TaskTracker,
    grace: Duration,
}

impl Hub {
    /// Validates the config, binds every listener, and starts serving.
    pub async fn start(config: Config) -> Result<Hub, ServerError> {
        config.validate()?;
        let plans = config.listener_plans()?;
        std::fs::create_dir_all(&config.hub.data_dir).map_err(|source| ServerError::DataDir {
            path: config.hub.data_dir.display().to_string(),
            source,
        })?;
        let mut bound = Vec::new();
        for plan in plans {
            let l = TcpListener::bind(plan.address)
                .await
                .map_err(|source| ServerError::Bind {
                    name: plan.spec.name.clone(),
                    address: plan.address,
                    source,
                })?;
            let addr = l.local_addr().unwrap_or(plan.address);
            bound.push((l, addr, plan));
        }
        let router = Router::new(config.router_config()?);
        let shutdown = CancellationToken::new();
        let tracker = TaskTracker::new();
        let permits = Arc::new(Semaphore::new(config.router.max_connections));
        // Internal services attach before any listener accepts, so the first client finds them.
        if config.uplink.enabled {
            let realm = config.realms[0].name.clone();
            crate::uplink::start(
                &router,
                &realm,
                &config.hub.id,
                &config.hub.data_dir,
                config.uplink.clone(),
                shutdown.clone(),
                &tracker,
            )
            .await?;
        }
        let mut addrs = Vec::new();
        for (l, addr, plan) in bound {
            // RawSocket has no standard URL scheme; TLS ones are shown as rss://.
            let (ws, rs) = if plan.spec.tls.is_some() {
                ("wss", format!("rss://{addr}"))
            } else {
                ("ws", addr.to_string())
            };
            match plan.kind {
                ListenerKind::Websocket => tracing::info!(
                    listener = %plan.spec.name,
                    "WAMP over WebSocket at {ws}://{addr}{}",
                    plan.spec.path
                ),
                ListenerKind::Rawsocket => {
                    tracing::info!(listener = %plan.spec.name, "WAMP over RawSocket at {rs}")
                }
                ListenerKind::Both => tracing::info!(
                    listener = %plan.spec.name,
                    "WAMP over RawSocket at {rs} and WebSocket at {ws}://{addr}{}",
                    plan.spec.path
                ),
            }
            addrs.push((plan.spec.name.clone(), addr));
            tracker.spawn(listener::serve(
                l,
                Arc::new(plan.spec),
                router.clone(),
                permits.clone(),
                shutdown.clone(),
                tracker.clone(),
            ));
        }
        Ok(Hub {
            router,
            addrs,
            shutdown,
            tracker,
            grace: Duration::from_secs(config.hub.shutdown_grace_secs),
        })
    }

    /// The router, for in-process sessions.
    pub fn router(&self) -> &Arc<Router> {
        &self.router
    }

    /// The bound address of a listener by name (useful when the config asked for port 0).
    pub fn local_addr(&self, listener: &str) -> Option<SocketAddr> {
        self.addrs
            .iter()
            .find(|(n, _)| n == listener)
            .map(|(_, a)| *a)
    }

    /// A token that, once cancelled, starts the shutdown of every task of this hub.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Shuts down: listeners stop, sessions get GOODBYE `wamp.close.system_shutdown`, and tasks
    /// get the grace period to finish. Returns whether everything finished in time.
    pub async fn shutdown(self) -> bool {
        self.shutdown.cancel();
        self.tracker.close();
        let done = tokio::time::timeout(self.grace, self.tracker.wait())
            .await
            .is_ok();
        if done {
            tracing::info!("shutdown complete");
        } else {
            tracing::warn!(grace = ?self.grace, "tasks still running after the grace period; exiting anyway");
        }
        done
    }
}

/// Runs the hub until `stop` is cancelled, then shuts it down.
pub async fn run(config: Config, stop: CancellationToken) -> Result<(), ServerError> {
    let hub = Hub::start(config).await?;
    stop.cancelled().await;
    hub.shutdown().await;
    Ok(())
}
