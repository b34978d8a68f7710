//! Other CSEs are not trusted: a registree's `poa` may point at anything, and whatever
//! answers there is read with limits, never followed, and never shown to clients in detail.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde_json::json;

use crate::harness::{TestCse, eventually, registrar_settings};

const DEADLINE: Duration = Duration::from_secs(10);

/// An HTTP server on loopback that answers every request with `answer(headers)`; returns
/// its base URL and how many requests it has seen.
async fn fake_peer<F>(answer: F) -> (String, Arc<AtomicUsize>)
where
    F: Fn(&HeaderMap) -> Response + Clone + Send + Sync + 'static,
{
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("address");
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = hits.clone();
    let router = axum::Router::new().fallback(move |headers: HeaderMap| {
        let answer = answer.clone();
        counter.fetch_add(1, Ordering::SeqCst);
        async move { answer(&headers) }
    });
    tokio::spawn(async move { axum::serve(listener, router).await });
    (format!("http://{address}"), hits)
}

/// A oneM2M answer (`X-M2M-RSC` 2000, the request's `X-M2M-RI`) with `body`.
fn onem2m_answer(headers: &HeaderMap, body: Body) -> Response {
    let mut response = Response::new(body);
    let answer = response.headers_mut();
    answer.insert("x-m2m-rsc", "2000".parse().expect("header"));
    if let Some(rqi) = headers.get("x-m2m-ri") {
        answer.insert("x-m2m-ri", rqi.clone());
    }
    answer.insert("content-type", "application/json".parse().expect("header"));
    response
}

/// An IN with a registree `/id-mn` whose `poa` is `poa`.
async fn in_with_registree(poa: &str, configure: impl FnOnce(&mut acme_cse::config::Settings)) -> TestCse {
    let mut settings = registrar_settings();
    configure(&mut settings);
    let in_cse = TestCse::start(settings).await;
    let csr = json!({"m2m:csr": {"csi": "/id-mn", "cb": "/id-mn/cse-mn", "rr": true, "srv": ["3"], "poa": [poa]}});
    let reply = in_cse.create("/cse-in", "/id-mn", 16, csr).await;
    assert_eq!(reply.rsc, 2001, "{reply:?}");
    eventually("the IN routes to the MN", DEADLINE, || async { in_cse.remote.csr_for("/id-mn").is_some() }).await;
    in_cse
}

#[tokio::test]
async fn an_oversized_answer_from_a_peer_is_refused_without_being_read_whole() {
    // Arrange: one peer announces 8 MiB, another streams it without a length.
    let chunk = vec![b' '; 64 * 1024];
    let (announced, _) =
        fake_peer(move |headers| onem2m_answer(headers, Body::from(vec![b' '; 8 * 1024 * 1024]))).await;
    let (streamed, _) = fake_peer(move |headers| {
        let chunks = std::iter::repeat_n(chunk.clone(), 128).map(Ok::<_, std::io::Error>);
        onem2m_answer(headers, Body::from_stream(futures_util::stream::iter(chunks)))
    })
    .await;
    for poa in [announced, streamed] {
        let in_cse = in_with_registree(&poa, |settings| settings.http.client_max_body_size = 1024 * 1024).await;
        // Act
        let reply = in_cse.retrieve("/~/id-mn/cse-mn", "CAdmin").await;
        // Assert
        assert_eq!(reply.rsc, 5000, "{reply:?}");
        assert!(reply.dbg().contains("client_max_body_size"), "{reply:?}");
        assert!(!reply.dbg().contains(&poa), "the peer's address leaks: {reply:?}");
        assert_eq!(in_cse.retrieve("/cse-in", "CAdmin").await.rsc, 2000);
        in_cse.shutdown().await;
    }
}

#[tokio::test]
async fn a_redirect_from_a_peer_is_never_followed() {
    // Arrange: the registree's poa redirects to another server.
    let (elsewhere, elsewhere_hits) = fake_peer(|headers| onem2m_answer(headers, Body::from("{}"))).await;
    let (redirecting, redirect_hits) = fake_peer(move |_| {
        let mut response = Response::new(Body::empty());
        *response.status_mut() = StatusCode::TEMPORARY_REDIRECT;
        response.headers_mut().insert("location", format!("{elsewhere}/secret").parse().expect("header"));
        response
    })
    .await;
    let in_cse = in_with_registree(&redirecting, |_| {}).await;
    // Act
    let reply = in_cse.retrieve("/~/id-mn/cse-mn", "CAdmin").await;
    // Assert: the redirect is the (failed) answer; nothing went to the other server.
    assert_eq!(reply.rsc, 5000, "{reply:?}");
    assert!(reply.dbg().contains("307"), "{reply:?}");
    // (The monitor's first liveliness round may have probed it too.)
    assert!(redirect_hits.load(Ordering::SeqCst) >= 1, "the redirecting peer was asked");
    assert_eq!(elsewhere_hits.load(Ordering::SeqCst), 0);
    in_cse.shutdown().await;
}

#[tokio::test]
async fn an_unreachable_next_hop_is_named_but_its_address_and_error_are_not_shown() {
    // Arrange: a registree whose poa refuses connections.
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let poa = format!("http://{}", closed.local_addr().expect("address"));
    drop(closed);
    let in_cse = in_with_registree(&poa, |_| {}).await;
    // Act
    let reply = in_cse.retrieve("/~/id-mn/cse-mn", "CAdmin").await;
    // Assert
    assert_eq!((reply.rsc, reply.status), (5103, 404), "{reply:?}");
    assert_eq!(reply.dbg(), "CSE /id-mn is not reachable");
    in_cse.shutdown().await;
}

#[tokio::test]
async fn a_registrar_address_that_answers_server_errors_gives_way_to_the_next() {
    // Arrange: the preferred address is a proxy in front of nothing (HTTP 503, no oneM2M
    // answer); the second is the IN.
    let (broken, hits) = fake_peer(|_| {
        let mut response = Response::new(Body::from("no backend"));
        *response.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
        response
    })
    .await;
    let in_cse = TestCse::start(registrar_settings()).await;
    let mut settings =
        crate::harness::registree_settings(acme_cse::config::CseKind::Mn, "/id-mn", "cse-mn", Some(&in_cse));
    if let Some(registrar) = settings.cse.registrar.as_mut() {
        registrar.address = vec![broken.clone(), in_cse.url.clone()];
    }
    let mn = TestCse::start(settings).await;

    // Act
    mn.remote.check_now().await.expect("monitor runs");

    // Assert: registered through the second address, which is the one reported.
    assert!(mn.remote.is_registered());
    assert!(hits.load(Ordering::SeqCst) > 0, "the preferred address was tried first");
    let statuses = mn.remote.statuses();
    assert_eq!(statuses[0].2.as_deref(), Some(in_cse.url.as_str()));
    assert_eq!(in_cse.retrieve("/cse-in/id-mn", "CAdmin").await.rsc, 2000);
    mn.shutdown().await;
    in_cse.shutdown().await;
}
