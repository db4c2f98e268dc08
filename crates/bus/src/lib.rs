//! The NATS layer of phasegate: connecting, request/reply over the codec of
//! `phasegate-proto`, and the helpers a service uses to answer.
//!
//! This is the only crate that imports `async-nats`; every other crate talks
//! to NATS through it (or through the client it exposes for JetStream). It
//! moves bytes and maps transport failures to [`BusError`]; it must never
//! hold business logic, decide what a request means, or spell a subject
//! itself (subjects come from [`Subjects`]).

mod client;
mod error;
mod headers;
mod kv;
mod security;
mod serve;
mod service;
pub mod trace;

pub use client::{Client, ConnectOptions, DEFAULT_REQUEST_TIMEOUT, InitialConnect, connect};
pub use error::BusError;
pub use headers::{content_type_header, encoding_of, headers_for};
pub use kv::{BucketOptions, Kv, KvChange, KvEntry, KvWatch};
pub use security::{Security, redact_url};
pub use serve::{encode_reply, reply};
pub use service::{Request, Requests, Service};

/// The `async-nats` crate itself, for tests of the transport (the product
/// crates use this crate's API only, never `async-nats` directly).
pub use async_nats;
/// Types of `async-nats` that appear in this crate's API.
pub use async_nats::{HeaderMap, HeaderName, HeaderValue, Message};
pub use phasegate_proto::{Command, Encoding, Subjects};
