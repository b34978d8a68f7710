//! The admin listener (`[admin] listen`): what operators and their tools ask, apart from
//! the oneM2M port so that no oneM2M path is shadowed.
//!
//! - `GET /health`: 200 with a small JSON document while the CSE serves (its database
//!   takes writes, its listener is up), 503 saying why not; each registrar relation's state;
//! - `GET /metrics`: the counters in the Prometheus (OpenMetrics) text format;
//! - `GET /registrations`: the registrar relations and the registree CSRs, as JSON;
//! - `POST /registrations/refresh`: a monitor round now (registration checks, liveliness);
//! - `POST /reload`: read the configuration file again (as SIGHUP does).
//!
//! With `[admin] token` every request needs `Authorization: Bearer <token>` (401 without).

use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};
use subtle::ConstantTimeEq;
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
    /// Cancelled when the CSE stops: health turns 503 at once.
    stopping: CancellationToken,
}

/// The admin endpoints of `cse`.
pub fn admin_router(cse: Cse, remote: RemoteCseManager, serving: SocketAddr, stopping: CancellationToken) -> Router {
    let token = cse.config().admin.token.clone();
    let state = Admin { cse, remote, token, serving, stopping };
    Router::new()
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .route("/registrations", get(registrations))
        .route("/registrations/refresh", post(refresh))
        .route("/reload", post(reload))
        .fallback(|| async { reply(StatusCode::NOT_FOUND, json!({"error": "no such admin endpoint"})) })
        .layer(axum::middleware::from_fn_with_state(state.clone(), authorize))
        .with_state(state)
}

/// With a token configured, only requests that carry it.
async fn authorize(
    State(admin): State<Admin>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    if let Some(token) = &admin.token {
        let sent = request
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.strip_prefix("Bearer "))
            .unwrap_or_default();
        if !bool::from(token.expose().as_bytes().ct_eq(sent.as_bytes())) {
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
    };
    let text = admin.cse.metrics().encode(&snapshot);
    ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], text).into_response()
}

async fn registrations(State(admin): State<Admin>) -> Response {
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
            })
        })
        .collect();
    reply(
        StatusCode::OK,
        json!({
            "cse_id": admin.cse.config().cse.cse_id.to_string(),
            "registrars": registrar_states(&admin.remote),
            "registrees": registrees,
        }),
    )
}

async fn refresh(State(admin): State<Admin>) -> Response {
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
        Err(error) => reply(
            StatusCode::UNPROCESSABLE_ENTITY,
            json!({"reloaded": false, "error": error.to_string(), "key": error.key()}),
        ),
    }
}

/// A JSON answer.
fn reply(code: StatusCode, body: Value) -> Response {
    (code, [(header::CONTENT_TYPE, "application/json")], body.to_string()).into_response()
}
