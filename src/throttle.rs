//! Throttles: token buckets keyed by visitor or IP address, and the count of open sockets per IP.
//!
//! All are in memory: after a restart everyone starts with a full bucket, which is the forgiving choice for a chat.
//! Each map is pruned when it grows, so a flood of distinct keys (addresses, tokens) cannot grow memory without bound.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Above this many keys a limiter forgets the ones whose bucket has refilled (they are indistinguishable from new).
const PRUNE_ABOVE: usize = 50_000;

/// The key of every per-address limit: an IPv4 address, or the /64 network of an IPv6 address. One IPv6 host is
/// usually given a whole /64 and can use any address in it, so limits counted per IPv6 address would not hold it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Network(IpAddr);

impl Network {
    pub fn of(ip: IpAddr) -> Network {
        match ip.to_canonical() {
            IpAddr::V6(ip) => {
                let prefix = u128::from(ip) & !(u128::from(u64::MAX));
                Network(IpAddr::V6(Ipv6Addr::from(prefix)))
            }
            ip => Network(ip),
        }
    }
}

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

    /// Gives back a token taken for an attempt that turned out not to count (a right password, say).
    pub fn give_back(&self, key: &K) {
        let mut buckets = self
            .buckets
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        if let Some(bucket) = buckets.get_mut(key) {
            bucket.tokens = (bucket.tokens + 1.0).min(self.capacity);
        }
    }
}

/// Open sockets per network (`Network`), with a guard that gives the slot back when the socket closes.
#[derive(Default)]
pub struct ConnectionCounter {
    open: Mutex<HashMap<Network, usize>>,
}

pub struct ConnectionSlot {
    counter: Arc<ConnectionCounter>,
    network: Network,
}

impl ConnectionCounter {
    /// Takes a slot for `ip`'s network unless it already holds `limit`.
    pub fn acquire(self: &Arc<Self>, ip: IpAddr, limit: usize) -> Option<ConnectionSlot> {
        let network = Network::of(ip);
        let mut open = self
            .open
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        let count = open.entry(network).or_insert(0);
        if *count >= limit {
            return None;
        }
        *count += 1;
        Some(ConnectionSlot {
            counter: self.clone(),
            network,
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
        if let Some(count) = open.get_mut(&self.network) {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.network);
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
        limiter.give_back(&"a");
        limiter.take(&"a").unwrap();
        assert!(limiter.take(&"a").is_err());
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

    /// Regression (issue 15, item 9): one IPv6 host has a whole /64 to pick addresses from.
    #[test]
    fn ipv6_addresses_count_per_64_and_ipv4_per_address() {
        let counter = Arc::new(ConnectionCounter::default());
        let one: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let same_64: IpAddr = "2001:db8:1:2:ffff:eeee:dddd:cccc".parse().unwrap();
        let other_64: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        let _slot = counter.acquire(one, 1).unwrap();
        assert!(counter.acquire(same_64, 1).is_none());
        assert!(counter.acquire(other_64, 1).is_some());
        assert_eq!(
            Network::of("::ffff:10.0.0.1".parse().unwrap()),
            Network::of("10.0.0.1".parse().unwrap())
        );
        assert_ne!(
            Network::of("10.0.0.1".parse().unwrap()),
            Network::of("10.0.0.2".parse().unwrap())
        );
    }
}
