//! The one error type of the kit.

use std::io;
use std::time::Duration;

/// What went wrong in the kit.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No usable `nats-server`: the message says where it looked and how
    /// to install one.
    #[error("{0}")]
    NatsServerBinary(String),
    /// `nats-server` exited or did not listen while starting.
    #[error("nats-server {what}; its log ends with:\n{log_tail}")]
    NatsServerStart {
        /// What happened instead of listening.
        what: String,
        /// The end of the server's log.
        log_tail: String,
    },
    /// A process could not be started, signalled or reaped, or a file or
    /// socket of the kit could not be used.
    #[error("cannot {action}")]
    Io {
        /// What was being done.
        action: String,
        /// Why it failed.
        #[source]
        source: io::Error,
    },
    /// A process was asked to stop that does not run.
    #[error("{0} is not running")]
    NotRunning(String),
    /// [`wait_for`](crate::wait_for) gave up.
    #[error("timed out after {timeout:?} waiting for {what}; last seen: {last}")]
    TimedOut {
        /// What was awaited.
        what: String,
        /// How long it was awaited.
        timeout: Duration,
        /// The last failure of the probe.
        last: String,
    },
}

impl Error {
    /// `map_err(Error::io("do this"))`.
    pub(crate) fn io(action: impl Into<String>) -> impl FnOnce(io::Error) -> Self {
        let action = action.into();
        move |source| Self::Io { action, source }
    }
}
