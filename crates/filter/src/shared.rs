//! What filters share across requests in this process: token buckets, places held while a
//! request runs, and a small key-value store with compare-and-swap (`limits` and `store` of
//! the filter contract). Every instance and worker thread sees the same state; each replica of
//! the gateway has its own.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

/// Buckets are kept in this many maps, each behind its own lock.
const SHARDS: usize = 16;

/// The most buckets kept; beyond it the full ones are forgotten first, then the least
/// recently used.
const MAX_BUCKETS: usize = 1 << 17;

/// The largest value in the store.
pub const MAX_VALUE: usize = 64 << 10;

/// The most bytes (keys and values) the store holds.
pub const MAX_STORE: usize = 16 << 20;

/// The state filters share, one per engine.
#[derive(Default)]
pub struct Shared {
    buckets: [Mutex<HashMap<String, Bucket>>; SHARDS],
    hasher: RandomState,
    places: Arc<Mutex<HashMap<String, u32>>>,
    store: Mutex<Store>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // The maps stay consistent at every await-free step, so a panic elsewhere cannot leave
    // them half-written.
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    updated: Instant,
}

impl Bucket {
    /// The tokens at `now`, refilled at `per_second` up to `capacity`.
    fn refilled(&self, now: Instant, per_second: f64, capacity: f64) -> f64 {
        let elapsed = now.saturating_duration_since(self.updated).as_secs_f64();
        (self.tokens + elapsed * per_second).min(capacity)
    }
}

/// A place held under a key; given back when dropped.
#[derive(Debug)]
pub struct Hold {
    places: Arc<Mutex<HashMap<String, u32>>>,
    key: String,
}

impl Drop for Hold {
    fn drop(&mut self) {
        let mut places = lock(&self.places);
        if let Some(held) = places.get_mut(&self.key) {
            *held -= 1;
            if *held == 0 {
                places.remove(&self.key);
            }
        }
    }
}

/// A value and its version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub value: Vec<u8>,
    pub version: u64,
}

/// Why a write was refused.
#[derive(Debug, PartialEq, Eq)]
pub enum WriteError {
    /// The version was not the expected one; the entry as it is.
    Conflict(Option<Entry>),
    TooLarge,
}

#[derive(Default)]
struct Store {
    entries: HashMap<String, Entry>,
    bytes: usize,
    last_version: u64,
}

impl Shared {
    /// Takes a token from the bucket `key` (see the contract's `limits.take`).
    pub fn take(&self, key: &str, per_second: f64, capacity: u32, now: Instant) -> bool {
        let capacity = f64::from(capacity);
        let per_second = if per_second.is_finite() { per_second.max(0.0) } else { 0.0 };
        let shard = self.hasher.hash_one(key) as usize % SHARDS;
        let mut buckets = lock(&self.buckets[shard]);
        if let Some(bucket) = buckets.get_mut(key) {
            let tokens = bucket.refilled(now, per_second, capacity);
            let taken = tokens >= 1.0;
            *bucket = Bucket { tokens: if taken { tokens - 1.0 } else { tokens }, updated: now };
            return taken;
        }
        if capacity < 1.0 {
            return false;
        }
        if buckets.len() >= MAX_BUCKETS / SHARDS {
            make_room(&mut buckets, now, per_second, capacity);
        }
        buckets.insert(key.to_owned(), Bucket { tokens: capacity - 1.0, updated: now });
        true
    }

    /// Holds one of `limit` places under `key`, or none if all are held.
    pub fn hold(&self, key: String, limit: u32) -> Option<Hold> {
        let mut places = lock(&self.places);
        let held = places.entry(key.clone()).or_insert(0);
        if *held >= limit {
            if *held == 0 {
                places.remove(&key);
            }
            return None;
        }
        *held += 1;
        Some(Hold { places: Arc::clone(&self.places), key })
    }

    pub fn get(&self, key: &str) -> Option<Entry> {
        lock(&self.store).entries.get(key).cloned()
    }

    /// Writes `value` (none: removes the key) if the key's version is `expected` (0: absent),
    /// or whatever it is without `expected`. The new version (0 after a removal).
    pub fn write(&self, key: String, value: Option<Vec<u8>>, expected: Option<u64>) -> Result<u64, WriteError> {
        let mut store = lock(&self.store);
        let current = store.entries.get(&key);
        if let Some(expected) = expected
            && current.map_or(0, |entry| entry.version) != expected
        {
            return Err(WriteError::Conflict(current.cloned()));
        }
        let old = current.map_or(0, |entry| key.len() + entry.value.len());
        let Some(value) = value else {
            store.entries.remove(&key);
            store.bytes -= old;
            return Ok(0);
        };
        let new = key.len() + value.len();
        if value.len() > MAX_VALUE || store.bytes - old + new > MAX_STORE {
            return Err(WriteError::TooLarge);
        }
        store.bytes = store.bytes - old + new;
        store.last_version += 1;
        let version = store.last_version;
        store.entries.insert(key, Entry { value, version });
        Ok(version)
    }
}

/// Forgets the buckets that are full at `now` (as if they had never been used), or else the
/// least recently used one. Buckets of other rates count as full at this one's: a forgotten
/// bucket starts full, the most it could have been.
fn make_room(buckets: &mut HashMap<String, Bucket>, now: Instant, per_second: f64, capacity: f64) {
    buckets.retain(|_, bucket| bucket.refilled(now, per_second, capacity) < capacity);
    if buckets.len() >= MAX_BUCKETS / SHARDS
        && let Some(oldest) = buckets.iter().min_by_key(|(_, bucket)| bucket.updated).map(|(key, _)| key.clone())
    {
        buckets.remove(&oldest);
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn buckets_admit_their_capacity_then_their_rate() {
        let shared = Shared::default();
        let start = Instant::now();
        let admitted = (0..10).filter(|_| shared.take("a", 2.0, 4, start)).count();
        assert_eq!(admitted, 4, "a new bucket is full");
        assert!(shared.take("b", 2.0, 4, start), "keys have their own buckets");
        assert!(!shared.take("a", 2.0, 4, start + Duration::from_millis(400)), "0.8 tokens");
        assert!(shared.take("a", 2.0, 4, start + Duration::from_millis(500)), "one token after 0.5 s");
        let later = start + Duration::from_secs(60);
        assert_eq!((0..10).filter(|_| shared.take("a", 2.0, 4, later)).count(), 4, "never above capacity");
        assert!(!shared.take("c", 2.0, 0, start), "a bucket of no tokens");
    }

    #[test]
    fn full_buckets_are_forgotten_to_make_room() {
        let mut buckets = HashMap::new();
        let start = Instant::now();
        buckets.insert("idle".to_owned(), Bucket { tokens: 1.0, updated: start });
        buckets.insert("busy".to_owned(), Bucket { tokens: 0.0, updated: start });
        make_room(&mut buckets, start + Duration::from_secs(1), 1.0, 2.0);
        assert_eq!(buckets.keys().collect::<Vec<_>>(), ["busy"]);
    }

    #[test]
    fn places_are_held_until_dropped() {
        let shared = Shared::default();
        let first = shared.hold("k".into(), 2).unwrap();
        let second = shared.hold("k".into(), 2).unwrap();
        assert!(shared.hold("k".into(), 2).is_none());
        assert!(shared.hold("other".into(), 1).is_some());
        drop(first);
        let third = shared.hold("k".into(), 2).unwrap();
        drop((second, third));
        assert!(lock(&shared.places).is_empty(), "a key without holds is forgotten");
        assert!(shared.hold("k".into(), 0).is_none() && lock(&shared.places).is_empty());
    }

    #[test]
    fn writes_compare_versions_and_sizes() {
        let shared = Shared::default();
        let one = shared.write("k".into(), Some(b"1".to_vec()), Some(0)).unwrap();
        let conflict = shared.write("k".into(), Some(b"2".to_vec()), Some(0)).unwrap_err();
        assert_eq!(conflict, WriteError::Conflict(Some(Entry { value: b"1".to_vec(), version: one })));
        let two = shared.write("k".into(), Some(b"2".to_vec()), Some(one)).unwrap();
        assert!(two > one);
        assert_eq!(shared.get("k"), Some(Entry { value: b"2".to_vec(), version: two }));
        assert!(shared.write("k".into(), None, Some(one)).is_err());
        assert_eq!(shared.write("k".into(), None, Some(two)), Ok(0));
        assert_eq!(shared.get("k"), None);
        assert_eq!(shared.write("big".into(), Some(vec![0; MAX_VALUE + 1]), None), Err(WriteError::TooLarge));
        for i in 0..MAX_STORE / MAX_VALUE - 1 {
            shared.write(format!("{i}"), Some(vec![0; MAX_VALUE]), None).unwrap();
        }
        assert_eq!(shared.write("last".into(), Some(vec![0; MAX_VALUE]), None), Err(WriteError::TooLarge));
        let store = lock(&shared.store);
        assert_eq!(store.bytes, store.entries.iter().map(|(key, entry)| key.len() + entry.value.len()).sum::<usize>());
    }
}
