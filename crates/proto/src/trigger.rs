//! Triggers: one rollout of one change (SPEC.md §4).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::entity::EntityKind;
use crate::names::{Actor, EntityName, PhaseId, PipelineName, TriggerId};
use crate::pipeline::Pipeline;

/// Which entity: what a trigger changes, and the key of an entity in
/// memory (ordered by kind, then name).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct EntityRef {
    /// Gate or config: names are unique per kind.
    pub kind: EntityKind,
    /// Unique per kind.
    pub name: EntityName,
}

impl EntityRef {
    /// Its key in the entity and desired-state buckets: `<kind>.<name>`.
    pub fn key(&self) -> String {
        crate::entity_key(self.kind, &self.name)
    }
}

impl std::fmt::Display for EntityRef {
    /// `<kind> <name>`, as messages name an entity (`gate checkout`).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.kind, self.name)
    }
}

crate::wire_enum! {
    /// Overall status of a trigger.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
    #[serde(rename_all = "snake_case")]
    pub enum TriggerStatus as "trigger status" {
        /// Walking through its phases.
        InProgress => "in_progress",
        /// The new version is the base everywhere.
        Completed => "completed",
        /// Rolled back; irreversible.
        Aborted => "aborted",
    }
}

impl TriggerStatus {
    /// True for `completed` and `aborted`.
    pub fn is_finished(self) -> bool {
        !matches!(self, Self::InProgress)
    }
}

crate::wire_enum! {
    /// Where the current phase stands while the trigger is in progress.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
    #[serde(rename_all = "snake_case")]
    pub enum PhaseState as "phase state" {
        /// Waiting for approvals; nothing of the phase is applied yet.
        AwaitingApproval => "awaiting_approval",
        /// Published; waiting for every live agent of its segments to apply it.
        Applying => "applying",
        /// Applied; the bake timer runs.
        Baking => "baking",
    }
}

crate::wire_enum! {
    /// Why a trigger is paused.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
    #[serde(rename_all = "snake_case")]
    pub enum PausedReason as "paused reason" {
        /// An operator paused it.
        Manual => "manual",
        /// Health fell below the phase's bar with `on_unhealthy = pause`.
        Health => "health",
        /// The phase stayed `applying` longer than its `apply_timeout_ms`.
        ApplyTimeout => "apply_timeout",
    }
}

/// One recorded approval of the current phase.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApprovalRecord {
    /// Who approved: counted once per phase.
    pub actor: Actor,
    /// When, in Unix-epoch milliseconds.
    pub at_ms: u64,
    /// The approval's comment, as sent.
    #[serde(default)]
    pub comment: Option<String>,
}

/// Progress of one segment under a trigger.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct SegmentProgress {
    /// Whether the new version is active there (from `applying` on).
    pub version_active: bool,
    /// Known agents of the segment: live or unreachable (SPEC.md §4 *Fleet*).
    #[serde(default)]
    pub agents_known: u32,
    /// Live agents of the segment.
    pub agents_live: u32,
    /// Live agents that applied the current phase's revision.
    pub agents_applied: u32,
    /// Live agents reporting healthy.
    pub agents_healthy: u32,
}

crate::wire_enum! {
    /// The kind of a history entry.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
    #[serde(rename_all = "snake_case")]
    pub enum HistoryType as "history type" {
        /// The trigger was created.
        Started => "started",
        /// An actor approved the current phase.
        Approved => "approved",
        /// A phase began (awaiting approval or applying).
        PhaseStarted => "phase_started",
        /// Every live agent of the phase applied it.
        PhaseApplied => "phase_applied",
        /// Progress stopped: by an operator, health or an apply timeout
        /// (the comment says which).
        Paused => "paused",
        /// Progress continued: by an operator, or health recovering from a
        /// pause it made.
        Resumed => "resumed",
        /// A phase was ended early.
        Skipped => "skipped",
        /// Full roll-out was ordered.
        Rollout => "rollout",
        /// The trigger was aborted.
        Aborted => "aborted",
        /// Health fell below the bar.
        HealthDegraded => "health_degraded",
        /// Health rose back to the bar.
        HealthRecovered => "health_recovered",
        /// The trigger completed.
        Completed => "completed",
    }
}

/// One entry of a trigger's history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryEntry {
    /// What happened; `type` on the wire.
    #[serde(rename = "type")]
    pub kind: HistoryType,
    /// The phase it concerns, if any.
    #[serde(default)]
    pub phase_id: Option<PhaseId>,
    /// Who did it (`phasegate` for automatic steps).
    pub actor: Actor,
    /// When, in Unix-epoch milliseconds.
    pub at_ms: u64,
    /// The action's comment, or why an automatic step was taken
    /// (`health`, `apply_timeout`, `kill switch`).
    #[serde(default)]
    pub comment: Option<String>,
}

/// One rollout of one change through a pipeline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Trigger {
    /// Opaque, unique forever: never reused, even after deletes.
    pub id: TriggerId,
    /// The entity being changed.
    pub entity: EntityRef,
    /// Name of the pipeline.
    pub pipeline: PipelineName,
    /// The pipeline as it was at start.
    pub pipeline_snapshot: Pipeline,
    /// The version before the change (0 = absent).
    pub from_version: u64,
    /// The version being rolled out.
    pub to_version: u64,
    /// In progress until completed or aborted; never changes after.
    pub status: TriggerStatus,
    /// Index of the current phase.
    pub current_phase: u32,
    /// Id of the current phase.
    pub current_phase_id: Option<PhaseId>,
    /// Where the current phase stands; nil once finished.
    pub phase_state: Option<PhaseState>,
    /// Whether progress is stopped.
    pub paused: bool,
    /// Why it is paused; nil while not paused. Only a pause health made
    /// is lifted by health recovering.
    pub paused_reason: Option<PausedReason>,
    /// End of the bake: set only while baking and not paused.
    pub phase_ends_at_ms: Option<u64>,
    /// Bake time left: set only while paused in `baking`.
    pub remaining_wait_ms: Option<u64>,
    /// Approvals of the current phase.
    #[serde(default)]
    pub approvals: Vec<ApprovalRecord>,
    /// Progress per segment: every segment the pipeline names literally,
    /// and those its globs match that have known agents.
    #[serde(default)]
    pub segments: BTreeMap<String, SegmentProgress>,
    /// Who made the change.
    pub created_by: Actor,
    /// When the put that started it was accepted, Unix-epoch ms: the
    /// order of `trigger.list`, newest first.
    pub created_at_ms: u64,
    /// When anything shown here last changed, progress counts included.
    pub updated_at_ms: u64,
    /// Every action and automatic step, oldest first.
    #[serde(default)]
    pub history: Vec<HistoryEntry>,
    /// The latest result of each analysis per segment (an addition to
    /// SPEC.md §4's `Trigger`); empty, and left out, when the pipeline has
    /// no analysis or no agent has reported one yet.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub analysis: BTreeMap<String, Vec<crate::analysis::SegmentAnalysis>>,
}

impl Trigger {
    /// Whether the trigger is in phase `phase`, in `state`.
    pub fn is_at(&self, phase: &str, state: PhaseState) -> bool {
        self.current_phase_id.as_ref().map(PhaseId::as_str) == Some(phase)
            && self.phase_state == Some(state)
    }
}

/// A trigger as `trigger.list` shows it: everything but `history`,
/// `pipeline_snapshot` and `approvals`, so a page stays small whatever the
/// triggers' histories (SPEC.md §6). `trigger.get` answers the whole one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TriggerSummary {
    /// Opaque, unique forever: never reused, even after deletes.
    pub id: TriggerId,
    /// The entity being changed.
    pub entity: EntityRef,
    /// Name of the pipeline.
    pub pipeline: PipelineName,
    /// The version before the change (0 = absent).
    pub from_version: u64,
    /// The version being rolled out.
    pub to_version: u64,
    /// In progress until completed or aborted; never changes after.
    pub status: TriggerStatus,
    /// Index of the current phase.
    pub current_phase: u32,
    /// Id of the current phase.
    pub current_phase_id: Option<PhaseId>,
    /// Where the current phase stands; nil once finished.
    pub phase_state: Option<PhaseState>,
    /// Whether progress is stopped.
    pub paused: bool,
    /// Why it is paused; nil while not paused. Only a pause health made
    /// is lifted by health recovering.
    pub paused_reason: Option<PausedReason>,
    /// End of the bake: set only while baking and not paused.
    pub phase_ends_at_ms: Option<u64>,
    /// Bake time left: set only while paused in `baking`.
    pub remaining_wait_ms: Option<u64>,
    /// Progress per segment: every segment the pipeline names literally,
    /// and those its globs match that have known agents.
    #[serde(default)]
    pub segments: BTreeMap<String, SegmentProgress>,
    /// Who made the change.
    pub created_by: Actor,
    /// When the put that started it was accepted, Unix-epoch ms: the
    /// order of `trigger.list`, newest first.
    pub created_at_ms: u64,
    /// When anything shown here last changed, progress counts included.
    pub updated_at_ms: u64,
}

impl From<&Trigger> for TriggerSummary {
    fn from(t: &Trigger) -> Self {
        Self {
            id: t.id.clone(),
            entity: t.entity.clone(),
            pipeline: t.pipeline.clone(),
            from_version: t.from_version,
            to_version: t.to_version,
            status: t.status,
            current_phase: t.current_phase,
            current_phase_id: t.current_phase_id.clone(),
            phase_state: t.phase_state,
            paused: t.paused,
            paused_reason: t.paused_reason,
            phase_ends_at_ms: t.phase_ends_at_ms,
            remaining_wait_ms: t.remaining_wait_ms,
            segments: t.segments.clone(),
            created_by: t.created_by.clone(),
            created_at_ms: t.created_at_ms,
            updated_at_ms: t.updated_at_ms,
        }
    }
}
