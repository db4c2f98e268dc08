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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)] // tests

    use super::*;

    type Answer = Result<u32, ApiError>;

    fn port() -> (
        RpcReplyPort<Answer>,
        ractor::concurrency::OneshotReceiver<Answer>,
    ) {
        let (tx, rx) = ractor::concurrency::oneshot();
        (tx.into(), rx)
    }

    #[tokio::test]
    async fn a_command_past_its_deadline_is_refused_unstarted() {
        let (tx, rx) = port();
        let late = ReplyTo::new(tx, Instant::now() - Duration::from_millis(1));
        assert!(late.unexpired().is_none(), "not to be started");
        let answer = rx.await.expect("answered");
        assert_eq!(answer.expect_err("refused").code, ErrorCode::Unavailable);
    }

    #[tokio::test]
    async fn a_command_in_time_is_left_to_its_handler() {
        let (tx, rx) = port();
        let on_time = ReplyTo::new(tx, Instant::now() + QUEUE_DEADLINE);
        let reply = on_time.unexpired().expect("may start");
        reply.send(Ok(7));
        assert_eq!(rx.await.expect("answered").expect("ok"), 7);
    }
}
