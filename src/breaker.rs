//! A circuit breaker: Closed → Open after `threshold` consecutive failures, or when the
//! error rate over a window passes its limit (with enough calls to judge); Open →
//! HalfOpen once the cool-down has passed, letting exactly one probe through; the probe's
//! success closes it, its failure opens it again. Callers report only server-side
//! failures (connect errors, resets, timeouts), never error replies such as WRONGTYPE.
//! Time is `tokio::time`, so tests can pause and advance it.

use std::sync::atomic::{AtomicU8, AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

/// The breaker's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Requests flow.
    Closed,
    /// Requests fail fast until the cool-down ends.
    Open,
    /// One probe is in flight.
    HalfOpen,
}

impl State {
    /// Lower-case name for INFO and logs.
    pub fn name(self) -> &'static str {
        match self {
            State::Closed => "closed",
            State::Open => "open",
            State::HalfOpen => "half_open",
        }
    }

    fn from_u8(v: u8) -> State {
        match v {
            1 => State::Open,
            2 => State::HalfOpen,
            _ => State::Closed,
        }
    }
}

/// The error-rate trigger: open when at least `min_calls` outcomes in the current
/// `window` were seen and the share of failures among them reaches `max_rate`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ErrorRate {
    /// Failure share that opens the breaker, 0 < rate ≤ 1.
    pub max_rate: f64,
    /// Length of a counting window.
    pub window: Duration,
    /// Outcomes needed in a window before the rate counts.
    pub min_calls: u32,
}

/// One breaker.
#[derive(Debug)]
pub struct Breaker {
    rate: Option<ErrorRate>,
    /// Start of the current counting window, in ms after `epoch`.
    window_start_ms: AtomicU64,
    window_ok: AtomicU32,
    window_failed: AtomicU32,
    name: &'static str,
    threshold: u32,
    cooldown: Duration,
    state: AtomicU8,
    failures: AtomicU32,
    /// Milliseconds after `epoch` at which the breaker last opened.
    opened_at_ms: AtomicU64,
    epoch: Instant,
    /// Times it opened, for INFO and metrics.
    opens: AtomicU64,
}

impl Breaker {
    /// A closed breaker.
    pub fn new(name: &'static str, threshold: u32, cooldown: Duration) -> Breaker {
        Self::with_rate(name, threshold, cooldown, None)
    }

    /// A closed breaker that also opens on an error rate.
    pub fn with_rate(
        name: &'static str,
        threshold: u32,
        cooldown: Duration,
        rate: Option<ErrorRate>,
    ) -> Breaker {
        Breaker {
            rate,
            window_start_ms: AtomicU64::new(0),
            window_ok: AtomicU32::new(0),
            window_failed: AtomicU32::new(0),
            name,
            threshold: threshold.max(1),
            cooldown,
            state: AtomicU8::new(0),
            failures: AtomicU32::new(0),
            opened_at_ms: AtomicU64::new(0),
            epoch: Instant::now(),
            opens: AtomicU64::new(0),
        }
    }

    /// The current state.
    pub fn state(&self) -> State {
        State::from_u8(self.state.load(Ordering::Acquire))
    }

    /// True while requests should not be attempted (Open within cool-down, or HalfOpen
    /// with its probe out). Does not claim the probe; see `try_probe`.
    pub fn is_blocking(&self) -> bool {
        match self.state() {
            State::Closed => false,
            State::HalfOpen => true,
            State::Open => !self.cooldown_over(),
        }
    }

    /// True only while requests flow. Open (even past its cool-down) and HalfOpen send
    /// nothing: the connection supervisors probe, so a request never waits on a server
    /// that has not answered since the breaker opened.
    pub fn is_closed(&self) -> bool {
        self.state() == State::Closed
    }

    /// Whether the caller may try the server now. Closed: yes. Open past its cool-down:
    /// yes for exactly one caller, which becomes the probe. Otherwise no.
    pub fn try_probe(&self) -> bool {
        match self.state() {
            State::Closed => true,
            State::HalfOpen => false,
            State::Open if !self.cooldown_over() => false,
            State::Open => {
                let won = self.state.compare_exchange(1, 2, Ordering::AcqRel, Ordering::Acquire).is_ok();
                if won {
                    tracing::info!(breaker = self.name, "circuit half-open: probing");
                }
                won
            }
        }
    }

    /// A request or probe succeeded.
    pub fn success(&self) {
        self.roll_window();
        self.window_ok.fetch_add(1, Ordering::Relaxed);
        self.failures.store(0, Ordering::Relaxed);
        let previous = State::from_u8(self.state.swap(0, Ordering::AcqRel));
        if previous != State::Closed {
            tracing::info!(breaker = self.name, "circuit closed: server reachable again");
        }
    }

    /// A server-side failure.
    pub fn failure(&self) {
        self.roll_window();
        self.window_failed.fetch_add(1, Ordering::Relaxed);
        let failures = self.failures.fetch_add(1, Ordering::Relaxed).saturating_add(1);
        let state = self.state();
        let tripped = failures >= self.threshold || self.rate_exceeded();
        if state == State::HalfOpen || (state == State::Closed && tripped) {
            self.opened_at_ms.store(self.now_ms(), Ordering::Relaxed);
            let previous = State::from_u8(self.state.swap(1, Ordering::AcqRel));
            if previous == State::Closed {
                self.opens.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(breaker = self.name, failures, "circuit open: failing fast");
            } else if previous == State::HalfOpen {
                tracing::warn!(breaker = self.name, "circuit open again: the probe failed");
            }
        }
    }

    /// Times the breaker went from closed to open.
    pub fn opens(&self) -> u64 {
        self.opens.load(Ordering::Relaxed)
    }

    /// Starts a new counting window once the current one is over.
    fn roll_window(&self) {
        let Some(rate) = self.rate else { return };
        let now = self.now_ms();
        let start = self.window_start_ms.load(Ordering::Relaxed);
        if now.saturating_sub(start) >= rate.window.as_millis() as u64
            && self.window_start_ms.compare_exchange(start, now, Ordering::AcqRel, Ordering::Relaxed).is_ok()
        {
            self.window_ok.store(0, Ordering::Relaxed);
            self.window_failed.store(0, Ordering::Relaxed);
        }
    }

    fn rate_exceeded(&self) -> bool {
        let Some(rate) = self.rate else { return false };
        let failed = self.window_failed.load(Ordering::Relaxed);
        let total = failed + self.window_ok.load(Ordering::Relaxed);
        total >= rate.min_calls && f64::from(failed) >= rate.max_rate * f64::from(total)
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    fn cooldown_over(&self) -> bool {
        self.now_ms().saturating_sub(self.opened_at_ms.load(Ordering::Relaxed))
            >= self.cooldown.as_millis() as u64
    }
}

/// `[breaker]`
#[derive(Debug, Clone)]
pub struct BreakerConfig {
    /// Consecutive failures that open the breaker.
    pub failure_threshold: u32,
    /// Open for this long before one probe is allowed.
    pub cooldown: Duration,
    /// Failure share over a window that opens the breaker; `None` turns the rule off.
    pub error_rate: Option<f64>,
    /// Length of the error-rate window.
    pub window: Duration,
    /// Outcomes needed in a window before the rate counts.
    pub min_calls: u32,
}

impl BreakerConfig {
    /// The error-rate rule for `crate::breaker`, if on.
    pub fn rate(&self) -> Option<ErrorRate> {
        self.error_rate.map(|max_rate| ErrorRate { max_rate, window: self.window, min_calls: self.min_calls })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn opens_after_threshold_probes_once_and_closes() {
        let b = Breaker::new("test", 3, Duration::from_secs(1));
        b.failure();
        b.failure();
        assert_eq!(b.state(), State::Closed);
        b.failure();
        assert_eq!(b.state(), State::Open);
        assert!(b.is_blocking());
        assert!(!b.try_probe());
        tokio::time::advance(Duration::from_millis(1001)).await;
        assert!(b.try_probe(), "first caller after the cool-down probes");
        assert!(!b.try_probe(), "only one probe");
        assert_eq!(b.state(), State::HalfOpen);
        b.failure();
        assert_eq!(b.state(), State::Open, "a failed probe reopens");
        tokio::time::advance(Duration::from_millis(1001)).await;
        assert!(b.try_probe());
        b.success();
        assert_eq!(b.state(), State::Closed);
        assert_eq!(b.opens(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn an_error_rate_over_the_window_opens_it() {
        let rate = ErrorRate { max_rate: 0.5, window: Duration::from_secs(10), min_calls: 10 };
        let b = Breaker::with_rate("test", 100, Duration::from_secs(1), Some(rate));
        for _ in 0..4 {
            b.success();
            b.failure();
        }
        assert_eq!(b.state(), State::Closed, "8 calls: too few to judge");
        b.success();
        b.failure();
        assert_eq!(b.state(), State::Open, "5 of 10 failed, never 100 in a row");
        let fresh = Breaker::with_rate("test", 100, Duration::from_secs(1), Some(rate));
        for _ in 0..9 {
            fresh.success();
        }
        tokio::time::advance(Duration::from_secs(11)).await;
        for _ in 0..4 {
            fresh.failure();
            fresh.success();
        }
        assert_eq!(fresh.state(), State::Closed, "old successes left with their window");
    }

    #[tokio::test(start_paused = true)]
    async fn a_success_resets_the_count() {
        let b = Breaker::new("test", 2, Duration::from_secs(1));
        b.failure();
        b.success();
        b.failure();
        assert_eq!(b.state(), State::Closed);
    }
}
