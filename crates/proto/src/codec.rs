//! The codec: MessagePack maps by default, JSON on request.

use serde::Serialize;
use serde::de::DeserializeOwned;

/// The largest body accepted or produced (NATS' default `max_payload`).
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// The largest request body the coordinator accepts; larger ones are
/// answered `invalid` without being decoded.
pub const MAX_REQUEST_BYTES: usize = 256 * 1024;

/// The deepest nesting accepted in MessagePack, as serde_json does for
/// JSON: deeper bodies are refused before they can exhaust the stack.
pub const MAX_DEPTH: usize = 128;

/// The header that selects the encoding of a request.
pub const CONTENT_TYPE_HEADER: &str = "Content-Type";

/// The content type of JSON bodies.
pub const CONTENT_TYPE_JSON: &str = "application/json";

/// The content type of MessagePack bodies.
pub const CONTENT_TYPE_MSGPACK: &str = "application/msgpack";

/// How a body is encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Encoding {
    /// MessagePack with string-keyed maps (`rmp_serde::to_vec_named`).
    #[default]
    MsgPack,
    /// JSON, for people and tools: accepted on requests and answered in
    /// kind.
    Json,
}

impl Encoding {
    /// The encoding a `Content-Type` header value selects: JSON for
    /// `application/json` (parameters and case ignored), else MessagePack.
    pub fn from_content_type(value: Option<&str>) -> Self {
        match value {
            Some(v)
                if v.split(';')
                    .next()
                    .is_some_and(|t| t.trim().eq_ignore_ascii_case(CONTENT_TYPE_JSON)) =>
            {
                Self::Json
            }
            _ => Self::MsgPack,
        }
    }

    /// The `Content-Type` value of bodies in this encoding.
    pub fn content_type(self) -> &'static str {
        match self {
            Self::MsgPack => CONTENT_TYPE_MSGPACK,
            Self::Json => CONTENT_TYPE_JSON,
        }
    }
}

/// A body that could not be encoded or decoded.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    /// The body is larger than [`MAX_BODY_BYTES`].
    #[error("body of {size} bytes exceeds the limit of {limit} bytes")]
    TooLarge {
        /// Size of the body, in bytes.
        size: usize,
        /// The most a body may take, in bytes.
        limit: usize,
    },
    /// Malformed or mistyped MessagePack.
    #[error("malformed MessagePack body: {0}")]
    MsgPackDecode(#[from] rmp_serde::decode::Error),
    /// A value that MessagePack cannot carry.
    #[error("cannot encode MessagePack: {0}")]
    MsgPackEncode(#[from] rmp_serde::encode::Error),
    /// Malformed or mistyped JSON.
    #[error("malformed JSON body: {0}")]
    Json(#[from] serde_json::Error),
}

/// Encodes `value`, refusing results over [`MAX_BODY_BYTES`].
pub fn encode<T: Serialize + ?Sized>(encoding: Encoding, value: &T) -> Result<Vec<u8>, CodecError> {
    encode_with_limit(encoding, value, MAX_BODY_BYTES)
}

/// Encodes `value`, refusing results over `limit` bytes (files on disk
/// are not NATS messages and take a larger limit).
pub fn encode_with_limit<T: Serialize + ?Sized>(
    encoding: Encoding,
    value: &T,
    limit: usize,
) -> Result<Vec<u8>, CodecError> {
    let bytes = match encoding {
        Encoding::MsgPack => rmp_serde::to_vec_named(value)?,
        Encoding::Json => serde_json::to_vec(value)?,
    };
    if bytes.len() > limit {
        return Err(CodecError::TooLarge {
            size: bytes.len(),
            limit,
        });
    }
    Ok(bytes)
}

/// Decodes `bytes` of at most [`MAX_BODY_BYTES`]; never panics, whatever
/// the input.
pub fn decode<T: DeserializeOwned>(encoding: Encoding, bytes: &[u8]) -> Result<T, CodecError> {
    decode_with_limit(encoding, bytes, MAX_BODY_BYTES)
}

/// Decodes `bytes` of at most `limit`; never panics, whatever the input.
pub fn decode_with_limit<T: DeserializeOwned>(
    encoding: Encoding,
    bytes: &[u8],
    limit: usize,
) -> Result<T, CodecError> {
    if bytes.len() > limit {
        return Err(CodecError::TooLarge {
            size: bytes.len(),
            limit,
        });
    }
    Ok(match encoding {
        Encoding::MsgPack => {
            let mut de = rmp_serde::Deserializer::from_read_ref(bytes);
            de.set_max_depth(MAX_DEPTH);
            T::deserialize(&mut de)?
        }
        Encoding::Json => serde_json::from_slice(bytes)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_type_selects_json() {
        assert_eq!(Encoding::from_content_type(None), Encoding::MsgPack);
        assert_eq!(
            Encoding::from_content_type(Some("application/json")),
            Encoding::Json
        );
        assert_eq!(
            Encoding::from_content_type(Some("Application/JSON; charset=utf-8")),
            Encoding::Json
        );
        assert_eq!(
            Encoding::from_content_type(Some("application/msgpack")),
            Encoding::MsgPack
        );
    }

    #[test]
    fn oversized_bodies_are_refused() {
        let big = vec![0u8; MAX_BODY_BYTES + 1];
        let err = decode::<serde_json::Value>(Encoding::Json, &big).unwrap_err();
        assert!(matches!(err, CodecError::TooLarge { .. }), "{err}");
    }
}
