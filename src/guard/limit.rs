//! The two counters: a token bucket per rule (`rate_limit`) and a sliding window of
//! deprovisionings per tenant (`max_deprovisions` in `deprovision_window`). Pure: the caller
//! passes `now`, so tests need no sleeps and a reload can change the limits under kept state.

use std::collections::VecDeque;
use std::fmt;
use std::str::FromStr;
use std::time::{Duration, Instant};

/// Largest rate accepted: above it the limit is no guardrail, and the interval stays ≥ 1 µs.
const MAX_RATE: u32 = 1_000_000;

/// `rate_limit = "25/s"` or `"600/m"`: requests per second or per minute.
///
/// Burst: the bucket holds a quarter of a second's worth of the rate, at least one request
/// (`25/s` → 7, `600/m` → 3, `60/m` → 1). Small enough that a client flooding from an idle
/// start stays within a few percent of the rate over seconds, large enough for a client's
/// handful of parallel requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    count: u32,
    per_minute: bool,
}

impl Rate {
    /// Time between two requests at the sustained rate.
    pub fn interval(&self) -> Duration {
        let period = Duration::from_secs(if self.per_minute { 60 } else { 1 });
        period / self.count
    }

    /// Requests that may arrive at once after an idle spell.
    pub fn burst(&self) -> u32 {
        let quarters = if self.per_minute { 240 } else { 4 };
        self.count.div_ceil(quarters).max(1)
    }
}

impl FromStr for Rate {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let bad = || format!("{text:?} is not a rate; use e.g. \"25/s\" or \"600/m\"");
        let (count, unit) = text.split_once('/').ok_or_else(bad)?;
        let per_minute = match unit {
            "s" => false,
            "m" => true,
            _ => return Err(bad()),
        };
        if count.is_empty() || !count.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        match count.parse::<u32>() {
            Ok(0) => Err(format!("{text:?}: the rate must be at least 1")),
            Ok(n) if n <= MAX_RATE => Ok(Self {
                count: n,
                per_minute,
            }),
            _ => Err(format!("{text:?}: at most {MAX_RATE} requests per unit")),
        }
    }
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}/{}",
            self.count,
            if self.per_minute { "m" } else { "s" }
        )
    }
}

/// A token bucket as a theoretical arrival time (GCRA): exact, one `Instant` of state.
#[derive(Debug, Clone)]
pub(crate) struct Bucket {
    tat: Instant,
}

impl Bucket {
    pub(crate) fn new(now: Instant) -> Self {
        Self { tat: now }
    }

    /// Takes one token, or says how long until one is free. The rate is the current config's,
    /// so a reload applies at once.
    pub(crate) fn take(&mut self, rate: &Rate, now: Instant) -> Result<(), Duration> {
        let interval = rate.interval();
        let tolerance = interval * (rate.burst() - 1);
        let tat = self.tat.max(now);
        let ahead = tat - now;
        if ahead > tolerance {
            return Err(ahead - tolerance);
        }
        self.tat = tat + interval;
        Ok(())
    }
}

/// Deprovisionings recorded in a sliding window: one entry per admitted request (`(when, n)`),
/// so its length is bounded by the limit.
#[derive(Debug, Default)]
pub(crate) struct Window {
    events: VecDeque<(Instant, u32)>,
    total: u32,
}

/// Why a window refused a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Full {
    /// Enough capacity frees after this long.
    Wait(Duration),
    /// The request alone carries more than the limit: it never fits.
    Never,
}

impl Window {
    fn expire(&mut self, window: Duration, now: Instant) {
        while let Some(&(at, n)) = self.events.front() {
            if now.saturating_duration_since(at) < window {
                break;
            }
            self.events.pop_front();
            self.total -= n;
        }
    }

    /// Counted deprovisionings within `window` of `now`.
    pub(crate) fn used(&mut self, window: Duration, now: Instant) -> u32 {
        self.expire(window, now);
        self.total
    }

    /// Records `n` deprovisionings if all fit under `limit` (then returns the new total), or
    /// none of them.
    pub(crate) fn admit(
        &mut self,
        n: u32,
        limit: u32,
        window: Duration,
        now: Instant,
    ) -> Result<u32, Full> {
        if n > limit {
            return Err(Full::Never);
        }
        self.expire(window, now);
        let total = self.total.saturating_add(n);
        if total <= limit {
            self.events.push_back((now, n));
            self.total = total;
            return Ok(total);
        }
        let mut freed = 0u32;
        let needed = total - limit;
        for &(at, count) in &self.events {
            freed += count;
            if freed >= needed {
                return Err(Full::Wait((at + window).saturating_duration_since(now)));
            }
        }
        // Unreachable while total counts the events; waiting a whole window is always enough.
        Err(Full::Wait(window))
    }
}

/// Whole seconds for `Retry-After` (RFC 9110 §10.2.3): rounded up, at least 1.
pub(crate) fn retry_after(wait: Duration) -> u64 {
    let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    secs.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn rates_and_bursts() {
        for (text, interval, burst) in [
            ("25/s", S / 25, 7),
            ("1/s", S, 1),
            ("4/s", S / 4, 1),
            ("5/s", S / 5, 2),
            ("600/m", S / 10, 3),
            ("60/m", S, 1),
            ("1/m", 60 * S, 1),
            ("1000000/s", Duration::from_micros(1), 250_000),
        ] {
            let rate: Rate = text.parse().unwrap();
            assert_eq!((rate.interval(), rate.burst()), (interval, burst), "{text}");
            assert_eq!(rate.to_string(), text);
        }
        for bad in [
            "",
            "25",
            "25/",
            "/s",
            "0/s",
            "25/h",
            "25/S",
            "25 /s",
            "+25/s",
            "-1/s",
            "2.5/s",
            "25/sec",
            "1000001/s",
            "99999999999/s",
        ] {
            assert!(bad.parse::<Rate>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn bucket_allows_burst_then_the_rate() {
        let rate: Rate = "25/s".parse().unwrap();
        let t0 = Instant::now();
        let mut bucket = Bucket::new(t0);
        for _ in 0..7 {
            assert_eq!(bucket.take(&rate, t0), Ok(()));
        }
        assert_eq!(bucket.take(&rate, t0), Err(S / 25));
        assert_eq!(bucket.take(&rate, t0 + S / 25), Ok(()));
        // Flooding for 5 s passes the rate plus the burst: within 10 % of 125.
        let mut passed = 0;
        let mut bucket = Bucket::new(t0);
        for ms in 0..5000u64 {
            let now = t0 + Duration::from_millis(ms);
            while bucket.take(&rate, now).is_ok() {
                passed += 1;
            }
        }
        assert!((125..=125 + 7).contains(&passed), "{passed}");
        // A lower rate after a reload applies to the kept state at once.
        let slow: Rate = "1/m".parse().unwrap();
        let later = t0 + 10 * S;
        assert_eq!(bucket.take(&slow, later), Ok(()));
        assert_eq!(bucket.take(&slow, later), Err(60 * S));
    }

    #[test]
    fn window_is_all_or_nothing_with_retry_after() {
        let w = Duration::from_secs(3600);
        let t0 = Instant::now();
        let mut win = Window::default();
        assert_eq!(win.admit(3, 5, w, t0), Ok(3));
        assert_eq!(win.admit(1, 5, w, t0 + 10 * S), Ok(4));
        // Two do not fit: nothing recorded; room for two once the first batch leaves.
        assert_eq!(win.admit(2, 5, w, t0 + 20 * S), Err(Full::Wait(w - 20 * S)));
        assert_eq!(win.used(w, t0 + 20 * S), 4);
        assert_eq!(win.admit(1, 5, w, t0 + 20 * S), Ok(5));
        assert_eq!(win.admit(1, 5, w, t0 + 30 * S), Err(Full::Wait(w - 30 * S)));
        assert_eq!(win.admit(6, 5, w, t0), Err(Full::Never));
        // After the window, the first batch no longer counts.
        assert_eq!(win.admit(3, 5, w, t0 + w), Ok(5));
        // A raised limit applies to the kept counts; a lowered one refuses until they expire.
        assert_eq!(win.admit(1, 10, w, t0 + w), Ok(6));
        assert_eq!(win.admit(1, 6, w, t0 + w), Err(Full::Wait(10 * S)));
        assert_eq!(retry_after(Duration::from_millis(10_001)), 11);
        assert_eq!(retry_after(Duration::ZERO), 1);
    }
}
