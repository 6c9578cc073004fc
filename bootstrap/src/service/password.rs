//! Password hashing (argon2id at OWASP's parameters) with bounded concurrency, the strength rule,
//! and login throttling.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use argon2::password_hash::PasswordHash;
use argon2::password_hash::rand_core::{OsRng, RngCore};
use argon2::{Algorithm, Argon2, Block, Params, Version};
use base64ct::{Base64Unpadded as B64, Encoding};
use tokio::sync::Semaphore;

use crate::config::limits::{
    MAX_CONCURRENT_HASHES, MAX_QUEUED_HASHES, MAX_THROTTLE_ENTRIES, THROTTLE_FREE_FAILURES,
    THROTTLE_MAX_LOCK,
};

/// OWASP's recommendation for argon2id: 19 MiB of memory, 2 passes, 1 lane.
pub const ARGON2_MEMORY_KIB: u32 = 19 * 1024;
/// Passes over memory.
pub const ARGON2_PASSES: u32 = 2;
/// Lanes.
pub const ARGON2_LANES: u32 = 1;

fn params() -> Params {
    // The parameters are constants within argon2's ranges; `Params::new` cannot fail for them.
    Params::new(
        ARGON2_MEMORY_KIB,
        ARGON2_PASSES,
        ARGON2_LANES,
        Some(HASH_BYTES),
    )
    .unwrap_or_default()
}

/// Length of the stored hash.
const HASH_BYTES: usize = 32;
/// Length of a fresh salt.
const SALT_BYTES: usize = 16;

/// The hasher is saturated; the caller should answer "try again later".
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("too many password checks are waiting")]
pub struct Busy;

/// Runs argon2 on blocking threads, at most [`MAX_CONCURRENT_HASHES`] at a time, with at most
/// [`MAX_QUEUED_HASHES`] waiting: a login flood costs bounded memory and is refused beyond that.
/// Each slot owns one preallocated 19 MiB buffer that every computation in that slot reuses, so
/// memory does not depend on how many passwords were checked (a fresh allocation per hash lets the
/// allocator's heap grow far beyond two buffers under a burst).
#[derive(Debug)]
pub struct Hasher {
    permits: Semaphore,
    queued: AtomicUsize,
    buffers: std::sync::Mutex<Vec<Vec<Block>>>,
}

impl Default for Hasher {
    fn default() -> Self {
        let blocks = params().block_count();
        Self {
            permits: Semaphore::new(MAX_CONCURRENT_HASHES),
            queued: AtomicUsize::new(0),
            buffers: std::sync::Mutex::new(
                (0..MAX_CONCURRENT_HASHES)
                    .map(|_| vec![Block::new(); blocks])
                    .collect(),
            ),
        }
    }
}

impl Hasher {
    async fn run<T: Send + 'static>(
        self: &Arc<Self>,
        job: impl FnOnce(&mut Vec<Block>) -> T + Send + 'static,
    ) -> Result<T, Busy> {
        if self.queued.fetch_add(1, Ordering::SeqCst) >= MAX_QUEUED_HASHES {
            self.queued.fetch_sub(1, Ordering::SeqCst);
            return Err(Busy);
        }
        let permit = self.permits.acquire().await;
        self.queued.fetch_sub(1, Ordering::SeqCst);
        let _permit = permit.map_err(|_| Busy)?;
        // A permit guarantees a free buffer: there are as many buffers as permits.
        let mut buffer = self
            .buffers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .pop()
            .unwrap_or_default();
        let this = self.clone();
        let result = tokio::task::spawn_blocking(move || {
            let out = job(&mut buffer);
            this.buffers
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(buffer);
            out
        })
        .await;
        result.map_err(|_| Busy)
    }

    /// A PHC string of `password` with a fresh salt.
    pub async fn hash(self: &Arc<Self>, password: String) -> Result<String, Busy> {
        self.run(move |buffer| {
            let mut salt = [0u8; SALT_BYTES];
            OsRng.fill_bytes(&mut salt);
            let params = params();
            let mut out = [0u8; HASH_BYTES];
            let argon2 = Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone());
            if argon2
                .hash_password_into_with_memory(
                    password.as_bytes(),
                    &salt,
                    &mut out,
                    buffer.as_mut_slice(),
                )
                .is_err()
            {
                return String::new();
            }
            format!(
                "$argon2id$v=19$m={},t={},p={}${}${}",
                params.m_cost(),
                params.t_cost(),
                params.p_cost(),
                B64::encode_string(&salt),
                B64::encode_string(&out),
            )
        })
        .await
    }

    /// Whether `password` matches `phc`. A malformed PHC string never matches.
    pub async fn verify(self: &Arc<Self>, password: String, phc: String) -> Result<bool, Busy> {
        self.run(move |buffer| verify_with(&password, &phc, buffer))
            .await
    }
}

/// Checks `password` against a PHC string, computing in `buffer` (grown if the string asks for
/// more memory than today's parameters, e.g. after the cost was raised and lowered again).
fn verify_with(password: &str, phc: &str, buffer: &mut Vec<Block>) -> bool {
    let Ok(parsed) = PasswordHash::new(phc) else {
        return false;
    };
    let (Some(expected), Some(salt)) = (parsed.hash, parsed.salt) else {
        return false;
    };
    let Ok(params) = Params::try_from(&parsed) else {
        return false;
    };
    if parsed.algorithm != argon2::ARGON2ID_IDENT || params.m_cost() > 4 * ARGON2_MEMORY_KIB {
        return false;
    }
    let mut salt_bytes = [0u8; 64];
    let Ok(salt) = salt.decode_b64(&mut salt_bytes) else {
        return false;
    };
    if buffer.len() < params.block_count() {
        buffer.resize(params.block_count(), Block::new());
    }
    let mut out = vec![0u8; expected.len()];
    let argon2 = Argon2::new(Algorithm::Argon2id, Version::V0x13, params);
    argon2
        .hash_password_into_with_memory(password.as_bytes(), salt, &mut out, buffer.as_mut_slice())
        .is_ok()
        && argon2::password_hash::Output::new(&out).is_ok_and(|o| o == expected)
}

/// Passwords nobody should use, whatever their length.
const COMMON: &[&str] = &[
    "password",
    "password1",
    "password123",
    "12345678",
    "123456789",
    "1234567890",
    "qwertyuiop",
    "qwerty123",
    "iloveyou",
    "sunshine",
    "princess",
    "football",
    "baseball",
    "welcome1",
    "admin123",
    "letmein1",
    "trustno1",
    "passw0rd",
    "abc12345",
    "11111111",
    "00000000",
    "1q2w3e4r",
    "zaq12wsx",
    "monkey123",
    "dragon123",
    "starwars",
    "whatever",
    "changeme",
    "confab123",
    "secret123",
];

/// Why a password is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WeakPassword {
    /// Fewer than 8 characters.
    #[error("a password needs at least 8 characters")]
    TooShort,
    /// Over the protocol's limit.
    #[error("the password is too long")]
    TooLong,
    /// Too few different characters ("aaaaaaaa").
    #[error("the password repeats too few different characters")]
    Repetitive,
    /// Contains the username.
    #[error("the password must not contain the username")]
    ContainsUsername,
    /// On the list of the most common passwords.
    #[error("the password is one of the most common ones")]
    Common,
}

/// The server's password rule.
pub fn check_strength(user: &str, password: &str) -> Result<(), WeakPassword> {
    if password.chars().count() < 8 {
        return Err(WeakPassword::TooShort);
    }
    if password.len() > confab_protocol::limits::MAX_PASSWORD_BYTES {
        return Err(WeakPassword::TooLong);
    }
    let mut distinct: Vec<char> = password.chars().collect();
    distinct.sort_unstable();
    distinct.dedup();
    if distinct.len() < 4 {
        return Err(WeakPassword::Repetitive);
    }
    let lower = password.to_lowercase();
    if lower.contains(user) {
        return Err(WeakPassword::ContainsUsername);
    }
    if COMMON.contains(&lower.as_str()) {
        return Err(WeakPassword::Common);
    }
    Ok(())
}

/// What is throttled: an account, or a source address.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ThrottleKey {
    /// Failed logins for this username.
    Account(String),
    /// Failed logins from this address.
    Source(IpAddr),
}

#[derive(Debug, Clone, Copy)]
struct Failures {
    count: u32,
    locked_until: Instant,
    last: Instant,
}

/// Failed-login counters with growing back-off: after [`THROTTLE_FREE_FAILURES`] failures, each
/// further one doubles the wait (1 s, 2 s, 4 s, ... up to [`THROTTLE_MAX_LOCK`]). At most
/// [`MAX_THROTTLE_ENTRIES`] keys are tracked; the stalest are forgotten first.
#[derive(Debug, Default)]
pub struct Throttle {
    entries: HashMap<ThrottleKey, Failures>,
    /// Checks under way per key (bounded by the server's request cap).
    in_flight: HashMap<ThrottleKey, u32>,
}

/// How a password check ended, for [`Throttle::finish`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Checked {
    /// The password was right.
    Right,
    /// The password was wrong (or the user unknown).
    Wrong,
    /// It was never checked (the hasher was busy).
    Unchecked,
}

/// Checks under way at once for one account: a person logs in from a couple of devices at a
/// time; a burst of guesses gets this many, and the rest wait for the verdict on these.
pub const MAX_CHECKS_PER_ACCOUNT: u32 = 2;
/// Checks under way at once from one address (many people may share one address behind NAT).
pub const MAX_CHECKS_PER_SOURCE: u32 = 16;

impl Throttle {
    /// Starts a check for `keys` (an account, and maybe a source): refused with the time to wait
    /// while any key is locked by past failures or has too many checks under way already.
    pub fn try_begin(&mut self, keys: &[ThrottleKey], now: Instant) -> Result<(), Duration> {
        if let Some(wait) = keys.iter().filter_map(|k| self.wait(k, now)).max() {
            return Err(wait);
        }
        let full = keys.iter().any(|k| {
            let cap = match k {
                ThrottleKey::Account(_) => MAX_CHECKS_PER_ACCOUNT,
                ThrottleKey::Source(_) => MAX_CHECKS_PER_SOURCE,
            };
            self.in_flight.get(k).is_some_and(|n| *n >= cap)
        });
        if full {
            return Err(Duration::from_secs(1));
        }
        for k in keys {
            *self.in_flight.entry(k.clone()).or_default() += 1;
        }
        Ok(())
    }

    /// Ends a check started with [`Throttle::try_begin`].
    pub fn finish(&mut self, keys: &[ThrottleKey], checked: Checked, now: Instant) {
        for k in keys {
            if let Some(n) = self.in_flight.get_mut(k) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    self.in_flight.remove(k);
                }
            }
        }
        match checked {
            Checked::Wrong => {
                for k in keys {
                    self.failed(k.clone(), now);
                }
            }
            Checked::Right => {
                // The owner proved it; the address keeps its record (others may guess from it).
                if let Some(account) = keys.iter().find(|k| matches!(k, ThrottleKey::Account(_))) {
                    self.succeeded(account);
                }
            }
            Checked::Unchecked => {}
        }
    }

    /// How long `key` must still wait, if at all.
    pub fn wait(&self, key: &ThrottleKey, now: Instant) -> Option<Duration> {
        let f = self.entries.get(key)?;
        (f.locked_until > now).then(|| f.locked_until - now)
    }

    /// Records a failure.
    pub fn failed(&mut self, key: ThrottleKey, now: Instant) {
        if !self.entries.contains_key(&key) && self.entries.len() >= MAX_THROTTLE_ENTRIES {
            self.evict(now);
        }
        let f = self.entries.entry(key).or_insert(Failures {
            count: 0,
            locked_until: now,
            last: now,
        });
        f.count = f.count.saturating_add(1);
        f.last = now;
        if f.count > THROTTLE_FREE_FAILURES {
            let exp = (f.count - THROTTLE_FREE_FAILURES - 1).min(20);
            let lock = Duration::from_secs(1u64 << exp).min(THROTTLE_MAX_LOCK);
            f.locked_until = now + lock;
        }
    }

    /// Forgets the failures of `key` (after a successful login).
    pub fn succeeded(&mut self, key: &ThrottleKey) {
        self.entries.remove(key);
    }

    /// Keys tracked now.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether nothing is tracked.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn evict(&mut self, now: Instant) {
        // Unlocked entries first; if that frees nothing, the stalest half.
        self.entries.retain(|_, f| f.locked_until > now);
        if self.entries.len() >= MAX_THROTTLE_ENTRIES {
            let mut lasts: Vec<Instant> = self.entries.values().map(|f| f.last).collect();
            lasts.sort_unstable();
            let cut = lasts[lasts.len() / 2];
            self.entries.retain(|_, f| f.last > cut);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strength_rules() {
        assert_eq!(check_strength("ann", "short"), Err(WeakPassword::TooShort));
        assert_eq!(
            check_strength("ann", "aaaaaaaaaa"),
            Err(WeakPassword::Repetitive)
        );
        assert_eq!(
            check_strength("annabel", "xxannabelxx1"),
            Err(WeakPassword::ContainsUsername)
        );
        assert_eq!(
            check_strength("ann", "Password123"),
            Err(WeakPassword::Common)
        );
        assert_eq!(check_strength("ann", "correct horse battery"), Ok(()));
    }

    #[test]
    fn back_off_grows_and_memory_is_bounded() {
        let mut t = Throttle::default();
        let now = Instant::now();
        let key = ThrottleKey::Account("ann".into());
        for _ in 0..THROTTLE_FREE_FAILURES {
            t.failed(key.clone(), now);
        }
        assert_eq!(t.wait(&key, now), None);
        t.failed(key.clone(), now);
        assert_eq!(t.wait(&key, now), Some(Duration::from_secs(1)));
        t.failed(key.clone(), now);
        assert_eq!(t.wait(&key, now), Some(Duration::from_secs(2)));
        for _ in 0..40 {
            t.failed(key.clone(), now);
        }
        assert_eq!(t.wait(&key, now), Some(THROTTLE_MAX_LOCK));
        assert!(t.try_begin(std::slice::from_ref(&key), now).is_err());
        t.succeeded(&key);
        assert_eq!(t.wait(&key, now), None);
        for i in 0..(MAX_THROTTLE_ENTRIES + 10) {
            t.failed(
                ThrottleKey::Account(format!("u{i}")),
                now + Duration::from_nanos(i as u64),
            );
        }
        assert!(t.len() <= MAX_THROTTLE_ENTRIES);
    }

    #[test]
    fn checks_under_way_are_capped_per_key() {
        let mut t = Throttle::default();
        let now = Instant::now();
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let keys = [ThrottleKey::Account("ann".into()), ThrottleKey::Source(ip)];
        for _ in 0..MAX_CHECKS_PER_ACCOUNT {
            t.try_begin(&keys, now).unwrap();
        }
        assert_eq!(t.try_begin(&keys, now), Err(Duration::from_secs(1)));
        // Other accounts from the same address go on, up to the address's own cap.
        let other = [ThrottleKey::Account("ben".into()), ThrottleKey::Source(ip)];
        t.try_begin(&other, now).unwrap();
        t.finish(&keys, Checked::Right, now);
        t.finish(&keys, Checked::Wrong, now);
        t.finish(&other, Checked::Unchecked, now);
        assert!(t.in_flight.is_empty());
        assert_eq!(
            t.wait(&keys[0], now),
            None,
            "the right password cleared the account"
        );
        t.try_begin(&keys, now).unwrap();
    }

    #[tokio::test]
    async fn hashes_verify_with_the_real_parameters() {
        let hasher = Arc::new(Hasher::default());
        let phc = hasher.hash("correct horse battery".into()).await.unwrap();
        assert!(phc.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{phc}");
        assert!(
            hasher
                .verify("correct horse battery".into(), phc.clone())
                .await
                .unwrap()
        );
        assert!(!hasher.verify("wrong".into(), phc).await.unwrap());
        assert!(!hasher.verify("x".into(), "not a phc".into()).await.unwrap());
        // Hashes written by argon2's own PHC hasher (same algorithm and parameters) verify too.
        use argon2::password_hash::{PasswordHasher, SaltString};
        let salt = SaltString::generate(&mut OsRng);
        let standard = Argon2::new(Algorithm::Argon2id, Version::V0x13, params())
            .hash_password(b"another one", &salt)
            .unwrap()
            .to_string();
        assert!(
            hasher
                .verify("another one".into(), standard.clone())
                .await
                .unwrap()
        );
        assert!(!hasher.verify("another two".into(), standard).await.unwrap());
    }
}
