//! Bit-exact evaluation of phasegate gates and dynamic configs (SPEC.md §2)
//! and of what an agent serves while a rollout runs (SPEC.md §5).
//!
//! Specs are compiled once ([`CompiledEntity`], [`CompiledState`]), which
//! checks what the contract rejects at write time and prepares operands
//! (string and number forms, versions, regexes, salts), then evaluated many
//! times without allocating in the common case. Every SDK must agree with
//! this crate bit for bit, so the value rules live here and nowhere else.
//!
//! This crate is pure: it must never do IO (no files, network, clock or
//! randomness), never log, and never depend on tokio or NATS.

mod bucket;
mod condition;
mod entity;
mod error;
mod state;
mod value;

pub use bucket::{bucket, passes};
pub use condition::CompiledCondition;
pub use entity::{CompiledEntity, Outcome, Reason, Value};
pub use error::EvalError;
pub use state::{Answer, CompiledRollout, CompiledState, unknown_answer};
pub use value::{compare_versions, format_number, parse_number};

/// What the evaluating agent contributes: the `segment` and `tier` fields
/// of conditions, which make rules infrastructure-aware.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AgentContext {
    /// The agent's segment.
    pub segment: String,
    /// The agent's tier; `None` makes the `tier` field missing.
    pub tier: Option<String>,
}

impl AgentContext {
    /// An agent context for `segment`, with an optional `tier`.
    pub fn new(segment: impl Into<String>, tier: Option<String>) -> Self {
        Self {
            segment: segment.into(),
            tier,
        }
    }
}
