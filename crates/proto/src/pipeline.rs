//! Release pipelines (SPEC.md §3).

use serde::{Deserialize, Serialize};

use crate::entity::Condition;
use crate::names::{Actor, PhaseId, PipelineName, SegmentPattern};

/// An ordered list of phases that a change walks through.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Pipeline {
    /// Unique; what entities attach it by.
    pub name: PipelineName,
    /// For people.
    #[serde(default)]
    pub description: String,
    /// 1 to 50 phases.
    pub phases: Vec<Phase>,
}

fn default_pass_percentage() -> f64 {
    100.0
}

/// The default `apply_timeout_ms` of a phase.
pub const DEFAULT_APPLY_TIMEOUT_MS: u64 = 60_000;

fn default_apply_timeout_ms() -> u64 {
    DEFAULT_APPLY_TIMEOUT_MS
}

/// One step of a pipeline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Phase {
    /// Unique in the pipeline.
    pub id: PhaseId,
    /// Where this phase opens the change: names or globs, at least one.
    pub segments: Vec<SegmentPattern>,
    /// Extra targeting inside those segments.
    #[serde(default)]
    pub conditions: Vec<Condition>,
    /// Share of units inside those segments, bucketed with the snapshot's salt.
    #[serde(default = "default_pass_percentage")]
    pub pass_percentage: f64,
    /// Bake time once the phase is applied.
    #[serde(default)]
    pub wait_ms: u64,
    /// How long `applying` may last before the trigger pauses.
    #[serde(default = "default_apply_timeout_ms")]
    pub apply_timeout_ms: u64,
    /// Review before the phase starts.
    #[serde(default)]
    pub approval: ApprovalPolicy,
    /// What falling health does to the trigger.
    #[serde(default)]
    pub health: HealthPolicy,
    /// Metric checks run in every segment where the new version is active
    /// (at most 10). Left out of the encoding when empty, so pipelines
    /// without analyses keep their bytes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub analysis: Vec<crate::analysis::Analysis>,
}

fn default_min_approvals() -> u32 {
    1
}

/// Review required before a phase starts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApprovalPolicy {
    /// Whether approval is needed at all.
    #[serde(default)]
    pub required: bool,
    /// Who may approve; empty = any actor.
    #[serde(default)]
    pub approvers: Vec<Actor>,
    /// Distinct approvals needed.
    #[serde(default = "default_min_approvals")]
    pub min_approvals: u32,
}

impl Default for ApprovalPolicy {
    fn default() -> Self {
        Self {
            required: false,
            approvers: Vec::new(),
            min_approvals: 1,
        }
    }
}

impl ApprovalPolicy {
    /// True when `actor` may approve (or skip past) a phase under this policy.
    pub fn allows(&self, actor: &Actor) -> bool {
        self.approvers.is_empty() || self.approvers.contains(actor)
    }
}

crate::wire_enum! {
    /// What to do when health falls below the bar.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
    #[serde(rename_all = "snake_case")]
    pub enum OnUnhealthy as "on_unhealthy value" {
        /// Pause the trigger until health recovers.
        #[default]
        Pause => "pause",
        /// Abort the trigger, rolling back.
        Abort => "abort",
        /// Record it and go on.
        Ignore => "ignore",
    }
}

fn default_min_healthy_ratio() -> f64 {
    1.0
}

/// The health policy of a phase.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HealthPolicy {
    /// The reaction to falling health.
    #[serde(default)]
    pub on_unhealthy: OnUnhealthy,
    /// Healthy share of live agents required, 0–1.
    #[serde(default = "default_min_healthy_ratio")]
    pub min_healthy_ratio: f64,
}

impl Default for HealthPolicy {
    fn default() -> Self {
        Self {
            on_unhealthy: OnUnhealthy::Pause,
            min_healthy_ratio: 1.0,
        }
    }
}
