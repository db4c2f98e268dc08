//! The serving side: answering a request in the encoding it asked for
//! ([`crate::headers::encoding_of`]).
//!
//! Generic over the result type so that any service (the coordinator's
//! command service on `async_nats::service`, a test responder on a plain
//! subscription) answers the same way.

use async_nats::{HeaderMap, Message};
use bytes::Bytes;
use phasegate_proto::{ApiError, Encoding, ErrorCode, Reply, encode};
use serde::Serialize;

use crate::client::Client;
use crate::error::BusError;
use crate::headers::headers_for;

/// Encodes `reply` in `encoding` with its headers, ready to publish.
///
/// When the result cannot be encoded (too large, or a value the format
/// cannot carry), the body becomes an `internal` error reply instead, so
/// the requester gets an answer rather than a timeout; the failure is
/// logged.
///
/// # Errors
///
/// [`BusError::Encode`] only if even the error reply cannot be encoded.
pub fn encode_reply<T: Serialize>(
    reply: &Reply<T>,
    encoding: Encoding,
) -> Result<(Bytes, HeaderMap), BusError> {
    let body = match encode(encoding, reply) {
        Ok(body) => body,
        Err(err) => {
            tracing::error!(error = %err, "cannot encode reply, answering internal");
            let fallback = Reply::<()>::err(ApiError::new(
                ErrorCode::Internal,
                format!("cannot encode reply: {err}"),
            ));
            encode(encoding, &fallback).map_err(BusError::Encode)?
        }
    };
    Ok((Bytes::from(body), headers_for(encoding)))
}

/// Answers `message` with `reply` in `encoding` (normally
/// [`encoding_of`] the message), on the message's reply subject.
///
/// A service built on `async_nats::service` may prefer [`encode_reply`] and
/// `Request::respond_with_headers`, which also keeps the endpoint's stats.
///
/// # Errors
///
/// [`BusError::NoReplySubject`] when the message expects no answer,
/// [`BusError::Publish`] when the answer cannot be sent.
pub async fn reply<T: Serialize>(
    client: &Client,
    message: &Message,
    reply: &Reply<T>,
    encoding: Encoding,
) -> Result<(), BusError> {
    let Some(to) = message.reply.clone() else {
        return Err(BusError::NoReplySubject {
            subject: message.subject.to_string(),
        });
    };
    let (body, headers) = encode_reply(reply, encoding)?;
    let sent = if headers.is_empty() {
        client.nats().publish(to.clone(), body).await
    } else {
        client
            .nats()
            .publish_with_headers(to.clone(), headers, body)
            .await
    };
    sent.map_err(|source| BusError::Publish {
        subject: to.to_string(),
        source,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // tests: a panic is the failure report

    use phasegate_proto::codec::MAX_BODY_BYTES;
    use phasegate_proto::decode;

    use super::*;

    #[test]
    fn unencodable_results_become_internal_errors() {
        let huge = "x".repeat(MAX_BODY_BYTES + 1);
        for encoding in [Encoding::MsgPack, Encoding::Json] {
            let (body, _) = encode_reply(&Reply::ok(huge.as_str()), encoding).unwrap();
            let back: Reply<String> = decode(encoding, &body).unwrap();
            let err = back.into_result().unwrap_err();
            assert_eq!(err.code, ErrorCode::Internal);
            assert!(err.message.contains("exceeds the limit"), "{}", err.message);
        }
    }
}
