//! A RAM cache of decoded, resized images with a byte budget, shared by the loader threads,
//! so that every epoch after the first skips fetching and decoding.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use foldtrain_proto::BlobHash;
use foldtrain_proto::config::Resize;

/// Shards keep loader threads from queueing on one lock.
const SHARDS: usize = 16;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct CacheKey {
    hash: BlobHash,
    // The name is part of the key so that rows with placeholder hashes (local folders)
    // never share an entry.
    name: String,
    size: u32,
    nearest: bool,
}

/// Counters for logs and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheStats {
    pub entries: u64,
    pub bytes: u64,
    pub budget: u64,
    pub hits: u64,
    pub misses: u64,
    /// Images decoded but not kept because the budget was full.
    pub rejected: u64,
}

/// Decoded `size` x `size` RGB images (u8 HWC). Entries are never evicted: once the budget
/// is full, further images are simply not cached. With a shuffled order each epoch, any
/// eviction policy hits about budget/total of the time anyway, and not evicting avoids
/// churning memory and lock traffic.
#[derive(Debug)]
pub struct ImageCache {
    shards: Vec<Mutex<HashMap<CacheKey, Arc<[u8]>>>>,
    budget: u64,
    used: AtomicU64,
    entries: AtomicU64,
    hits: AtomicU64,
    misses: AtomicU64,
    rejected: AtomicU64,
}

impl ImageCache {
    /// A cache holding at most `budget_bytes` of pixels; 0 disables caching.
    pub fn new(budget_bytes: u64) -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            budget: budget_bytes,
            used: AtomicU64::new(0),
            entries: AtomicU64::new(0),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
        }
    }

    pub fn get(&self, hash: &BlobHash, name: &str, size: u32, resize: Resize) -> Option<Arc<[u8]>> {
        let key = key(hash, name, size, resize);
        let found = lock(&self.shards[shard_of(&key)]).get(&key).cloned();
        let counter = if found.is_some() {
            &self.hits
        } else {
            &self.misses
        };
        counter.fetch_add(1, Ordering::Relaxed);
        found
    }

    /// Keeps `pixels` if the budget allows; returns the shared copy either way.
    pub fn insert(
        &self,
        hash: &BlobHash,
        name: &str,
        size: u32,
        resize: Resize,
        pixels: Vec<u8>,
    ) -> Arc<[u8]> {
        let pixels: Arc<[u8]> = pixels.into();
        let len = pixels.len() as u64;
        let key = key(hash, name, size, resize);
        let mut shard = lock(&self.shards[shard_of(&key)]);
        if let Some(existing) = shard.get(&key) {
            // Another thread decoded the same image first.
            return existing.clone();
        }
        let reserved = self
            .used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                used.checked_add(len).filter(|total| *total <= self.budget)
            })
            .is_ok();
        if reserved {
            shard.insert(key, pixels.clone());
            self.entries.fetch_add(1, Ordering::Relaxed);
        } else {
            self.rejected.fetch_add(1, Ordering::Relaxed);
        }
        pixels
    }

    pub fn stats(&self) -> CacheStats {
        CacheStats {
            entries: self.entries.load(Ordering::Relaxed),
            bytes: self.used.load(Ordering::Relaxed),
            budget: self.budget,
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            rejected: self.rejected.load(Ordering::Relaxed),
        }
    }
}

fn key(hash: &BlobHash, name: &str, size: u32, resize: Resize) -> CacheKey {
    CacheKey {
        hash: *hash,
        name: name.to_owned(),
        size,
        nearest: resize == Resize::Nearest,
    }
}

fn shard_of(key: &CacheKey) -> usize {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    key.hash(&mut hasher);
    hasher.finish() as usize % SHARDS
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding the lock cannot leave a HashMap half-updated in a way that
    // matters here (insert is one call), so recover instead of propagating poison.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caches_until_the_budget_and_no_further() {
        let cache = ImageCache::new(250);
        let hashes: Vec<BlobHash> = (0u8..5).map(|i| BlobHash::of(&[i])).collect();
        for (i, hash) in hashes.iter().enumerate() {
            assert!(cache.get(hash, "x", 4, Resize::Bilinear).is_none());
            let kept = cache.insert(hash, "x", 4, Resize::Bilinear, vec![i as u8; 100]);
            assert_eq!(kept.len(), 100);
        }
        let stats = cache.stats();
        assert_eq!((stats.entries, stats.bytes, stats.rejected), (2, 200, 3));
        assert!(stats.bytes <= stats.budget);
        assert_eq!(
            &*cache.get(&hashes[1], "x", 4, Resize::Bilinear).unwrap(),
            &[1u8; 100][..]
        );
        assert!(cache.get(&hashes[2], "x", 4, Resize::Bilinear).is_none());
    }

    #[test]
    fn size_resize_and_name_are_part_of_the_key() {
        let cache = ImageCache::new(1 << 20);
        let hash = BlobHash::of(b"a");
        cache.insert(&hash, "a.jpg", 4, Resize::Bilinear, vec![1; 48]);
        assert!(cache.get(&hash, "a.jpg", 4, Resize::Bilinear).is_some());
        assert!(cache.get(&hash, "a.jpg", 5, Resize::Bilinear).is_none());
        assert!(cache.get(&hash, "a.jpg", 4, Resize::Nearest).is_none());
        assert!(cache.get(&hash, "b.jpg", 4, Resize::Bilinear).is_none());
        // A second insert of the same key keeps the first copy and does not count twice.
        let kept = cache.insert(&hash, "a.jpg", 4, Resize::Bilinear, vec![2; 48]);
        assert_eq!(kept[0], 1);
        assert_eq!(cache.stats().bytes, 48);
    }

    #[test]
    fn zero_budget_caches_nothing() {
        let cache = ImageCache::new(0);
        let hash = BlobHash::of(b"a");
        cache.insert(&hash, "a", 1, Resize::Bilinear, vec![0; 3]);
        assert!(cache.get(&hash, "a", 1, Resize::Bilinear).is_none());
    }
}
