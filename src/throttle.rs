//! Throttles: token buckets keyed by visitor or IP address, and the count of open sockets per IP.
//!
//! All are in memory: after a restart everyone starts with a full bucket, which is the forgiving choice for a chat.
//! Each map is pruned when it grows, so a flood of distinct keys (addresses, tokens) cannot grow memory without bound.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Above this many keys a limiter forgets the ones whose bucket has refilled (they are indistinguishable from new).
const PRUNE_ABOVE: usize = 50_000;

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    updated: Instant,
}

/// A token bucket per key: `capacity` events at once, refilled at `capacity` per `period`.
pub struct RateLimiter<K> {
    capacity: f64,
    per_second: f64,
    buckets: Mutex<HashMap<K, Bucket>>,
}

impl<K: Hash + Eq + Clone> RateLimiter<K> {
    pub fn new(capacity: u32, period: Duration) -> RateLimiter<K> {
        let capacity = f64::from(capacity.max(1));
        RateLimiter {
            capacity,
            per_second: capacity / period.as_secs_f64(),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    fn refill(&self, bucket: &mut Bucket, now: Instant) {
        let elapsed = now.saturating_duration_since(bucket.updated).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * self.per_second).min(self.capacity);
        bucket.updated = now;
    }

    /// Takes one token; when none is left, answers how long until one is.
    pub fn take(&self, key: &K) -> Result<(), Duration> {
        let now = Instant::now();
        let mut buckets = self
            .buckets
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        if buckets.len() > PRUNE_ABOVE {
            let full = self.capacity;
            let per_second = self.per_second;
            buckets.retain(|_, bucket| {
                bucket.tokens
                    + now.saturating_duration_since(bucket.updated).as_secs_f64() * per_second
                    < full
            });
        }
        let bucket = buckets.entry(key.clone()).or_insert(Bucket {
            tokens: self.capacity,
            updated: now,
        });
        self.refill(bucket, now);
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64(
                (1.0 - bucket.tokens) / self.per_second,
            ))
        }
    }

    /// Whether a token is available, without taking it; when not, how long until one is.
    pub fn check(&self, key: &K) -> Result<(), Duration> {
        let now = Instant::now();
        let mut buckets = self
            .buckets
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        let Some(bucket) = buckets.get_mut(key) else {
            return Ok(());
        };
        self.refill(bucket, now);
        if bucket.tokens >= 1.0 {
            Ok(())
        } else {
            Err(Duration::from_secs_f64(
                (1.0 - bucket.tokens) / self.per_second,
            ))
        }
    }
}

/// Open sockets per IP address, with a guard that gives the slot back when the socket closes.
#[derive(Default)]
pub struct ConnectionCounter {
    open: Mutex<HashMap<IpAddr, usize>>,
}

pub struct ConnectionSlot {
    counter: Arc<ConnectionCounter>,
    ip: IpAddr,
}

impl ConnectionCounter {
    /// Takes a slot for `ip` unless it already holds `limit`.
    pub fn acquire(self: &Arc<Self>, ip: IpAddr, limit: usize) -> Option<ConnectionSlot> {
        let mut open = self
            .open
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        let count = open.entry(ip).or_insert(0);
        if *count >= limit {
            return None;
        }
        *count += 1;
        Some(ConnectionSlot {
            counter: self.clone(),
            ip,
        })
    }
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        let mut open = self
            .counter
            .open
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        if let Some(count) = open.get_mut(&self.ip) {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_empties_and_says_how_long_to_wait() {
        let limiter = RateLimiter::new(3, Duration::from_secs(60));
        for _ in 0..3 {
            limiter.take(&"a").unwrap();
        }
        let wait = limiter.take(&"a").unwrap_err();
        assert!(
            wait > Duration::from_secs(10) && wait <= Duration::from_secs(20),
            "{wait:?}"
        );
        assert!(limiter.check(&"a").is_err());
        limiter.take(&"b").unwrap();
    }

    #[test]
    fn slots_are_given_back() {
        let counter = Arc::new(ConnectionCounter::default());
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        let first = counter.acquire(ip, 2).unwrap();
        let _second = counter.acquire(ip, 2).unwrap();
        assert!(counter.acquire(ip, 2).is_none());
        drop(first);
        assert!(counter.acquire(ip, 2).is_some());
    }
}
