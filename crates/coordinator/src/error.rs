//! Errors of the coordinator.

use phasegate_bus::BusError;
use phasegate_proto::{ApiError, CodecError, ErrorCode};

/// What can stop the coordinator from starting or serving.
#[derive(Debug, thiserror::Error)]
pub enum CoordinatorError {
    /// NATS or JetStream failed.
    #[error(transparent)]
    Bus(#[from] BusError),
    /// A value could not be encoded.
    #[error(transparent)]
    Codec(#[from] CodecError),
    /// An actor could not be spawned or answered.
    #[error("actor system: {0}")]
    Actor(String),
    /// The configuration is unusable.
    #[error("configuration: {0}")]
    Config(String),
    /// This instance no longer holds (or may soon lose) the leadership
    /// lease: it must not write.
    #[error("this coordinator no longer leads")]
    NotLeader,
}

impl CoordinatorError {
    /// True for a revision-checked write that lost: someone else wrote the
    /// key since it was read.
    pub fn is_conflict(&self) -> bool {
        matches!(self, Self::Bus(BusError::KvConflict { .. }))
    }
}

impl From<CoordinatorError> for ApiError {
    fn from(e: CoordinatorError) -> Self {
        match &e {
            CoordinatorError::Bus(BusError::KvConflict { .. }) => ApiError::new(
                ErrorCode::Unavailable,
                format!("concurrent update, retry: {e}"),
            ),
            CoordinatorError::Bus(BusError::KvUnconfirmed { .. }) => ApiError::new(
                ErrorCode::Internal,
                format!("the outcome is unknown, read before retrying: {e}"),
            ),
            CoordinatorError::NotLeader => ApiError::new(
                ErrorCode::Unavailable,
                "this coordinator no longer leads; retry",
            ),
            CoordinatorError::Bus(_) => ApiError::new(
                ErrorCode::Unavailable,
                format!("storage not available, retry: {e}"),
            ),
            _ => ApiError::new(ErrorCode::Internal, e.to_string()),
        }
    }
}
