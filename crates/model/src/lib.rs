//! The pure heart of phasegate: validation of definitions, the trigger
//! state machine of SPEC.md §4, entity changes (no-op, immediate, kill
//! switch, trigger) and the desired state each segment must serve.
//!
//! Nothing here does IO, reads a clock or spawns a task: time enters as a
//! parameter (`now_ms`) and the caller carries out the consequences. That is
//! what lets the coordinator persist before it acts and lets tests explore
//! every sequence of actions.

pub mod analysis;
pub mod behaviour;
pub mod desired;
pub mod entity;
pub mod fleet;
pub mod rollout;
pub mod validate;

pub use entity::{PutOutcome, delete, entity_state, new_record, put, settle};
pub use fleet::{Fleet, FleetView, SegmentFleet};
pub use rollout::{StartParams, act, fleet_settled, next_deadline_ms, observe, tick};
pub use validate::{ValidationError, validate_pipeline, validate_spec};
