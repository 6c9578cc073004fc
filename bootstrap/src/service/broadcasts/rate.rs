//! A token bucket per key (a broadcast author), with a bounded number of keys. Sans-IO: the
//! caller passes the time, so tests run on a fake clock.
//!
//! Each bucket holds up to `burst` tokens and gains `rate_per_minute` per minute; sending takes
//! one. A key never seen (or forgotten) starts with a full bucket, so forgetting an idle key (one
//! whose bucket has refilled) changes nothing. When the map is full, the idle keys go first; if
//! none is idle, the one unseen the longest goes (so a flood of new keys cannot lock anyone out,
//! at worst it gives an old key a fresh bucket).

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// Per-key token buckets.
#[derive(Debug)]
pub struct RateLimiter {
    /// Tokens gained per second.
    per_second: f64,
    /// Tokens held at most.
    burst: f64,
    /// Keys tracked at most.
    capacity: usize,
    buckets: HashMap<String, Bucket>,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    /// When `tokens` was last brought up to date (and so when the key was last seen).
    at: Instant,
}

impl Bucket {
    /// The tokens it holds at `now`.
    fn tokens_at(&self, now: Instant, per_second: f64, burst: f64) -> f64 {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        (self.tokens + elapsed * per_second).min(burst)
    }
}

impl RateLimiter {
    /// `burst` at once, then `rate_per_minute`, per key; at most `capacity` keys (each at least
    /// 1).
    pub fn new(rate_per_minute: u32, burst: u32, capacity: usize) -> Self {
        Self {
            per_second: f64::from(rate_per_minute.max(1)) / 60.0,
            burst: f64::from(burst.max(1)),
            capacity: capacity.max(1),
            buckets: HashMap::new(),
        }
    }

    /// Takes one token from `key`'s bucket at `now`; `Err(wait)` when it is empty, with how long
    /// until the next token.
    pub fn take(&mut self, key: &str, now: Instant) -> Result<(), Duration> {
        let (per_second, burst) = (self.per_second, self.burst);
        if let Some(bucket) = self.buckets.get_mut(key) {
            bucket.tokens = bucket.tokens_at(now, per_second, burst);
            bucket.at = now;
            if bucket.tokens >= 1.0 {
                bucket.tokens -= 1.0;
                return Ok(());
            }
            return Err(Duration::from_secs_f64((1.0 - bucket.tokens) / per_second));
        }
        if self.buckets.len() >= self.capacity {
            self.make_room(now);
        }
        self.buckets.insert(
            key.to_owned(),
            Bucket {
                tokens: burst - 1.0,
                at: now,
            },
        );
        Ok(())
    }

    /// Keys tracked now.
    pub fn len(&self) -> usize {
        self.buckets.len()
    }

    /// Whether no key is tracked.
    pub fn is_empty(&self) -> bool {
        self.buckets.is_empty()
    }

    /// Forgets every idle key (its bucket refilled: as good as new); if there is none, the key
    /// unseen the longest.
    fn make_room(&mut self, now: Instant) {
        let (per_second, burst) = (self.per_second, self.burst);
        self.buckets
            .retain(|_, bucket| bucket.tokens_at(now, per_second, burst) < burst);
        if self.buckets.len() >= self.capacity {
            let oldest = self
                .buckets
                .iter()
                .min_by_key(|(_, b)| b.at)
                .map(|(k, _)| k.clone());
            if let Some(key) = oldest {
                self.buckets.remove(&key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: Duration = Duration::from_secs(1);

    /// 30 a minute (one per 2 s), 10 at once.
    #[test]
    fn a_burst_at_once_then_the_rate() {
        let mut limiter = RateLimiter::new(30, 10, 100);
        let t0 = Instant::now();
        for i in 0..10 {
            assert_eq!(limiter.take("user:ann", t0), Ok(()), "{i}");
        }
        let wait = limiter.take("user:ann", t0).unwrap_err();
        assert!(wait > SEC * 19 / 10 && wait <= SEC * 2, "{wait:?}");
        // Others have buckets of their own.
        assert_eq!(limiter.take("peer:x", t0), Ok(()));
        // 1.9 s: not yet; 2 s after the start: one, then none.
        assert!(limiter.take("user:ann", t0 + SEC * 19 / 10).is_err());
        assert_eq!(limiter.take("user:ann", t0 + SEC * 2), Ok(()));
        assert!(limiter.take("user:ann", t0 + SEC * 2).is_err());
        // Ten seconds on, five more (one per 2 s), not six.
        let later = t0 + SEC * 12;
        for i in 0..5 {
            assert_eq!(limiter.take("user:ann", later), Ok(()), "{i}");
        }
        assert!(limiter.take("user:ann", later).is_err());
        // A long pause refills up to the burst only.
        let much_later = later + SEC * 3600;
        for i in 0..10 {
            assert_eq!(limiter.take("user:ann", much_later), Ok(()), "{i}");
        }
        assert!(limiter.take("user:ann", much_later).is_err());
    }

    /// The map stays bounded: idle keys go first, else the longest unseen; a busy key is kept
    /// while idle ones can go.
    #[test]
    fn keys_are_bounded() {
        let mut limiter = RateLimiter::new(60, 2, 3);
        let t0 = Instant::now();
        limiter.take("busy", t0).unwrap();
        limiter.take("busy", t0).unwrap();
        limiter.take("a", t0).unwrap();
        limiter.take("b", t0 + SEC / 10).unwrap();
        assert_eq!(limiter.len(), 3);
        // Full: a new key pushes out the longest unseen ("busy", seen at t0 like "a": one of
        // them), never growing the map.
        limiter.take("c", t0 + SEC / 5).unwrap();
        assert_eq!(limiter.len(), 3);
        // Two seconds on every bucket has refilled: all are idle and go at once.
        limiter.take("d", t0 + SEC * 3).unwrap();
        assert_eq!(limiter.len(), 1);
        assert!(!limiter.is_empty());

        // A busy key survives while an idle one can go instead.
        let mut limiter = RateLimiter::new(60, 2, 2);
        limiter.take("busy", t0).unwrap();
        limiter.take("busy", t0).unwrap();
        limiter.take("idle", t0).unwrap();
        // At 1 s "idle" has refilled (2 tokens), "busy" has 1.
        limiter.take("new", t0 + SEC).unwrap();
        assert_eq!(limiter.take("busy", t0 + SEC), Ok(()));
        assert!(
            limiter.take("busy", t0 + SEC).is_err(),
            "busy kept its bucket"
        );
    }
}
