//! Outgoing oneM2M requests over HTTP (reqwest): registration traffic and probes.
//!
//! The only module that knows reqwest. One pooled, keep-alive client per process. A
//! request is sent to one base URL; a transport failure is a [`TransportError`] (the
//! caller decides whether to try another address), a peer's answer is a [`Response`]
//! whatever its status code.

use std::time::Duration;

use reqwest::header::{HeaderMap, HeaderValue};
use serde_json::Value;
use tracing::debug;

use crate::error::{Error, Rsc};
use crate::http::{
    VIA, X_M2M_ORIGIN, X_M2M_OT, X_M2M_RET, X_M2M_RI, X_M2M_RSC, X_M2M_RVI, X_M2M_VSI, path_of, via_header,
};
use crate::request::{IdForm, Operation, Request, Response};
use crate::resource;

/// The peer could not be reached, or did not answer in time.
#[derive(Debug, Clone, thiserror::Error)]
pub enum TransportError {
    #[error("{url} is not reachable: {reason}")]
    Unreachable { url: String, reason: String },
    #[error("{url} did not answer within {timeout:?}")]
    Timeout { url: String, timeout: Duration },
}

impl From<TransportError> for Error {
    fn from(error: TransportError) -> Error {
        let rsc = match error {
            TransportError::Unreachable { .. } => Rsc::TargetNotReachable,
            TransportError::Timeout { .. } => Rsc::RequestTimeout,
        };
        Error::new(rsc, error.to_string())
    }
}

/// The shared HTTP client. Cloning is cheap.
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    timeout: Duration,
}

impl Client {
    /// A client whose requests time out after `timeout` (connecting included), and whose
    /// connection attempts give up after `connect_timeout`.
    pub fn new(timeout: Duration, connect_timeout: Duration) -> Client {
        let http = reqwest::Client::builder()
            .connect_timeout(connect_timeout.min(timeout))
            .pool_idle_timeout(Duration::from_secs(90))
            .tcp_nodelay(true)
            .no_proxy()
            .build()
            .unwrap_or_default();
        Client { http, timeout }
    }

    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Send `request` to the CSE at `base_url` (scheme, host, port and root path).
    pub async fn send(&self, base_url: &str, request: &Request) -> Result<Response, TransportError> {
        self.send_with_timeout(base_url, request, self.timeout).await
    }

    pub async fn send_with_timeout(
        &self,
        base_url: &str,
        request: &Request,
        timeout: Duration,
    ) -> Result<Response, TransportError> {
        let mut url = format!("{}{}", base_url.trim_end_matches('/'), path_of(&request.to));
        let mut query = Vec::new();
        if let Some(original) = &request.query {
            query.push(original.clone());
        } else {
            if let Some(rcn) = request.rcn {
                query.push(format!("rcn={rcn}"));
            }
            if request.drt == IdForm::Unstructured {
                query.push("drt=2".into());
            }
        }
        if !query.is_empty() {
            url.push('?');
            url.push_str(&query.join("&"));
        }
        let method = match request.op {
            Operation::Create | Operation::Notify => reqwest::Method::POST,
            Operation::Retrieve => reqwest::Method::GET,
            Operation::Update => reqwest::Method::PUT,
            Operation::Delete => reqwest::Method::DELETE,
        };
        let mut headers = HeaderMap::new();
        let content_type = match (request.op, request.ty) {
            (Operation::Create, Some(ty)) => format!("application/json;ty={ty}"),
            _ => "application/json".to_string(),
        };
        insert(&mut headers, reqwest::header::CONTENT_TYPE.as_str(), &content_type);
        insert(&mut headers, reqwest::header::ACCEPT.as_str(), "application/json");
        if let Some(originator) = &request.originator {
            insert(&mut headers, X_M2M_ORIGIN, originator);
        }
        insert(&mut headers, X_M2M_RI, &request.rqi);
        insert(&mut headers, X_M2M_RVI, &request.rvi);
        insert(&mut headers, X_M2M_OT, &resource::now());
        if let Some(vsi) = &request.vsi {
            insert(&mut headers, X_M2M_VSI, vsi);
        }
        if let Some(rqet) = &request.rqet {
            insert(&mut headers, X_M2M_RET, rqet);
        }
        if !request.via.is_empty() {
            insert(&mut headers, VIA, &via_header(&request.via));
        }
        let mut builder = self.http.request(method, &url).headers(headers).timeout(timeout);
        if let Some(content) = &request.content {
            builder = builder.body(serde_json::to_vec(content).unwrap_or_default());
        }
        let idempotent = matches!(request.op, Operation::Retrieve | Operation::Update | Operation::Delete);
        let retry = if idempotent { builder.try_clone() } else { None };
        let reply = match builder.send().await {
            Ok(reply) => reply,
            // A pooled keep-alive connection that the peer closed meanwhile (it restarted,
            // say) fails without reaching it: an idempotent request gets one more try on a
            // fresh connection.
            Err(error) if !error.is_connect() && !error.is_timeout() && retry.is_some() => {
                debug!(%url, %error, "retrying on a new connection");
                let Some(retry) = retry else { return Err(classify(&url, timeout, &error)) };
                retry.send().await.map_err(|error| classify(&url, timeout, &error))?
            }
            Err(error) => return Err(classify(&url, timeout, &error)),
        };
        let status = reply.status();
        let rsc_header = reply
            .headers()
            .get(X_M2M_RSC)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.trim().parse::<u16>().ok());
        let rqi = reply.headers().get(X_M2M_RI).and_then(|value| value.to_str().ok()).map(str::to_string);
        let location = reply
            .headers()
            .get(reqwest::header::CONTENT_LOCATION)
            .and_then(|value| value.to_str().ok())
            .map(str::to_string);
        let bytes = reply.bytes().await.map_err(|error| classify(&url, timeout, &error))?;
        let content: Option<Value> = if bytes.is_empty() { None } else { serde_json::from_slice(&bytes).ok() };

        let mut response = Response::new(request, Rsc::Ok, content);
        response.content_location = location;
        debug!(op = request.op.name(), %url, fr = ?request.originator, rqi = %request.rqi, rsc = ?rsc_header, "sent");
        response.rsc = match rsc_header {
            Some(code) => {
                Rsc::from_code(code).unwrap_or(if status.is_success() { Rsc::Ok } else { Rsc::InternalServerError })
            }
            None if status == reqwest::StatusCode::UNAUTHORIZED => Rsc::InternalServerError,
            None => Rsc::InternalServerError,
        };
        if rqi.as_deref().is_some_and(|rqi| rqi != request.rqi) {
            response.rsc = Rsc::BadRequest;
            response.content = Some(serde_json::json!({"m2m:dbg": "peer answered with another request identifier"}));
        }
        if rsc_header.is_none() && response.content.as_ref().and_then(|c| c.get("m2m:dbg")).is_none() {
            response.content = Some(serde_json::json!({
                "m2m:dbg": format!("peer answered HTTP {status} without X-M2M-RSC")
            }));
        }
        Ok(response)
    }
}

fn classify(url: &str, timeout: Duration, error: &reqwest::Error) -> TransportError {
    if error.is_timeout() {
        return TransportError::Timeout { url: url.to_string(), timeout };
    }
    let mut reason = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        reason = format!("{reason}: {cause}");
        source = cause.source();
    }
    TransportError::Unreachable { url: url.to_string(), reason }
}

fn insert(headers: &mut HeaderMap, name: &'static str, value: &str) {
    if let Ok(value) = HeaderValue::from_str(value) {
        headers.insert(name, value);
    }
}
