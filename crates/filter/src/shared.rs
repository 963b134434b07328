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

/// The longest key a filter may give.
pub const MAX_KEY: usize = 1 << 10;

/// The largest value in the store.
pub const MAX_VALUE: usize = 64 << 10;

/// The most bytes (keys, values and [`ENTRY_COST`] each) the store holds.
pub const MAX_STORE: usize = 16 << 20;

/// The most bytes the entries of one namespace's filters take (keys hold the namespace
/// second, after the plugin: `plugin\0namespace\0key`), so that no tenant fills the store.
pub const MAX_NAMESPACE: usize = MAX_STORE / 4;

/// What an entry costs the store besides its key and value: about what keeping it takes.
const ENTRY_COST: usize = 64;

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
    per_second: f64,
    capacity: f64,
}

impl Bucket {
    /// The tokens at `now`.
    fn refilled(&self, now: Instant) -> f64 {
        let elapsed = now.saturating_duration_since(self.updated).as_secs_f64();
        (self.tokens + elapsed * self.per_second).min(self.capacity)
    }
}

/// A token bucket a filter takes from: its key, rate and capacity.
#[derive(Debug, Clone)]
pub struct BucketSpec {
    pub key: String,
    pub per_second: f64,
    pub capacity: u32,
}

/// A place held under a key; given back when dropped.
pub struct Hold {
    places: Arc<Mutex<HashMap<String, u32>>>,
    key: String,
}

impl std::fmt::Debug for Hold {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Hold").field(&self.key).finish()
    }
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

/// A write to the store: the value (none: remove the key), the version the key must have
/// (0: absent; none: any) and when the value expires (none: never).
#[derive(Debug, Default)]
pub struct Write {
    pub value: Option<Vec<u8>>,
    pub expected: Option<u64>,
    pub expires: Option<Instant>,
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
    entries: HashMap<String, Stored>,
    bytes: usize,
    /// Bytes by namespace.
    namespaces: HashMap<String, usize>,
    last_version: u64,
}

/// The namespace of a store key.
fn namespace(key: &str) -> &str {
    key.split('\0').nth(1).unwrap_or_default()
}

struct Stored {
    entry: Entry,
    /// When it is gone by itself, if ever.
    expires: Option<Instant>,
}

impl Stored {
    fn cost(&self, key: &str) -> usize {
        ENTRY_COST + key.len() + self.entry.value.len()
    }
}

impl Store {
    /// The entry of `key` unless it expired by `now`; an expired one is removed.
    fn live(&mut self, key: &str, now: Instant) -> Option<&Entry> {
        if self.entries.get(key).is_some_and(|stored| stored.expires.is_some_and(|at| at <= now)) {
            self.remove(key);
        }
        self.entries.get(key).map(|stored| &stored.entry)
    }

    fn remove(&mut self, key: &str) {
        if let Some(stored) = self.entries.remove(key) {
            self.count(key, -(stored.cost(key) as isize));
        }
    }

    /// Counts `change` bytes to the store and to `key`'s namespace.
    fn count(&mut self, key: &str, change: isize) {
        self.bytes = self.bytes.saturating_add_signed(change);
        let namespace = namespace(key);
        let bytes = self.namespaces.entry(namespace.to_owned()).or_default();
        *bytes = bytes.saturating_add_signed(change);
        if *bytes == 0 {
            self.namespaces.remove(namespace);
        }
    }

    /// Whether `key` may take `new` bytes in place of its `old` ones.
    fn fits(&self, key: &str, old: usize, new: usize) -> bool {
        let in_namespace = self.namespaces.get(namespace(key)).copied().unwrap_or_default();
        self.bytes - old + new <= MAX_STORE && in_namespace - old + new <= MAX_NAMESPACE
    }

    /// Removes every entry expired by `now`.
    fn sweep(&mut self, now: Instant) {
        let expired: Vec<String> = (self.entries.iter())
            .filter(|(_, stored)| stored.expires.is_some_and(|at| at <= now))
            .map(|(key, _)| key.clone())
            .collect();
        for key in expired {
            self.remove(&key);
        }
    }
}

impl Shared {
    /// Takes a token from each bucket, or none if one of them is empty (see the contract's
    /// `limits.take`). A bucket's rate and capacity are those it was last taken from with.
    pub fn take(&self, buckets: &[BucketSpec], now: Instant) -> bool {
        let shard = |key: &str| self.hasher.hash_one(key) as usize % SHARDS;
        // Every shard involved is locked, in one order, so the buckets change together.
        let mut shards: Vec<usize> = buckets.iter().map(|bucket| shard(&bucket.key)).collect();
        shards.sort_unstable();
        shards.dedup();
        let mut locked: Vec<_> = shards.into_iter().map(|index| (index, lock(&self.buckets[index]))).collect();
        let mut updated = Vec::with_capacity(buckets.len());
        for spec in buckets {
            let (per_second, capacity) = (rate(spec.per_second), f64::from(spec.capacity));
            let index = shard(&spec.key);
            let map = &locked.iter().find(|(locked, _)| *locked == index).expect("locked above").1;
            let tokens = map.get(&spec.key).map_or(capacity, |bucket| bucket.refilled(now).min(capacity));
            if tokens < 1.0 {
                return false;
            }
            updated.push((index, Bucket { tokens: tokens - 1.0, updated: now, per_second, capacity }));
        }
        for (spec, (index, bucket)) in buckets.iter().zip(updated) {
            let map = &mut locked.iter_mut().find(|(locked, _)| *locked == index).expect("locked above").1;
            if let Some(old) = map.get_mut(&spec.key) {
                // A thread that read the clock earlier may lock later: time never goes back.
                *old = Bucket { updated: bucket.updated.max(old.updated), ..bucket };
                continue;
            }
            if map.len() >= MAX_BUCKETS / SHARDS {
                make_room(map, now);
            }
            map.insert(spec.key.clone(), bucket);
        }
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

    pub fn get(&self, key: &str, now: Instant) -> Option<Entry> {
        lock(&self.store).live(key, now).cloned()
    }

    /// Writes `value` (none: removes the key) if the key's version is `expected` (0: absent),
    /// or whatever it is without `expected`; the value expires at `expires` (if given). The
    /// new version (0 after a removal). Expired entries make room for it when the store, or
    /// the key's namespace's share of it ([`MAX_NAMESPACE`]), is full.
    pub fn write(&self, key: String, write: Write, now: Instant) -> Result<u64, WriteError> {
        let mut store = lock(&self.store);
        let current = store.live(&key, now);
        if let Some(expected) = write.expected
            && current.map_or(0, |entry| entry.version) != expected
        {
            return Err(WriteError::Conflict(current.cloned()));
        }
        let Some(value) = write.value else {
            store.remove(&key);
            return Ok(0);
        };
        let new = ENTRY_COST + key.len() + value.len();
        if value.len() > MAX_VALUE {
            return Err(WriteError::TooLarge);
        }
        let old = |store: &Store| store.entries.get(&key).map_or(0, |stored| stored.cost(&key));
        if !store.fits(&key, old(&store), new) {
            store.sweep(now);
        }
        let old = old(&store);
        if !store.fits(&key, old, new) {
            return Err(WriteError::TooLarge);
        }
        store.count(&key, new as isize - old as isize);
        store.last_version += 1;
        let version = store.last_version;
        store.entries.insert(key, Stored { entry: Entry { value, version }, expires: write.expires });
        Ok(version)
    }
}

/// A rate a bucket may have: a negative or undefined one is 0.
fn rate(per_second: f64) -> f64 {
    if per_second.is_finite() { per_second.max(0.0) } else { 0.0 }
}

/// Forgets the buckets that are full at `now` (as if never used: a new bucket starts full),
/// and if that is not enough the least recently used eighth, so that a full map is swept
/// once per many new keys, not on every one.
fn make_room(buckets: &mut HashMap<String, Bucket>, now: Instant) {
    buckets.retain(|_, bucket| bucket.refilled(now) < bucket.capacity);
    if buckets.len() >= MAX_BUCKETS / SHARDS * 7 / 8 {
        let mut ages: Vec<Instant> = buckets.values().map(|bucket| bucket.updated).collect();
        let cut = ages.len() / 8;
        let (_, &mut oldest_kept, _) = ages.select_nth_unstable(cut);
        buckets.retain(|_, bucket| bucket.updated >= oldest_kept);
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn bucket(key: &str, per_second: f64, capacity: u32) -> BucketSpec {
        BucketSpec { key: key.to_owned(), per_second, capacity }
    }

    #[test]
    fn buckets_admit_their_capacity_then_their_rate() {
        let shared = Shared::default();
        let take = |key, at| shared.take(&[bucket(key, 2.0, 4)], at);
        let start = Instant::now();
        assert_eq!((0..10).filter(|_| take("a", start)).count(), 4, "a new bucket is full");
        assert!(take("b", start), "keys have their own buckets");
        assert!(!take("a", start + Duration::from_millis(400)), "0.8 tokens");
        assert!(take("a", start + Duration::from_millis(500)), "one token after 0.5 s");
        let later = start + Duration::from_secs(60);
        assert_eq!((0..10).filter(|_| take("a", later)).count(), 4, "never above capacity");
        assert!(!shared.take(&[bucket("c", 2.0, 0)], start), "a bucket of no tokens");
        assert!(shared.take(&[bucket("d", f64::NAN, 1)], start) && !shared.take(&[bucket("d", f64::NAN, 1)], later));
    }

    #[test]
    fn several_buckets_give_a_token_each_or_none() {
        let shared = Shared::default();
        let start = Instant::now();
        let both = [bucket("second", 10.0, 5), bucket("minute", 0.0, 2)];
        assert!(shared.take(&both, start) && shared.take(&both, start));
        assert!(!shared.take(&both, start), "the minute's bucket is empty");
        // The refusal took nothing from the other bucket: 3 tokens are left there.
        assert_eq!((0..5).filter(|_| shared.take(&[bucket("second", 10.0, 5)], start)).count(), 3);
    }

    #[test]
    fn full_buckets_are_forgotten_to_make_room() {
        let start = Instant::now();
        let at = |tokens, per_second, capacity| Bucket { tokens, updated: start, per_second, capacity };
        let mut buckets = HashMap::new();
        buckets.insert("idle".to_owned(), at(1.0, 1.0, 2.0));
        buckets.insert("busy".to_owned(), at(0.0, 1.0, 2.0));
        // Full by its own measure, not the caller's: 3 of 51 tokens is far from full.
        buckets.insert("burst".to_owned(), at(3.0, 1.0, 51.0));
        make_room(&mut buckets, start + Duration::from_secs(1));
        let mut kept: Vec<_> = buckets.keys().collect();
        kept.sort();
        assert_eq!(kept, ["burst", "busy"]);
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
        let now = Instant::now();
        let set = |key: &str, value: &[u8], expected| {
            let write = Write { value: Some(value.to_vec()), expected, expires: None };
            shared.write(key.to_owned(), write, now)
        };
        let remove = |key: &str, expected| shared.write(key.to_owned(), Write { expected, ..Write::default() }, now);
        let one = set("k", b"1", Some(0)).unwrap();
        let conflict = set("k", b"2", Some(0)).unwrap_err();
        assert_eq!(conflict, WriteError::Conflict(Some(Entry { value: b"1".to_vec(), version: one })));
        let two = set("k", b"2", Some(one)).unwrap();
        assert!(two > one);
        assert_eq!(shared.get("k", now), Some(Entry { value: b"2".to_vec(), version: two }));
        assert!(remove("k", Some(one)).is_err());
        assert_eq!(remove("k", Some(two)), Ok(0));
        assert_eq!(shared.get("k", now), None);
        assert_eq!(set("big", &vec![0; MAX_VALUE + 1], None), Err(WriteError::TooLarge));
        for i in 0..MAX_STORE / MAX_VALUE - 1 {
            set(&spread(i), &vec![0; MAX_VALUE], None).unwrap();
        }
        assert_eq!(set("p\0other\0last", &vec![0; MAX_VALUE], None), Err(WriteError::TooLarge));
        let store = lock(&shared.store);
        let counted = store.entries.iter().map(|(key, stored)| stored.cost(key));
        assert_eq!(store.bytes, counted.sum::<usize>());
        assert_eq!(store.namespaces.values().sum::<usize>(), store.bytes);
    }

    /// The `i`th key, of one of five namespaces: together they may fill the store.
    fn spread(i: usize) -> String {
        format!("plugin\0ns{}\0{i}", i % 5)
    }

    #[test]
    fn a_namespace_fills_a_quarter_of_the_store_at_most() {
        let shared = Shared::default();
        let now = Instant::now();
        let set = |key: String| {
            shared.write(key, Write { value: Some(vec![0; MAX_VALUE]), expected: None, expires: None }, now)
        };
        let filled = (0..).take_while(|i| set(format!("plugin\0greedy\0{i}")).is_ok()).count();
        assert_eq!(filled, MAX_NAMESPACE / (MAX_VALUE + ENTRY_COST + 20), "{filled}");
        assert!(set("other\0greedy\0x".into()).is_err(), "another plugin of the namespace too");
        assert!(set("plugin\0modest\0x".into()).is_ok(), "another namespace still writes");
        shared.write(format!("plugin\0greedy\0{}", 0), Write::default(), now).unwrap();
        assert!(set("plugin\0greedy\0again".into()).is_ok(), "a removal makes room");
    }

    #[test]
    fn expired_values_are_gone_and_make_room() {
        let shared = Shared::default();
        let now = Instant::now();
        let later = now + Duration::from_secs(2);
        let short = Write { value: Some(b"x".to_vec()), expected: None, expires: Some(now + Duration::from_secs(1)) };
        shared.write("short".into(), short, now).unwrap();
        assert!(shared.get("short", now).is_some() && shared.get("short", later).is_none());
        assert_eq!(lock(&shared.store).bytes, 0, "an expired value read is removed");
        let value = vec![0; MAX_VALUE];
        for i in 0..MAX_STORE / MAX_VALUE - 1 {
            let write =
                Write { value: Some(value.clone()), expected: None, expires: Some(now + Duration::from_secs(1)) };
            shared.write(spread(i), write, now).unwrap();
        }
        assert!(shared.get(&spread(0), now).is_some());
        let write = Write { value: Some(value), expected: None, expires: None };
        assert!(shared.write(spread(255), write, later).is_ok(), "the expired made room");
        assert_eq!(shared.get(&spread(0), later), None, "expired");
        let write = Write { value: Some(b"x".to_vec()), expected: Some(0), expires: None };
        assert!(shared.write(spread(1), write, later).is_ok(), "an expired key is absent");
        let store = lock(&shared.store);
        assert_eq!(store.entries.len(), 2);
        assert_eq!(store.bytes, store.entries.iter().map(|(key, stored)| stored.cost(key)).sum::<usize>());
    }
}
