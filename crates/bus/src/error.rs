//! The errors of the bus.

use std::time::Duration;

use phasegate_proto::{ApiError, CodecError, ErrorCode};

/// What can go wrong between a caller and a service over NATS.
#[derive(Debug, thiserror::Error)]
pub enum BusError {
    /// The server address could not be used (the connection itself is
    /// retried in the background, forever).
    #[error("cannot connect to nats at {url}: {source}")]
    Connect {
        /// The address given, credentials redacted.
        url: String,
        /// What the client library reported: a bad address, no server in
        /// reach, refused credentials.
        #[source]
        source: async_nats::ConnectError,
    },
    /// Credentials or TLS settings that cannot be used; the message names
    /// the file or option, never a secret.
    #[error("{0}")]
    Security(String),
    /// Nobody listens on the subject: the service is not running (yet).
    #[error("no service answers on {subject}")]
    NoResponders {
        /// The request subject.
        subject: String,
    },
    /// A service listens but did not answer in time.
    #[error("no reply on {subject} within {timeout:?}")]
    TimedOut {
        /// The request subject.
        subject: String,
        /// The request timeout in force.
        timeout: Duration,
    },
    /// Any other failure of a request (invalid subject, body larger than the
    /// server accepts, connection closed).
    #[error("request on {subject} failed: {source}")]
    Request {
        /// The request subject.
        subject: String,
        /// What the client library reported.
        #[source]
        source: async_nats::RequestError,
    },
    /// A message could not be published.
    #[error("cannot publish on {subject}: {source}")]
    Publish {
        /// Where it was to go.
        subject: String,
        /// What the client library reported: its buffer is full, or the
        /// connection is closed.
        #[source]
        source: async_nats::PublishError,
    },
    /// A message to answer carries no reply subject.
    #[error("message on {subject} has no reply subject")]
    NoReplySubject {
        /// The subject the message came on.
        subject: String,
    },
    /// A request or reply body could not be encoded.
    #[error("cannot encode body: {0}")]
    Encode(#[source] CodecError),
    /// A reply could not be decoded.
    #[error("malformed reply on {subject}: {source}")]
    Decode {
        /// The request subject.
        subject: String,
        /// What the codec could not read.
        #[source]
        source: CodecError,
    },
    /// A key-value operation failed.
    #[error("key-value bucket {bucket}: {op} failed: {message}")]
    Kv {
        /// The bucket's full name (`<prefix>_<bucket>`).
        bucket: String,
        /// What was attempted: `get`, `watch`, `create bucket` …
        op: &'static str,
        /// The server's or the client library's reason, as text.
        message: String,
    },
    /// A write the server did not confirm: it may still take effect (a
    /// client buffers what it cannot send, and a slow server may store it
    /// after the wait ended). Never report it as "not done".
    #[error(
        "key-value bucket {bucket}: {op} not confirmed, it may or may not take effect: {message}"
    )]
    KvUnconfirmed {
        /// The bucket's full name (`<prefix>_<bucket>`).
        bucket: String,
        /// The write attempted: `put`, `create`, `update`, `delete`.
        op: &'static str,
        /// The server's or the client library's reason, as text.
        message: String,
    },
    /// A revision-checked write lost to another writer.
    #[error("key-value bucket {bucket}: {key} was changed by another writer")]
    KvConflict {
        /// The bucket's full name (`<prefix>_<bucket>`).
        bucket: String,
        /// The key whose latest revision was not the one expected.
        key: String,
    },
    /// The service API or a subscription failed.
    #[error("{0}")]
    Service(String),
    /// The service answered `ok: false`.
    #[error("service refused: {0}")]
    Api(#[from] ApiError),
}

impl BusError {
    /// The contract's error code this failure amounts to for a caller:
    /// the service's own code for [`BusError::Api`], `unavailable` when no
    /// service answered (retry later), `internal` otherwise.
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::Api(e) => e.code,
            Self::NoResponders { .. } | Self::TimedOut { .. } => ErrorCode::Unavailable,
            _ => ErrorCode::Internal,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_follow_the_contract() {
        let api = BusError::Api(ApiError::not_found("no pipeline named x"));
        assert_eq!(api.code(), ErrorCode::NotFound);
        assert_eq!(
            api.to_string(),
            "service refused: not_found: no pipeline named x"
        );
        let gone = BusError::NoResponders {
            subject: "phasegate.v1.gate.get".into(),
        };
        assert_eq!(gone.code(), ErrorCode::Unavailable);
        assert_eq!(
            gone.to_string(),
            "no service answers on phasegate.v1.gate.get"
        );
        let slow = BusError::TimedOut {
            subject: "s".into(),
            timeout: Duration::from_millis(250),
        };
        assert_eq!(slow.code(), ErrorCode::Unavailable);
        assert_eq!(
            BusError::NoReplySubject {
                subject: "s".into()
            }
            .code(),
            ErrorCode::Internal
        );
    }
}
