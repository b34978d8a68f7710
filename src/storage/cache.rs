//! Resources kept in memory for reads that name them (`get`, `get_by_path`), so that a
//! RETRIEVE answered from here neither crosses to a blocking thread nor opens a database
//! transaction.
//!
//! Only for a store this process alone writes (SQLite): what it holds is kept true by the
//! commits themselves. Every committed change set reaches [`Cache::committed`] (an
//! [`Observer`](super::Observer)) before the writer's caller hears "done": an updated
//! resource that is held is replaced by its committed form, a deleted one is dropped (a
//! deleted subtree empties the cache: what was below it is not indexed). So once a write
//! is acknowledged, no read sees what it replaced.
//!
//! Names read and found to name nothing are held too (a 4004 asked again, an originator
//! checked against the registered AEs): the commit that creates a resource of that `ri` or
//! path drops them, under the same rule.
//!
//! Filling races with writing: a read transaction may have read a row just before a
//! commit replaced it, and offer it after the commit's change set went by. Each fill
//! therefore carries the commit generation seen before its transaction began, and is
//! refused if any commit has been published since (checked and inserted under the lock the
//! commits take), so a stale row never enters.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use dashmap::{DashMap, DashSet};

use super::{Busy, Change, ChangeSet, Due, ReadTx};
use crate::error::{Error, Result};
use crate::resource::{Resource, ResourceType};

/// Most resources held; when full, the cache starts afresh (what is hot comes back at
/// once, what was read once goes).
pub(crate) const CAPACITY: usize = 4096;

/// Most memory the held resources may take, as estimated by [`weight`]; a resource heavier
/// than an eighth of it is never held (a large content instance is read each time).
pub(crate) const BUDGET: usize = 8 * 1024 * 1024;

/// A held resource, and the JSON text the core made of it, once, for this version: a
/// commit that changes the resource replaces the whole entry, text and all.
pub(crate) struct Held {
    pub resource: Arc<Resource>,
    /// Made by the first RETRIEVE that needs it (`None`: it could not be made).
    pub text: OnceLock<Option<Representation>>,
}

/// A resource's answer as JSON text, with where the current time goes in it (an attribute
/// such as the CSEBase's `ctm` that says "now" on every read): the byte offset of a
/// fixed-width timestamp to overwrite per answer.
pub(crate) struct Representation {
    pub json: bytes::Bytes,
    pub now_at: Option<usize>,
}

impl Representation {
    /// The text for an answer now: shared as it is, or a copy with the time of reading
    /// written at `now_at`.
    pub(crate) fn stamped(&self) -> bytes::Bytes {
        let Some(at) = self.now_at else {
            return self.json.clone();
        };
        let mut text = bytes::BytesMut::from(&self.json[..]);
        let now = crate::resource::Timestamp::now().to_string();
        if let Some(place) = text.get_mut(at..at + now.len()) {
            place.copy_from_slice(now.as_bytes());
        }
        text.freeze()
    }
}

pub(crate) struct Cache {
    /// Each held resource with its [`weight`].
    by_ri: DashMap<String, (Arc<Held>, usize)>,
    /// Structured path to `ri`, for what `by_ri` holds.
    by_path: DashMap<String, String>,
    /// Resource IDs and structured paths read and found to name nothing (a commit that
    /// creates one drops it); at most a quarter of `capacity` together and an eighth of
    /// `budget` in bytes, so that reads of names that do not exist (a peer chooses them, and
    /// their length) cannot push out what is held nor take more memory than that.
    absent_ri: DashSet<String>,
    absent_path: DashSet<String>,
    /// The bytes the absent names take, as [`absence_weight`] estimates them; changed only
    /// under `commits`.
    absent_bytes: AtomicUsize,
    /// Commits published so far.
    generation: AtomicU64,
    /// Held by a commit's invalidation and by a fill's check-and-insert; what it guards is
    /// the weight of everything held.
    commits: Mutex<usize>,
    capacity: usize,
    budget: usize,
    /// Reads answered from memory, and those that needed a transaction.
    pub(crate) hits: AtomicU64,
    pub(crate) misses: AtomicU64,
}

impl Cache {
    pub(crate) fn new(capacity: usize, budget: usize) -> Cache {
        Cache {
            by_ri: DashMap::new(),
            by_path: DashMap::new(),
            absent_ri: DashSet::new(),
            absent_path: DashSet::new(),
            absent_bytes: AtomicUsize::new(0),
            generation: AtomicU64::new(0),
            commits: Mutex::new(0),
            capacity,
            budget,
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        }
    }

    /// The generation to give [`Cache::fill`] for rows read by a transaction that begins
    /// after this call.
    pub(crate) fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// The entry held for `ri`.
    pub(crate) fn held(&self, ri: &str) -> Option<Arc<Held>> {
        self.by_ri.get(ri).map(|held| held.0.clone())
    }

    /// The entry held for the structured `path`.
    pub(crate) fn held_by_path(&self, path: &str) -> Option<Arc<Held>> {
        let held = self.held(self.by_path.get(path)?.as_str())?;
        (held.resource.path == path).then_some(held)
    }

    fn by_ri(&self, ri: &str) -> Option<Resource> {
        self.held(ri).map(|held| Resource::clone(&held.resource))
    }

    fn by_path(&self, path: &str) -> Option<Resource> {
        self.held_by_path(path).map(|held| Resource::clone(&held.resource))
    }

    /// Hold `resource`, read by a transaction that began at `generation`, unless a commit
    /// was published since.
    pub(crate) fn fill(&self, generation: u64, resource: &Resource) {
        let mut held = self.commits.lock().unwrap_or_else(PoisonError::into_inner);
        if self.generation.load(Ordering::Acquire) != generation || resource.ri().is_empty() {
            return;
        }
        let weight = weight(resource);
        if weight > self.budget / 8 {
            return;
        }
        if self.by_ri.len() >= self.capacity || *held + weight > self.budget {
            self.clear(&mut held);
        }
        let replaced = self.by_ri.insert(resource.ri().to_string(), (fresh(Arc::new(resource.clone())), weight));
        *held = held.saturating_add(weight).saturating_sub(replaced.map_or(0, |(_, weight)| weight));
        self.by_path.insert(resource.path.clone(), resource.ri().to_string());
    }

    /// Hold that `ri` (or, `structured`, the path `name`) names nothing, as read by a
    /// transaction that began at `generation`, unless a commit was published since.
    pub(crate) fn fill_absent(&self, generation: u64, name: &str, structured: bool) {
        let _held = self.commits.lock().unwrap_or_else(PoisonError::into_inner);
        let weight = absence_weight(name);
        let bytes = self.budget / 8;
        if self.generation.load(Ordering::Acquire) != generation || name.is_empty() || weight > bytes {
            return;
        }
        if self.absent_ri.len() + self.absent_path.len() >= self.capacity / 4
            || self.absent_bytes.load(Ordering::Relaxed) + weight > bytes
        {
            self.clear_absent();
        }
        let new = if structured {
            self.absent_path.insert(name.to_string())
        } else {
            self.absent_ri.insert(name.to_string())
        };
        if new {
            self.absent_bytes.fetch_add(weight, Ordering::Relaxed);
        }
    }

    /// `name` is no longer absent (under `commits`).
    fn drop_absent(&self, set: &DashSet<String>, name: &str) {
        if set.remove(name).is_some() {
            self.absent_bytes.fetch_sub(absence_weight(name), Ordering::Relaxed);
        }
    }

    fn clear_absent(&self) {
        self.absent_ri.clear();
        self.absent_path.clear();
        self.absent_bytes.store(0, Ordering::Relaxed);
    }

    fn clear(&self, held: &mut usize) {
        self.by_ri.clear();
        self.by_path.clear();
        self.clear_absent();
        *held = 0;
    }

    /// A committed change set: what it changed is replaced or dropped.
    pub(crate) fn committed(&self, changes: &ChangeSet) {
        let mut held = self.commits.lock().unwrap_or_else(PoisonError::into_inner);
        self.generation.fetch_add(1, Ordering::AcqRel);
        for change in &changes.changes {
            let resource = change.resource();
            match change {
                // Its names are no longer absent; nothing held names it, unless a path was
                // reused.
                Change::Created(_) => {
                    self.drop_absent(&self.absent_ri, resource.ri());
                    self.drop_absent(&self.absent_path, &resource.path);
                    self.by_path.remove(&resource.path);
                }
                Change::Updated(_) => {
                    if let Some(mut entry) = self.by_ri.get_mut(resource.ri()) {
                        let weight = weight(resource);
                        *held = held.saturating_add(weight).saturating_sub(entry.1);
                        *entry = (fresh(resource.clone()), weight);
                    }
                    if *held > self.budget {
                        self.clear(&mut held);
                    }
                }
                Change::Deleted(_) if is_leaf(resource.ty) => {
                    if let Some((_, (_, weight))) = self.by_ri.remove(resource.ri()) {
                        *held = held.saturating_sub(weight);
                    }
                    self.by_path.remove(&resource.path);
                }
                Change::Deleted(_) => self.clear(&mut held),
            }
        }
    }

    /// How many resources are held.
    pub(crate) fn len(&self) -> usize {
        self.by_ri.len()
    }
}

impl super::Observer for Cache {
    fn committed(&self, changes: &ChangeSet) {
        Cache::committed(self, changes);
    }
}

/// A new entry for `resource`, its text not made yet.
fn fresh(resource: Arc<Resource>) -> Arc<Held> {
    Arc::new(Held { resource, text: OnceLock::new() })
}

/// About the memory `resource` takes: its JSON text twice over (strings, and the maps and
/// values around them), once more for its representation once made, plus its path.
fn weight(resource: &Resource) -> usize {
    fn of(value: &serde_json::Value) -> usize {
        use serde_json::Value;
        match value {
            Value::String(text) => text.len() + 24,
            Value::Array(items) => items.iter().map(of).sum::<usize>() + 24,
            Value::Object(map) => map.iter().map(|(name, value)| name.len() + 48 + of(value)).sum::<usize>() + 24,
            _ => 16,
        }
    }
    let attributes: usize = resource.attributes.iter().map(|(name, value)| name.len() + 48 + of(value)).sum();
    3 * attributes + resource.path.len() + 64
}

/// About the memory an absent name takes: the name, and the set's entry around it.
fn absence_weight(name: &str) -> usize {
    name.len() + 48
}

/// Types that never have children: deleting one deletes it alone.
fn is_leaf(ty: ResourceType) -> bool {
    matches!(ty, ResourceType::Cin | ResourceType::Sub | ResourceType::CinAnnc)
}

/// What a read from the cache alone could not answer: the work runs again in a
/// transaction.
#[derive(Debug, thiserror::Error)]
#[error("not in the cache")]
pub(crate) struct Miss;

fn miss<T>() -> Result<T> {
    Err(Error::internal_from(Miss))
}

pub(crate) fn is_miss(error: &Error) -> bool {
    error.cause::<Miss>().is_some()
}

/// A read "transaction" over the cache alone: what it holds, or [`Miss`].
pub(crate) struct CachedTx<'a>(pub &'a Cache);

impl ReadTx for CachedTx<'_> {
    fn get(&self, ri: &str) -> Result<Option<Resource>> {
        match self.0.by_ri(ri) {
            Some(resource) => Ok(Some(resource)),
            None if self.0.absent_ri.contains(ri) => Ok(None),
            None => miss(),
        }
    }

    fn get_by_path(&self, path: &str) -> Result<Option<Resource>> {
        match self.0.by_path(path) {
            Some(resource) => Ok(Some(resource)),
            None if self.0.absent_path.contains(path) => Ok(None),
            None => miss(),
        }
    }

    fn children(&self, _: &str, _: Option<ResourceType>) -> Result<Vec<Resource>> {
        miss()
    }

    fn edge_child(&self, _: &str, _: ResourceType, _: bool) -> Result<Option<Resource>> {
        miss()
    }

    fn walk_below(&self, _: &str, _: Option<usize>, _: &mut dyn FnMut(Resource, usize) -> Result<bool>) -> Result<()> {
        miss()
    }

    fn by_type(&self, _: ResourceType) -> Result<Vec<Resource>> {
        miss()
    }

    fn announced(&self) -> Result<Vec<Resource>> {
        miss()
    }

    fn expired(&self, _: &str, _: usize) -> Result<Vec<Resource>> {
        miss()
    }

    fn of_type_below(&self, _: &str, _: ResourceType) -> Result<Vec<Resource>> {
        miss()
    }

    fn outbox_due(&self, _: &str, _: usize, _: usize, _: &Busy) -> Result<Due> {
        miss()
    }

    fn outbox_count(&self, _: &str) -> Result<usize> {
        miss()
    }

    fn outbox_total(&self) -> Result<usize> {
        miss()
    }

    fn outbox_batch(&self, _: &str, _: &str) -> Result<(usize, Option<String>)> {
        miss()
    }

    fn instance_addresses(&self) -> Result<Vec<String>> {
        miss()
    }
}

/// A read transaction that offers the cache what `get` and `get_by_path` find.
pub(crate) struct FillingTx<'a> {
    pub tx: &'a dyn ReadTx,
    pub cache: &'a Cache,
    /// [`Cache::generation`] before the transaction began.
    pub generation: u64,
}

impl FillingTx<'_> {
    /// What a read by `name` found (or that it found nothing) offered to the cache.
    fn offer(&self, found: Result<Option<Resource>>, name: &str, structured: bool) -> Result<Option<Resource>> {
        match &found {
            Ok(Some(resource)) => self.cache.fill(self.generation, resource),
            Ok(None) => self.cache.fill_absent(self.generation, name, structured),
            Err(_) => {}
        }
        found
    }
}

impl ReadTx for FillingTx<'_> {
    fn get(&self, ri: &str) -> Result<Option<Resource>> {
        self.offer(self.tx.get(ri), ri, false)
    }

    fn get_by_path(&self, path: &str) -> Result<Option<Resource>> {
        self.offer(self.tx.get_by_path(path), path, true)
    }

    fn children(&self, pi: &str, ty: Option<ResourceType>) -> Result<Vec<Resource>> {
        self.tx.children(pi, ty)
    }

    fn edge_child(&self, pi: &str, ty: ResourceType, newest: bool) -> Result<Option<Resource>> {
        self.tx.edge_child(pi, ty, newest)
    }

    fn walk_below(
        &self,
        path: &str,
        max_depth: Option<usize>,
        visit: &mut dyn FnMut(Resource, usize) -> Result<bool>,
    ) -> Result<()> {
        self.tx.walk_below(path, max_depth, visit)
    }

    fn by_type(&self, ty: ResourceType) -> Result<Vec<Resource>> {
        self.tx.by_type(ty)
    }

    fn announced(&self) -> Result<Vec<Resource>> {
        self.tx.announced()
    }

    fn expired(&self, now: &str, limit: usize) -> Result<Vec<Resource>> {
        self.tx.expired(now, limit)
    }

    fn of_type_below(&self, path: &str, ty: ResourceType) -> Result<Vec<Resource>> {
        self.tx.of_type_below(path, ty)
    }

    fn outbox_due(&self, now: &str, per_target: usize, limit: usize, busy: &Busy) -> Result<Due> {
        self.tx.outbox_due(now, per_target, limit, busy)
    }

    fn outbox_count(&self, target: &str) -> Result<usize> {
        self.tx.outbox_count(target)
    }

    fn outbox_total(&self) -> Result<usize> {
        self.tx.outbox_total()
    }

    fn outbox_batch(&self, target: &str, subscription: &str) -> Result<(usize, Option<String>)> {
        self.tx.outbox_batch(target, subscription)
    }

    fn instance_addresses(&self) -> Result<Vec<String>> {
        self.tx.instance_addresses()
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{Map, json};

    use super::*;

    fn resource(ty: ResourceType, ri: &str, path: &str, version: u64) -> Resource {
        let mut attributes = Map::new();
        attributes.insert("ri".into(), json!(ri));
        attributes.insert("st".into(), json!(version));
        Resource { ty, attributes, path: path.into(), creator: None }
    }

    fn commit(cache: &Cache, change: Change) {
        cache.committed(&ChangeSet { changes: vec![change], enqueued: 0 });
    }

    fn version(found: Result<Option<Resource>>) -> Option<u64> {
        found.expect("held").and_then(|resource| resource.u64("st"))
    }

    #[test]
    fn a_row_read_before_a_commit_is_not_taken_after_it() {
        let cache = Cache::new(16, BUDGET);
        let generation = cache.generation();
        // A transaction began, read version 1; then a commit replaced it with version 2.
        let stale = resource(ResourceType::Cnt, "cnt1", "cse-in/cnt", 1);
        commit(&cache, Change::Updated(Arc::new(resource(ResourceType::Cnt, "cnt1", "cse-in/cnt", 2))));
        cache.fill(generation, &stale);
        assert!(is_miss(&CachedTx(&cache).get("cnt1").expect_err("not held")));
        // A transaction that began after the commit fills it.
        cache.fill(cache.generation(), &resource(ResourceType::Cnt, "cnt1", "cse-in/cnt", 2));
        assert_eq!(version(CachedTx(&cache).get_by_path("cse-in/cnt")), Some(2));
    }

    #[test]
    fn a_name_found_absent_is_answered_from_memory_until_a_commit_creates_it() {
        let cache = Cache::new(16, BUDGET);
        let absent = || {
            (
                CachedTx(&cache).get("cnt1").map_err(|error| is_miss(&error)),
                CachedTx(&cache).get_by_path("cse-in/cnt").map_err(|error| is_miss(&error)),
            )
        };
        assert!(matches!(absent(), (Err(true), Err(true))), "nothing is known before a read");
        cache.fill_absent(cache.generation(), "cnt1", false);
        cache.fill_absent(cache.generation(), "cse-in/cnt", true);
        assert!(matches!(absent(), (Ok(None), Ok(None))), "absent, from memory");
        commit(&cache, Change::Created(Arc::new(resource(ResourceType::Cnt, "cnt1", "cse-in/cnt", 1))));
        assert!(matches!(absent(), (Err(true), Err(true))), "created: read again");
        // A transaction that began before the creation found nothing: that is not taken.
        let generation = cache.generation();
        commit(&cache, Change::Created(Arc::new(resource(ResourceType::Cnt, "cnt2", "cse-in/cnt2", 1))));
        cache.fill_absent(generation, "cnt2", false);
        assert!(is_miss(&CachedTx(&cache).get("cnt2").expect_err("not held")));
        // Absences are bounded apart from what is held: a flood of them pushes nothing out.
        cache.fill(cache.generation(), &resource(ResourceType::Cnt, "cnt1", "cse-in/cnt", 1));
        for n in 0..100 {
            cache.fill_absent(cache.generation(), &format!("gone{n}"), false);
        }
        assert!(cache.absent_ri.len() <= 4);
        assert_eq!(version(CachedTx(&cache).get("cnt1")), Some(1));
    }

    #[test]
    fn long_absent_names_stay_within_their_share_of_the_memory_budget() {
        // A budget of 8 KiB: absent names may take 1 KiB.
        let cache = Cache::new(4096, 8 * 1024);
        let long = |n: usize| format!("cse-in/{n}/{}", "x".repeat(300));
        for n in 0..100 {
            cache.fill_absent(cache.generation(), &long(n), true);
            assert!(cache.absent_bytes.load(Ordering::Relaxed) <= 1024, "after {n}");
        }
        assert!(!cache.absent_path.is_empty(), "names within the share are held");
        cache.fill_absent(cache.generation(), &"y".repeat(2000), false);
        assert!(cache.absent_ri.is_empty(), "a name longer than the share is not held");
        // Creating a resource of a held absent name gives its bytes back.
        let held = cache.absent_path.iter().next().map(|name| name.clone()).expect("one held");
        let before = cache.absent_bytes.load(Ordering::Relaxed);
        commit(&cache, Change::Created(Arc::new(resource(ResourceType::Cnt, "c", &held, 1))));
        assert_eq!(cache.absent_bytes.load(Ordering::Relaxed), before - absence_weight(&held));
    }

    #[test]
    fn commits_replace_what_is_held_and_drop_what_went() {
        let cache = Cache::new(16, BUDGET);
        for (ri, path) in [("cnt1", "cse-in/cnt"), ("cin1", "cse-in/cnt/cin"), ("ae1", "cse-in/ae")] {
            let ty = if ri.starts_with("cin") { ResourceType::Cin } else { ResourceType::Cnt };
            cache.fill(cache.generation(), &resource(ty, ri, path, 1));
        }
        commit(&cache, Change::Updated(Arc::new(resource(ResourceType::Cnt, "cnt1", "cse-in/cnt", 2))));
        assert_eq!(version(CachedTx(&cache).get("cnt1")), Some(2), "updated in place");
        commit(&cache, Change::Deleted(Arc::new(resource(ResourceType::Cin, "cin1", "cse-in/cnt/cin", 1))));
        assert!(CachedTx(&cache).get_by_path("cse-in/cnt/cin").is_err(), "a deleted instance goes");
        assert_eq!(cache.len(), 2, "alone");
        // A deleted subtree: what was below it is not indexed, so everything goes.
        commit(&cache, Change::Deleted(Arc::new(resource(ResourceType::Ae, "ae1", "cse-in/ae", 1))));
        assert_eq!(cache.len(), 0);
    }

    #[test]
    fn what_is_held_stays_within_its_memory_budget() {
        let budget = 64 * 1024;
        let cache = Cache::new(1000, budget);
        let mut big = resource(ResourceType::Cin, "cin1", "cse-in/cnt/cin1", 1);
        big.attributes.insert("con".into(), json!("x".repeat(budget / 8)));
        cache.fill(cache.generation(), &big);
        assert_eq!(cache.len(), 0, "heavier than an eighth of the budget: read each time");
        let mut most = 0;
        for n in 0..200 {
            let mut small = resource(ResourceType::Cnt, &format!("cnt{n}"), &format!("cse-in/c{n}"), 1);
            small.attributes.insert("lbl".into(), json!(["x".repeat(400)]));
            cache.fill(cache.generation(), &small);
            let held = *cache.commits.lock().expect("lock");
            assert!(held <= budget, "{held} held after {n}");
            most = most.max(cache.len());
        }
        assert!(most > 10, "at most {most} held: the budget holds dozens of these");
    }

    #[test]
    fn a_full_cache_starts_afresh() {
        let cache = Cache::new(2, BUDGET);
        for n in 0..3 {
            cache
                .fill(cache.generation(), &resource(ResourceType::Cnt, &format!("cnt{n}"), &format!("cse-in/c{n}"), 1));
        }
        assert_eq!(cache.len(), 1);
        assert_eq!(version(CachedTx(&cache).get("cnt2")), Some(1));
    }
}
