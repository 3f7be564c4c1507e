//! A registration flood: an agent identity (a leaked certificate, or a broken agent in a
//! restart loop) opening streams faster than any backoff would. Each identity gets a
//! small burst, refilled slowly; beyond it serve refuses at once, before any work, and
//! records only the first refusal of each flood and, when it ends, how many it refused.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Streams one identity may open at once: a restart and a few quick retries.
pub const BURST: u32 = 5;
/// One more stream allowed per this much time; an agent's backoff is far slower.
pub const REFILL_EVERY: Duration = Duration::from_secs(2);
/// Identities remembered: then full buckets are forgotten, and if that is not enough,
/// all (a flood then gets a fresh burst, once per this many identities).
const REMEMBERED: usize = 100_000;

#[derive(Debug, PartialEq, Eq)]
pub enum Admit {
    /// Allowed; `refused` streams were refused since the last one allowed.
    Yes { refused: u64 },
    /// Refused; `first` says whether it is the first of this flood (record it).
    No { first: bool },
}

#[derive(Default)]
pub struct AttachLimiter {
    buckets: Mutex<HashMap<String, Bucket>>,
}

struct Bucket {
    tokens: f64,
    at: Instant,
    refused: u64,
}

impl AttachLimiter {
    pub fn admit(&self, who: &str, now: Instant) -> Admit {
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        if buckets.len() >= REMEMBERED && !buckets.contains_key(who) {
            buckets.retain(|_, bucket| bucket.refill(now) < f64::from(BURST));
            if buckets.len() >= REMEMBERED {
                buckets.clear();
            }
        }
        let bucket = buckets.entry(who.to_string()).or_insert(Bucket {
            tokens: f64::from(BURST),
            at: now,
            refused: 0,
        });
        if bucket.refill(now) >= 1.0 {
            bucket.tokens -= 1.0;
            Admit::Yes {
                refused: std::mem::take(&mut bucket.refused),
            }
        } else {
            bucket.refused += 1;
            Admit::No {
                first: bucket.refused == 1,
            }
        }
    }
}

impl Bucket {
    /// Adds what time earned since the last look; returns the tokens now.
    fn refill(&mut self, now: Instant) -> f64 {
        let earned =
            now.saturating_duration_since(self.at).as_secs_f64() / REFILL_EVERY.as_secs_f64();
        self.tokens = (self.tokens + earned).min(f64::from(BURST));
        self.at = now;
        self.tokens
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_is_allowed_a_flood_refused_and_counted_and_others_untouched() {
        let limiter = AttachLimiter::default();
        let start = Instant::now();
        for _ in 0..BURST {
            assert_eq!(
                limiter.admit("agent web-1", start),
                Admit::Yes { refused: 0 }
            );
        }
        assert_eq!(
            limiter.admit("agent web-1", start),
            Admit::No { first: true }
        );
        for _ in 0..99 {
            assert_eq!(
                limiter.admit("agent web-1", start),
                Admit::No { first: false }
            );
        }
        // Another identity is not affected by the flood.
        assert_eq!(
            limiter.admit("agent web-2", start),
            Admit::Yes { refused: 0 }
        );
        // After one refill period the flooder gets one stream, told how many were refused.
        let later = start + REFILL_EVERY;
        assert_eq!(
            limiter.admit("agent web-1", later),
            Admit::Yes { refused: 100 }
        );
        assert_eq!(
            limiter.admit("agent web-1", later),
            Admit::No { first: true }
        );
    }

    #[test]
    fn memory_stays_bounded_under_many_identities() {
        let limiter = AttachLimiter::default();
        let start = Instant::now();
        for n in 0..REMEMBERED * 2 {
            limiter.admit(&format!("agent a-{n}"), start);
        }
        assert!(limiter.buckets.lock().unwrap().len() <= REMEMBERED);
    }
}
