//! The client half of the HTTP binding: the core's [`Outbound`] over HTTP or HTTPS
//! (reqwest), for registration traffic, probes and forwarding.
//!
//! The only module that knows reqwest. One pooled, keep-alive client per process. A
//! request is sent to one base URL, with the credentials of the CSE it goes to (an
//! `Authorization` header, never `user:pass@` in a URL); a transport failure is a
//! [`TransportError`] (the caller decides whether to try another address), a peer's
//! answer is a [`Response`] whatever its status code. A peer that refuses the credentials
//! (HTTP 401) has given no oneM2M answer: that is a transport failure too.
//!
//! The URLs come from peers (a registree's `poa`), so nothing a peer sends is taken on
//! trust: redirects are never followed, and an answer's body is read only up to
//! `http.client_max_body_size`.

use std::time::Duration;

use bytes::Bytes;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use serde_json::Value;
use tracing::{debug, warn};

use super::tls::Tls;
use super::wire::{names, path_of, via_header};
use crate::config::HttpConfig;
use crate::core::net::{Outbound, Sending, TransportError};
use crate::core::request::{IdForm, Operation, Request, Response};
use crate::error::Rsc;
use crate::resource::Timestamp;
use crate::security::Credentials;

/// The shared HTTP client. Cloning is cheap.
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    timeout: Duration,
    /// Largest answer body read from a peer.
    max_body_size: usize,
}

impl Client {
    /// The client of `[http]`: its time-outs and answer size, and for HTTPS peers the CAs
    /// of `[http.tls] ca_file` (read into `tls`) on top of the system's (or no verification
    /// at all, with `verify = false`, for tests).
    pub fn new(http: &HttpConfig, tls: &Tls) -> Client {
        if !tls.verify {
            warn!("http.tls.verify = false: certificates of HTTPS peers are not verified (for tests only)");
        }
        let roots: Vec<reqwest::Certificate> =
            tls.roots.iter().filter_map(|der| reqwest::Certificate::from_der(der.as_ref()).ok()).collect();
        Client {
            http: build(http.client_timeout, http.client_connect_timeout, &roots, tls.verify),
            timeout: http.client_timeout,
            max_body_size: http.client_max_body_size,
        }
    }

    /// Send `request` to the CSE at `base_url` within `timeout`, presenting `credentials`
    /// (those of that CSE) in the `Authorization` header.
    async fn send_with(
        &self,
        base_url: &str,
        request: &Request,
        timeout: Duration,
        credentials: Option<&Credentials>,
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
        // Shared, not copied, by a retry.
        let body: Option<Bytes> =
            request.content.as_ref().map(|content| serde_json::to_vec(content).unwrap_or_default().into());
        let idempotent = matches!(request.op, Operation::Retrieve | Operation::Update | Operation::Delete);
        // The request as sent; built once more (not copied up front) when it is retried.
        let build = |body: Option<Bytes>| {
            let builder = self.http.request(method.clone(), &url).headers(headers_of(request)).timeout(timeout);
            // reqwest marks the header sensitive, so it never shows in its debug output.
            let builder = match credentials {
                Some(Credentials::Basic { username, password }) => {
                    builder.basic_auth(username, Some(password.expose()))
                }
                Some(Credentials::Bearer { token }) => builder.bearer_auth(token.expose()),
                None => builder,
            };
            match body {
                Some(body) => builder.body(body),
                None => builder,
            }
        };
        let reply = match build(body.clone()).send().await {
            Ok(reply) => reply,
            // A pooled keep-alive connection that the peer closed meanwhile (it restarted,
            // say) fails without reaching it: an idempotent request gets one more try on a
            // fresh connection.
            Err(error) if !error.is_connect() && !error.is_timeout() && idempotent => {
                debug!(%url, %error, "retrying on a new connection");
                build(body).send().await.map_err(|error| classify(&url, timeout, &error))?
            }
            Err(error) => return Err(classify(&url, timeout, &error)),
        };
        let status = reply.status();
        if status == reqwest::StatusCode::UNAUTHORIZED && reply.headers().get(names::RSC).is_none() {
            debug!(op = request.op.name(), %url, rqi = %request.rqi, "peer refused the credentials");
            return Err(TransportError::Unauthorized { address: url });
        }
        let rsc_header = reply
            .headers()
            .get(names::RSC)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.trim().parse::<u16>().ok());
        let rqi = reply.headers().get(names::RI).and_then(|value| value.to_str().ok()).map(str::to_string);
        let location = reply
            .headers()
            .get(reqwest::header::CONTENT_LOCATION)
            .and_then(|value| value.to_str().ok())
            .map(str::to_string);
        let text = |name: HeaderName| reply.headers().get(name).and_then(|value| value.to_str().ok()).map(str::trim);
        let partial = (text(names::CTS) == Some("1")).then(|| text(names::CTO).and_then(|offset| offset.parse().ok()));
        let bytes = read_body(reply, &url, timeout, self.max_body_size).await?;
        // A request that may be answered with text (one forwarded for an HTTP client) gets
        // the peer's JSON as it came, checked but not parsed into a value and written again.
        let (content, text) = if bytes.is_empty() {
            (None, None)
        } else if request.text_answer && serde_json::from_slice::<serde::de::IgnoredAny>(&bytes).is_ok() {
            (None, Some(bytes))
        } else {
            (serde_json::from_slice::<Value>(&bytes).ok(), None)
        };

        let mut response = Response::new(request, Rsc::Ok, content);
        response.text = text;
        response.content_location = location;
        response.partial = partial.flatten();
        debug!(op = request.op.name(), %url, fr = ?request.originator, rqi = %request.rqi, rsc = ?rsc_header, "sent");
        response.rsc = match rsc_header {
            Some(code) => {
                Rsc::from_code(code).unwrap_or(if status.is_success() { Rsc::Ok } else { Rsc::InternalServerError })
            }
            None => Rsc::InternalServerError,
        };
        if rqi.as_deref().is_some_and(|rqi| rqi != request.rqi) {
            response.rsc = Rsc::BadRequest;
            response.text = None;
            response.content = Some(serde_json::json!({"m2m:dbg": "peer answered with another request identifier"}));
        }
        if rsc_header.is_none() {
            // No oneM2M answer: what the peer said is kept only if it is an `m2m:dbg`.
            if let Some(text) = response.text.take() {
                response.content = serde_json::from_slice(&text).ok();
            }
            if response.content.as_ref().and_then(|c| c.get("m2m:dbg")).is_none() {
                response.content = Some(serde_json::json!({
                    "m2m:dbg": format!("peer answered HTTP {status} without X-M2M-RSC")
                }));
            }
        }
        Ok(response)
    }
}

impl Outbound for Client {
    fn send<'a>(
        &'a self,
        address: &'a str,
        request: &'a Request,
        timeout: Duration,
        credentials: Option<&'a Credentials>,
    ) -> Sending<'a> {
        Box::pin(self.send_with(address, request, timeout, credentials))
    }

    fn timeout(&self) -> Duration {
        self.timeout
    }
}

/// The HTTP headers of `request` (`X-M2M-OT` says the time of this call).
fn headers_of(request: &Request) -> HeaderMap {
    let mut headers = HeaderMap::with_capacity(12);
    let content_type = match (request.op, request.ty) {
        (Operation::Create, Some(ty)) => HeaderValue::try_from(format!("application/json;ty={ty}")).ok(),
        _ => Some(HeaderValue::from_static("application/json")),
    };
    if let Some(content_type) = content_type {
        headers.insert(reqwest::header::CONTENT_TYPE, content_type);
    }
    headers.insert(reqwest::header::ACCEPT, HeaderValue::from_static("application/json"));
    if let Some(originator) = &request.originator {
        insert(&mut headers, names::ORIGIN, originator);
    }
    insert(&mut headers, names::RI, &request.rqi);
    insert(&mut headers, names::RVI, &request.rvi);
    insert(&mut headers, names::OT, &Timestamp::now().to_string());
    if let Some(vsi) = &request.vsi {
        insert(&mut headers, names::VSI, vsi);
    }
    if let Some(ec) = request.ec {
        headers.insert(names::EC, HeaderValue::from(u16::from(ec)));
    }
    if let Some(rqet) = &request.rqet {
        insert(&mut headers, names::RET, &rqet.to_string());
    }
    if !request.via.is_empty() {
        insert(&mut headers, reqwest::header::VIA, &via_header(&request.via));
    }
    headers
}

/// The pooled client: the system's CAs plus `roots`; without a system CA store (a minimal
/// container) only `roots`, so that building never fails for want of CAs.
fn build(
    timeout: Duration,
    connect_timeout: Duration,
    roots: &[reqwest::Certificate],
    verify: bool,
) -> reqwest::Client {
    let builder = || {
        reqwest::Client::builder()
            .connect_timeout(connect_timeout.min(timeout))
            // Shorter than the idle limit of our own server (`http.header_read_timeout`), so
            // that a pooled connection is rarely one the peer has closed.
            .pool_idle_timeout(Duration::from_secs(5))
            .tcp_nodelay(true)
            .no_proxy()
            // A peer's 3xx is its answer; following it would let a peer send this CSE anywhere.
            .redirect(reqwest::redirect::Policy::none())
            .tls_danger_accept_invalid_certs(!verify)
    };
    match builder().tls_certs_merge(roots.to_vec()).build() {
        Ok(client) => client,
        Err(error) => {
            warn!(%error, "cannot use the system's CA certificates; trusting only http.tls.ca_file");
            builder().tls_certs_only(roots.to_vec()).build().unwrap_or_default()
        }
    }
}

/// The body of `reply`, at most `limit` bytes (a larger one is refused before it is read
/// whole: by its `Content-Length`, or as soon as the chunks pass the limit).
async fn read_body(
    mut reply: reqwest::Response,
    url: &str,
    timeout: Duration,
    limit: usize,
) -> Result<Bytes, TransportError> {
    let too_large = || TransportError::TooLarge { address: url.to_string(), limit };
    match reply.content_length() {
        Some(length) if length > limit as u64 => return Err(too_large()),
        // Its length known and within the limit: read whole, without a copy of each chunk.
        Some(_) => return reply.bytes().await.map_err(|error| classify(url, timeout, &error)),
        None => {}
    }
    let mut body = Vec::new();
    while let Some(chunk) = reply.chunk().await.map_err(|error| classify(url, timeout, &error))? {
        if body.len() + chunk.len() > limit {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.into())
}

fn classify(url: &str, timeout: Duration, error: &reqwest::Error) -> TransportError {
    if error.is_timeout() {
        return TransportError::Timeout { address: url.to_string(), timeout };
    }
    let mut reason = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        reason = format!("{reason}: {cause}");
        source = cause.source();
    }
    TransportError::Unreachable { address: url.to_string(), reason }
}

fn insert(headers: &mut HeaderMap, name: HeaderName, value: &str) {
    if let Ok(value) = HeaderValue::from_str(value) {
        headers.insert(name, value);
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;
    use crate::config::Settings;

    /// A peer on loopback that answers every request with `body` (and `X-M2M-RI: r1`).
    async fn peer(body: &'static str) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let address = listener.local_addr().expect("address");
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let mut request = vec![0u8; 8192];
                    let mut read = 0;
                    while !request[..read].windows(4).any(|end| end == b"\r\n\r\n") {
                        match stream.read(&mut request[read..]).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => read += n,
                        }
                    }
                    let answer = format!(
                        "HTTP/1.1 200 OK\r\nX-M2M-RSC: 2000\r\nX-M2M-RI: r1\r\nContent-Type: application/json\r\n\
                         Content-Length: {}\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = stream.write_all(answer.as_bytes()).await;
                });
            }
        });
        format!("http://{address}")
    }

    fn client() -> Client {
        let config = Settings::default().validate().expect("valid settings");
        Client::new(&config.http, &super::super::tls::load(&config.http.tls).expect("no TLS files"))
    }

    fn request(text_answer: bool) -> Request {
        let mut request = Request::new(Operation::Retrieve, "cse-in/box", Some("CAdmin"));
        request.rqi = "r1".into();
        request.text_answer = text_answer;
        request
    }

    #[tokio::test]
    async fn an_answer_for_a_text_request_is_relayed_as_the_peer_wrote_it_and_parsed_otherwise() {
        // Spaces and an order of keys that parsing and writing again would not keep.
        let body = r#"{ "m2m:cnt" : { "rn": "box", "cni": 2, "acpi": [] } }"#;
        let url = peer(body).await;
        let client = client();
        let timeout = Duration::from_secs(5);
        let relayed = client.send_with(&url, &request(true), timeout, None).await.expect("answer");
        assert_eq!(relayed.rsc, Rsc::Ok);
        assert_eq!(relayed.text.as_deref(), Some(body.as_bytes()), "byte for byte");
        assert!(relayed.content.is_none());
        let parsed = client.send_with(&url, &request(false), timeout, None).await.expect("answer");
        assert!(parsed.text.is_none());
        assert_eq!(parsed.content, Some(serde_json::json!({"m2m:cnt": {"rn": "box", "cni": 2, "acpi": []}})));
    }

    #[tokio::test]
    async fn an_answer_that_is_not_json_is_not_relayed_even_for_a_text_request() {
        let url = peer("{\"m2m:cnt\": ").await;
        let answer = client().send_with(&url, &request(true), Duration::from_secs(5), None).await.expect("answer");
        assert_eq!(answer.rsc, Rsc::Ok);
        assert!(answer.text.is_none() && answer.content.is_none(), "{answer:?}");
    }
}
