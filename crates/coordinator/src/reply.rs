//! Answers to commands, with the deadline that makes `unavailable` mean
//! "not carried out, and never will be" (SPEC.md §6).
//!
//! A command waits in an actor's mailbox behind others. Its handler asks
//! [`Reply::expired`] before doing anything: past the deadline the command
//! is refused with `unavailable` and dropped, so a client told to retry
//! never sees its first attempt take effect later. Once a handler has
//! started, the caller waits for its answer whatever it takes: the only
//! `unavailable` a started command gets is one its handler chose.

use std::time::Duration;

use phasegate_proto::{ApiError, ErrorCode};
use ractor::RpcReplyPort;
use tokio::time::Instant;

/// How long a command may wait in mailboxes before it is refused.
pub(crate) const QUEUE_DEADLINE: Duration = Duration::from_secs(6);

/// Where a command's answer goes, and until when it may still be started.
pub(crate) struct ReplyTo<T> {
    port: RpcReplyPort<Result<T, ApiError>>,
    deadline: Instant,
}

impl<T> ReplyTo<T> {
    /// A reply port whose command must start before `deadline`.
    pub(crate) fn new(port: RpcReplyPort<Result<T, ApiError>>, deadline: Instant) -> Self {
        Self { port, deadline }
    }

    /// Answers the command. The caller may be gone; nothing is lost then.
    pub(crate) fn send(self, answer: Result<T, ApiError>) {
        let _ = self.port.send(answer);
    }

    /// True when the command may no longer be started.
    pub(crate) fn expired(&self) -> bool {
        Instant::now() >= self.deadline
    }

    /// Refuses the command unstarted.
    pub(crate) fn refuse(self) {
        self.send(Err(ApiError::new(
            ErrorCode::Unavailable,
            "the coordinator is busy; the command was not carried out; retry",
        )));
    }

    /// `Some(self)` while the command may start; otherwise refuses it.
    pub(crate) fn unexpired(self) -> Option<Self> {
        if self.expired() {
            self.refuse();
            None
        } else {
            Some(self)
        }
    }
}
