//! The serving side: reading a request's encoding and answering it.
//!
//! Generic over the result type so that any service (the coordinator's
//! command service on `async_nats::service`, a test responder on a plain
//! subscription) answers the same way.

use async_nats::{HeaderMap, HeaderName, HeaderValue, Message};
use bytes::Bytes;
use phasegate_proto::codec::CONTENT_TYPE_HEADER;
use phasegate_proto::{ApiError, Encoding, ErrorCode, Reply, encode};
use serde::Serialize;

use crate::client::Client;
use crate::error::BusError;

/// The `Content-Type` header name.
///
/// Built from a constant with `from_static`, which cannot panic; a test
/// checks that the constant passes `async-nats`' validation, since inserting
/// an invalid name from a plain string would panic.
pub fn content_type_header() -> HeaderName {
    HeaderName::from_static(CONTENT_TYPE_HEADER)
}

/// The headers a body in `encoding` travels with: `Content-Type:
/// application/json` for JSON, none for MessagePack (the default).
pub fn headers_for(encoding: Encoding) -> HeaderMap {
    let mut headers = HeaderMap::new();
    if encoding == Encoding::Json {
        // The value is a constant without CR or LF, which is all the
        // conversion checks.
        headers.insert(
            content_type_header(),
            HeaderValue::from(Encoding::Json.content_type()),
        );
    }
    headers
}

/// The encoding a request asks for, from its `Content-Type` header (name
/// matched without regard to case, as HTTP habits make people write it in
/// any case): JSON for `application/json`, else MessagePack.
pub fn encoding_of(message: &Message) -> Encoding {
    let value = message.headers.as_ref().and_then(|headers| {
        headers
            .iter()
            .find(|(name, _)| AsRef::<str>::as_ref(*name).eq_ignore_ascii_case(CONTENT_TYPE_HEADER))
            .and_then(|(_, values)| values.first())
            .map(HeaderValue::as_str)
    });
    Encoding::from_content_type(value)
}

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

    use std::str::FromStr;

    use phasegate_proto::codec::MAX_BODY_BYTES;
    use phasegate_proto::decode;

    use super::*;

    fn message(headers: Option<HeaderMap>) -> Message {
        Message {
            subject: "phasegate.v1.pipeline.get".into(),
            reply: Some("_INBOX.x".into()),
            payload: Bytes::new(),
            headers,
            status: None,
            description: None,
            length: 0,
        }
    }

    #[test]
    fn the_content_type_name_is_valid() {
        let parsed = HeaderName::from_str(CONTENT_TYPE_HEADER).unwrap();
        assert_eq!(parsed, content_type_header());
        assert_eq!(content_type_header().to_string(), CONTENT_TYPE_HEADER);
    }

    #[test]
    fn headers_mark_json_only() {
        assert!(headers_for(Encoding::MsgPack).is_empty());
        let json = headers_for(Encoding::Json);
        assert_eq!(
            json.get(content_type_header()).map(HeaderValue::as_str),
            Some("application/json")
        );
        assert_eq!(encoding_of(&message(Some(json))), Encoding::Json);
    }

    #[test]
    fn encoding_follows_the_content_type() {
        assert_eq!(encoding_of(&message(None)), Encoding::MsgPack);
        assert_eq!(
            encoding_of(&message(Some(HeaderMap::new()))),
            Encoding::MsgPack
        );
        let mut lower = HeaderMap::new();
        lower.insert(
            HeaderName::from_static("content-type"),
            HeaderValue::from("application/json; charset=utf-8"),
        );
        assert_eq!(encoding_of(&message(Some(lower))), Encoding::Json);
        let mut msgpack = HeaderMap::new();
        msgpack.insert(
            content_type_header(),
            HeaderValue::from("application/msgpack"),
        );
        assert_eq!(encoding_of(&message(Some(msgpack))), Encoding::MsgPack);
    }

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
