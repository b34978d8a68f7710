//! The application: bind, wire, run, shut down.
//!
//! [`App::build`] binds the listener first (so a `:0` port is known before anything is
//! advertised), opens the store, creates the CSEBase and imports `init/`. [`App::run`]
//! serves until the shutdown future resolves, then drains in-flight requests and waits
//! for every background task within a grace period.

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, info, info_span, warn};

use crate::binding::http::tls::{self, ServerTls};
use crate::binding::http::{Client, ServeLimits, admin_router, router, serve};
use crate::bootstrap;
use crate::config::{Config, HttpConfig, Source};
use crate::core::Cse;
use crate::event::{Event, EventBus};
use crate::remote::RemoteCseManager;
use crate::storage::Storage;

/// How long shutdown waits for in-flight work and background tasks.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// A CSE built and bound, not yet serving ([`App::start`], [`App::run`]).
pub struct App {
    listener: TcpListener,
    local_addr: SocketAddr,
    /// The admin listener (`[admin] listen`), when on.
    admin: Option<(TcpListener, SocketAddr)>,
    /// The server's TLS, when `[http.tls]` enables it.
    server_tls: Option<ServerTls>,
    cse: Cse,
    /// Where this instance serves (its part of the CSEBase `poa`).
    poa: Vec<String>,
    remote: RemoteCseManager,
    shutdown: CancellationToken,
    tracker: TaskTracker,
}

impl App {
    /// Bind, open storage, create the start-up resources. `init_dir` holds the `init/`
    /// files applied to a new database.
    /// A TLS file that cannot be read fails as a [`crate::config::ConfigError`] naming its key.
    pub async fn build(config: Config, init_dir: Option<PathBuf>) -> anyhow::Result<App> {
        App::build_from(config, None, init_dir).await
    }

    /// As [`App::build`], with `config` read from `source`: a reload
    /// ([`RemoteCseManager::reload`], SIGHUP in the binary) reads the source again.
    pub async fn build_from(config: Config, source: Option<Source>, init_dir: Option<PathBuf>) -> anyhow::Result<App> {
        let tls = tls::load(&config.http.tls)?;
        let listener = TcpListener::bind(config.http.listen)
            .await
            .with_context(|| format!("cannot listen on {} (http.listen)", config.http.listen))?;
        let local_addr = listener.local_addr()?;
        let admin = match config.admin.listen {
            Some(address) => match TcpListener::bind(address).await {
                Ok(admin) => {
                    let bound = admin.local_addr()?;
                    Some((admin, bound))
                }
                Err(error) if config.admin.default_listen => {
                    warn!(%address, %error, "no admin listener: its default address is taken (another CSE on this machine?); set admin.listen to another address, or empty to turn it off");
                    None
                }
                Err(error) => {
                    return Err(anyhow::anyhow!(
                        "cannot listen on {address} (admin.listen; empty turns it off): {error}"
                    ));
                }
            },
            None => None,
        };
        let database = config.database.clone();
        let storage = tokio::task::spawn_blocking(move || Storage::open(&database))
            .await?
            .map_err(|error| anyhow::anyhow!("cannot open the database: {}", error.detail()))?;
        let poa = advertised_poa(&config.http, local_addr);
        let client = Client::new(&config.http, &tls);
        let cse = Cse::new(config, source, storage, EventBus::default(), Arc::new(client));
        let new_database = bootstrap::ensure_cse_base(&cse, poa.clone())
            .await
            .map_err(|error| anyhow::anyhow!("{}", error.detail()))?;
        cse.advertise(Some(poa.clone())).await.map_err(|error| anyhow::anyhow!("{}", error.detail()))?;
        cse.load_registry().await.map_err(|error| anyhow::anyhow!("{}", error.detail()))?;
        if new_database && let Some(dir) = init_dir {
            bootstrap::import_init_dir(&cse, &dir).await.map_err(|error| anyhow::anyhow!("{}", error.detail()))?;
        }
        info!(
            address = %local_addr,
            cse_id = %cse.config().cse.cse_id,
            kind = ?cse.config().cse.kind,
            database = %cse.config().database.describe(),
            "CSE ready"
        );
        let remote = RemoteCseManager::new(cse.clone());
        Ok(App {
            listener,
            local_addr,
            admin,
            server_tls: tls.server,
            cse,
            poa,
            remote,
            shutdown: CancellationToken::new(),
            tracker: TaskTracker::new(),
        })
    }

    /// The address actually bound (the real port after binding `:0`).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The admin listener's address, when `[admin] listen` is set.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin.as_ref().map(|(_, address)| *address)
    }

    /// The CSE (requests, configuration, stored resources, events).
    pub fn cse(&self) -> &Cse {
        &self.cse
    }

    /// The remote-CSE manager: registration status, CSR lookups and callbacks.
    pub fn remote(&self) -> &RemoteCseManager {
        &self.remote
    }

    /// Cancelling this token stops the application (as the shutdown future does).
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Serve until `signal` resolves (or the shutdown token is cancelled), then drain.
    pub async fn run(self, signal: impl Future<Output = ()> + Send + 'static) -> anyhow::Result<()> {
        let token = self.shutdown.clone();
        tokio::spawn(async move {
            tokio::select! {
                () = signal => token.cancel(),
                () = token.cancelled() => {}
            }
        });
        self.start().await?.stopped().await
    }

    /// Start serving and the background work; returns once everything runs. The CSE
    /// stops when the shutdown token is cancelled; [`Running::stopped`] waits for that.
    pub async fn start(self) -> anyhow::Result<Running> {
        let App { listener, local_addr, admin, server_tls, cse, poa, remote, shutdown, tracker } = self;
        tracker.spawn(expiry_worker(cse.clone(), shutdown.clone()).instrument(info_span!("expiry")));
        if cse.storage.lease().is_shared() {
            tracker.spawn(heartbeat(cse.clone(), poa, shutdown.clone()).instrument(info_span!("instances")));
        }
        tracker.spawn(cse.clone().deliver_notifications(shutdown.clone()).instrument(info_span!("notifications")));
        let router = router(cse.clone()).context("cannot start the HTTP binding")?;
        let http = &cse.config().http;
        let limits = ServeLimits {
            max_connections: http.max_connections,
            header_read_timeout: http.header_read_timeout,
            max_header_size: http.max_header_size,
        };
        let server = tokio::spawn(
            serve(listener, server_tls, router, limits, shutdown.clone(), SHUTDOWN_GRACE)
                .instrument(info_span!("http")),
        );
        let admin_server = admin.map(|(admin, address)| {
            if exposed_without_credentials(address, cse.config().admin.token.is_some()) {
                warn!(%address, "the admin listener is reachable beyond this machine without a token; set admin.token");
            }
            info!(%address, "serving the admin endpoints (health, metrics, registrations)");
            let router = admin_router(cse.clone(), remote.clone(), local_addr, shutdown.clone());
            let limits = ServeLimits {
                max_connections: 64,
                header_read_timeout: Duration::from_secs(10),
                max_header_size: 16 * 1024,
            };
            tokio::spawn(
                serve(admin, None, router, limits, shutdown.clone(), SHUTDOWN_GRACE).instrument(info_span!("admin")),
            )
        });
        let tls = cse.config().http.tls.server.is_some();
        info!(address = %local_addr, tls, authentication = cse.config().http.auth.is_enabled(), "serving HTTP");
        if exposed_without_credentials(local_addr, cse.config().http.auth.is_enabled()) {
            warn!(
                address = %local_addr,
                "serving beyond this machine with authentication off: whoever reaches the port is served as the \
                 originator they name; turn on http.security.enable_basic_auth or enable_bearer_auth"
            );
        }
        if let Err(error) = remote.start().await {
            // Nothing keeps running when the start fails.
            shutdown.cancel();
            let _ = server.await;
            if let Some(admin) = admin_server {
                let _ = admin.await;
            }
            tracker.close();
            tracker.wait().await;
            return Err(anyhow::anyhow!("cannot start the remote-CSE manager: {}", error.detail()));
        }
        cse.events.emit(Event::CseStarted);
        Ok(Running { remote, server, admin: admin_server, tracker, cse })
    }
}

/// A started application (see [`App::start`]).
pub struct Running {
    remote: RemoteCseManager,
    /// Serves until shutdown, then drains requests within the grace period.
    server: tokio::task::JoinHandle<()>,
    /// The admin listener, when on.
    admin: Option<tokio::task::JoinHandle<()>>,
    tracker: TaskTracker,
    cse: Cse,
}

impl Running {
    /// Wait until the shutdown token is cancelled and everything has stopped: in-flight
    /// requests drained, this CSE deregistered (bounded by the client time-out),
    /// background tasks finished (bounded by a grace period).
    pub async fn stopped(self) -> anyhow::Result<()> {
        let Running { remote, server, admin, tracker, cse } = self;
        // The server stops accepting when the shutdown token is cancelled; requests in
        // flight get the grace period to finish, then their connections are closed.
        server.await.context("HTTP server task failed")?;
        if let Some(admin) = admin {
            admin.await.context("admin server task failed")?;
        }
        remote.stop().await;
        tracker.close();
        if tokio::time::timeout(SHUTDOWN_GRACE, tracker.wait()).await.is_err() {
            warn!(grace = ?SHUTDOWN_GRACE, "background tasks did not stop in time");
        }
        // The other instances of a shared database stop advertising this one, and one of
        // them takes the singleton work over now.
        if let Err(error) = cse.advertise(None).await {
            warn!(error = %error.detail(), "cannot withdraw this instance's address from the CSEBase poa");
        }
        cse.storage.release_lease();
        info!("stopped");
        Ok(())
    }
}

/// Say every [`INSTANCE_HEARTBEAT`] that this instance of a shared database still serves at
/// `poa` (which keeps the CSEBase `poa` the addresses of the live instances).
async fn heartbeat(cse: Cse, poa: Vec<String>, shutdown: CancellationToken) {
    let mut ticks = tokio::time::interval(crate::core::INSTANCE_HEARTBEAT);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = ticks.tick() => {
                if let Err(error) = cse.advertise(Some(poa.clone())).await {
                    warn!(error = %error.detail(), "cannot record that this instance still serves");
                }
            }
        }
    }
}

/// Remove expired resources every `expiration_check_interval`.
async fn expiry_worker(cse: Cse, shutdown: CancellationToken) {
    let mut ticks = tokio::time::interval(cse.config().cse.expiration_check_interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let lease = cse.storage.lease();
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = ticks.tick() => {
                // One instance of a shared database removes what expired: the lease holder.
                if !lease.is_held() {
                    continue;
                }
                match cse.remove_expired().await {
                    Ok(0) => {}
                    Ok(count) => info!(count, "removed expired resources"),
                    Err(error) => warn!(%error, "expiration run failed"),
                }
            }
        }
    }
}

/// The `poa` this CSE advertises: the configured list, else the public URL, else the bound
/// address (a wildcard address is advertised as loopback; `https://` when serving TLS).
/// Never with credentials in it.
pub fn advertised_poa(http: &HttpConfig, local_addr: SocketAddr) -> Vec<String> {
    if !http.poa.is_empty() {
        return http.poa.clone();
    }
    if let Some(url) = &http.public_url {
        return vec![url.clone()];
    }
    let ip = match local_addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    let scheme = if http.tls.server.is_some() { "https" } else { "http" };
    vec![format!("{scheme}://{}", SocketAddr::new(ip, local_addr.port()))]
}

/// Whether the CSE listens where other machines reach it and asks no credentials.
fn exposed_without_credentials(listening: SocketAddr, authentication: bool) -> bool {
    !listening.ip().is_loopback() && !authentication
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listening_beyond_loopback_without_credentials_is_told() {
        let any: SocketAddr = "0.0.0.0:8080".parse().expect("address");
        let loopback: SocketAddr = "127.0.0.1:8080".parse().expect("address");
        assert!(exposed_without_credentials(any, false));
        assert!(!exposed_without_credentials(any, true));
        assert!(!exposed_without_credentials(loopback, false));
        assert!(!exposed_without_credentials("[::1]:8080".parse().expect("address"), false));
    }
}
