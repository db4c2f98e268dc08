//! How a message says its encoding: the `Content-Type` header, which
//! only a JSON body carries (MessagePack is the default). Both sides of
//! request/reply use these; they depend on nothing else of this crate.

use async_nats::{HeaderMap, HeaderName, HeaderValue, Message};
use phasegate_proto::Encoding;
use phasegate_proto::codec::CONTENT_TYPE_HEADER;

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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // tests: a panic is the failure report

    use std::str::FromStr;

    use bytes::Bytes;

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
}
