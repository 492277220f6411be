//! How often a wait asks again: a first interval, growth by a factor up to a cap while nothing
//! changes, a reset to the first interval on change, and a back-off after a failed call.

use std::time::Duration;

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

    /// After a throttled or failed call: at least twice as long (and at least one more growth
    /// step), up to the cap, so a throttled operation slows down on its own.
    pub fn back_off(&mut self) -> Duration {
        self.current = self.grow(self.current).max(self.current * 2).min(self.cap);
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
        assert_eq!(c.back_off(), Duration::from_secs(4));
        assert_eq!(c.back_off(), Duration::from_secs(8));
        assert_eq!(c.back_off(), Duration::from_secs(10));
        c.reset();
        assert_eq!(c.current(), Duration::from_secs(2));
        let mut f = Cadence::fixed(Duration::from_secs(1));
        assert_eq!(f.next(false), Duration::from_secs(1));
        assert_eq!(f.back_off(), Duration::from_secs(1));
        let mut d = Cadence::new(Duration::from_secs(1), Duration::from_secs(8)).with_growth(2, 1);
        assert_eq!(d.next(false), Duration::from_secs(2));
    }
}
