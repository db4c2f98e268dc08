//! What an agent serves for one entity (SPEC.md §5): the base spec and,
//! while a phase covering the agent's segment is applied, the rollout view.
//!
//! The coordinator ↔ agent protocol carries these; the model computes them.

use serde::{Deserialize, Serialize};

use crate::entity::{Condition, EntitySpec};
use crate::names::{PhaseId, TriggerId};

/// The targeting of one applied phase inside a segment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PhaseRule {
    /// All must hold.
    #[serde(default)]
    pub conditions: Vec<Condition>,
    /// Share of units, bucketed with the snapshot's salt.
    pub pass_percentage: f64,
}

/// The new version as a segment sees it while a trigger runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RolloutView {
    /// The trigger rolling it out.
    pub trigger_id: TriggerId,
    /// The latest applied phase naming this segment.
    pub phase_id: PhaseId,
    /// The new version.
    pub snapshot: EntitySpec,
    /// One rule per applied phase that names this segment.
    pub rules: Vec<PhaseRule>,
}

/// Everything a segment's agent serves for one entity.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct EntityState {
    /// The version every unit gets; `None` = absent.
    #[serde(default)]
    pub base: Option<EntitySpec>,
    /// The rollout, while a phase naming the segment is applied.
    #[serde(default)]
    pub rollout: Option<RolloutView>,
}
