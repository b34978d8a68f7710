//! Hostile input over real HTTP: every malformed request gets a clean oneM2M error (or,
//! where hyper refuses it before the CSE sees it, a plain HTTP 4xx), the CSE keeps serving,
//! and nothing is stored or changed.
//!
//! Requests are written byte by byte on a raw TCP connection, so that they can carry what
//! no well-behaved client would send: invalid UTF-8, lying `Content-Length`s, endless
//! chunked bodies, unknown methods.

use std::net::SocketAddr;
use std::time::Duration;

use acme_cse::Rsc;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::OwnedReadHalf;

use crate::harness::TestCse;

const OWNER: &str = "Cowner";
const ADMIN: &str = "CAdmin";
/// Body limit of the CSE under attack: small, so that oversized bodies are cheap to send.
const BODY_LIMIT: usize = 64 * 1024;
/// The longest one exchange may take before it counts as a hang.
const DEADLINE: Duration = Duration::from_secs(15);

// -----------------------------------------------------------------------------------------
// Raw HTTP
// -----------------------------------------------------------------------------------------

/// How the body goes on the wire.
#[derive(Clone, Debug)]
enum Payload {
    None,
    /// These bytes with a correct `Content-Length`.
    Exact(Vec<u8>),
    /// `total` bytes as `Transfer-Encoding: chunked`, no `Content-Length`.
    Chunked {
        total: usize,
    },
    /// `Content-Length: total`, and `total` bytes streamed.
    Streamed {
        total: usize,
    },
    /// `Content-Length: claimed`, but exactly `sent` goes out, then the write side closes.
    Lying {
        claimed: usize,
        sent: Vec<u8>,
    },
    /// Header lines and body bytes written exactly as given (after the oneM2M headers).
    Verbatim {
        headers: Vec<u8>,
        body: Vec<u8>,
    },
}

/// One request, written byte by byte.
#[derive(Clone, Debug)]
struct Raw {
    method: Vec<u8>,
    target: Vec<u8>,
    headers: Vec<(String, Vec<u8>)>,
    payload: Payload,
}

impl Raw {
    /// `method target` with the usual oneM2M headers of the owner AE.
    fn new(method: &str, target: impl AsRef<[u8]>) -> Raw {
        Raw {
            method: method.as_bytes().to_vec(),
            target: target.as_ref().to_vec(),
            headers: vec![
                ("X-M2M-Origin".into(), OWNER.into()),
                ("X-M2M-RI".into(), b"hostile".to_vec()),
                ("X-M2M-RVI".into(), b"4".to_vec()),
            ],
            payload: Payload::None,
        }
    }

    fn get(target: impl AsRef<[u8]>) -> Raw {
        Raw::new("GET", target)
    }

    /// A CREATE of type `ty` with `body`.
    fn create(target: &str, ty: u16, body: impl Into<Vec<u8>>) -> Raw {
        Raw::new("POST", target).header("Content-Type", format!("application/json;ty={ty}")).body(body)
    }

    fn update(target: &str, body: impl Into<Vec<u8>>) -> Raw {
        Raw::new("PUT", target).header("Content-Type", "application/json").body(body)
    }

    /// Set `name` to `value`, replacing any value it had.
    fn header(mut self, name: &str, value: impl AsRef<[u8]>) -> Raw {
        self.headers.retain(|(existing, _)| !existing.eq_ignore_ascii_case(name));
        self.headers.push((name.to_string(), value.as_ref().to_vec()));
        self
    }

    /// Add a `name` header even if there is one already.
    fn add_header(mut self, name: &str, value: impl AsRef<[u8]>) -> Raw {
        self.headers.push((name.to_string(), value.as_ref().to_vec()));
        self
    }

    fn body(mut self, body: impl Into<Vec<u8>>) -> Raw {
        self.payload = Payload::Exact(body.into());
        self
    }

    fn payload(mut self, payload: Payload) -> Raw {
        self.payload = payload;
        self
    }

    /// Request line and header block.
    fn head(&self) -> Vec<u8> {
        let mut head = Vec::new();
        head.extend_from_slice(&self.method);
        head.push(b' ');
        head.extend_from_slice(&self.target);
        head.extend_from_slice(b" HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n");
        for (name, value) in &self.headers {
            head.extend_from_slice(name.as_bytes());
            head.extend_from_slice(b": ");
            head.extend_from_slice(value);
            head.extend_from_slice(b"\r\n");
        }
        match &self.payload {
            Payload::None => {}
            Payload::Exact(body) => head.extend_from_slice(format!("Content-Length: {}\r\n", body.len()).as_bytes()),
            Payload::Chunked { .. } => head.extend_from_slice(b"Transfer-Encoding: chunked\r\n"),
            Payload::Streamed { total } => head.extend_from_slice(format!("Content-Length: {total}\r\n").as_bytes()),
            Payload::Lying { claimed, .. } => {
                head.extend_from_slice(format!("Content-Length: {claimed}\r\n").as_bytes());
            }
            Payload::Verbatim { headers, .. } => head.extend_from_slice(headers),
        }
        head.extend_from_slice(b"\r\n");
        head
    }

    fn is_head(&self) -> bool {
        self.method == b"HEAD"
    }
}

/// A parsed HTTP answer; `status` 0 when the connection closed without one.
#[derive(Debug)]
struct RawReply {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl RawReply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(existing, _)| existing.eq_ignore_ascii_case(name)).map(|(_, value)| value.as_str())
    }

    fn rsc(&self) -> Option<u16> {
        self.header("x-m2m-rsc").and_then(|value| value.parse().ok())
    }

    fn dbg(&self) -> String {
        serde_json::from_slice::<Value>(&self.body)
            .ok()
            .and_then(|body| body["m2m:dbg"].as_str().map(str::to_string))
            .unwrap_or_default()
    }
}

impl std::fmt::Display for RawReply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let body = String::from_utf8_lossy(&self.body[..self.body.len().min(300)]).into_owned();
        write!(f, "HTTP {} RSC {:?} body {body:?}", self.status, self.rsc())
    }
}

/// Send `raw` on a fresh connection and read the answer; fails the test if none comes
/// within [`DEADLINE`].
async fn exchange(addr: SocketAddr, raw: &Raw) -> RawReply {
    tokio::time::timeout(DEADLINE, send_and_read(addr, raw))
        .await
        .unwrap_or_else(|_| panic!("no answer within {DEADLINE:?}: the CSE hangs on {}", describe(raw)))
}

async fn send_and_read(addr: SocketAddr, raw: &Raw) -> RawReply {
    let stream = TcpStream::connect(addr).await.expect("connect to the CSE");
    let (mut reader, mut writer) = stream.into_split();
    let head = raw.head();
    let payload = raw.payload.clone();
    // The CSE may answer and close before everything is sent: write errors are expected,
    // and the writer runs beside the reader so that a full socket buffer cannot block us.
    let writing = tokio::spawn(async move {
        let _ = writer.write_all(&head).await;
        match payload {
            Payload::None => {}
            Payload::Exact(body) | Payload::Verbatim { body, .. } => {
                let _ = writer.write_all(&body).await;
            }
            Payload::Chunked { total } => {
                let chunk = vec![b'x'; 16 * 1024];
                let mut sent = 0;
                while sent < total {
                    let size = chunk.len().min(total - sent);
                    let frame = [format!("{size:x}\r\n").as_bytes(), &chunk[..size], b"\r\n"].concat();
                    if writer.write_all(&frame).await.is_err() {
                        break;
                    }
                    sent += size;
                }
                let _ = writer.write_all(b"0\r\n\r\n").await;
            }
            Payload::Streamed { total } => {
                let chunk = vec![b'x'; 16 * 1024];
                let mut sent = 0;
                while sent < total {
                    let size = chunk.len().min(total - sent);
                    if writer.write_all(&chunk[..size]).await.is_err() {
                        break;
                    }
                    sent += size;
                }
            }
            Payload::Lying { sent, .. } => {
                let _ = writer.write_all(&sent).await;
                let _ = writer.shutdown().await;
            }
        }
        // Keep the write side open until the answer is read (hyper may close a connection
        // whose peer half-closed before it answered).
        writer
    });
    let reply = read_reply(&mut reader, raw.is_head()).await;
    writing.abort();
    reply
}

/// Read one HTTP/1.1 response: status line, headers, and a body framed by
/// `Content-Length`, chunked encoding, or the end of the connection.
async fn read_reply(reader: &mut OwnedReadHalf, head_request: bool) -> RawReply {
    let mut buffer = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    let header_end = loop {
        if let Some(position) = buffer.windows(4).position(|window| window == b"\r\n\r\n") {
            break position + 4;
        }
        match reader.read(&mut chunk).await {
            Ok(0) | Err(_) => return RawReply { status: 0, headers: Vec::new(), body: Vec::new() },
            Ok(read) => buffer.extend_from_slice(&chunk[..read]),
        }
    };
    let head = String::from_utf8_lossy(&buffer[..header_end]).into_owned();
    let mut lines = head.split("\r\n");
    let status = lines.next().and_then(|line| line.split(' ').nth(1)).and_then(|code| code.parse().ok()).unwrap_or(0);
    let headers: Vec<(String, String)> = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| (name.trim().to_ascii_lowercase(), value.trim().to_string()))
        .collect();
    let mut body = buffer[header_end..].to_vec();
    let find = |name: &str| headers.iter().find(|(existing, _)| existing == name).map(|(_, value)| value.clone());
    let length = find("content-length").and_then(|value| value.parse::<usize>().ok());
    let chunked = find("transfer-encoding").is_some_and(|value| value.eq_ignore_ascii_case("chunked"));
    if !head_request && status != 304 && !(100..200).contains(&status) {
        loop {
            let complete = match length {
                Some(length) => body.len() >= length,
                None if chunked => body.ends_with(b"0\r\n\r\n"),
                None => false,
            };
            if complete {
                break;
            }
            match reader.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(read) => body.extend_from_slice(&chunk[..read]),
            }
        }
        if let Some(length) = length {
            body.truncate(length);
        }
    }
    RawReply { status, headers, body }
}

fn describe(raw: &Raw) -> String {
    let target = String::from_utf8_lossy(&raw.target[..raw.target.len().min(80)]).into_owned();
    format!("{} {target}", String::from_utf8_lossy(&raw.method))
}

// -----------------------------------------------------------------------------------------
// The table runner
// -----------------------------------------------------------------------------------------

/// What a hostile request must get.
#[derive(Clone, Copy, Debug)]
enum Expect {
    /// A oneM2M error with this RSC, the HTTP status that belongs to it, and an `m2m:dbg`
    /// that contains the keyword (case-insensitive).
    Rsc(u16, &'static str),
    /// Any oneM2M client error (4000-4999) with its HTTP status and an `m2m:dbg` that
    /// contains the keyword.
    AnyClientError(&'static str),
    /// Refused by hyper before it reaches the CSE: this HTTP status.
    Http(u16),
    /// Either a oneM2M client error, or an HTTP 4xx from hyper, or a closed connection
    /// without an answer (the client broke the protocol itself).
    Refused,
    /// Served as a normal request: the hostile part is ignored.
    Served(u16),
}

struct Case {
    name: String,
    raw: Raw,
    expect: Expect,
}

fn case(name: impl Into<String>, raw: Raw, expect: Expect) -> Case {
    Case { name: name.into(), raw, expect }
}

/// A CSE with the owner AE `ae` and its container `cnt` holding one instance.
async fn target_cse() -> TestCse {
    let cse = TestCse::spawn(|settings| settings.http.max_body_size = BODY_LIMIT).await;
    cse.register_ae(OWNER, "ae").await;
    cse.create_container("/cse-in/ae", OWNER, json!({"rn": "cnt"})).await;
    cse.create_instance("/cse-in/ae/cnt", OWNER, json!("first")).await;
    cse
}

/// Everything a hostile request could have changed: every resource address below the
/// CSEBase, and the AE, container and instance as stored.
async fn snapshot(cse: &TestCse) -> Vec<Value> {
    let everything = cse.retrieve("/cse-in?fu=1", ADMIN).await;
    assert_eq!(everything.rsc, 2000, "discovery: {everything:?}");
    let mut uril = everything.uril();
    uril.sort();
    let mut state = vec![json!(uril)];
    for path in ["/cse-in/ae", "/cse-in/ae/cnt", "/cse-in/ae/cnt/la"] {
        let reply = cse.retrieve(path, OWNER).await;
        assert_eq!(reply.rsc, 2000, "{path}: {reply:?}");
        state.push(reply.body);
    }
    state
}

/// Send every case; check its answer, that the CSE still serves a normal RETRIEVE, and
/// that nothing was stored or changed.
async fn run_table(cse: &TestCse, cases: Vec<Case>) {
    let before = snapshot(cse).await;
    for Case { name, raw, expect } in cases {
        // Act
        let reply = exchange(cse.addr, &raw).await;
        // Assert
        check(&name, &raw, &reply, expect);
        let normal = cse.retrieve("/cse-in/ae/cnt", OWNER).await;
        assert_eq!(normal.rsc, 2000, "{name}: the CSE no longer serves a normal RETRIEVE: {normal:?}");
        assert_eq!(snapshot(cse).await, before, "{name}: the resource tree changed");
    }
}

fn check(name: &str, raw: &Raw, reply: &RawReply, expect: Expect) {
    assert_ne!(reply.status, 500, "{name}: {reply}");
    assert_ne!(reply.rsc(), Some(Rsc::InternalServerError.code()), "{name}: {reply}");
    match expect {
        Expect::Rsc(rsc, keyword) => {
            assert_eq!(reply.rsc(), Some(rsc), "{name}: {reply}");
            check_client_error(name, raw, reply, keyword);
        }
        Expect::AnyClientError(keyword) => {
            assert!(reply.rsc().is_some_and(|rsc| (4000..5000).contains(&rsc)), "{name}: {reply}");
            check_client_error(name, raw, reply, keyword);
        }
        Expect::Http(status) => assert_eq!(reply.status, status, "{name}: {reply}"),
        Expect::Refused => {
            let onem2m_error = reply.rsc().is_some_and(|rsc| (4000..5000).contains(&rsc));
            let http_error = reply.rsc().is_none() && (400..500).contains(&reply.status);
            let closed = reply.status == 0;
            assert!(onem2m_error || http_error || closed, "{name}: {reply}");
        }
        Expect::Served(rsc) => assert_eq!(reply.rsc(), Some(rsc), "{name}: {reply}"),
    }
}

/// The HTTP status belongs to the RSC, and (except for HEAD, which has no body) the
/// `m2m:dbg` names the problem.
fn check_client_error(name: &str, raw: &Raw, reply: &RawReply, keyword: &str) {
    let rsc = reply.rsc().and_then(Rsc::from_code).unwrap_or_else(|| panic!("{name}: unknown RSC in {reply}"));
    assert_eq!(reply.status, rsc.http_status(), "{name}: {reply}");
    if raw.is_head() {
        return;
    }
    let dbg = reply.dbg();
    assert!(dbg.to_lowercase().contains(&keyword.to_lowercase()), "{name}: m2m:dbg {dbg:?} does not name {keyword:?}");
}

fn nested(depth: usize, open: &str, inner: &str, close: &str) -> String {
    format!("{}{inner}{}", open.repeat(depth), close.repeat(depth))
}

// -----------------------------------------------------------------------------------------
// Bodies
// -----------------------------------------------------------------------------------------

#[tokio::test]
async fn oversized_bodies_are_refused_however_their_length_is_announced() {
    // Arrange
    let cse = target_cse().await;
    let huge = 8 * BODY_LIMIT;
    // Whichever length a parser believes, what it reads is refused.
    let small = json!({"m2m:cnt": {"rn": "small", "mni": -1}}).to_string().into_bytes();
    let cases = vec![
        case(
            "an honest Content-Length over the limit, body streamed",
            Raw::create("/cse-in/ae", 3, Vec::new()).payload(Payload::Streamed { total: huge }),
            Expect::Rsc(4000, "body"),
        ),
        case(
            "no Content-Length, an endless-looking chunked body",
            Raw::create("/cse-in/ae", 3, Vec::new()).payload(Payload::Chunked { total: huge }),
            Expect::Rsc(4000, "body"),
        ),
        case(
            "a chunked body one byte over the limit",
            Raw::create("/cse-in/ae", 3, Vec::new()).payload(Payload::Chunked { total: BODY_LIMIT + 1 }),
            Expect::Rsc(4000, "body"),
        ),
        case(
            "a Content-Length under the limit, followed by far more bytes",
            Raw::create("/cse-in/ae", 3, Vec::new()).payload(Payload::Lying { claimed: 100, sent: vec![b'{'; huge] }),
            Expect::Rsc(4000, "JSON"),
        ),
        case(
            "a Content-Length over the limit with a small body, then the client stops sending",
            Raw::create("/cse-in/ae", 3, Vec::new()).payload(Payload::Lying { claimed: huge, sent: small.clone() }),
            Expect::Refused,
        ),
        case(
            "a Content-Length larger than the body, then the client stops sending",
            Raw::create("/cse-in/ae", 3, Vec::new())
                .payload(Payload::Lying { claimed: small.len() + 10, sent: small.clone() }),
            Expect::Refused,
        ),
        case(
            "both Content-Length and chunked (request smuggling)",
            Raw::create("/cse-in/ae", 3, Vec::new()).payload(Payload::Verbatim {
                headers: b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n".to_vec(),
                body: [format!("{:x}\r\n", small.len()).into_bytes(), small.clone(), b"\r\n0\r\n\r\n".to_vec()]
                    .concat(),
            }),
            Expect::Refused,
        ),
        case(
            "two different Content-Lengths",
            Raw::create("/cse-in/ae", 3, Vec::new()).payload(Payload::Verbatim {
                headers: format!("Content-Length: {}\r\nContent-Length: 3\r\n", small.len()).into_bytes(),
                body: small.clone(),
            }),
            Expect::Refused,
        ),
        case(
            "a negative Content-Length",
            Raw::create("/cse-in/ae", 3, Vec::new())
                .payload(Payload::Verbatim { headers: b"Content-Length: -1\r\n".to_vec(), body: small.clone() }),
            Expect::Http(400),
        ),
        case(
            "a Content-Length beyond u64",
            Raw::create("/cse-in/ae", 3, Vec::new()).payload(Payload::Verbatim {
                headers: b"Content-Length: 99999999999999999999999\r\n".to_vec(),
                body: small.clone(),
            }),
            Expect::Http(400),
        ),
        case(
            "a malformed chunk size",
            Raw::create("/cse-in/ae", 3, Vec::new()).payload(Payload::Verbatim {
                headers: b"Transfer-Encoding: chunked\r\n".to_vec(),
                body: b"zz\r\n{}\r\n0\r\n\r\n".to_vec(),
            }),
            Expect::Refused,
        ),
        case(
            "an oversized body on an UPDATE",
            Raw::update("/cse-in/ae/cnt", Vec::new()).payload(Payload::Chunked { total: huge }),
            Expect::Rsc(4000, "body"),
        ),
        case(
            "an oversized body on a RETRIEVE",
            Raw::get("/cse-in/ae/cnt").payload(Payload::Streamed { total: huge }),
            Expect::Rsc(4000, "body"),
        ),
    ];
    // Act + Assert
    run_table(&cse, cases).await;
    cse.shutdown().await;
}

#[tokio::test]
async fn malformed_json_is_a_bad_request_and_deep_nesting_does_not_overflow_the_stack() {
    // Arrange
    let cse = target_cse().await;
    let deep_lists = format!(r#"{{"m2m:cnt": {{"rn": "deep", "lbl": {}}}}}"#, nested(10_000, "[", "", "]"));
    let deep_content = format!(r#"{{"m2m:cin": {{"con": {}}}}}"#, nested(10_000, "[", "1", "]"));
    let deep_objects = format!(r#"{{"m2m:cin": {{"con": {}}}}}"#, nested(10_000, r#"{"a":"#, "1", "}"));
    let deep_wrapper = nested(5_000, r#"{"m2m:cnt":"#, "{}", "}");
    let unclosed = format!(r#"{{"m2m:cin": {{"con": {}"#, "[".repeat(BODY_LIMIT / 2));
    let cases = vec![
        case("10,000 nested lists in m2m:cnt", Raw::create("/cse-in/ae", 3, deep_lists), Expect::Rsc(4000, "JSON")),
        case("10,000 nested lists in a con", Raw::create("/cse-in/ae/cnt", 4, deep_content), Expect::Rsc(4000, "JSON")),
        case(
            "10,000 nested objects in a con",
            Raw::create("/cse-in/ae/cnt", 4, deep_objects),
            Expect::Rsc(4000, "JSON"),
        ),
        case("5,000 nested wrappers", Raw::create("/cse-in/ae", 3, deep_wrapper), Expect::Rsc(4000, "JSON")),
        case("32,768 unclosed lists", Raw::create("/cse-in/ae/cnt", 4, unclosed), Expect::Rsc(4000, "JSON")),
        case(
            "invalid UTF-8 inside a string",
            Raw::create("/cse-in/ae", 3, b"{\"m2m:cnt\": {\"rn\": \"a\xff\xfeb\"}}".to_vec()),
            Expect::Rsc(4000, "JSON"),
        ),
        case(
            "invalid UTF-8 outside strings",
            Raw::create("/cse-in/ae", 3, b"\xef\xbb\xbf\xff{\"m2m:cnt\": {}}".to_vec()),
            Expect::Rsc(4000, "JSON"),
        ),
        case(
            "a lone surrogate escape",
            Raw::create("/cse-in/ae", 3, r#"{"m2m:cnt": {"rn": "\ud800"}}"#),
            Expect::Rsc(4000, "JSON"),
        ),
        case("a NUL byte", Raw::create("/cse-in/ae", 3, b"{\"m2m:cnt\": {}}\0".to_vec()), Expect::Rsc(4000, "JSON")),
        case("trailing garbage", Raw::create("/cse-in/ae", 3, r#"{"m2m:cnt": {}} {}"#), Expect::Rsc(4000, "JSON")),
        case("a number beyond f64 (1e400)", Raw::create("/cse-in/ae", 3, r#"{"m2m:cnt": {"mni": 1e400}}"#), {
            Expect::Rsc(4000, "JSON")
        }),
        case("NaN", Raw::create("/cse-in/ae", 3, r#"{"m2m:cnt": {"mni": NaN}}"#), Expect::Rsc(4000, "JSON")),
        case("only whitespace", Raw::create("/cse-in/ae", 3, "   \r\n\t "), Expect::Rsc(4000, "JSON")),
        case(
            "a body in UTF-16",
            Raw::create(
                "/cse-in/ae",
                3,
                "{\"m2m:cnt\": {}}".encode_utf16().flat_map(u16::to_le_bytes).collect::<Vec<_>>(),
            ),
            Expect::Rsc(4000, "JSON"),
        ),
    ];
    // Act + Assert
    run_table(&cse, cases).await;
    cse.shutdown().await;
}

#[tokio::test]
async fn bodies_of_the_wrong_shape_are_bad_requests() {
    // Arrange
    let cse = target_cse().await;
    let cnt = |attributes: Value| json!({"m2m:cnt": attributes}).to_string();
    let cin = |attributes: Value| json!({"m2m:cin": attributes}).to_string();
    let mut cases = vec![
        case("an empty body on CREATE", Raw::create("/cse-in/ae", 3, ""), Expect::Rsc(4000, "content")),
        case("an empty body on UPDATE", Raw::update("/cse-in/ae/cnt", ""), Expect::Rsc(4000, "content")),
        case("an empty wrapper {}", Raw::create("/cse-in/ae", 3, "{}"), Expect::Rsc(4000, "one member")),
        case("an empty wrapper {} on UPDATE", Raw::update("/cse-in/ae/cnt", "{}"), Expect::Rsc(4000, "one member")),
        case(
            "two wrappers",
            Raw::create("/cse-in/ae", 3, r#"{"m2m:cnt": {"rn": "a"}, "m2m:cin": {"con": "b"}}"#),
            Expect::Rsc(4000, "one member"),
        ),
        case(
            "two wrappers on UPDATE",
            Raw::update("/cse-in/ae/cnt", r#"{"m2m:cnt": {"lbl": ["a"]}, "m2m:ae": {}}"#),
            Expect::Rsc(4000, "one member"),
        ),
        case("an empty UPDATE", Raw::update("/cse-in/ae/cnt", cnt(json!({}))), Expect::Rsc(4000, "attribute")),
        case(
            "a wrapper that does not match ty",
            Raw::create("/cse-in/ae", 3, cin(json!({"con": "x"}))),
            Expect::Rsc(4000, "m2m:cnt"),
        ),
        case(
            "an unknown wrapper on UPDATE",
            Raw::update("/cse-in/ae/cnt", r#"{"m2m:xyz": {"lbl": ["a"]}}"#),
            Expect::Rsc(4102, "m2m:cnt"),
        ),
    ];
    for (kind, content) in
        [("an array", "[]"), ("a string", r#""m2m:cnt""#), ("a number", "42"), ("null", "null"), ("true", "true")]
    {
        cases.push(case(format!("content that is {kind}"), Raw::create("/cse-in/ae", 3, content), {
            Expect::Rsc(4000, "object")
        }));
        cases.push(case(format!("an UPDATE that is {kind}"), Raw::update("/cse-in/ae/cnt", content), {
            Expect::Rsc(4000, "object")
        }));
        let wrapped = format!(r#"{{"m2m:cnt": {content}}}"#);
        cases.push(case(format!("m2m:cnt that is {kind}"), Raw::create("/cse-in/ae", 3, wrapped.clone()), {
            Expect::Rsc(4000, "object")
        }));
        cases.push(case(format!("an UPDATE m2m:cnt that is {kind}"), Raw::update("/cse-in/ae/cnt", wrapped), {
            Expect::Rsc(4000, "object")
        }));
    }
    let wrong_types = [
        ("lbl", json!("a")),
        ("lbl", json!([1])),
        ("lbl", json!([null])),
        ("lbl", json!({"a": "b"})),
        ("mni", json!("5")),
        ("mni", json!(1.5)),
        ("mni", json!(true)),
        ("mni", json!([5])),
        ("mbs", json!({})),
        ("mia", json!(null)),
        ("disr", json!("true")),
        ("disr", json!(1)),
        ("et", json!(20_300_101)),
        ("et", json!("not a time")),
        ("et", json!("99999999T999999")),
        // Five-digit years would not compare as strings in time order.
        ("et", json!("123450101T000000")),
        ("et", json!("+123450101T000000")),
        ("mia", json!(-1)),
        ("mia", json!(315_537_897_600_u64)),
        ("acpi", json!("acp1")),
        ("acpi", json!([1, 2])),
        ("acpi", json!(["../../../etc/passwd"])),
        ("cr", json!(false)),
        ("cstn", json!(["x"])),
    ];
    for (name, value) in wrong_types {
        let body = cnt(json!({ "rn": "wrong", name: value.clone() }));
        cases.push(case(format!("create: {name} = {value}"), Raw::create("/cse-in/ae", 3, body), {
            Expect::Rsc(4000, name)
        }));
        if value.is_null() {
            continue; // null removes an optional attribute on UPDATE
        }
        let body = cnt(json!({ name: value.clone() }));
        cases.push(case(format!("update: {name} = {value}"), Raw::update("/cse-in/ae/cnt", body), {
            Expect::Rsc(4000, name)
        }));
    }
    for (name, value) in [("con", json!(null)), ("cnf", json!(5)), ("dcnt", json!(0)), ("dcnt", json!(-3))] {
        let body = cin(json!({ name: value.clone() }));
        cases.push(case(format!("instance: {name} = {value}"), Raw::create("/cse-in/ae/cnt", 4, body), {
            Expect::Rsc(4000, name)
        }));
    }
    for (name, value) in [("api", json!(5)), ("rr", json!("yes")), ("srv", json!("4")), ("srv", json!([4]))] {
        let mut body = json!({"m2m:ae": {"rn": "wrongae", "api": "Nx", "rr": true, "srv": ["4"]}});
        body["m2m:ae"][name] = value.clone();
        let raw = Raw::create("/cse-in", 2, body.to_string()).header("X-M2M-Origin", "Cwrongae");
        cases.push(case(format!("AE: {name} = {value}"), raw, Expect::Rsc(4000, name)));
    }
    for (name, value) in [
        ("pv", json!([])),
        ("pv", json!({"acr": {}})),
        ("pv", json!({"acr": [5]})),
        ("pv", json!({"acr": [{"acor": "all", "acop": 63}]})),
        ("pv", json!({"acr": [{"acor": ["all"], "acop": 64}]})),
        ("pv", json!({"acr": [{"acor": ["all"], "acop": -1}]})),
        ("pvs", json!({"acr": [{"acor": ["all"], "acop": 1e300}]})),
        ("pvs", json!(null)),
    ] {
        let mut body =
            json!({"m2m:acp": {"rn": "wrongacp", "pv": {"acr": []}, "pvs": {"acr": [{"acor": ["all"], "acop": 63}]}}});
        body["m2m:acp"][name] = value.clone();
        cases.push(case(format!("ACP: {name} = {value}"), Raw::create("/cse-in/ae", 1, body.to_string()), {
            Expect::Rsc(4000, name)
        }));
    }
    // Act + Assert
    run_table(&cse, cases).await;
    cse.shutdown().await;
}

#[tokio::test]
async fn out_of_range_numbers_are_bad_requests() {
    // Arrange
    let cse = target_cse().await;
    let mut cases = Vec::new();
    for (name, value) in [
        ("mni", "-1"),
        ("mni", "18446744073709551616"),
        ("mni", "-9223372036854775809"),
        ("mni", "1e19"),
        ("mni", "1.0"),
        ("mbs", "-0.5"),
        ("mia", "-1"),
        ("mia", "18446744073709551616"),
    ] {
        let body = format!(r#"{{"m2m:cnt": {{"rn": "num", "{name}": {value}}}}}"#);
        cases.push(case(format!("create: {name} = {value}"), Raw::create("/cse-in/ae", 3, body), {
            Expect::Rsc(4000, name)
        }));
        let body = format!(r#"{{"m2m:cnt": {{"{name}": {value}}}}}"#);
        cases.push(case(format!("update: {name} = {value}"), Raw::update("/cse-in/ae/cnt", body), {
            Expect::Rsc(4000, name)
        }));
    }
    for query in [
        "rcn=-1",
        "rcn=99999999999",
        "rcn=256",
        "rcn=1.0",
        "rcn=",
        "lim=-5",
        "lim=99999999999999999999999",
        "lvl=-1",
        "ofst=-1",
        "ofst=1e3",
        "fu=0",
        "fu=-1",
        "fu=99999999999",
        "drt=0",
        "drt=-1",
        "ty=-1",
        "ty=99999999999999999999",
        "fu=1&ty=1e3",
    ] {
        let name = query.split(['=', '&']).next().unwrap_or_default();
        let keyword = if query.starts_with("fu=1&") { "ty" } else { name };
        cases.push(case(format!("query {query}"), Raw::get(format!("/cse-in/ae/cnt?{query}")), {
            Expect::Rsc(4000, keyword)
        }));
    }
    for ty in ["99999999999999999999", "-1", "1e3", "3.0", "0x3", "", "3 3", "١"] {
        let raw = Raw::create("/cse-in/ae", 3, json!({"m2m:cnt": {"rn": "typed"}}).to_string())
            .header("Content-Type", format!("application/json;ty={ty}"));
        cases.push(case(format!("Content-Type ty={ty}"), raw, Expect::Rsc(4000, "ty")));
    }
    for ty in ["18446744073709551615", "0", "6", "65539"] {
        let raw = Raw::create("/cse-in/ae", 3, json!({"m2m:cnt": {"rn": "typed"}}).to_string())
            .header("Content-Type", format!("application/json;ty={ty}"));
        cases.push(case(format!("unknown resource type ty={ty}"), raw, Expect::Rsc(4000, "resource type")));
    }
    // Act + Assert
    run_table(&cse, cases).await;
    cse.shutdown().await;
}

// -----------------------------------------------------------------------------------------
// Identifiers
// -----------------------------------------------------------------------------------------

#[tokio::test]
async fn malformed_or_traversing_identifiers_in_the_path_are_client_errors() {
    // Arrange
    let cse = target_cse().await;
    let mut cases = Vec::new();
    for path in [
        "/cse-in/../x",
        "/cse-in/%2e%2e/x",
        "/cse-in/ae/cnt/../../ae",
        "/cse-in/./ae",
        "/cse-in/ae/%2E%2E",
        "/./cse-in",
    ] {
        cases.push(case(format!("dot segments {path}"), Raw::get(path), Expect::AnyClientError("cse-in")));
    }
    for (path, keyword) in [
        ("/cse-in/%00", "characters"),
        ("/cse-in/ae%00", "characters"),
        ("/cse-in/%0a", "characters"),
        ("/cse-in/%0d%0aX-Injected:%201", "characters"),
        ("/cse-in/%7f", "characters"),
        ("/cse-in/%1b%5B31m", "characters"),
        ("/cse-in/a%20b", "characters"),
        ("/cse-in/%ff", "UTF-8"),
        ("/cse-in/%c3%28", "UTF-8"),
        ("/cse-in/%ed%a0%80", "UTF-8"),
        ("/cse-in/%C3%A9", "characters"),
        ("/cse-in/%E2%80%AEae", "characters"),
        ("/cse-in/%EF%BC%A1", "characters"),
        ("/cse-in%2F%2Fae", "encoded"),
        ("/cse-in/ae%2F", "encoded"),
        ("/cse-in//ae", "empty path element"),
        ("/cse-in/ae/", "empty path element"),
        ("/%2F%2F%2F%2Fx", "encoded"),
        ("/~/", "empty path element"),
        ("/_/", "empty path element"),
        ("/~/id-in", "resource"),
        ("/_/acme.example.com/id-in", "resource"),
        ("/~/id-in/cnt1/cnt2", "CSEBase"),
        ("/", "empty target"),
        ("/cse-in/%", "characters"),
        ("/cse-in/%zz", "characters"),
        ("/cse-in/a;b", "characters"),
        ("/cse-in/a*", "characters"),
        ("/cse-in/ae@x", "characters"),
    ] {
        cases.push(case(format!("path {path}"), Raw::get(path), Expect::Rsc(4000, keyword)));
    }
    let long = format!("/cse-in/{}", "a".repeat(10 * 1024));
    cases.push(case("a 10 KB path element", Raw::get(&long), Expect::Rsc(4004, "does not exist")));
    let many = format!("/cse-in{}", "/a".repeat(5_000));
    cases.push(case("5,000 path elements", Raw::get(&many), Expect::Rsc(4004, "does not exist")));
    // Beyond http.max_header_size (64 KiB by default): refused before it is read whole.
    let beyond_limit = format!("/cse-in/{}", "a".repeat(70 * 1024));
    cases.push(case("a 70 KB request target", Raw::get(&beyond_limit), Expect::Http(431)));
    for (name, target) in [
        ("a raw NUL", b"/cse-in/\0".to_vec()),
        ("a raw control character", b"/cse-in/\x01".to_vec()),
        ("raw bytes that are not UTF-8", b"/cse-in/\xff\xfe".to_vec()),
        ("a raw space", b"/cse-in/a b".to_vec()),
        ("a raw DEL", b"/cse-in/\x7f".to_vec()),
    ] {
        cases.push(case(name, Raw::get(target), Expect::Http(400)));
    }
    // Act + Assert
    run_table(&cse, cases).await;
    cse.shutdown().await;
}

#[tokio::test]
async fn malformed_resource_names_are_bad_requests() {
    // Arrange
    let cse = target_cse().await;
    let mut cases = Vec::new();
    for rn in [
        "",
        "la",
        "ol",
        "a/b",
        "../ae",
        "a b",
        "a\u{0}b",
        "a\nb",
        "a\u{7f}",
        "\u{1b}[31mred",
        "caf\u{e9}",
        "\u{202e}ea",
        "\u{ff41}",
        "\u{1F600}",
        "a\u{200b}b",
        "%2e%2e",
        "a?b",
        "a#b",
    ] {
        let body = json!({"m2m:cnt": {"rn": rn}}).to_string();
        cases.push(case(format!("rn {rn:?}"), Raw::create("/cse-in/ae", 3, body), Expect::Rsc(4000, "rn")));
    }
    for name in ["lbl\u{0}", "", "m2m:cnt", "rn\u{202e}", "__proto__"] {
        let body = json!({"m2m:cnt": {"rn": "strange", name: ["x"]}}).to_string();
        cases.push(case(format!("attribute name {name:?}"), Raw::create("/cse-in/ae", 3, body), {
            Expect::Rsc(4000, "unknown attribute")
        }));
    }
    for wrapper in ["m2m:cnt\u{0}", "M2M:CNT", " m2m:cnt", "m2m:cnt\u{200b}"] {
        let body = json!({ wrapper: {"rn": "wrapped"} }).to_string();
        cases.push(case(format!("wrapper {wrapper:?}"), Raw::create("/cse-in/ae", 3, body), {
            Expect::Rsc(4000, "m2m:cnt")
        }));
    }
    // Act + Assert
    run_table(&cse, cases).await;
    cse.shutdown().await;
}

// -----------------------------------------------------------------------------------------
// Headers
// -----------------------------------------------------------------------------------------

#[tokio::test]
async fn malformed_or_oversized_headers_are_rejected() {
    // Arrange
    let cse = target_cse().await;
    let container = || Raw::create("/cse-in/ae", 3, json!({"m2m:cnt": {"rn": "headers"}}).to_string());
    let mut cases = vec![
        case(
            "an X-M2M-RI that is not UTF-8",
            Raw::get("/cse-in/ae/cnt").header("X-M2M-RI", b"\xff\xfe"),
            Expect::Rsc(4000, "X-M2M-RI"),
        ),
        case(
            "an X-M2M-RI in UTF-8 beyond ASCII",
            Raw::get("/cse-in/ae/cnt").header("X-M2M-RI", "r\u{e9}q".as_bytes()),
            Expect::Rsc(4000, "X-M2M-RI"),
        ),
        case("an empty X-M2M-RI", Raw::get("/cse-in/ae/cnt").header("X-M2M-RI", ""), Expect::Rsc(4000, "X-M2M-RI")),
        case(
            "an X-M2M-Origin that is not UTF-8",
            Raw::get("/cse-in/ae/cnt").header("X-M2M-Origin", b"C\xff\xfe"),
            Expect::Rsc(4000, "X-M2M-Origin"),
        ),
        case(
            "an X-M2M-Origin in UTF-8 beyond ASCII on CREATE",
            container().header("X-M2M-Origin", "Cowner\u{e9}".as_bytes()),
            Expect::Rsc(4000, "X-M2M-Origin"),
        ),
        case(
            "an X-M2M-RVI that is not UTF-8",
            Raw::get("/cse-in/ae/cnt").header("X-M2M-RVI", b"\xff"),
            Expect::AnyClientError("X-M2M-RVI"),
        ),
        case(
            "a 40 KB X-M2M-RVI",
            Raw::get("/cse-in/ae/cnt").header("X-M2M-RVI", "4".repeat(40 * 1024)),
            Expect::Rsc(4001, "release version"),
        ),
        case(
            "a 40 KB Content-Type",
            container().header("Content-Type", format!("application/json;ty={}", "3".repeat(40 * 1024))),
            Expect::Rsc(4000, "ty"),
        ),
        case(
            "a 100 KB X-M2M-RVI (beyond http.max_header_size)",
            Raw::get("/cse-in/ae/cnt").header("X-M2M-RVI", "4".repeat(100 * 1024)),
            Expect::Http(431),
        ),
        case(
            "a Content-Type that is not UTF-8",
            container().header("Content-Type", b"application/json;ty=3;\xff"),
            Expect::Rsc(4000, "Content-Type"),
        ),
        case(
            "an unsupported media type",
            container().header("Content-Type", "application/x-www-form-urlencoded;ty=3"),
            Expect::Rsc(4015, "application/x-www-form-urlencoded"),
        ),
        case(
            "a 600 KB header (beyond hyper's buffer)",
            Raw::get("/cse-in/ae/cnt").header("X-Junk", "j".repeat(600 * 1024)),
            Expect::Http(431),
        ),
        case(
            "a header with a raw control character",
            Raw::get("/cse-in/ae/cnt").header("X-M2M-Origin", b"Cowner\x01"),
            Expect::Http(400),
        ),
        case("a header with a raw NUL", Raw::get("/cse-in/ae/cnt").header("X-M2M-RI", b"r\0i"), Expect::Http(400)),
        case(
            "a header name with a space",
            Raw::get("/cse-in/ae/cnt").header("X M2M Origin", "Cowner"),
            Expect::Http(400),
        ),
        case(
            "a header name that is not ASCII",
            Raw::get("/cse-in/ae/cnt").header("X-M2M-\u{d6}rigin", "Cowner"),
            Expect::Http(400),
        ),
        case(
            "a header line without a colon",
            Raw::get("/cse-in/ae/cnt")
                .payload(Payload::Verbatim { headers: b"X-M2M-Origin\r\n".to_vec(), body: vec![] }),
            Expect::Http(400),
        ),
        case(
            "an obsolete folded header line",
            Raw::get("/cse-in/ae/cnt")
                .payload(Payload::Verbatim { headers: b"X-Junk: a\r\n folded\r\n".to_vec(), body: vec![] }),
            Expect::Refused,
        ),
    ];
    let mut many = Raw::get("/cse-in/ae/cnt");
    for index in 0..200 {
        many = many.add_header(&format!("X-Junk-{index}"), "junk");
    }
    cases.push(case("200 headers", many, Expect::Http(431)));
    let mut repeated = Raw::get("/cse-in/ae/cnt");
    for index in 0..90 {
        repeated = repeated.add_header("Via", format!("1.1 hop{index}"));
    }
    cases.push(case("90 Via headers", repeated, Expect::Served(2000)));
    // Act + Assert
    run_table(&cse, cases).await;
    cse.shutdown().await;
}

#[tokio::test]
async fn a_request_expiration_in_the_past_times_out_and_a_malformed_one_is_rejected() {
    // Arrange
    let cse = target_cse().await;
    let mut cases = Vec::new();
    for ret in ["20000101T000000", "19700101T000000,000000", "-1", "-86400000"] {
        cases.push(case(format!("X-M2M-RET {ret}"), Raw::get("/cse-in/ae/cnt").header("X-M2M-RET", ret), {
            Expect::Rsc(4008, "expiration")
        }));
        let create = Raw::create("/cse-in/ae", 3, json!({"m2m:cnt": {"rn": "late"}}).to_string());
        cases.push(case(format!("CREATE with X-M2M-RET {ret}"), create.header("X-M2M-RET", ret), {
            Expect::Rsc(4008, "expiration")
        }));
    }
    for ret in [
        "yesterday",
        "",
        "2030-01-01T00:00:00Z",
        "20301301T000000",
        "20300101T250000",
        "20300101T000000,1234567890",
        "99999999999999999999",
        "1e3",
        "0x10",
        "+",
    ] {
        cases.push(case(format!("X-M2M-RET {ret:?}"), Raw::get("/cse-in/ae/cnt").header("X-M2M-RET", ret), {
            Expect::Rsc(4000, "X-M2M-RET")
        }));
    }
    // Act + Assert
    run_table(&cse, cases).await;
    cse.shutdown().await;
}

// -----------------------------------------------------------------------------------------
// Methods and query
// -----------------------------------------------------------------------------------------

#[tokio::test]
async fn methods_that_are_not_onem2m_operations_are_not_allowed() {
    // Arrange
    let cse = target_cse().await;
    let mut cases = Vec::new();
    for method in ["PATCH", "OPTIONS", "HEAD", "TRACE", "BREW", "get", "M-SEARCH", "PROPFIND", "X"] {
        let raw = Raw::new(method, "/cse-in/ae/cnt").header("Content-Type", "application/json").body("{}");
        cases.push(case(format!("method {method}"), raw, Expect::Rsc(4005, "method")));
    }
    let long_method = "A".repeat(10 * 1024);
    cases.push(case("a 10 KB method", Raw::new(&long_method, "/cse-in/ae/cnt"), Expect::Refused));
    for (name, method) in [("a method with a slash", "GE/T"), ("a method with a colon", "GET:")] {
        cases.push(case(name, Raw::new(method, "/cse-in/ae/cnt"), Expect::Http(400)));
    }
    cases.push(case("CONNECT to a path", Raw::new("CONNECT", "/cse-in/ae/cnt"), Expect::Refused));
    cases.push(case("an absolute-form target", Raw::get("http://127.0.0.1/cse-in/ae/cnt"), Expect::Served(2000)));
    cases.push(case("an asterisk target", Raw::new("OPTIONS", "*"), Expect::Refused));
    // Act + Assert
    run_table(&cse, cases).await;
    cse.shutdown().await;
}

#[tokio::test]
async fn unknown_query_parameters_are_refused_and_repeated_ones_are_checked() {
    // Arrange
    let cse = target_cse().await;
    let mut cases = Vec::new();
    for query in
        ["foo=bar", "x", "=", "%ff=%fe", "a=%00", "rcn=1&rcn=7", "unknown=1&unknown=2&unknown=3", "RCN=99", "rcn%00=99"]
    {
        cases.push(case(format!("query {query}"), Raw::get(format!("/cse-in/ae/cnt?{query}")), {
            Expect::Rsc(4000, "parameter")
        }));
    }
    let many = (0..2_000).map(|index| format!("p{index}={index}")).collect::<Vec<_>>().join("&");
    cases.push(case("2,000 unknown parameters", Raw::get(format!("/cse-in/ae/cnt?{many}")), Expect::Rsc(4000, "p0")));
    cases.push(case("no parameter at all", Raw::get("/cse-in/ae/cnt?&&&"), Expect::Served(2000)));
    cases.push(case("ty repeated in a discovery", Raw::get("/cse-in/ae?fu=1&ty=3&ty=3&ty=4+3"), Expect::Served(2000)));
    for (query, keyword) in [
        ("rcn=1&rcn=x", "rcn"),
        ("rcn=x&rcn=1", "rcn"),
        ("rcn=1&rcn=99", "rcn"),
        ("drt=1&drt=3", "drt"),
        ("fu=1&fu=9", "fu"),
        ("fu=1&ty=3&ty=x", "ty"),
        ("rcn=%00", "rcn"),
        ("rcn=1%00", "rcn"),
        ("lim=%ff", "lim"),
    ] {
        cases.push(case(format!("query {query}"), Raw::get(format!("/cse-in/ae/cnt?{query}")), {
            Expect::Rsc(4000, keyword)
        }));
    }
    // Act + Assert
    run_table(&cse, cases).await;
    cse.shutdown().await;
}
// Cases that found bugs (since fixed).

#[tokio::test]
async fn a_far_relative_request_expiration_is_a_bad_request_not_a_dropped_connection() {
    // Arrange
    let cse = target_cse().await;
    let mut cases = Vec::new();
    for ret in ["9000000000000000", "9223372036854775807"] {
        cases.push(case(format!("X-M2M-RET {ret}"), Raw::get("/cse-in/ae/cnt").header("X-M2M-RET", ret), {
            Expect::Rsc(4000, "year 9999")
        }));
    }
    for ret in ["-9000000000000000", "-9223372036854775808"] {
        cases.push(case(format!("X-M2M-RET {ret}"), Raw::get("/cse-in/ae/cnt").header("X-M2M-RET", ret), {
            Expect::Rsc(4008, "has passed")
        }));
    }
    // Act + Assert
    run_table(&cse, cases).await;
    cse.shutdown().await;
}

#[tokio::test]
async fn a_request_expiration_past_the_calendar_is_refused_not_taken_as_passed() {
    // Arrange
    let cse = target_cse().await;
    // Act: about 9,500 years ahead (year 11500): its text form would need a five-digit year.
    let beyond = exchange(cse.addr, &Raw::get("/cse-in/ae/cnt").header("X-M2M-RET", "300000000000000")).await;
    let far = exchange(cse.addr, &Raw::get("/cse-in/ae/cnt").header("X-M2M-RET", "99991231T000000")).await;
    // Assert
    assert_eq!(beyond.rsc(), Some(4000), "{beyond}");
    assert!(beyond.dbg().contains("year 9999"), "{beyond}");
    assert_eq!(far.rsc(), Some(2000), "{far}");
    cse.shutdown().await;
}

#[tokio::test]
async fn a_maximum_age_beyond_the_calendar_is_refused() {
    // Arrange
    let cse = target_cse().await;
    // Act
    let update = cse.update("/cse-in/ae/cnt", OWNER, json!({"m2m:cnt": {"mia": 10_000_000_000_000_u64}})).await;
    let create =
        cse.create("/cse-in/ae", OWNER, 3, json!({"m2m:cnt": {"rn": "aged", "mia": 315_537_897_600_u64}})).await;
    // Assert
    assert_eq!((update.rsc, create.rsc), (4000, 4000), "{update:?} {create:?}");
    assert!(update.dbg().contains("mia") && create.dbg().contains("mia"), "{update:?} {create:?}");
    cse.shutdown().await;
}

#[tokio::test]
async fn an_instance_in_a_container_with_the_largest_maximum_age_lives_and_is_not_swept() {
    // Arrange: about 10,000 years, the most the calendar holds (before the fix, a `+YYYYY`
    // expiration that compared as already passed, so the sweep deleted the instance).
    let cse = target_cse().await;
    let reply = cse.update("/cse-in/ae/cnt", OWNER, json!({"m2m:cnt": {"mia": 315_537_897_599_u64}})).await;
    assert_eq!(reply.rsc, 2004, "{reply:?}");
    // Act
    let instance = cse.create_instance("/cse-in/ae/cnt", OWNER, json!("x")).await;
    let removed = cse.cse.remove_expired().await.expect("expiry sweep");
    // Assert
    let et = instance["et"].as_str().expect("et").to_string();
    assert_eq!(et.len(), "20260101T120000,000000".len(), "{et}");
    assert_eq!(removed, 0);
    let path = format!("/cse-in/ae/cnt/{}", instance["rn"].as_str().expect("rn"));
    assert_eq!(cse.retrieve(&path, OWNER).await.rsc, 2000);
    cse.shutdown().await;
}

#[tokio::test]
async fn a_dot_segment_as_cse_id_is_a_bad_request_not_an_unreachable_cse() {
    // Arrange
    let cse = target_cse().await;
    let cases = ["/~/../../etc/passwd", "/~/%2e%2e/cse-in", "/~/./x", "/_/acme.example.com/../cse-in", "/_/../id-in/x"]
        .into_iter()
        .map(|path| case(format!("path {path}"), Raw::get(path), Expect::Rsc(4000, "..")))
        .collect();
    // Act + Assert
    run_table(&cse, cases).await;
    cse.shutdown().await;
}

#[tokio::test]
async fn an_ae_registration_with_a_garbled_originator_is_rejected_not_anonymous() {
    // Arrange
    let cse = target_cse().await;
    let body = json!({"m2m:ae": {"rn": "garbled", "api": "Nx", "rr": true, "srv": ["4"]}}).to_string();
    let cases = vec![
        case(
            "AE CREATE with an X-M2M-Origin that is not UTF-8",
            Raw::create("/cse-in", 2, body.clone()).header("X-M2M-Origin", b"C\xff\xfe"),
            Expect::Rsc(4000, "X-M2M-Origin"),
        ),
        case(
            "AE CREATE with an X-M2M-Origin in UTF-8 beyond ASCII",
            Raw::create("/cse-in", 2, body).header("X-M2M-Origin", "C\u{e9}t\u{e9}".as_bytes()),
            Expect::Rsc(4000, "X-M2M-Origin"),
        ),
    ];
    // Act + Assert
    run_table(&cse, cases).await;
    cse.shutdown().await;
}

#[tokio::test]
async fn a_resource_name_that_is_not_a_string_is_a_bad_request() {
    // Arrange
    let cse = target_cse().await;
    let mut cases = Vec::new();
    for value in [json!(5), json!(["a"]), json!({"a": 1}), json!(null), json!(true)] {
        let body = json!({"m2m:cnt": {"rn": value.clone()}}).to_string();
        cases.push(case(
            format!("container rn = {value}"),
            Raw::create("/cse-in/ae", 3, body),
            Expect::Rsc(4000, "rn"),
        ));
        let body = json!({"m2m:ae": {"rn": value.clone(), "api": "Nx", "rr": true, "srv": ["4"]}}).to_string();
        let raw = Raw::create("/cse-in", 2, body).header("X-M2M-Origin", "Crnae");
        cases.push(case(format!("AE rn = {value}"), raw, Expect::Rsc(4000, "rn")));
    }
    // Act + Assert
    run_table(&cse, cases).await;
    cse.shutdown().await;
}

#[tokio::test]
async fn duplicate_json_keys_are_a_bad_request() {
    // Arrange
    let cse = target_cse().await;
    let cases = vec![
        case(
            "a duplicate attribute",
            Raw::create("/cse-in/ae", 3, r#"{"m2m:cnt": {"rn": "first", "rn": "second"}}"#),
            Expect::Rsc(4000, "rn"),
        ),
        case(
            "a duplicate wrapper",
            Raw::create("/cse-in/ae", 3, r#"{"m2m:cnt": {"rn": "first"}, "m2m:cnt": {"rn": "second"}}"#),
            Expect::Rsc(4000, "m2m:cnt"),
        ),
        case(
            "a duplicate attribute on UPDATE",
            Raw::update("/cse-in/ae/cnt", r#"{"m2m:cnt": {"mni": 1, "mni": 2}}"#),
            Expect::Rsc(4000, "mni"),
        ),
    ];
    // Act + Assert
    run_table(&cse, cases).await;
    cse.shutdown().await;
}

#[tokio::test]
async fn a_very_long_resource_name_is_a_bad_request() {
    // Arrange
    let cse = target_cse().await;
    let body = json!({"m2m:cnt": {"rn": "n".repeat(10 * 1024)}}).to_string();
    let cases = vec![case("a 10 KB rn", Raw::create("/cse-in/ae", 3, body), Expect::Rsc(4000, "rn"))];
    // Act + Assert
    run_table(&cse, cases).await;
    cse.shutdown().await;
}

#[tokio::test]
async fn a_body_that_never_completes_is_answered_within_the_request_timeout() {
    // Arrange
    let cse = TestCse::spawn(|settings| settings.http.request_timeout = Duration::from_millis(500)).await;
    cse.register_ae(OWNER, "ae").await;
    let stream = TcpStream::connect(cse.addr).await.expect("connect");
    let (mut reader, mut writer) = stream.into_split();
    let raw = Raw::create("/cse-in/ae", 3, Vec::new()).payload(Payload::Streamed { total: 1000 });
    writer.write_all(&raw.head()).await.expect("head");
    writer.write_all(b"{\"m2m:cnt\": ").await.expect("first bytes");
    // Act: the client sends nothing more and keeps the connection open.
    let reply = tokio::time::timeout(Duration::from_secs(5), read_reply(&mut reader, false)).await;
    // Assert
    let reply = reply.expect("an answer within 5 s (request_timeout is 500 ms)");
    assert_eq!(reply.rsc(), Some(4008), "{reply}");
    drop(writer);
    cse.shutdown().await;
}

#[tokio::test]
async fn a_malformed_chunked_body_is_reported_as_malformed_not_as_too_large() {
    // Arrange
    let cse = target_cse().await;
    let raw = Raw::create("/cse-in/ae", 3, Vec::new()).payload(Payload::Verbatim {
        headers: b"Transfer-Encoding: chunked\r\n".to_vec(),
        body: b"zz\r\n{}\r\n0\r\n\r\n".to_vec(),
    });
    // Act
    let reply = exchange(cse.addr, &raw).await;
    // Assert
    assert_eq!(reply.rsc(), Some(4000), "{reply}");
    assert!(!reply.dbg().contains("larger than"), "{reply}");
    cse.shutdown().await;
}

#[tokio::test]
async fn a_maximum_expiration_beyond_the_calendar_is_refused_by_validation() {
    // Arrange: about 317,000 years.
    let mut settings = crate::harness::test_settings();
    settings.cse.max_expiration_delta = Duration::from_secs(10_000_000_000_000);
    // Act
    let error = settings.validate().expect_err("beyond the calendar");
    // Assert
    assert_eq!(error.key(), Some("cse.max_expiration_delta"), "{error}");
}

#[tokio::test]
async fn a_client_that_stops_sending_its_body_does_not_block_shutdown() {
    // Arrange
    let cse = TestCse::spawn(|settings| settings.http.request_timeout = Duration::from_millis(500)).await;
    let stream = TcpStream::connect(cse.addr).await.expect("connect");
    let (_reader, mut writer) = stream.into_split();
    let raw = Raw::create("/cse-in", 3, Vec::new()).payload(Payload::Streamed { total: 1000 });
    writer.write_all(&raw.head()).await.expect("head");
    writer.write_all(b"{\"m2m:cnt\": ").await.expect("first bytes");
    // Act
    let stopped = tokio::time::timeout(Duration::from_secs(5), cse.shutdown()).await;
    // Assert
    assert!(stopped.is_ok(), "shutdown waits for clients that stopped sending");
}

#[tokio::test]
async fn clients_that_stop_sending_their_bodies_cannot_starve_everybody_else() {
    // Arrange: as many stalled uploads as the CSE serves requests at once.
    let cse = TestCse::spawn(|settings| {
        settings.http.max_concurrent_requests = 2;
        settings.http.request_timeout = Duration::from_millis(500);
    })
    .await;
    let mut stalled = Vec::new();
    for _ in 0..2 {
        let mut stream = TcpStream::connect(cse.addr).await.expect("connect");
        let raw = Raw::create("/cse-in", 3, Vec::new()).payload(Payload::Streamed { total: 1000 });
        stream.write_all(&raw.head()).await.expect("head");
        stream.write_all(b"{\"m2m:cnt\": ").await.expect("first bytes");
        stalled.push(stream);
    }
    // Act
    let normal = tokio::time::timeout(Duration::from_secs(5), cse.retrieve("/cse-in", ADMIN)).await;
    // Assert
    let normal = normal.expect("a normal RETRIEVE is answered while two uploads stall");
    assert_eq!(normal.rsc, 2000, "{normal:?}");
    drop(stalled);
    cse.shutdown().await;
}

/// Read from `stream` until the CSE closes it; false if it stays open past `deadline`.
async fn closed_within(stream: &mut TcpStream, deadline: Duration) -> bool {
    let mut buffer = [0_u8; 1024];
    tokio::time::timeout(deadline, async {
        loop {
            match stream.read(&mut buffer).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await
    .is_ok()
}

#[tokio::test]
async fn slow_headers_and_idle_connections_are_closed_after_the_header_time_limit() {
    // Arrange
    let cse = TestCse::spawn(|settings| settings.http.header_read_timeout = Duration::from_millis(300)).await;
    let mut silent = TcpStream::connect(cse.addr).await.expect("connect");
    let mut slow = TcpStream::connect(cse.addr).await.expect("connect");
    slow.write_all(b"GET /cse-in HTTP/1.1\r\nHost: cse\r\nX-M2M-Origin: CAdmin\r\n").await.expect("part of a head");
    let mut kept_alive = TcpStream::connect(cse.addr).await.expect("connect");
    let request = b"GET /cse-in HTTP/1.1\r\nHost: cse\r\nX-M2M-Origin: CAdmin\r\nX-M2M-RI: k\r\nX-M2M-RVI: 4\r\n\r\n";
    kept_alive.write_all(request).await.expect("a whole request");
    let mut answer = [0_u8; 16];
    kept_alive.read_exact(&mut answer).await.expect("an answer");
    assert!(answer.starts_with(b"HTTP/1.1 200"), "{}", String::from_utf8_lossy(&answer));
    // Act + Assert: all three are closed by the CSE (before the fix, none was).
    for (what, stream) in [("silent", &mut silent), ("slow", &mut slow), ("idle keep-alive", &mut kept_alive)] {
        assert!(closed_within(stream, DEADLINE).await, "the {what} connection stays open");
    }
    assert_eq!(cse.retrieve("/cse-in", ADMIN).await.rsc, 2000);
    cse.shutdown().await;
}

#[tokio::test]
async fn at_the_connection_limit_new_connections_wait_until_one_closes() {
    // Arrange: two connections allowed, both held by clients that send nothing.
    let cse = TestCse::spawn(|settings| {
        settings.http.max_connections = 2;
        settings.http.header_read_timeout = Duration::from_secs(60);
    })
    .await;
    let first = TcpStream::connect(cse.addr).await.expect("connect");
    let second = TcpStream::connect(cse.addr).await.expect("connect");
    let client = reqwest::Client::builder().pool_max_idle_per_host(0).build().expect("client");
    let url = format!("{}/cse-in", cse.url);
    let request =
        || client.get(&url).header("X-M2M-Origin", ADMIN).header("X-M2M-RI", "limit").header("X-M2M-RVI", "4").send();
    // Act + Assert: a third connection is not served while both slots are held...
    let waiting = tokio::time::timeout(Duration::from_millis(500), request()).await;
    assert!(waiting.is_err(), "served beyond http.max_connections: {waiting:?}");
    // ...and is served as soon as one closes.
    drop(first);
    let served = tokio::time::timeout(DEADLINE, request()).await.expect("served once a slot is free");
    assert_eq!(served.expect("answer").status(), 200);
    drop(second);
    cse.shutdown().await;
}
