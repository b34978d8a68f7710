//! The server half of the HTTP binding: oneM2M requests in, oneM2M responses out.
//!
//! A request becomes a [`Request`] (method → operation, path → target with the `/~/` and
//! `/_/` escapes, headers and query → parameters; see `wire.rs`), the core answers it, and
//! the [`Response`] becomes an HTTP response whose status follows from the RSC.
//!
//! HTTP authentication (`auth.rs`) happens before anything else is read: with Basic or
//! Bearer enabled (`[http.security]`), a request without accepted credentials gets a
//! plain `401` with `WWW-Authenticate` and no oneM2M headers, the same answer whatever was
//! wrong, so a caller learns nothing about which part failed. Whose the credentials are
//! travels with the request, and the core checks the originator against it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri, header};
use tracing::debug;

use super::auth::{Gate, Refused};
use super::wire::{CONTENT_STATUS_PARTIAL, StrictJson, content_type, header_text, names, target_of, via_hops};
use crate::core::Cse;
use crate::core::request::{Caller, Operation, Request, Response, SUPPORTED_MEDIA_TYPES};
use crate::error::{Error, Result, Rsc};
use crate::resource::Timestamp;

/// What every request handler shares: the CSE and the authentication of this binding.
#[derive(Clone)]
struct Binding {
    cse: Cse,
    gate: Arc<Gate>,
}

/// The router serving every path of the CSE.
pub fn router(cse: Cse) -> std::io::Result<Router> {
    let max_concurrent = cse.config().http.max_concurrent_requests;
    let security = &cse.config().http;
    let gate = Arc::new(Gate::new(security.auth.clone(), security.max_auth_failures)?);
    Ok(Router::new()
        .fallback(handle)
        .layer(tower::limit::GlobalConcurrencyLimitLayer::new(max_concurrent))
        // A bug must not cost more than its own request: a panic becomes a 5000 answer.
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(panic_response))
        .with_state(Binding { cse, gate }))
}

/// Every request. It is taken whole and split, not through one extractor per part: those
/// clone the headers, the URI and the extensions.
async fn handle(
    State(Binding { cse, gate }): State<Binding>,
    request: axum::extract::Request,
) -> axum::response::Response {
    let (axum::http::request::Parts { method, uri, headers, extensions, .. }, body) = request.into_parts();
    let client = extensions.get::<ConnectInfo<SocketAddr>>().map(|ConnectInfo(address)| address.ip());
    let principal = match gate.authenticate(&headers, client).await {
        Ok(principal) => principal,
        Err(Refused) => {
            debug!(%method, path = uri.path(), ?client, "authentication failed");
            return gate.refusal();
        }
    };
    if method == Method::POST && uri.path() == "/__ut__" && cse.config().http.upper_tester {
        let caller = Caller::Peer { principal, address: client };
        let timeout: Duration = cse.config().http.request_timeout;
        let work = super::upper_tester::upper_tester(&cse, caller, &headers, body);
        return match tokio::time::timeout(timeout, work).await {
            Ok(response) => response,
            Err(_) => axum::response::IntoResponse::into_response(axum::http::StatusCode::REQUEST_TIMEOUT),
        };
    }
    // One time limit for reading the request (a client may stall its body) and answering it.
    let timeout: Duration = cse.config().http.request_timeout;
    let began = std::time::Instant::now();
    let access_log = cse.config().access_log;
    // The operation, once the request is read (for the metrics).
    let mut operation = None;
    let work = async {
        let mut request = parse_request(&cse, &method, &uri, &headers, body).await?;
        request.caller = Caller::Peer { principal, address: client };
        operation = Some(request.op);
        // The core's state on the heap: this future stays small, and so does every move of it.
        Ok::<Response, Error>(Box::pin(cse.handle(request)).await)
    };
    let response = match tokio::time::timeout(timeout, work).await {
        Ok(Ok(response)) => response,
        Ok(Err(error)) => error_response(&headers, &error),
        Err(_) => {
            let error = Error::new(Rsc::RequestTimeout, format!("request not completed within {timeout:?}"));
            error_response(&headers, &error)
        }
    };
    // A request refused before it was read counts under the operation its method and
    // content type name (the content type is parsed again only then).
    let operation = operation.or_else(|| operation_of(&method, content_type(&headers).ok().and_then(|(_, ty)| ty)));
    let name = operation.map_or("OTHER", Operation::name);
    cse.metrics().request(name, response.rsc.code(), began.elapsed());
    if access_log {
        tracing::info!(
            target: "acme_cse::access",
            method = %method,
            to = uri.path(),
            fr = header_text(&headers, &names::ORIGIN).ok().flatten().unwrap_or_default(),
            rqi = %response.rqi,
            rsc = response.rsc.code(),
            duration_us = u64::try_from(began.elapsed().as_micros()).unwrap_or(u64::MAX),
            client = %client.map(|address| address.to_string()).unwrap_or_default(),
            "request"
        );
    }
    into_http(response)
}

/// The oneM2M operation of an HTTP method (a POST with a resource type `ty` is a CREATE,
/// without one a NOTIFY); `None` for other methods.
fn operation_of(method: &Method, ty: Option<u64>) -> Option<Operation> {
    Some(match *method {
        Method::GET => Operation::Retrieve,
        Method::PUT => Operation::Update,
        Method::DELETE => Operation::Delete,
        Method::POST if ty.is_some() => Operation::Create,
        Method::POST => Operation::Notify,
        _ => return None,
    })
}

/// The answer to a request whose handling panicked (the panic itself is logged).
fn panic_response(panic: Box<dyn std::any::Any + Send + 'static>) -> axum::response::Response {
    let what = panic
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| panic.downcast_ref::<&str>().copied())
        .unwrap_or("unknown panic");
    tracing::error!(panic = what, "request handling panicked");
    into_http(error_response(&HeaderMap::new(), &Error::internal(what.to_string())))
}

/// The answer to a request that failed before the core answered it: its `X-M2M-RI` and
/// `X-M2M-RVI` echoed as far as they are readable.
fn error_response(headers: &HeaderMap, error: &Error) -> Response {
    let echo = |name| header_text(headers, name).ok().flatten().unwrap_or_default().to_string();
    let request =
        Request { rqi: echo(&names::RI), rvi: echo(&names::RVI), ..Request::new(Operation::Retrieve, "", None) };
    Response::error(&request, error)
}

async fn parse_request(cse: &Cse, method: &Method, uri: &Uri, headers: &HeaderMap, body: Body) -> Result<Request> {
    let rqi = header_text(headers, &names::RI)?
        .filter(|rqi| !rqi.is_empty())
        .ok_or_else(|| Error::bad_request("missing request identifier (X-M2M-RI)"))?;
    let rvi = header_text(headers, &names::RVI)?
        .filter(|rvi| !rvi.is_empty())
        .ok_or_else(|| Error::new(Rsc::ReleaseVersionNotSupported, "missing release version indicator (X-M2M-RVI)"))?;
    let originator = header_text(headers, &names::ORIGIN)?;
    let (media_type, ty) = content_type(headers)?;
    let Some(op) = operation_of(method, ty) else {
        return Err(Error::not_allowed(format!("HTTP method {method} is not a oneM2M operation")));
    };
    // Only an AE registration may come without an originator (the core holds the same
    // rule; here the binding names its header).
    let originator = originator.filter(|originator| !originator.is_empty());
    if originator.is_none() && !(op == Operation::Create && ty == Some(2)) {
        return Err(Error::bad_request("missing originator (X-M2M-Origin): only an AE may register without one"));
    }
    let to = target_of(uri.path())?;
    let mut request = Request::new(op, to, originator);
    // The answer is sent as JSON: a held resource's text may go as it is.
    request.text_answer = true;
    request.rqi = rqi.to_string();
    request.rvi = rvi.to_string();
    request.ty = ty;
    request.vsi = header_text(headers, &names::VSI)?.map(str::to_string);
    request.via = via_hops(headers);
    if let Some(ret) = header_text(headers, &names::RET)? {
        request.rqet = Some(request_expiration(ret, cse.config().cse.max_expiration_delta)?);
    }
    if let Some(query) = uri.query() {
        apply_query(&mut request, query)?;
        request.query = Some(query.to_string());
    }

    let limit = cse.config().http.max_body_size;
    let bytes: Bytes = axum::body::to_bytes(body, limit).await.map_err(|error| {
        let too_large = std::error::Error::source(&error)
            .is_some_and(|cause| cause.is::<http_body_util::LengthLimitError>())
            || error.into_inner().is::<http_body_util::LengthLimitError>();
        if too_large {
            Error::bad_request(format!("request body is larger than the limit of {limit} bytes"))
        } else {
            Error::bad_request("the request body could not be read")
        }
    })?;
    if !bytes.is_empty() {
        match media_type.as_deref() {
            None => {}
            Some(media) if SUPPORTED_MEDIA_TYPES.contains(&media) => {}
            Some(media) => {
                return Err(Error::new(
                    Rsc::UnsupportedMediaType,
                    format!("content type {media} is not supported (use application/json)"),
                ));
            }
        }
        let content: StrictJson = serde_json::from_slice(&bytes)
            .map_err(|error| Error::bad_request(format!("body is not valid JSON: {error}")))?;
        request.content = Some(content.0);
    }
    Ok(request)
}

/// `X-M2M-RET`: an absolute timestamp, or a relative time in milliseconds. A time further
/// ahead than `max_ahead` is taken as `max_ahead` (it cannot expire sooner anyway).
fn request_expiration(value: &str, max_ahead: Duration) -> Result<Timestamp> {
    let now = Timestamp::now();
    let at = match value.parse::<i64>() {
        Ok(millis) => match u64::try_from(millis) {
            Ok(millis) => now
                .checked_add(Duration::from_millis(millis))
                .ok_or_else(|| Error::bad_request(format!("X-M2M-RET {value:?} lies beyond the year 9999")))?,
            Err(_) => return Err(Error::new(Rsc::RequestTimeout, "request expiration time has passed")),
        },
        Err(_) => Timestamp::parse(value).ok_or_else(|| {
            Error::bad_request(format!("X-M2M-RET {value:?} is neither a timestamp nor milliseconds"))
        })?,
    };
    Ok(at.min(now.saturating_add(max_ahead)))
}

/// The query string's request parameters (`+` between values has already become a space).
fn apply_query(request: &mut Request, query: &str) -> Result<()> {
    for (name, value) in url::form_urlencoded::parse(query.as_bytes()) {
        request.set_parameter(&name, &value)?;
    }
    Ok(())
}

/// The one place a oneM2M response becomes an HTTP response.
fn into_http(response: Response) -> axum::response::Response {
    let status = StatusCode::from_u16(response.rsc.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let json = response.text.is_some() || response.content.is_some();
    let body = match (response.text, &response.content) {
        (Some(text), _) => Body::from(text),
        (None, Some(content)) => Body::from(serde_json::to_vec(content).unwrap_or_default()),
        (None, None) => Body::empty(),
    };
    let mut http = axum::response::Response::new(body);
    *http.status_mut() = status;
    let headers = http.headers_mut();
    headers.insert(names::RSC, HeaderValue::from(response.rsc.code()));
    insert(headers, names::RI, response.rqi);
    insert(headers, names::RVI, response.rvi);
    insert(headers, names::OT, Timestamp::now().to_string());
    if let Some(vsi) = response.vsi {
        insert(headers, names::VSI, vsi);
    }
    if let Some(location) = response.content_location {
        insert(headers, header::CONTENT_LOCATION, location);
    }
    if let Some(next) = response.partial {
        headers.insert(names::CTS, HeaderValue::from(CONTENT_STATUS_PARTIAL));
        headers.insert(names::CTO, HeaderValue::from(next));
    }
    if json {
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    }
    http
}

/// `value` under `name`, unless it is empty or not a valid header value (its bytes are
/// moved, not copied).
fn insert(headers: &mut HeaderMap, name: HeaderName, value: String) {
    if value.is_empty() {
        return;
    }
    if let Ok(value) = HeaderValue::try_from(value) {
        headers.insert(name, value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::request::IdForm;

    #[test]
    fn query_parameters_become_request_parameters() {
        let mut request = Request::new(Operation::Retrieve, "cse-in", Some("CAdmin"));
        apply_query(&mut request, "fu=1&ty=3+4&ty=2&lbl=a&lim=5&drt=2&rcn=11").expect("valid");
        assert_eq!(request.filter.ty, [3, 4, 2]);
        assert_eq!(request.filter.lbl, ["a"]);
        assert_eq!(request.filter.lim, Some(5));
        assert_eq!(request.drt, IdForm::Unstructured);
        assert_eq!(request.rcn, Some(11));
        let mut fresh = Request::new(Operation::Retrieve, "cse-in", Some("CAdmin"));
        for bad in ["rcn=x", "drt=3", "foo=1", "fu=1&fu=1", "lim=1&lim=2"] {
            assert!(apply_query(&mut fresh.clone(), bad).is_err(), "{bad}");
        }
        assert!(apply_query(&mut fresh, "rt=3&rn=a*&cty=text/plain").is_ok());
    }
}
