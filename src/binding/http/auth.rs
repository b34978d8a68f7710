//! HTTP authentication of incoming requests (Basic and Bearer).
//!
//! [`Gate`] reads the `Authorization` header and asks the [`Authenticator`] whose the
//! credentials are; the answer is a [`Principal`] (who, and which originators it may act
//! as), checked against the request's originator in the core. A refused request gets one
//! plain `401` whatever was wrong, so a caller learns nothing about which part failed.
//!
//! Two things keep a flood of wrong passwords from hurting anybody else:
//! - argon2 verifications (milliseconds of CPU each) run on a few threads of their own with
//!   a bounded queue, never on the threads that serve storage; when the queue is full, the
//!   attempt is refused at once;
//! - a client address that keeps failing (`http.security.max_auth_failures` per minute) is
//!   refused without any verification for a minute.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use base64::Engine;
use dashmap::DashMap;
use tokio::sync::oneshot;
use tracing::{debug, warn};

use crate::security::{Authenticator, Principal};

/// Threads that verify password hashes.
const HASH_THREADS: usize = 2;

/// Verifications that may wait for a hashing thread; beyond, attempts are refused at once.
const HASH_QUEUE: usize = 32;

/// How long a client that failed too often is refused without a verification.
const BLOCK_PERIOD: Duration = Duration::from_secs(60);

/// A request refused by authentication; deliberately without a reason.
#[derive(Debug, PartialEq, Eq)]
pub struct Refused;

/// The authentication of incoming requests.
pub struct Gate {
    authenticator: Arc<Authenticator>,
    /// Only when some password is an argon2 hash.
    hashing: Option<HashPool>,
    throttle: Option<Throttle>,
}

impl Gate {
    /// `max_failures_per_minute`: failed attempts a client address may make per minute
    /// before it is refused for a while; 0 turns the throttle off.
    pub fn new(authenticator: Authenticator, max_failures_per_minute: u32) -> std::io::Result<Gate> {
        let hashing =
            if authenticator.has_hashed_passwords() { Some(HashPool::new(HASH_THREADS, HASH_QUEUE)?) } else { None };
        let throttle = NonZeroU32::new(max_failures_per_minute).map(Throttle::new);
        Ok(Gate { authenticator: Arc::new(authenticator), hashing, throttle })
    }

    /// `Ok(Some)`: accepted credentials and whose they are. `Ok(None)`: this CSE requires
    /// no authentication. `Err`: refused, whatever the cause (no header, unknown scheme,
    /// malformed value, unknown user, wrong password, unknown token, a client refused for
    /// failing too often, verification capacity exhausted).
    pub async fn authenticate(
        &self,
        headers: &HeaderMap,
        client: Option<IpAddr>,
    ) -> Result<Option<Principal>, Refused> {
        if !self.authenticator.is_enabled() {
            return Ok(None);
        }
        if let (Some(throttle), Some(client)) = (&self.throttle, client)
            && throttle.is_blocked(client)
        {
            debug!(%client, "refused without verification: too many failed authentications");
            return Err(Refused);
        }
        let principal = self.verify(headers).await;
        if principal.is_none()
            && let (Some(throttle), Some(client)) = (&self.throttle, client)
        {
            throttle.failed(client);
        }
        principal.map(Some).ok_or(Refused)
    }

    async fn verify(&self, headers: &HeaderMap) -> Option<Principal> {
        let auth = &self.authenticator;
        let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
        let (scheme, credentials) = value.trim().split_once(' ')?;
        let credentials = credentials.trim();
        if scheme.eq_ignore_ascii_case("bearer") && auth.accepts_bearer() {
            return auth.check_bearer(credentials);
        }
        if !scheme.eq_ignore_ascii_case("basic") || !auth.accepts_basic() {
            return None;
        }
        let (username, password) = decode_basic(credentials)?;
        let Some(hashing) = &self.hashing else {
            return auth.check_basic(&username, &password);
        };
        let auth = auth.clone();
        match hashing.run(move || auth.check_basic(&username, &password)).await {
            Ok(principal) => principal,
            Err(Busy) => {
                warn!("password verification is saturated; refusing an attempt");
                None
            }
        }
    }

    /// The one answer to a refused authentication: `401`, the accepted schemes, nothing else.
    pub fn refusal(&self) -> axum::response::Response {
        let mut http = axum::response::Response::new(Body::empty());
        *http.status_mut() = StatusCode::UNAUTHORIZED;
        let headers = http.headers_mut();
        if self.authenticator.accepts_basic() {
            let basic = HeaderValue::from_static("Basic realm=\"acme-cse\", charset=\"UTF-8\"");
            headers.append(header::WWW_AUTHENTICATE, basic);
        }
        if self.authenticator.accepts_bearer() {
            headers.append(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer realm=\"acme-cse\""));
        }
        http
    }
}

/// `base64(username:password)`, the username without ':'.
fn decode_basic(encoded: &str) -> Option<(String, String)> {
    let bytes = base64::engine::general_purpose::STANDARD.decode(encoded).ok()?;
    let text = String::from_utf8(bytes).ok()?;
    let (username, password) = text.split_once(':')?;
    Some((username.to_string(), password.to_string()))
}

/// Every hashing thread is busy and the queue is full.
#[derive(Debug)]
struct Busy;

type Job = Box<dyn FnOnce() + Send>;

/// A few threads of their own for CPU-heavy verifications, fed by a bounded queue. The
/// threads end when the pool is dropped.
struct HashPool {
    jobs: mpsc::SyncSender<Job>,
}

impl HashPool {
    fn new(threads: usize, queue: usize) -> std::io::Result<HashPool> {
        let (jobs, waiting) = mpsc::sync_channel::<Job>(queue);
        let waiting = Arc::new(Mutex::new(waiting));
        for _ in 0..threads {
            let waiting = waiting.clone();
            std::thread::Builder::new().name("acme-hash".into()).spawn(move || {
                loop {
                    let job = match waiting.lock() {
                        Ok(waiting) => waiting.recv(),
                        Err(_) => return,
                    };
                    let Ok(job) = job else { return };
                    // A panicking verification is that attempt's failure, not the thread's end.
                    let _ = std::panic::catch_unwind(AssertUnwindSafe(job));
                }
            })?;
        }
        Ok(HashPool { jobs })
    }

    /// Run `work` on a pool thread and wait for its result; `Busy` at once when the queue
    /// is full.
    async fn run<T: Send + 'static>(&self, work: impl FnOnce() -> T + Send + 'static) -> Result<T, Busy> {
        let (done, result) = oneshot::channel();
        self.jobs
            .try_send(Box::new(move || {
                let _ = done.send(work());
            }))
            .map_err(|_| Busy)?;
        result.await.map_err(|_| Busy)
    }
}

/// Failed attempts per client address: more than the quota per minute blocks the address
/// for [`BLOCK_PERIOD`].
struct Throttle {
    failures: governor::DefaultKeyedRateLimiter<IpAddr>,
    /// Blocked addresses and when they are let in again.
    blocked: DashMap<IpAddr, Instant>,
}

impl Throttle {
    fn new(per_minute: NonZeroU32) -> Throttle {
        Throttle {
            failures: governor::RateLimiter::keyed(governor::Quota::per_minute(per_minute)),
            blocked: DashMap::new(),
        }
    }

    fn is_blocked(&self, client: IpAddr) -> bool {
        let until = self.blocked.get(&client).map(|until| *until);
        match until {
            Some(until) if until > Instant::now() => true,
            Some(_) => {
                self.blocked.remove(&client);
                false
            }
            None => false,
        }
    }

    fn failed(&self, client: IpAddr) {
        if self.failures.check_key(&client).is_err() {
            warn!(%client, period = ?BLOCK_PERIOD, "too many failed authentications from this address; refusing it for a while");
            self.blocked.insert(client, Instant::now() + BLOCK_PERIOD);
        }
        // Keep the bookkeeping bounded: forget addresses whose quota is full again.
        if self.failures.len() > 10_000 {
            self.failures.retain_recent();
            self.blocked.retain(|_, until| *until > Instant::now());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_full_hashing_queue_refuses_at_once() {
        let pool = HashPool::new(1, 1).expect("pool");
        let (started, running) = std::sync::mpsc::channel::<()>();
        let (release, held) = std::sync::mpsc::channel::<()>();
        let held = Arc::new(Mutex::new(held));
        let hold = move || {
            let held = held.clone();
            move || {
                let _ = held.lock().map(|held| held.recv());
            }
        };
        // One job occupies the thread...
        let first = hold();
        pool.jobs
            .try_send(Box::new(move || {
                let _ = started.send(());
                first();
            }))
            .expect("the first job");
        running.recv().expect("the first job runs");
        // ...one waits in the queue...
        pool.jobs.try_send(Box::new(hold())).expect("the second job waits");
        // ...and a third is refused at once.
        assert!(pool.run(|| 1).await.is_err(), "refused while the queue is full");
        release.send(()).expect("release");
        release.send(()).expect("release");
        // Room again once the thread has taken the waiting job.
        for _ in 0..500 {
            if let Ok(value) = pool.run(|| 7).await {
                assert_eq!(value, 7);
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("the pool never had room again");
    }

    #[test]
    fn an_address_that_keeps_failing_is_blocked_and_others_are_not() {
        let throttle = Throttle::new(NonZeroU32::new(3).expect("non-zero"));
        let noisy: IpAddr = "192.0.2.1".parse().expect("address");
        let other: IpAddr = "192.0.2.2".parse().expect("address");
        for _ in 0..3 {
            throttle.failed(noisy);
        }
        assert!(!throttle.is_blocked(noisy), "within its quota");
        throttle.failed(noisy);
        assert!(throttle.is_blocked(noisy));
        assert!(!throttle.is_blocked(other));
    }
}
