//! The HTTP binding (TS-0009): oneM2M requests in, oneM2M responses out.
//!
//! The only module that knows axum and the `X-M2M-*` headers. A request becomes a
//! [`Request`] (method → operation, path → target with the `/~/` and `/_/` escapes,
//! headers and query → parameters), the dispatcher answers it, and the [`Response`] becomes
//! an HTTP response whose status follows from the RSC.
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
use axum::http::{Extensions, HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri, header};
use percent_encoding::percent_decode_str;
use serde_json::Value;
use tracing::debug;

use crate::auth::{Gate, Refused};
use crate::dispatcher::{Cse, SUPPORTED_MEDIA_TYPES};
use crate::error::{Error, Result, Rsc};
use crate::request::{Caller, Operation, Request, Response};
use crate::resource::Timestamp;

pub const X_M2M_ORIGIN: &str = "x-m2m-origin";
pub const X_M2M_RI: &str = "x-m2m-ri";
pub const X_M2M_RVI: &str = "x-m2m-rvi";
pub const X_M2M_RSC: &str = "x-m2m-rsc";
pub const X_M2M_OT: &str = "x-m2m-ot";
pub const X_M2M_RET: &str = "x-m2m-ret";
pub const X_M2M_VSI: &str = "x-m2m-vsi";
/// Content Status: partial (`1`) when a result was cut short.
pub const X_M2M_CTS: &str = "x-m2m-cts";
/// Content Offset: the `ofst` at which the rest of a partial result begins.
pub const X_M2M_CTO: &str = "x-m2m-cto";
/// The Content Status value of a partial result.
const CONTENT_STATUS_PARTIAL: u16 = 1;
/// The standard HTTP `Via` header: the CSEs a forwarded request has passed.
pub const VIA: &str = "via";

/// What every request handler shares: the CSE and the authentication of this binding.
#[derive(Clone)]
struct Binding {
    cse: Cse,
    gate: Arc<Gate>,
}

/// The router serving every path of the CSE.
pub fn router(cse: Cse) -> std::io::Result<Router> {
    let max_concurrent = cse.config.http.max_concurrent_requests;
    let security = &cse.config.http;
    let gate = Arc::new(Gate::new(security.auth.clone(), security.max_auth_failures)?);
    Ok(Router::new()
        .fallback(handle)
        .layer(tower::limit::GlobalConcurrencyLimitLayer::new(max_concurrent))
        // A bug must not cost more than its own request: a panic becomes a 5000 answer.
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(panic_response))
        .with_state(Binding { cse, gate }))
}

async fn handle(
    State(Binding { cse, gate }): State<Binding>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    extensions: Extensions,
    body: Body,
) -> axum::response::Response {
    let client = extensions.get::<ConnectInfo<SocketAddr>>().map(|ConnectInfo(address)| address.ip());
    let principal = match gate.authenticate(&headers, client).await {
        Ok(principal) => principal,
        Err(Refused) => {
            debug!(%method, path = uri.path(), ?client, "authentication failed");
            return gate.refusal();
        }
    };
    let rqi = header_text(&headers, X_M2M_RI).ok().flatten().unwrap_or_default().to_string();
    let rvi = header_text(&headers, X_M2M_RVI).ok().flatten().unwrap_or_default().to_string();
    // One time limit for reading the request (a client may stall its body) and answering it.
    let timeout: Duration = cse.config.http.request_timeout;
    let work = async {
        let mut request = parse_request(&cse, &method, &uri, &headers, body).await?;
        request.caller = Caller::Peer { principal, address: client };
        Ok::<Response, Error>(cse.handle(request).await)
    };
    match tokio::time::timeout(timeout, work).await {
        Ok(Ok(response)) => into_http(response),
        Ok(Err(error)) => into_http(error_response(rqi, rvi, &error)),
        Err(_) => {
            let error = Error::new(Rsc::RequestTimeout, format!("request not completed within {timeout:?}"));
            into_http(error_response(rqi, rvi, &error))
        }
    }
}

/// The answer to a request whose handling panicked (the panic itself is logged).
fn panic_response(panic: Box<dyn std::any::Any + Send + 'static>) -> axum::response::Response {
    let what = panic
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| panic.downcast_ref::<&str>().copied())
        .unwrap_or("unknown panic");
    tracing::error!(panic = what, "request handling panicked");
    into_http(error_response(String::new(), String::new(), &Error::internal(what.to_string())))
}

fn error_response(rqi: String, rvi: String, error: &Error) -> Response {
    let request = Request { rqi, rvi, ..Request::new(Operation::Retrieve, "", None) };
    Response::error(&request, error)
}

async fn parse_request(cse: &Cse, method: &Method, uri: &Uri, headers: &HeaderMap, body: Body) -> Result<Request> {
    let rqi = header_text(headers, X_M2M_RI)?
        .filter(|rqi| !rqi.is_empty())
        .ok_or_else(|| Error::bad_request("missing request identifier (X-M2M-RI)"))?;
    let rvi = header_text(headers, X_M2M_RVI)?
        .filter(|rvi| !rvi.is_empty())
        .ok_or_else(|| Error::new(Rsc::ReleaseVersionNotSupported, "missing release version indicator (X-M2M-RVI)"))?;
    let originator = header_text(headers, X_M2M_ORIGIN)?;
    let (media_type, ty) = content_type(headers)?;
    let op = match *method {
        Method::GET => Operation::Retrieve,
        Method::PUT => Operation::Update,
        Method::DELETE => Operation::Delete,
        Method::POST if ty.is_some() => Operation::Create,
        Method::POST => Operation::Notify,
        _ => {
            return Err(Error::not_allowed(format!("HTTP method {method} is not a oneM2M operation")));
        }
    };
    let to = target_of(uri.path())?;
    let mut request = Request::new(op, to, originator);
    request.rqi = rqi.to_string();
    request.rvi = rvi.to_string();
    request.ty = ty;
    request.vsi = header_text(headers, X_M2M_VSI)?.map(str::to_string);
    request.via = via_hops(headers);
    if let Some(ret) = header_text(headers, X_M2M_RET)? {
        request.rqet = Some(request_expiration(ret, cse.config.cse.max_expiration_delta)?);
    }
    if let Some(query) = uri.query() {
        apply_query(&mut request, query)?;
        request.query = Some(query.to_string());
    }

    let limit = cse.config.http.max_body_size;
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

/// The hop names of all `Via` entries (`1.1 acme.example.com_id-mn, ...`).
fn via_hops(headers: &HeaderMap) -> Vec<String> {
    headers
        .get_all(VIA)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .filter_map(|entry| entry.split_whitespace().nth(1))
        .map(str::to_string)
        .collect()
}

/// The `Via` header value for `hops`.
pub fn via_header(hops: &[String]) -> String {
    hops.iter().map(|hop| format!("1.1 {hop}")).collect::<Vec<_>>().join(", ")
}

/// A header's value; present but not visible ASCII is an error naming the header.
fn header_text<'a>(headers: &'a HeaderMap, name: &str) -> Result<Option<&'a str>> {
    let Some(value) = headers.get(name) else {
        return Ok(None);
    };
    match value.to_str() {
        Ok(text) => Ok(Some(text.trim())),
        Err(_) => Err(Error::bad_request(format!("header {name} is not visible ASCII"))),
    }
}

/// A JSON value parsed like `serde_json::Value`, but refusing duplicate object keys (which
/// would otherwise silently keep the last one).
struct StrictJson(Value);

impl<'de> serde::Deserialize<'de> for StrictJson {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> std::result::Result<StrictJson, D::Error> {
        deserializer.deserialize_any(StrictVisitor).map(StrictJson)
    }
}

struct StrictVisitor;

impl<'de> serde::de::Visitor<'de> for StrictVisitor {
    type Value = Value;

    fn expecting(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str("a JSON value")
    }
    fn visit_bool<E>(self, value: bool) -> std::result::Result<Value, E> {
        Ok(Value::Bool(value))
    }
    fn visit_i64<E>(self, value: i64) -> std::result::Result<Value, E> {
        Ok(Value::from(value))
    }
    fn visit_u64<E>(self, value: u64) -> std::result::Result<Value, E> {
        Ok(Value::from(value))
    }
    fn visit_f64<E>(self, value: f64) -> std::result::Result<Value, E> {
        Ok(serde_json::Number::from_f64(value).map_or(Value::Null, Value::Number))
    }
    fn visit_str<E>(self, value: &str) -> std::result::Result<Value, E> {
        Ok(Value::String(value.to_string()))
    }
    fn visit_string<E>(self, value: String) -> std::result::Result<Value, E> {
        Ok(Value::String(value))
    }
    fn visit_unit<E>(self) -> std::result::Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_none<E>(self) -> std::result::Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> std::result::Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(StrictJson(item)) = seq.next_element()? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> std::result::Result<Value, A::Error> {
        let mut object = serde_json::Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if object.contains_key(&key) {
                return Err(serde::de::Error::custom(format!("duplicate key {key:?}")));
            }
            let StrictJson(value) = map.next_value()?;
            object.insert(key, value);
        }
        Ok(Value::Object(object))
    }
}

/// The media type (lowercase, without parameters) and the `ty` parameter of `Content-Type`.
fn content_type(headers: &HeaderMap) -> Result<(Option<String>, Option<u64>)> {
    let Some(value) = headers.get(header::CONTENT_TYPE) else {
        return Ok((None, None));
    };
    let value = value.to_str().map_err(|_| Error::bad_request("Content-Type is not ASCII"))?;
    let mut parts = value.split(';');
    let media = parts.next().unwrap_or_default().trim().to_ascii_lowercase();
    let mut ty = None;
    for parameter in parts {
        if let Some((name, value)) = parameter.split_once('=') {
            if name.trim().eq_ignore_ascii_case("ty") {
                let value = value.trim();
                ty = Some(value.parse::<u64>().map_err(|_| {
                    Error::bad_request(format!("resource type ty={value:?} in Content-Type is not a number"))
                })?);
            }
        }
    }
    Ok(((!media.is_empty()).then_some(media), ty))
}

/// HTTP path → oneM2M target: `/~/x` is SP-relative `/x`, `/_/x` is absolute `//x`.
pub fn target_of(path: &str) -> Result<String> {
    // Decode each segment on its own: an encoded '/' must not create a path element.
    let mut segments = Vec::new();
    for segment in path.split('/') {
        let decoded = percent_decode_str(segment)
            .decode_utf8()
            .map_err(|_| Error::bad_request("the request path is not valid UTF-8"))?;
        if decoded.contains('/') {
            return Err(Error::bad_request("the request path contains an encoded '/'"));
        }
        segments.push(decoded);
    }
    let decoded = segments.join("/");
    let path = decoded.strip_prefix('/').unwrap_or(&decoded);
    Ok(if let Some(rest) = path.strip_prefix("~/") {
        format!("/{rest}")
    } else if let Some(rest) = path.strip_prefix("_/") {
        format!("//{rest}")
    } else {
        path.to_string()
    })
}

/// oneM2M target → HTTP path (the inverse of [`target_of`]).
pub fn path_of(to: &str) -> String {
    if let Some(rest) = to.strip_prefix("//") {
        format!("/_/{rest}")
    } else if let Some(rest) = to.strip_prefix('/') {
        format!("/~/{rest}")
    } else {
        format!("/{to}")
    }
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
    let body = match &response.content {
        Some(content) => Body::from(serde_json::to_vec(content).unwrap_or_default()),
        None => Body::empty(),
    };
    let mut http = axum::response::Response::new(body);
    *http.status_mut() = status;
    let headers = http.headers_mut();
    headers.insert(X_M2M_RSC, HeaderValue::from(response.rsc.code()));
    insert(headers, X_M2M_RI, &response.rqi);
    insert(headers, X_M2M_RVI, &response.rvi);
    insert(headers, X_M2M_OT, &Timestamp::now().to_string());
    if let Some(vsi) = &response.vsi {
        insert(headers, X_M2M_VSI, vsi);
    }
    if let Some(location) = &response.content_location {
        insert(headers, header::CONTENT_LOCATION.as_str(), location);
    }
    if let Some(next) = response.partial {
        headers.insert(X_M2M_CTS, HeaderValue::from(CONTENT_STATUS_PARTIAL));
        headers.insert(X_M2M_CTO, HeaderValue::from(next));
    }
    if response.content.is_some() {
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    }
    http
}

fn insert(headers: &mut HeaderMap, name: &str, value: &str) {
    if value.is_empty() {
        return;
    }
    if let (Ok(name), Ok(value)) = (HeaderName::try_from(name), HeaderValue::from_str(value)) {
        headers.insert(name, value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::request::IdForm;

    #[test]
    fn path_escapes_map_to_id_forms_and_back() {
        for (path, to) in [
            ("/cse-in/ae1", "cse-in/ae1"),
            ("/~/id-in/cse-in", "/id-in/cse-in"),
            ("/_/acme.example.com/id-in/cse-in", "//acme.example.com/id-in/cse-in"),
        ] {
            assert_eq!(target_of(path).expect("valid"), to);
            assert_eq!(path_of(to), path);
        }
        assert_eq!(target_of("/cse-in/a%20b").expect("decoded"), "cse-in/a b");
    }

    #[test]
    fn content_type_carries_the_resource_type() {
        let mut headers = HeaderMap::new();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json; ty=3"));
        assert_eq!(content_type(&headers).expect("valid"), (Some("application/json".into()), Some(3)));
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json;ty=x"));
        assert_eq!(content_type(&headers).expect_err("invalid").rsc, Rsc::BadRequest);
    }

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
