//! Polling: [`wait_until`] asks a condition again and again, at a steady
//! interval, until it holds, fails, the deadline passes or (when asked to)
//! the run is cancelled by Ctrl-C (see [`crate::machine::cancel`]). Every
//! "sleep and look again" loop in the crate goes through it: SSH readiness,
//! halt waiting for shutoff, daemons starting and stopping, the probe guest,
//! port forwarders.

use std::time::{Duration, Instant};

use crate::machine::cancel;

/// Why [`wait_until`] stopped without the condition holding.
#[derive(Debug, PartialEq, Eq)]
pub enum PollError<E> {
    /// The deadline passed.
    TimedOut,
    /// Ctrl-C (only for a cancellable wait).
    Cancelled,
    /// The condition itself failed; waiting longer would not help.
    Failed(E),
}

/// How to poll: every `interval` (measured from the start of one attempt to
/// the start of the next) until `deadline`.
#[derive(Debug, Clone, Copy)]
pub struct Poll {
    pub interval: Duration,
    pub deadline: Instant,
    /// Stop with [`PollError::Cancelled`] once the run is cancelled.
    pub cancellable: bool,
}

impl Poll {
    /// Polls every `interval` for at most `timeout` from now; not cancellable.
    pub fn every(interval: Duration, timeout: Duration) -> Poll {
        Poll::until(interval, Instant::now() + timeout)
    }

    /// Polls every `interval` until `deadline`; not cancellable.
    pub fn until(interval: Duration, deadline: Instant) -> Poll {
        Poll {
            interval,
            deadline,
            cancellable: false,
        }
    }

    /// The same wait, stopped by Ctrl-C.
    pub fn cancellable(self) -> Poll {
        Poll {
            cancellable: true,
            ..self
        }
    }
}

/// Calls `check` until it returns `Ok(Some(value))` (that value is returned)
/// or `Err` (returned as [`PollError::Failed`]). `Ok(None)` means "not yet":
/// after the deadline that is [`PollError::TimedOut`], otherwise the next
/// attempt starts one interval after this one started. Cancellation is
/// looked at before every attempt; the first attempt always runs otherwise.
pub fn wait_until<T, E>(
    poll: Poll,
    mut check: impl FnMut() -> Result<Option<T>, E>,
) -> Result<T, PollError<E>> {
    loop {
        if poll.cancellable && cancel::is_cancelled() {
            return Err(PollError::Cancelled);
        }
        let started = Instant::now();
        if let Some(v) = check().map_err(PollError::Failed)? {
            return Ok(v);
        }
        if Instant::now() >= poll.deadline {
            return Err(PollError::TimedOut);
        }
        if let Some(rest) = poll.interval.checked_sub(started.elapsed()) {
            std::thread::sleep(rest);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn returns_the_value_once_the_condition_holds() {
        let mut n = 0;
        let r: Result<u32, PollError<()>> = wait_until(
            Poll::every(Duration::from_millis(1), Duration::from_secs(60)),
            || {
                n += 1;
                Ok((n == 3).then_some(n))
            },
        );
        assert_eq!(r, Ok(3));
        assert_eq!(n, 3);
    }

    #[test]
    fn a_failing_check_stops_at_once() {
        let mut n = 0;
        let r: Result<(), _> = wait_until(
            Poll::every(Duration::from_millis(1), Duration::from_secs(60)),
            || {
                n += 1;
                Err("gone")
            },
        );
        assert_eq!(r, Err(PollError::Failed("gone")));
        assert_eq!(n, 1);
    }

    #[test]
    fn a_past_deadline_still_allows_one_attempt_then_times_out() {
        let mut n = 0;
        let r: Result<(), PollError<()>> = wait_until(
            Poll::until(Duration::from_millis(1), Instant::now()),
            || {
                n += 1;
                Ok(None)
            },
        );
        assert_eq!(r, Err(PollError::TimedOut));
        assert_eq!(n, 1);
    }
}
