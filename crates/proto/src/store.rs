//! Records the coordinator persists. Internal to phasegate (not part of the
//! external contract), but serialised like every other wire type so that a
//! restarted coordinator reads exactly what it wrote.

use serde::{Deserialize, Serialize};

use crate::entity::{EntityKind, EntitySpec};
use crate::names::{EntityName, TriggerId};
use crate::trigger::Trigger;

/// Everything the coordinator knows of one entity.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EntityRecord {
    /// Gate or config: with `name`, the entity's key.
    pub kind: EntityKind,
    /// Unique per kind.
    pub name: EntityName,
    /// The latest version (the active trigger's `to_version` while one
    /// runs); `None` when absent (never created, deleted, or aborted back to
    /// absent).
    #[serde(default)]
    pub latest: Option<EntitySpec>,
    /// The version every segment serves outside rollouts; `None` = absent.
    #[serde(default)]
    pub base: Option<EntitySpec>,
    /// Highest version ever assigned, so numbers continue after delete or abort.
    #[serde(default)]
    pub last_version: u64,
    /// The trigger rolling out `latest`, if one is active.
    #[serde(default)]
    pub active_trigger: Option<TriggerId>,
}

impl EntityRecord {
    /// Which entity this is.
    pub fn entity(&self) -> crate::EntityRef {
        crate::EntityRef {
            kind: self.kind,
            name: self.name.clone(),
        }
    }
}

/// A trigger and what its rollout needs beyond the contract's view of it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TriggerRecord {
    /// The trigger as the API shows it.
    pub trigger: Trigger,
    /// The new version being rolled out.
    pub snapshot: EntitySpec,
    /// The version before the trigger; `None` = absent.
    #[serde(default)]
    pub base: Option<EntitySpec>,
    /// How many phases, from the first, are published to agents.
    #[serde(default)]
    pub published: u32,
    /// When the current `applying` phase times out, unless paused.
    #[serde(default)]
    pub apply_deadline_ms: Option<u64>,
    /// Whether health was at or above the bar at the last check.
    #[serde(default = "default_true")]
    pub health_ok: bool,
    /// W3C `traceparent` of the trigger's trace: every span of the rollout,
    /// in the coordinator (across restarts) and in the agents, joins it.
    #[serde(default)]
    pub trace_parent: Option<String>,
    /// The analyses failing when health last fell (`"<analysis> in
    /// <segment>"`), so that `health_recovered` can name them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub degraded_by: Vec<String>,
}

fn default_true() -> bool {
    true
}

/// The value stored under an entity's key: its record and, while one runs,
/// its active trigger. Keeping both under one key makes every change to an
/// entity and its rollout a single atomic, revision-checked write.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredEntity {
    /// The entity: its versions and which trigger, if any, rolls one out.
    pub record: EntityRecord,
    /// Its active trigger, if any.
    #[serde(default)]
    pub active: Option<TriggerRecord>,
    /// The trigger that finished last, written in the same write that
    /// settled the entity: that write is the commit point of the finish.
    /// It is copied to the finished-triggers bucket afterwards, which is
    /// idempotent, so a stop in between is repaired at start.
    #[serde(default)]
    pub finished: Option<TriggerRecord>,
}

/// An agent the coordinator has heard from, persisted so that a restarted
/// coordinator still waits for it before calling a phase applied.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentRecord {
    /// The agent, as its reports name it.
    pub agent_id: crate::names::AgentId,
    /// The segment it serves: its absence blocks that segment's phases.
    pub segment: crate::names::Segment,
    /// Its tier, as last reported; shown by `agent.list`.
    #[serde(default)]
    pub tier: Option<String>,
    /// Its heartbeat interval as last reported: a restarted coordinator
    /// counts it unreachable after three of them without a report.
    pub heartbeat_ms: u64,
    /// When it was first heard from.
    pub first_seen_ms: u64,
}
