//! When a connector dials again: full-jitter exponential backoff (cloudflared's
//! `retry/backoffhandler.go`, AWS's "Exponential Backoff and Jitter"), capped, and reset once
//! a connection has stayed up for a stable period. Pure: the random draw is passed in.
//!
//! What must stay true: no wait exceeds the cap; a connection that lived past `stable`
//! makes the next wait short again; one that died at once keeps the waits growing, so an
//! edge that refuses us is not hammered.

use std::time::Duration;

#[derive(Debug, Clone)]
pub struct Backoff {
    base: Duration,
    cap: Duration,
    stable: Duration,
    attempt: u32,
}

impl Backoff {
    pub fn new(base: Duration, cap: Duration, stable: Duration) -> Self {
        Self {
            base,
            cap: cap.max(base),
            stable,
            attempt: 0,
        }
    }

    /// The next wait for a draw `r` in [0, 1): uniform in [0, min(cap, base * 2^attempt)].
    pub fn next_delay(&mut self, r: f64) -> Duration {
        let ceiling = self
            .base
            .checked_mul(1u32 << self.attempt.min(20))
            .unwrap_or(self.cap)
            .min(self.cap);
        self.attempt = self.attempt.saturating_add(1);
        ceiling.mul_f64(r.clamp(0.0, 1.0))
    }

    /// A connection ended after `lived`: reset when it was stable.
    pub fn ended_after(&mut self, lived: Duration) {
        if lived >= self.stable {
            self.attempt = 0;
        }
    }

    pub fn attempt(&self) -> u32 {
        self.attempt
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b() -> Backoff {
        Backoff::new(
            Duration::from_millis(500),
            Duration::from_secs(60),
            Duration::from_secs(30),
        )
    }

    #[test]
    fn grows_then_caps() {
        let mut b = b();
        let ceilings: Vec<_> = (0..12).map(|_| b.next_delay(1.0)).collect();
        assert_eq!(ceilings[0], Duration::from_millis(500));
        assert_eq!(ceilings[1], Duration::from_secs(1));
        assert_eq!(ceilings[3], Duration::from_secs(4));
        assert!(ceilings.iter().all(|d| *d <= Duration::from_secs(60)));
        assert_eq!(ceilings[11], Duration::from_secs(60));
        for _ in 0..100 {
            assert!(b.next_delay(0.999) <= Duration::from_secs(60));
        }
    }

    #[test]
    fn full_jitter_spans_zero_to_ceiling() {
        let mut b = b();
        assert_eq!(b.next_delay(0.0), Duration::ZERO);
        assert_eq!(b.next_delay(0.5), Duration::from_millis(500));
    }

    #[test]
    fn a_stable_connection_resets_a_flapping_one_does_not() {
        let mut b = b();
        for _ in 0..6 {
            b.next_delay(1.0);
        }
        b.ended_after(Duration::from_secs(1));
        assert_eq!(b.attempt(), 6);
        assert!(b.next_delay(1.0) > Duration::from_secs(10));
        b.ended_after(Duration::from_secs(31));
        assert_eq!(b.next_delay(1.0), Duration::from_millis(500));
    }
}
