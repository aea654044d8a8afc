//! Traffic figures for the dashboard: per-minute request counts, error counts and a latency
//! histogram for the last hour (for the rate and p95 chart), and the most recent error
//! answers. Pure bookkeeping behind a mutex; the caller supplies the clock so it can be
//! tested without waiting.

use std::collections::VecDeque;
use std::sync::Mutex;

use serde::Serialize;

/// Minutes kept (the chart shows the last hour).
pub const MINUTES: usize = 60;
/// Error answers kept.
pub const RECENT_ERRORS: usize = 50;

/// Upper bounds (milliseconds) of the latency histogram's buckets; one more bucket holds the rest.
const BOUNDS_MS: [f64; 24] = [
    0.5, 1.0, 2.0, 3.0, 5.0, 7.5, 10.0, 15.0, 20.0, 30.0, 50.0, 75.0, 100.0, 150.0, 200.0, 300.0,
    500.0, 750.0, 1000.0, 1500.0, 2000.0, 3000.0, 5000.0, 10000.0,
];

#[derive(Debug, Clone)]
struct Minute {
    /// Unix time of the minute's start, in minutes.
    minute: i64,
    requests: u64,
    errors: u64,
    histogram: [u32; BOUNDS_MS.len() + 1],
}

impl Minute {
    fn new(minute: i64) -> Self {
        Self {
            minute,
            requests: 0,
            errors: 0,
            histogram: [0; BOUNDS_MS.len() + 1],
        }
    }

    /// The 95th percentile as the upper bound of the bucket it falls in (the last, open
    /// bucket reports its lower bound).
    fn p95_ms(&self) -> Option<f64> {
        let total: u64 = self.histogram.iter().map(|&n| u64::from(n)).sum();
        if total == 0 {
            return None;
        }
        let rank = (total * 95).div_ceil(100);
        let mut seen = 0u64;
        for (i, &n) in self.histogram.iter().enumerate() {
            seen += u64::from(n);
            if seen >= rank {
                return Some(
                    BOUNDS_MS
                        .get(i)
                        .copied()
                        .unwrap_or(BOUNDS_MS[BOUNDS_MS.len() - 1]),
                );
            }
        }
        None
    }
}

/// One minute of the chart.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MinutePoint {
    /// RFC 3339 start of the minute.
    pub minute: String,
    pub requests: u64,
    pub errors: u64,
    pub p95_ms: Option<f64>,
}

/// One error answer, as the dashboard lists it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ErrorEntry {
    pub time: String,
    pub listener: &'static str,
    pub status: u16,
    pub method: String,
    pub path: String,
    pub message: String,
}

#[derive(Default)]
struct Inner {
    minutes: VecDeque<Minute>,
    errors: VecDeque<ErrorEntry>,
}

#[derive(Default)]
pub struct Traffic {
    inner: Mutex<Inner>,
}

impl std::fmt::Debug for Traffic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Traffic").finish_non_exhaustive()
    }
}

/// One finished request.
pub struct Sample<'a> {
    pub listener: &'static str,
    pub status: u16,
    pub method: &'a str,
    pub path: &'a str,
    pub elapsed_ms: f64,
    /// Why it failed (empty for a success).
    pub message: &'a str,
}

fn rfc3339(unix_seconds: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(unix_seconds)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}

/// Paths are cut to this many characters in the error list.
const PATH_CHARS: usize = 300;

impl Traffic {
    pub fn new() -> Self {
        Self::default()
    }

    /// Records a request that ended at `now` (unix seconds).
    pub fn record_at(&self, now: i64, s: &Sample<'_>) {
        let Ok(mut inner) = self.inner.lock() else {
            return;
        };
        let minute = now.div_euclid(60);
        if inner.minutes.back().is_none_or(|m| m.minute < minute) {
            inner.minutes.push_back(Minute::new(minute));
        }
        while inner
            .minutes
            .front()
            .is_some_and(|m| m.minute <= minute - MINUTES as i64)
        {
            inner.minutes.pop_front();
        }
        // A sample from a minute already passed (a clock step back) lands in the newest.
        let is_error = s.status >= 400 && s.status != 404;
        if let Some(m) = inner.minutes.back_mut() {
            m.requests += 1;
            if s.status >= 500 {
                m.errors += 1;
            }
            let bucket = BOUNDS_MS
                .iter()
                .position(|&b| s.elapsed_ms <= b)
                .unwrap_or(BOUNDS_MS.len());
            m.histogram[bucket] = m.histogram[bucket].saturating_add(1);
        }
        if is_error {
            inner.errors.push_front(ErrorEntry {
                time: rfc3339(now),
                listener: s.listener,
                status: s.status,
                method: s.method.to_owned(),
                path: s.path.chars().take(PATH_CHARS).collect(),
                message: s.message.chars().take(PATH_CHARS).collect(),
            });
            inner.errors.truncate(RECENT_ERRORS);
        }
    }

    pub fn record(&self, s: &Sample<'_>) {
        self.record_at(time::OffsetDateTime::now_utc().unix_timestamp(), s);
    }

    /// The last [`MINUTES`] minutes ending with the one holding `now`, oldest first, every
    /// minute present (zero when nothing happened).
    pub fn minutes_at(&self, now: i64) -> Vec<MinutePoint> {
        let current = now.div_euclid(60);
        let inner = self.inner.lock().ok();
        (current - MINUTES as i64 + 1..=current)
            .map(|minute| {
                let m = inner
                    .as_ref()
                    .and_then(|i| i.minutes.iter().find(|m| m.minute == minute));
                MinutePoint {
                    minute: rfc3339(minute * 60),
                    requests: m.map_or(0, |m| m.requests),
                    errors: m.map_or(0, |m| m.errors),
                    p95_ms: m.and_then(Minute::p95_ms),
                }
            })
            .collect()
    }

    pub fn minutes(&self) -> Vec<MinutePoint> {
        self.minutes_at(time::OffsetDateTime::now_utc().unix_timestamp())
    }

    /// The most recent error answers, newest first.
    pub fn errors(&self) -> Vec<ErrorEntry> {
        self.inner
            .lock()
            .map(|i| i.errors.iter().cloned().collect())
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(status: u16, ms: f64) -> Sample<'static> {
        Sample {
            listener: "images",
            status,
            method: "GET",
            path: "/x",
            elapsed_ms: ms,
            message: "boom",
        }
    }

    #[test]
    fn minutes_cover_the_last_hour_and_p95_follows_the_slow_tail() {
        let t = Traffic::new();
        let start = 1_700_000_000 - 1_700_000_000 % 60;
        // 100 requests in one minute: 94 fast, 6 slow. p95 is in the slow bucket.
        for i in 0..100 {
            t.record_at(start + 5, &sample(200, if i < 94 { 4.0 } else { 180.0 }));
        }
        // 20 fast ones two minutes later.
        for _ in 0..20 {
            t.record_at(start + 125, &sample(200, 0.8));
        }
        let pts = t.minutes_at(start + 130);
        assert_eq!(pts.len(), MINUTES);
        let last = &pts[MINUTES - 1];
        assert_eq!((last.requests, last.p95_ms), (20, Some(1.0)));
        assert_eq!(pts[MINUTES - 2].requests, 0);
        assert_eq!(pts[MINUTES - 2].p95_ms, None);
        assert_eq!(pts[MINUTES - 3].requests, 100);
        assert_eq!(pts[MINUTES - 3].p95_ms, Some(200.0));
        // With only 5 slow ones, p95 stays in the fast bucket.
        let t2 = Traffic::new();
        for i in 0..100 {
            t2.record_at(start, &sample(200, if i < 95 { 4.0 } else { 180.0 }));
        }
        assert_eq!(t2.minutes_at(start)[MINUTES - 1].p95_ms, Some(5.0));
        // An hour later, the old minutes are gone.
        t.record_at(start + 3600 + 180, &sample(200, 1.0));
        let later = t.minutes_at(start + 3600 + 180);
        assert_eq!(later.iter().map(|p| p.requests).sum::<u64>(), 1);
        assert!(
            t.inner.lock().unwrap().minutes.len() <= MINUTES,
            "old minutes are dropped"
        );
    }

    #[test]
    fn errors_are_newest_first_bounded_and_skip_404() {
        let t = Traffic::new();
        t.record_at(60, &sample(404, 1.0));
        t.record_at(60, &sample(200, 1.0));
        assert!(t.errors().is_empty());
        for i in 0..(RECENT_ERRORS + 10) {
            t.record_at(
                60 + i as i64,
                &sample(if i % 2 == 0 { 500 } else { 422 }, 1.0),
            );
        }
        let errs = t.errors();
        assert_eq!(errs.len(), RECENT_ERRORS);
        assert_eq!(errs[0].time, rfc3339(60 + RECENT_ERRORS as i64 + 9));
        assert_eq!(t.minutes_at(120)[MINUTES - 2].errors, 30);
    }
}
