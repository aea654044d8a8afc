//! Rate-limited warnings: a condition that can repeat on every request (a failing cache
//! write, a full eager queue) is logged at most once per period, and the next warning says
//! how many occurrences were left out in between, so no count is lost and no log floods.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Lets one occurrence through per `period` and counts the rest.
#[derive(Debug)]
pub struct Throttle {
    period: Duration,
    /// When the last occurrence was let through, and how many were held back since.
    state: Mutex<(Option<Instant>, u64)>,
}

impl Throttle {
    pub fn new(period: Duration) -> Self {
        Self {
            period,
            state: Mutex::new((None, 0)),
        }
    }

    /// Records an occurrence now. `Some(n)`: log it, mentioning the `n` occurrences held back
    /// since the last one logged; `None`: it was counted, stay quiet.
    pub fn allow(&self) -> Option<u64> {
        self.allow_at(Instant::now())
    }

    fn allow_at(&self, now: Instant) -> Option<u64> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let (last, held) = &mut *state;
        match last {
            Some(t) if now.saturating_duration_since(*t) < self.period => {
                *held += 1;
                None
            }
            _ => {
                *last = Some(now);
                Some(std::mem::take(held))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_per_period_with_the_count_of_the_rest() {
        let t = Throttle::new(Duration::from_secs(60));
        let t0 = Instant::now();
        assert_eq!(t.allow_at(t0), Some(0));
        for s in 1..=5 {
            assert_eq!(t.allow_at(t0 + Duration::from_secs(s)), None);
        }
        assert_eq!(t.allow_at(t0 + Duration::from_secs(59)), None);
        assert_eq!(t.allow_at(t0 + Duration::from_secs(60)), Some(6));
        assert_eq!(t.allow_at(t0 + Duration::from_secs(61)), None);
        assert_eq!(t.allow_at(t0 + Duration::from_secs(200)), Some(1));
    }
}
