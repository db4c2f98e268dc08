//! Wire types of the phasegate contract (SPEC.md §1–§6): validated names,
//! entities, pipelines, triggers, the requests and results of the command
//! API, subjects and the codec.
//!
//! This crate describes bytes on the wire and nothing more: it must never
//! depend on tokio, ractor or NATS, and holds no behaviour beyond validation
//! of names, the words of wire enums ([`wire_enum!`]), (de)serialisation and
//! reading the clock in the wire's unit ([`now_ms`]).

pub mod words;

pub mod analysis;
pub mod api;
pub mod clock;
pub mod codec;
pub mod entity;
pub mod names;
pub mod pipeline;
pub mod store;
pub mod subjects;
pub mod sync;
pub mod trigger;

pub use analysis::*;
pub use api::*;
pub use clock::now_ms;
pub use codec::{CodecError, Encoding, decode, encode};
pub use entity::*;
pub use names::*;
pub use pipeline::*;
pub use store::*;
pub use subjects::{Bucket, Command, Subjects, entity_key};
pub use sync::*;
pub use trigger::*;
pub use words::UnknownWord;
