//! The libvirt connection behind a [`Hypervisor`](super::Hypervisor) and its
//! one recovery. When libvirtd restarts, every call on the old connection
//! fails ("End of file while reading data", then "client socket is closed").
//! [`Link::recover`] tells that apart from an ordinary failure by asking
//! libvirt whether the connection is still alive (`virConnectIsAlive`, never
//! the message), then waits up to [`RECONNECT_WAIT`] for the daemon to answer
//! again and swaps in a new connection, once for every thread that shares it.
//! Running guests survive a libvirtd restart, so a caller that retries its
//! call on the new connection carries on where it was.

use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use virt::connect::Connect;

use crate::wait::{wait_until, Poll};

/// How long a call waits for a restarting libvirtd to answer again (a
/// restart takes 1-3 s here; systemd's restart of a busy daemon more).
pub const RECONNECT_WAIT: Duration = Duration::from_secs(30);

/// A shared, replaceable libvirt connection.
pub(super) struct Link {
    uri: String,
    current: Mutex<Current>,
}

struct Current {
    conn: Connect,
    /// Bumped on every reconnect, so a thread can tell whether the
    /// connection its call failed on is still the current one.
    generation: u64,
    /// This generation is dead and the daemon did not come back in time:
    /// later failures give up at once instead of waiting again.
    gone: bool,
}

/// What [`Link::recover`] found after a failed call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Recovery {
    /// The connection is alive: the failure was the call's own.
    Healthy,
    /// The connection had died; a new one answers. The call may be retried.
    Reconnected,
    /// The connection died and libvirtd did not answer again in time.
    Gone,
}

impl Link {
    pub(super) fn open(uri: &str) -> Result<Link, virt::error::Error> {
        Ok(Link {
            uri: uri.to_owned(),
            current: Mutex::new(Current {
                conn: Connect::open(Some(uri))?,
                generation: 0,
                gone: false,
            }),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Current> {
        self.current.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The current connection (a new reference to it; cheap).
    pub(super) fn conn(&self) -> Connect {
        self.lock().conn.clone()
    }

    /// The current connection's generation, taken before a call so that
    /// [`Link::recover`] knows which connection the call used.
    pub(super) fn generation(&self) -> u64 {
        self.lock().generation
    }

    /// After a call made on generation `used` failed: reconnects when that
    /// connection is dead. Threads wait for each other here, so one
    /// restart costs one reconnect.
    pub(super) fn recover(&self, used: u64) -> Recovery {
        let mut cur = self.lock();
        if cur.generation != used {
            // Another thread has reconnected since.
            return Recovery::Reconnected;
        }
        if cur.conn.is_alive().unwrap_or(false) {
            return Recovery::Healthy;
        }
        if cur.gone {
            return Recovery::Gone;
        }
        let poll = Poll::every(Duration::from_millis(250), RECONNECT_WAIT).cancellable();
        match wait_until(poll, || Ok::<_, ()>(Connect::open(Some(&self.uri)).ok())) {
            Ok(conn) => {
                cur.conn = conn;
                cur.generation += 1;
                Recovery::Reconnected
            }
            Err(_) => {
                cur.gone = true;
                Recovery::Gone
            }
        }
    }
}
