//! The admin listener (`[admin] listen`): what operators and their tools ask, apart from
//! the oneM2M port so that no oneM2M path is shadowed.
//!
//! - `GET /health`: 200 with a small JSON document while the CSE serves (its database
//!   takes writes, its listener is up), 503 saying why not; each registrar relation's state;
//! - `GET /metrics`: the counters in the Prometheus (OpenMetrics) text format;
//! - `GET /registrations`: the registrar relations and the registree CSRs, as JSON;
//! - `POST /registrations/refresh`: a monitor round now (registration checks, liveliness);
//! - `POST /reload`: read the configuration file again (as SIGHUP does);
//! - `GET /topology`: a page showing the registration tree as it is now (this CSE, its
//!   registrars with state and address, every registree and the CSEs below it), updated
//!   live from `GET /topology/events` (server-sent events: the view as JSON on connect and
//!   on every change); no external assets.
//!
//! With `[admin] token` every request needs `Authorization: Bearer <token>` (401 without),
//! or `?token=` (what a browser's page and its event stream can send).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::core::Cse;
use crate::metrics::Snapshot;
use crate::remote::{RegistrationStatus, RemoteCseManager};
use crate::security::Secret;

/// The longest a health check waits for the database to take a write.
const HEALTH_PROBE_LIMIT: Duration = Duration::from_secs(2);

#[derive(Clone)]
struct Admin {
    cse: Cse,
    remote: RemoteCseManager,
    token: Option<Secret>,
    /// The oneM2M listener's address.
    serving: SocketAddr,
    /// Cancelled when the CSE stops: event streams end.
    stopping: CancellationToken,
    /// Event streams open now (at most [`MAX_STREAMS`], so that they never take the
    /// connections `/health` needs).
    streams: Arc<AtomicUsize>,
    /// When the last refresh ran (refreshes are rate-limited: each is a liveliness round,
    /// and a burst of rounds would remove a registree that is merely restarting).
    last_refresh: Arc<std::sync::Mutex<Option<std::time::Instant>>>,
}

/// Most event streams open at once.
const MAX_STREAMS: usize = 16;
/// Least time between two refreshes.
const REFRESH_SPACING: Duration = Duration::from_secs(10);

/// The admin endpoints of `cse`.
pub fn admin_router(cse: Cse, remote: RemoteCseManager, serving: SocketAddr, stopping: CancellationToken) -> Router {
    let token = cse.config().admin.token.clone();
    let state = Admin { cse, remote, token, serving, stopping, streams: Arc::default(), last_refresh: Arc::default() };
    Router::new()
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .route("/registrations", get(registrations))
        .route("/registrations/refresh", post(refresh))
        .route("/reload", post(reload))
        .route("/topology", get(topology))
        .route("/topology/events", get(topology_events))
        .fallback(|| async { reply(StatusCode::NOT_FOUND, json!({"error": "no such admin endpoint"})) })
        .layer(axum::middleware::from_fn_with_state(state.clone(), authorize))
        .with_state(state)
}

/// Requests a web page could make the operator's browser send are refused: a `Host` that
/// is a name other than `localhost` (DNS rebinding), a POST from a page of another origin.
/// With a token configured, only requests that carry it (in `Authorization: Bearer`, or as
/// `?token=` on a GET, which is what a browser's page and its event stream can send).
async fn authorize(
    State(admin): State<Admin>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let host = request.headers().get(header::HOST).and_then(|value| value.to_str().ok()).unwrap_or_default();
    let host_name =
        host.rsplit_once(':').map_or(host, |(name, port)| if port.parse::<u16>().is_ok() { name } else { host });
    let host_name = host_name.trim_start_matches('[').trim_end_matches(']');
    if !host.is_empty() && host_name != "localhost" && host_name.parse::<std::net::IpAddr>().is_err() {
        return reply(
            StatusCode::FORBIDDEN,
            json!({"error": "the admin endpoints answer requests addressed to an IP address or localhost"}),
        );
    }
    let post = request.method() == axum::http::Method::POST;
    if post {
        let origin = request.headers().get(header::ORIGIN).and_then(|value| value.to_str().ok());
        if origin.is_some_and(|origin| origin.split_once("://").map(|(_, rest)| rest) != Some(host)) {
            return reply(StatusCode::FORBIDDEN, json!({"error": "a POST from a page of another origin"}));
        }
    }
    if let Some(token) = &admin.token {
        let in_query = request.uri().query().into_iter().flat_map(|query| query.split('&')).find_map(|pair| {
            let (name, value) = pair.split_once('=')?;
            (name == "token").then(|| percent_encoding::percent_decode_str(value).decode_utf8_lossy().into_owned())
        });
        let bearer = request
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, token)| token.trim().to_string());
        let sent = bearer.or(in_query.filter(|_| !post)).unwrap_or_default();
        if !token.matches(sent.as_bytes()) {
            let mut headers = HeaderMap::new();
            headers.insert(header::WWW_AUTHENTICATE, header::HeaderValue::from_static("Bearer"));
            let mut refusal =
                reply(StatusCode::UNAUTHORIZED, json!({"error": "a bearer token is required (admin.token)"}));
            refusal.headers_mut().extend(headers);
            return refusal;
        }
    }
    next.run(request).await
}

fn status_name(status: &RegistrationStatus) -> &'static str {
    match status {
        RegistrationStatus::Disabled => "disabled",
        RegistrationStatus::Connecting => "connecting",
        RegistrationStatus::Registered => "registered",
        RegistrationStatus::Unreachable => "unreachable",
        RegistrationStatus::Deregistered => "deregistered",
        RegistrationStatus::Error(_) => "error",
    }
}

fn registrar_states(remote: &RemoteCseManager) -> Vec<Value> {
    remote
        .registrar_views()
        .iter()
        .map(|view| {
            let mut entry = json!({
                "cse_id": view.registrar.cse_id,
                "status": status_name(&view.status),
                "address": view.address,
                "group": view.group,
            });
            if let RegistrationStatus::Error(reason) = &view.status {
                entry["reason"] = json!(reason);
            }
            entry
        })
        .collect()
}

async fn health(State(admin): State<Admin>) -> Response {
    let mut problems = Vec::new();
    if admin.stopping.is_cancelled() {
        problems.push("stopping".to_string());
    }
    let database = match tokio::time::timeout(HEALTH_PROBE_LIMIT, admin.cse.probe_writable()).await {
        Ok(Ok(())) => json!({"writable": true, "backend": admin.cse.config().database.describe()}),
        Ok(Err(error)) => {
            problems.push(format!("the database does not take writes: {}", error.detail()));
            json!({"writable": false, "error": error.detail()})
        }
        Err(_) => {
            problems.push(format!("the database did not take a write within {HEALTH_PROBE_LIMIT:?}"));
            json!({"writable": false, "error": "timed out"})
        }
    };
    let healthy = problems.is_empty();
    let body = json!({
        "status": if healthy { "ok" } else { "unavailable" },
        "problems": problems,
        "cse_id": admin.cse.config().cse.cse_id.to_string(),
        "listening": admin.serving.to_string(),
        "database": database,
        "registrars": registrar_states(&admin.remote),
        "registrees": admin.remote.registry().registree_csrs().len(),
    });
    let code = if healthy { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    reply(code, body)
}

async fn metrics(State(admin): State<Admin>) -> Response {
    let registry = admin.remote.registry();
    let cache = admin.cse.cache_stats();
    let snapshot = Snapshot {
        registrars: admin
            .remote
            .registrar_views()
            .iter()
            .map(|view| (view.registrar.cse_id.clone(), status_name(&view.status)))
            .collect(),
        registrees: registry.registree_csrs().len(),
        descendants: registry.descendant_ids().len(),
        notifications_pending: admin.cse.notifications_pending().await.unwrap_or(0),
        cached_resources: cache.held,
        cache_hits: cache.hits,
        cache_misses: cache.misses,
    };
    let text = admin.cse.metrics().encode(&snapshot);
    ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], text).into_response()
}

async fn registrations(State(admin): State<Admin>) -> Response {
    reply(StatusCode::OK, view(&admin))
}

/// The registration tree as it is now: this CSE, its registrars, its registrees and the
/// CSEs below each.
fn view(admin: &Admin) -> Value {
    let probes = admin.remote.probes();
    let registrees: Vec<Value> = admin
        .remote
        .csrs()
        .into_iter()
        .filter(|record| !record.registrar)
        .map(|record| {
            json!({
                "cse_id": record.csi,
                "ri": record.ri,
                "cse_base": record.cb,
                "poa": record.poa,
                "descendants": record.dcse,
                "registered": record.resource.ct(),
                "changed": record.resource.str("lt"),
                "last_probe": probes.get(&record.csi).map(|probe| probe.last_probe.clone()),
                "failures": probes.get(&record.csi).map_or(0, |probe| probe.failures),
                "last_error": probes.get(&record.csi).and_then(|probe| probe.last_error.clone()),
            })
        })
        .collect();
    let config = admin.cse.config();
    json!({
        "cse_id": config.cse.cse_id.to_string(),
        "kind": config.cse.kind.name(),
        "registrars": registrar_states(&admin.remote),
        "registrees": registrees,
    })
}

/// The page: one file, nothing fetched from elsewhere.
const TOPOLOGY_PAGE: &str = include_str!("topology.html");

async fn topology() -> Response {
    ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], TOPOLOGY_PAGE).into_response()
}

/// The view on connect, then again whenever it changes (a registrar's state or address,
/// a registree or a descendant come or gone, checked at least every 2 s for the rest);
/// ends when the CSE stops.
async fn topology_events(State(admin): State<Admin>) -> Response {
    if admin.streams.fetch_add(1, Ordering::SeqCst) >= MAX_STREAMS {
        admin.streams.fetch_sub(1, Ordering::SeqCst);
        return reply(
            StatusCode::SERVICE_UNAVAILABLE,
            json!({"error": format!("at most {MAX_STREAMS} event streams at once")}),
        );
    }
    let open = StreamSlot(admin.streams.clone());
    let views = admin.remote.watch_registrars();
    let descendants = admin.remote.registry().descendants_changed();
    let stream = futures_util::stream::unfold(
        (admin, views, descendants, None::<String>, open),
        |(admin, mut views, mut descendants, last, open)| async move {
            loop {
                if last.is_some() {
                    let open = tokio::select! {
                        changed = views.changed() => changed.is_ok(),
                        changed = descendants.changed() => changed.is_ok(),
                        () = tokio::time::sleep(Duration::from_secs(2)) => true,
                        () = admin.stopping.cancelled() => false,
                    };
                    if !open {
                        return None;
                    }
                }
                let text = view(&admin).to_string();
                if last.as_deref() != Some(text.as_str()) {
                    let event = Event::default().event("topology").data(text.clone());
                    return Some((
                        Ok::<_, std::convert::Infallible>(event),
                        (admin, views, descendants, Some(text), open),
                    ));
                }
            }
        },
    );
    Sse::new(stream).keep_alive(KeepAlive::default()).into_response()
}

/// One open event stream, counted while it lives.
struct StreamSlot(Arc<AtomicUsize>);

impl Drop for StreamSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

async fn refresh(State(admin): State<Admin>) -> Response {
    {
        let mut last = admin.last_refresh.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(wait) = last.and_then(|at| REFRESH_SPACING.checked_sub(at.elapsed())) {
            let mut refusal = reply(
                StatusCode::TOO_MANY_REQUESTS,
                json!({"done": false, "error": format!("a refresh ran less than {REFRESH_SPACING:?} ago")}),
            );
            if let Ok(value) = header::HeaderValue::from_str(&(wait.as_secs() + 1).to_string()) {
                refusal.headers_mut().insert(header::RETRY_AFTER, value);
            }
            return refusal;
        }
        *last = Some(std::time::Instant::now());
    }
    match admin.remote.check_now().await {
        Ok(()) => reply(StatusCode::OK, json!({"done": true, "registrars": registrar_states(&admin.remote)})),
        Err(error) => reply(StatusCode::SERVICE_UNAVAILABLE, json!({"done": false, "error": error.detail()})),
    }
}

async fn reload(State(admin): State<Admin>) -> Response {
    match admin.remote.reload().await {
        Ok(reload) => reply(
            StatusCode::OK,
            json!({"reloaded": true, "applied": reload.applied, "restart_needed": reload.restart_needed}),
        ),
        // An invalid key is named with the reason; a file that cannot be read or parsed is
        // not quoted (its text could hold a password): the log says more.
        Err(error) => {
            let reason = match error.key() {
                Some(_) => error.to_string(),
                None => "the configuration file cannot be read or parsed; nothing changed (see the log)".to_string(),
            };
            reply(StatusCode::UNPROCESSABLE_ENTITY, json!({"reloaded": false, "error": reason, "key": error.key()}))
        }
    }
}

/// A JSON answer.
fn reply(code: StatusCode, body: Value) -> Response {
    (code, [(header::CONTENT_TYPE, "application/json")], body.to_string()).into_response()
}
