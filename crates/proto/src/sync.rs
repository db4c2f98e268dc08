//! What an agent serves for one entity (SPEC.md §5): the base spec and,
//! while a phase covering the agent's segment is applied, the rollout view.
//!
//! The coordinator ↔ agent protocol carries these; the model computes them.

use serde::{Deserialize, Serialize};

use crate::entity::{Condition, EntitySpec};
use crate::names::{AgentId, PhaseId, Segment, SegmentPattern, TriggerId};

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

/// One published phase, as agents need it to derive their segment's view.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PhaseTarget {
    /// The phase, reported back as `phase_id` by evaluations it answers.
    pub id: PhaseId,
    /// The segments it names (names or globs).
    pub segments: Vec<SegmentPattern>,
    /// Extra targeting inside its segments: all must hold.
    #[serde(default)]
    pub conditions: Vec<Condition>,
    /// Share of units, 0–100, bucketed with the snapshot's salt.
    pub pass_percentage: f64,
    /// Its metric analyses, run by the agents of the segments it names.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub analysis: Vec<crate::analysis::Analysis>,
}

/// The rollout part of [`DesiredEntity`]: the new version and the phases
/// published so far, in pipeline order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DesiredRollout {
    /// The trigger rolling it out.
    pub trigger_id: TriggerId,
    /// The new version.
    pub snapshot: EntitySpec,
    /// Published phases, first to last.
    pub phases: Vec<PhaseTarget>,
    /// W3C `traceparent` of the publish, so an agent's apply joins the
    /// rollout's trace.
    #[serde(default)]
    pub trace_parent: Option<String>,
}

/// What the coordinator publishes for one entity, for every segment at
/// once: each agent derives its own [`EntityState`] from it. One record per
/// entity means one durable write per change, whatever the number of
/// segments, and an agent of a segment that appears later needs nothing
/// re-sent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DesiredEntity {
    /// Gate or config: with `name`, the entity's key.
    pub kind: crate::entity::EntityKind,
    /// Unique per kind.
    pub name: crate::names::EntityName,
    /// The version outside rollouts; `None` = absent.
    #[serde(default)]
    pub base: Option<EntitySpec>,
    /// The active rollout, once a phase is published.
    #[serde(default)]
    pub rollout: Option<DesiredRollout>,
}

/// What an agent tells the coordinator, on every heartbeat and at once
/// when it has applied a new revision.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentReport {
    /// The agent: one record per id, whatever its segment says.
    pub agent_id: AgentId,
    /// The segment it serves; must be the one its subject names, or the
    /// report is ignored (SPEC.md §8).
    pub segment: Segment,
    /// Its tier, for `tier` conditions and `agent.list`.
    #[serde(default)]
    pub tier: Option<String>,
    /// Every health probe passes.
    pub healthy: bool,
    /// The desired-state revision it has applied and persisted, all
    /// earlier revisions included.
    pub applied_revision: u64,
    /// It has not synchronised for longer than its bound.
    #[serde(default)]
    pub stale: bool,
    /// Its heartbeat interval: it is live while heard from within three.
    pub heartbeat_ms: u64,
    /// When it sent this, by its clock.
    pub sent_at_ms: u64,
    /// Entities it could not decode or compile. Its `applied_revision`
    /// moves past them, so they block nothing else; a trigger of one of
    /// them counts this agent as not applied.
    #[serde(default)]
    pub blocked: Vec<BlockedEntity>,
    /// The agent is stopping cleanly: forget it now rather than wait for
    /// its silence to make it unreachable.
    #[serde(default)]
    pub leaving: bool,
    /// The latest result of every analysis the agent runs. While one is
    /// failing, `healthy` is false.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub analyses: Vec<crate::analysis::AnalysisStatus>,
}

/// An entity an agent could not apply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockedEntity {
    /// Its key in the desired-state bucket (`<kind>.<name>`).
    pub key: String,
    /// The revision it could not apply.
    pub revision: u64,
    /// Why, for operators.
    pub error: String,
}
