//! How often a wait asks again: a first interval, growth by a factor up to a cap while nothing
//! changes and a reset to the first interval on change ([`Cadence`]); and, apart from it, how
//! soon a failed call is tried again ([`RetryDelays`]).

use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBackoff, ExponentialBuilder};

/// The interval between two calls of one operation in a wait.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cadence {
    first: Duration,
    cap: Duration,
    /// Growth factor as a fraction, so intervals stay exact.
    num: u32,
    den: u32,
    current: Duration,
}

impl Cadence {
    /// Starts at `first`, grows by 1.5x while nothing changes, never beyond `cap`.
    pub fn new(first: Duration, cap: Duration) -> Cadence {
        let cap = cap.max(first);
        Cadence {
            first,
            cap,
            num: 3,
            den: 2,
            current: first,
        }
    }

    /// Grows by `num/den` instead of 1.5 (a factor below 1 is taken as 1).
    pub fn with_growth(mut self, num: u32, den: u32) -> Cadence {
        self.num = num.max(den).max(1);
        self.den = den.max(1);
        self
    }

    /// A cadence that never changes.
    pub fn fixed(every: Duration) -> Cadence {
        Cadence::new(every, every)
    }

    /// The interval to wait now.
    pub fn current(&self) -> Duration {
        self.current
    }

    /// The longest interval.
    pub fn cap(&self) -> Duration {
        self.cap
    }

    /// After a successful call: back to the first interval when something changed, else one
    /// step slower. Returns the interval to wait.
    pub fn next(&mut self, changed: bool) -> Duration {
        self.current = if changed {
            self.first
        } else {
            self.grow(self.current)
        };
        self.current
    }

    /// Back to the first interval.
    pub fn reset(&mut self) {
        self.current = self.first;
    }

    fn grow(&self, d: Duration) -> Duration {
        (d * self.num / self.den).min(self.cap)
    }
}

/// Delays before retrying a failed status call: exponential from [`RetryDelays::FIRST`] up to
/// [`RetryDelays::CAP`], each with random jitter of up to its own length, restarting after a
/// success.
///
/// Kept apart from the [`Cadence`] on purpose: a burst of throttling must neither leave the
/// status cadence at its cap once the burst is over (the end of a job would be noticed up to a
/// whole cap late) nor retry in step with every other throttled job of the account.
#[derive(Debug)]
pub struct RetryDelays {
    delays: ExponentialBackoff,
}

impl RetryDelays {
    /// The delay after the first failure (before jitter).
    pub const FIRST: Duration = Duration::from_millis(500);
    /// The longest delay (before jitter); with jitter a delay stays below twice this.
    pub const CAP: Duration = Duration::from_secs(8);

    /// A fresh schedule.
    pub fn new() -> RetryDelays {
        RetryDelays {
            delays: ExponentialBuilder::new()
                .with_min_delay(Self::FIRST)
                .with_max_delay(Self::CAP)
                .with_factor(2.0)
                .with_jitter()
                .without_max_times()
                .build(),
        }
    }

    /// The delay before the next try after one more consecutive failure.
    pub fn after_failure(&mut self) -> Duration {
        // Without a limit on times the schedule never ends; the cap is the fallback all the same.
        self.delays.next().unwrap_or(Self::CAP)
    }

    /// After a success: the next failure starts the schedule over.
    pub fn reset(&mut self) {
        *self = RetryDelays::new();
    }
}

impl Default for RetryDelays {
    fn default() -> Self {
        RetryDelays::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_to_the_cap_and_resets_on_change() {
        let mut c = Cadence::new(Duration::from_secs(2), Duration::from_secs(10));
        assert_eq!(c.current(), Duration::from_secs(2));
        assert_eq!(c.next(false), Duration::from_secs(3));
        assert_eq!(c.next(false), Duration::from_millis(4500));
        assert_eq!(c.next(false), Duration::from_millis(6750));
        assert_eq!(c.next(false), Duration::from_secs(10));
        assert_eq!(c.next(false), Duration::from_secs(10));
        assert_eq!(c.next(true), Duration::from_secs(2));
        c.reset();
        assert_eq!(c.current(), Duration::from_secs(2));
        let mut f = Cadence::fixed(Duration::from_secs(1));
        assert_eq!(f.next(false), Duration::from_secs(1));
        let mut d = Cadence::new(Duration::from_secs(1), Duration::from_secs(8)).with_growth(2, 1);
        assert_eq!(d.next(false), Duration::from_secs(2));
    }

    #[test]
    fn retry_delays_double_with_jitter_up_to_the_cap_and_restart_after_a_success() {
        for _ in 0..50 {
            let mut r = RetryDelays::new();
            let mut base = RetryDelays::FIRST;
            for _ in 0..8 {
                let d = r.after_failure();
                assert!(
                    d >= base && d < base * 2,
                    "{d:?} outside [{base:?}, {:?})",
                    base * 2
                );
                base = (base * 2).min(RetryDelays::CAP);
            }
            r.reset();
            let d = r.after_failure();
            assert!(d < RetryDelays::FIRST * 2, "{d:?} after a reset");
        }
    }

    #[test]
    fn retry_delays_of_two_waiters_do_not_move_in_step() {
        let a: Vec<Duration> = {
            let mut r = RetryDelays::new();
            (0..6).map(|_| r.after_failure()).collect()
        };
        let b: Vec<Duration> = {
            let mut r = RetryDelays::new();
            (0..6).map(|_| r.after_failure()).collect()
        };
        assert_ne!(a, b);
    }
}
