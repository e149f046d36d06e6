//! Outcomes by digest reference, with a size bound and a time to live per entry.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use super::Verification;

struct Entry {
    value: Verification,
    expires: Instant,
}

/// A bounded map whose entries expire. When full, expired entries go first, then the tenth
/// of entries closest to expiry.
pub(crate) struct Cache {
    entries: Mutex<HashMap<String, Entry>>,
    capacity: usize,
}

impl Cache {
    pub fn new(capacity: usize) -> Self {
        Self {
            entries: Mutex::new(HashMap::with_capacity(capacity.min(1024))),
            capacity: capacity.max(1),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        // A panic while holding the lock cannot leave the map inconsistent (single operations).
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn get(&self, key: &str, now: Instant) -> Option<Verification> {
        let mut map = self.lock();
        match map.get(key) {
            Some(e) if e.expires > now => Some(e.value.clone()),
            Some(_) => {
                map.remove(key);
                None
            }
            None => None,
        }
    }

    pub fn insert(&self, key: String, value: Verification, ttl: Duration, now: Instant) {
        let mut map = self.lock();
        if map.len() >= self.capacity && !map.contains_key(&key) {
            map.retain(|_, e| e.expires > now);
            if map.len() >= self.capacity {
                let mut by_expiry: Vec<(Instant, String)> =
                    map.iter().map(|(k, e)| (e.expires, k.clone())).collect();
                let n = (self.capacity / 10).max(1).min(by_expiry.len());
                by_expiry.select_nth_unstable(n - 1);
                for (_, k) in by_expiry.into_iter().take(n) {
                    map.remove(&k);
                }
            }
        }
        map.insert(
            key,
            Entry {
                value,
                expires: now + ttl,
            },
        );
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.lock().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(n: u32) -> Verification {
        Verification::Verified {
            digest: format!("sha256:{n}"),
            authority: "k".into(),
        }
    }

    #[test]
    fn entries_expire_after_their_ttl() {
        let c = Cache::new(10);
        let t0 = Instant::now();
        c.insert("a".into(), v(1), Duration::from_secs(5), t0);
        assert_eq!(c.get("a", t0 + Duration::from_secs(4)), Some(v(1)));
        assert_eq!(c.get("a", t0 + Duration::from_secs(5)), None);
        assert_eq!(c.len(), 0);
    }

    #[test]
    fn the_size_bound_holds_and_the_soonest_to_expire_go_first() {
        let c = Cache::new(10);
        let t0 = Instant::now();
        for i in 0..10 {
            c.insert(
                format!("k{i}"),
                v(i),
                Duration::from_secs(100 + i as u64),
                t0,
            );
        }
        c.insert("new".into(), v(99), Duration::from_secs(500), t0);
        assert_eq!(c.len(), 10);
        assert_eq!(c.get("k0", t0), None);
        assert_eq!(c.get("k9", t0), Some(v(9)));
        assert_eq!(c.get("new", t0), Some(v(99)));
    }
}
