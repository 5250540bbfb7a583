//! Retry policy for box HTTP: which failures are worth another attempt
//! ([`Failure`]), how long to wait between attempts ([`RetryPolicy`]'s
//! capped exponential backoff), and when to give up ([`Retrier`]: after
//! `attempts` failures in a row that made no progress).

use std::time::Duration;

use crate::boxes::BoxError;

/// How often and how patiently to retry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in a row that make no progress before giving up.
    pub attempts: u32,
    pub base_delay: Duration,
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> RetryPolicy {
        RetryPolicy {
            attempts: 5,
            base_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(15),
        }
    }
}

impl RetryPolicy {
    fn delay(&self, failures: u32) -> Duration {
        let factor = 1u32 << failures.saturating_sub(1).min(16);
        (self.base_delay * factor).min(self.max_delay)
    }
}

pub(super) enum Failure {
    /// Worth another attempt; `progressed` when bytes arrived first.
    Transient {
        message: String,
        progressed: bool,
    },
    Fatal(BoxError),
}

/// Counts failures in a row and says how long to wait before the next attempt.
pub(super) struct Retrier<'p> {
    policy: &'p RetryPolicy,
    failures: u32,
    attempts: u32,
}

impl<'p> Retrier<'p> {
    pub(super) fn new(policy: &'p RetryPolicy) -> Retrier<'p> {
        Retrier {
            policy,
            failures: 0,
            attempts: 0,
        }
    }

    /// The delay before the next attempt, or `None` to give up. An attempt
    /// that made progress is retried at once and resets the count.
    pub(super) fn after_failure(&mut self, progressed: bool) -> Option<Duration> {
        self.attempts += 1;
        self.failures = if progressed { 0 } else { self.failures + 1 };
        if self.failures >= self.policy.attempts.max(1) || self.attempts >= 1000 {
            return None;
        }
        Some(if progressed {
            Duration::ZERO
        } else {
            self.policy.delay(self.failures)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_capped() {
        let p = RetryPolicy {
            attempts: 5,
            base_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(3),
        };
        assert_eq!(p.delay(1), Duration::from_millis(500));
        assert_eq!(p.delay(2), Duration::from_secs(1));
        assert_eq!(p.delay(3), Duration::from_secs(2));
        assert_eq!(p.delay(4), Duration::from_secs(3));
        assert_eq!(p.delay(40), Duration::from_secs(3));
    }
}
