//! What the CSE counts for operators, in the Prometheus text format (`GET /metrics` on the
//! admin listener): requests received by operation and response status code with their
//! latency (counted by the binding: what came in, not what the CSE sends itself),
//! forwarded requests by next hop, liveliness failures and removals, notifications sent
//! and failed. What is a state rather than a count (registration per registrar,
//! registrees, descendants, notifications waiting) is read when scraped ([`Snapshot`]).
//!
//! Counting is a few atomic additions; nothing here does I/O.

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    operation: &'static str,
    rsc: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OperationLabels {
    operation: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HopLabels {
    next_hop: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CacheLabels {
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RegistrarLabels {
    registrar: String,
    state: &'static str,
}

/// The registration states reported per registrar (one series each, 1 for the current).
pub const REGISTRATION_STATES: [&str; 6] =
    ["disabled", "connecting", "registered", "unreachable", "deregistered", "error"];

/// What is read at scrape time.
#[derive(Debug, Default)]
pub struct Snapshot {
    /// Each registrar's CSE-ID and its state (one of [`REGISTRATION_STATES`]).
    pub registrars: Vec<(String, &'static str)>,
    /// Registree CSEs registered here.
    pub registrees: usize,
    /// CSEs below this one.
    pub descendants: usize,
    /// Notifications waiting in the outbox.
    pub notifications_pending: usize,
    /// Resources held in memory for reads.
    pub cached_resources: usize,
    /// Reads answered from memory alone, and reads that needed the database, so far.
    pub cache_hits: u64,
    /// See `cache_hits`.
    pub cache_misses: u64,
}

/// The counters of one CSE. Shared by the core, the remote-CSE manager and the sender.
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    latency: Family<OperationLabels, Histogram>,
    forwarded: Family<HopLabels, Counter>,
    liveliness_failures: Counter,
    liveliness_removals: Counter,
    notifications_sent: Counter,
    notifications_failed: Counter,
    registration: Family<RegistrarLabels, Gauge>,
    registrees: Gauge,
    descendants: Gauge,
    notifications_pending: Gauge,
    cached_resources: Gauge,
    cache_reads: Family<CacheLabels, Counter>,
    commit_duration: Histogram,
    commit_batch: Histogram,
    /// One scrape at a time (the state families are set, then written).
    scraping: std::sync::Mutex<()>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// Every counter at zero.
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("acme");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "requests",
            "Requests handled, by operation and response status code (RSC)",
            requests.clone(),
        );
        let latency = Family::<OperationLabels, Histogram>::new_with_constructor(|| {
            // 50 µs to ~3.3 s.
            Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(0.000_05, 2.0, 17))
        });
        registry.register("request_duration_seconds", "Time to answer a request, by operation", latency.clone());
        let forwarded = Family::<HopLabels, Counter>::default();
        registry.register("forwarded_requests", "Requests forwarded to another CSE, by next hop", forwarded.clone());
        let liveliness_failures = Counter::default();
        registry.register(
            "liveliness_failures",
            "Liveliness probes of registree CSEs that failed",
            liveliness_failures.clone(),
        );
        let liveliness_removals = Counter::default();
        registry.register(
            "liveliness_removals",
            "Registree CSEs removed after failed liveliness probes",
            liveliness_removals.clone(),
        );
        let notifications_sent = Counter::default();
        registry.register("notifications_sent", "Notifications delivered", notifications_sent.clone());
        let notifications_failed = Counter::default();
        registry.register(
            "notifications_failed",
            "Notification attempts that failed (retried or given up)",
            notifications_failed.clone(),
        );
        let registration = Family::<RegistrarLabels, Gauge>::default();
        registry.register(
            "registration_state",
            "Registration to each registrar: 1 for its current state",
            registration.clone(),
        );
        let registrees = Gauge::default();
        registry.register("registrees", "Registree CSEs registered here", registrees.clone());
        let descendants = Gauge::default();
        registry.register("descendants", "CSEs below this one (registrees and theirs)", descendants.clone());
        let notifications_pending = Gauge::default();
        registry.register(
            "notifications_pending",
            "Notifications waiting in the outbox",
            notifications_pending.clone(),
        );
        let cached_resources = Gauge::default();
        registry.register("cached_resources", "Resources held in memory for reads", cached_resources.clone());
        let cache_reads = Family::<CacheLabels, Counter>::default();
        registry.register(
            "cache_reads",
            "Reads by name answered from memory (hit) or from the database (miss)",
            cache_reads.clone(),
        );
        let commit_duration =
            Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(0.000_05, 2.0, 17));
        registry.register(
            "database_commit_duration_seconds",
            "Time of one write transaction (a batch of writes), commit included",
            commit_duration.clone(),
        );
        let commit_batch = Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(1.0, 2.0, 10));
        registry.register(
            "database_commit_batch_size",
            "Writes committed together in one transaction",
            commit_batch.clone(),
        );
        Metrics {
            registry,
            requests,
            latency,
            forwarded,
            liveliness_failures,
            liveliness_removals,
            notifications_sent,
            notifications_failed,
            registration,
            registrees,
            descendants,
            notifications_pending,
            cached_resources,
            cache_reads,
            commit_duration,
            commit_batch,
            scraping: std::sync::Mutex::new(()),
        }
    }

    /// One write transaction: `writes` jobs committed together in `elapsed`.
    pub fn commit(&self, writes: usize, elapsed: Duration) {
        self.commit_duration.observe(elapsed.as_secs_f64());
        self.commit_batch.observe(writes as f64);
    }

    /// One request answered.
    pub fn request(&self, operation: &'static str, rsc: u16, elapsed: Duration) {
        self.requests.get_or_create(&RequestLabels { operation, rsc }).inc();
        self.latency.get_or_create(&OperationLabels { operation }).observe(elapsed.as_secs_f64());
    }

    /// One request sent on to `next_hop` (a CSE-ID).
    pub fn forwarded(&self, next_hop: &str) {
        self.forwarded.get_or_create(&HopLabels { next_hop: next_hop.to_string() }).inc();
    }

    /// One liveliness probe of a registree failed.
    pub fn liveliness_failure(&self) {
        self.liveliness_failures.inc();
    }

    /// One registree removed after failed probes.
    pub fn liveliness_removal(&self) {
        self.liveliness_removals.inc();
    }

    /// `count` notifications delivered.
    pub fn notifications_sent(&self, count: u64) {
        self.notifications_sent.inc_by(count);
    }

    /// `count` notification attempts failed.
    pub fn notifications_failed(&self, count: u64) {
        self.notifications_failed.inc_by(count);
    }

    /// Everything in the Prometheus text format, the states of `snapshot` included.
    pub fn encode(&self, snapshot: &Snapshot) -> String {
        let _one_at_a_time = self.scraping.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        self.registration.clear();
        for (registrar, current) in &snapshot.registrars {
            for state in REGISTRATION_STATES {
                let labels = RegistrarLabels { registrar: registrar.clone(), state };
                self.registration.get_or_create(&labels).set(i64::from(state == *current));
            }
        }
        self.registrees.set(i64::try_from(snapshot.registrees).unwrap_or(i64::MAX));
        self.descendants.set(i64::try_from(snapshot.descendants).unwrap_or(i64::MAX));
        self.notifications_pending.set(i64::try_from(snapshot.notifications_pending).unwrap_or(i64::MAX));
        self.cached_resources.set(i64::try_from(snapshot.cached_resources).unwrap_or(i64::MAX));
        for (outcome, total) in [("hit", snapshot.cache_hits), ("miss", snapshot.cache_misses)] {
            // Totals kept by the store; a counter only moves up to them.
            let counter = self.cache_reads.get_or_create(&CacheLabels { outcome });
            counter.inc_by(total.saturating_sub(counter.get()));
        }
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_states_come_out_in_the_text_format() {
        let metrics = Metrics::new();
        metrics.request("RETRIEVE", 2000, Duration::from_micros(300));
        metrics.request("RETRIEVE", 2000, Duration::from_micros(300));
        metrics.forwarded("/id-in");
        let snapshot = Snapshot {
            registrars: vec![("/id-in".into(), "registered")],
            registrees: 3,
            descendants: 5,
            notifications_pending: 7,
            cached_resources: 3,
            cache_hits: 40,
            cache_misses: 2,
        };
        let text = metrics.encode(&snapshot);
        assert!(text.contains(r#"acme_requests_total{operation="RETRIEVE",rsc="2000"} 2"#), "{text}");
        assert!(text.contains("acme_request_duration_seconds_bucket"), "{text}");
        assert!(text.contains(r#"acme_forwarded_requests_total{next_hop="/id-in"} 1"#), "{text}");
        assert!(text.contains(r#"acme_registration_state{registrar="/id-in",state="registered"} 1"#), "{text}");
        assert!(text.contains(r#"acme_registration_state{registrar="/id-in",state="unreachable"} 0"#), "{text}");
        assert!(text.contains("acme_registrees 3") && text.contains("acme_descendants 5"), "{text}");
        assert!(text.contains("acme_notifications_pending 7"), "{text}");
        assert!(text.contains("acme_cached_resources 3"), "{text}");
        assert!(text.contains(r#"acme_cache_reads_total{outcome="hit"} 40"#), "{text}");
        assert!(text.contains(r#"acme_cache_reads_total{outcome="miss"} 2"#), "{text}");
        assert!(text.ends_with("# EOF\n"), "{text}");
    }
}
