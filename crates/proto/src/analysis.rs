//! Metric analyses of a phase (SPEC.md §3 `Analysis`): what a pipeline
//! asks agents to check against their Prometheus, and the results they
//! report back.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::names::{AgentId, AnalysisName, PhaseId, TriggerId};

/// The default `every_ms` of an analysis.
pub const DEFAULT_ANALYSIS_EVERY_MS: u64 = 30_000;
/// The default `failure_limit` of an analysis.
pub const DEFAULT_FAILURE_LIMIT: u32 = 1;
/// The default `inconclusive_limit` of an analysis.
pub const DEFAULT_INCONCLUSIVE_LIMIT: u32 = 3;
/// What every `{{segment}}` of a query is replaced with: the name of the
/// segment whose agent runs it.
pub const SEGMENT_PLACEHOLDER: &str = "{{segment}}";

fn default_every_ms() -> u64 {
    DEFAULT_ANALYSIS_EVERY_MS
}

fn default_failure_limit() -> u32 {
    DEFAULT_FAILURE_LIMIT
}

fn default_inconclusive_limit() -> u32 {
    DEFAULT_INCONCLUSIVE_LIMIT
}

/// One metric check of a phase, run by every agent of a segment where the
/// new version is active.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Analysis {
    /// Unique in the phase; follows the name rule of phase ids (§1).
    pub name: AnalysisName,
    /// PromQL; every `{{segment}}` is replaced by the segment's name.
    pub query: String,
    /// How often it runs, in ms (at least 1000).
    #[serde(default = "default_every_ms")]
    pub every_ms: u64,
    /// What the query's single sample must satisfy.
    pub success: SuccessCondition,
    /// Consecutive failures before the agent fails the analysis.
    #[serde(default = "default_failure_limit")]
    pub failure_limit: u32,
    /// Consecutive inconclusive results before the agent fails it.
    #[serde(default = "default_inconclusive_limit")]
    pub inconclusive_limit: u32,
}

/// `{op, threshold}`: the sample passes when `sample op threshold` holds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct SuccessCondition {
    /// The comparison.
    pub op: CompareOp,
    /// The number compared with.
    pub threshold: f64,
}

impl SuccessCondition {
    /// True when `sample` satisfies the condition (never for NaN).
    pub fn holds(&self, sample: f64) -> bool {
        match self.op {
            CompareOp::Lt => sample < self.threshold,
            CompareOp::Le => sample <= self.threshold,
            CompareOp::Gt => sample > self.threshold,
            CompareOp::Ge => sample >= self.threshold,
        }
    }
}

impl fmt::Display for SuccessCondition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.op, self.threshold)
    }
}

crate::wire_enum! {
    /// The comparison of a [`SuccessCondition`].
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
    pub enum CompareOp as "comparison" {
        /// The sample is below the threshold.
        #[serde(rename = "<")]
        Lt => "<",
        /// The sample is at most the threshold.
        #[serde(rename = "<=")]
        Le => "<=",
        /// The sample is above the threshold.
        #[serde(rename = ">")]
        Gt => ">",
        /// The sample is at least the threshold.
        #[serde(rename = ">=")]
        Ge => ">=",
    }
}

crate::wire_enum! {
    /// What one run of an analysis gave.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
    #[serde(rename_all = "snake_case")]
    pub enum AnalysisResult as "analysis result" {
        /// The sample satisfied `success`.
        Success => "success",
        /// The sample violated `success`.
        Failure => "failure",
        /// No verdict: the query failed, timed out, or did not return
        /// exactly one sample (or no Prometheus is configured).
        Inconclusive => "inconclusive",
    }
}

/// The latest result of one analysis on one agent, as its reports carry it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AnalysisStatus {
    /// The trigger whose pipeline holds the analysis.
    pub trigger_id: TriggerId,
    /// The phase that holds it.
    pub phase_id: PhaseId,
    /// The analysis.
    pub name: AnalysisName,
    /// The latest result.
    pub result: AnalysisResult,
    /// The sample, when the query returned one.
    #[serde(default)]
    pub value: Option<f64>,
    /// When the result was taken, Unix-epoch ms.
    pub at_ms: u64,
    /// How many results in a row were this one (counted against
    /// `failure_limit` / `inconclusive_limit`).
    #[serde(default)]
    pub consecutive: u32,
    /// The agent fails the analysis (limits reached, no success since):
    /// it reports itself unhealthy.
    #[serde(default)]
    pub failing: bool,
    /// Why a result is inconclusive, for operators.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// The latest result of one analysis in one segment, as `trigger.get`
/// shows it: a failing agent's when one fails, else the newest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SegmentAnalysis {
    /// The phase that holds the analysis.
    pub phase_id: PhaseId,
    /// The analysis.
    pub name: AnalysisName,
    /// The agent whose result this is.
    pub agent_id: AgentId,
    /// Its latest result.
    pub result: AnalysisResult,
    /// The sample, when the query returned one.
    #[serde(default)]
    pub value: Option<f64>,
    /// When the result was taken, Unix-epoch ms.
    pub at_ms: u64,
    /// How many results in a row were this one.
    #[serde(default)]
    pub consecutive: u32,
    /// The agent fails the analysis.
    #[serde(default)]
    pub failing: bool,
    /// Why a result is inconclusive.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}
