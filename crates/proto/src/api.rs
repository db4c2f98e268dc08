//! Requests, results and the reply envelope of the command API (SPEC.md §6),
//! and the bodies of the agent's local HTTP API (SPEC.md §5).

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::entity::{EntityKind, EntitySpec, User, ValueMap};
use crate::names::{Actor, AgentId, EntityName, PhaseId, PipelineName, Segment, TriggerId};
use crate::pipeline::Pipeline;
use crate::subjects::Command;
use crate::trigger::{Trigger, TriggerStatus};

crate::wire_enum! {
    /// Error codes of the contract, in the order of precedence used when
    /// several apply (`invalid` first).
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
    #[serde(rename_all = "snake_case")]
    pub enum ErrorCode as "error code" {
        /// Malformed body, unknown field value, failed validation.
        Invalid => "invalid",
        /// The named thing does not exist.
        NotFound => "not_found",
        /// The current state does not allow it.
        Conflict => "conflict",
        /// The actor may not do it.
        Forbidden => "forbidden",
        /// Not ready or not the leader: retry.
        Unavailable => "unavailable",
        /// A fault of the service.
        Internal => "internal",
    }
}

/// The error part of a failed reply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{code}: {message}")]
pub struct ApiError {
    /// Machine-readable code.
    pub code: ErrorCode,
    /// What is wrong, for people.
    pub message: String,
}

impl ApiError {
    /// An error with `code` and `message`.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }

    /// An `invalid` error.
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Invalid, message)
    }

    /// A `not_found` error.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::NotFound, message)
    }

    /// A `conflict` error.
    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Conflict, message)
    }

    /// A `forbidden` error.
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Forbidden, message)
    }
}

/// The reply envelope: `{ok: true, result}` or `{ok: false, error}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reply<T> {
    /// Whether the request succeeded.
    pub ok: bool,
    /// The result, when `ok`.
    #[serde(default = "Option::default", skip_serializing_if = "Option::is_none")]
    pub result: Option<T>,
    /// The error, when not `ok`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ApiError>,
}

impl<T> Reply<T> {
    /// A successful reply.
    pub fn ok(result: T) -> Self {
        Self {
            ok: true,
            result: Some(result),
            error: None,
        }
    }

    /// A failed reply.
    pub fn err(error: ApiError) -> Self {
        Self {
            ok: false,
            result: None,
            error: Some(error),
        }
    }

    /// The result, or the error the reply carries.
    pub fn into_result(self) -> Result<T, ApiError> {
        match (self.ok, self.result, self.error) {
            (true, Some(r), _) => Ok(r),
            (false, _, Some(e)) => Err(e),
            (true, None, _) => Err(ApiError::new(
                ErrorCode::Internal,
                "reply says ok but carries no result",
            )),
            (false, _, None) => Err(ApiError::new(
                ErrorCode::Internal,
                "reply says not ok but carries no error",
            )),
        }
    }
}

/// An empty map, the result of deletes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Empty {}

/// `pipeline.put`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PipelinePutRequest {
    /// The whole definition: it replaces the stored one.
    pub pipeline: Pipeline,
    /// Who asks, as recorded in history; with authentication on, the
    /// sender's identity takes its place (SPEC.md §8).
    pub actor: Actor,
}

/// Result of `pipeline.put` and `pipeline.get`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PipelineResult {
    /// The stored definition.
    pub pipeline: Pipeline,
}

/// `pipeline.get`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PipelineGetRequest {
    /// Which pipeline.
    pub name: PipelineName,
}

/// `pipeline.delete`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PipelineDeleteRequest {
    /// Which pipeline.
    pub name: PipelineName,
    /// Who asks, as recorded in history; with authentication on, the
    /// sender's identity takes its place (SPEC.md §8).
    pub actor: Actor,
}

/// The most items one page of a `*.list` holds.
pub const MAX_PAGE: u32 = 1000;

/// The page size when a `*.list` names none.
pub const DEFAULT_PAGE: u32 = 100;

/// `pipeline.list` and `gate.list` / `config.list`: at most `limit` items
/// after the position `cursor` names (SPEC.md §6).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ListRequest {
    /// Items per page: default [`DEFAULT_PAGE`], at most [`MAX_PAGE`].
    #[serde(default)]
    pub limit: Option<u32>,
    /// From the previous page's `next_cursor`.
    #[serde(default)]
    pub cursor: Option<String>,
}

/// Result of `pipeline.list`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PipelineListResult {
    /// One page of pipelines, by name.
    pub pipelines: Vec<Pipeline>,
    /// Where the next page starts; nil on the last page.
    #[serde(default)]
    pub next_cursor: Option<String>,
}

/// `gate.put` / `config.put`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EntityPutRequest {
    /// The definition (`kind` and `version` are ignored).
    pub spec: EntitySpec,
    /// Who asks, as recorded in history; with authentication on, the
    /// sender's identity takes its place (SPEC.md §8).
    pub actor: Actor,
    /// Optional remark, recorded in the trigger's history.
    #[serde(default)]
    pub comment: Option<String>,
    /// Optimistic concurrency: must equal the latest version when given.
    #[serde(default)]
    pub expected_version: Option<u64>,
}

/// Result of `gate.put` / `config.put` and of `gate.get` / `config.get`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EntityResult {
    /// The spec as stored.
    pub spec: EntitySpec,
    /// The trigger created (put) or active (get), if any.
    pub trigger: Option<Trigger>,
}

/// `gate.get` / `config.get`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EntityGetRequest {
    /// Which entity.
    pub name: EntityName,
}

/// `gate.delete` / `config.delete`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EntityDeleteRequest {
    /// Which entity.
    pub name: EntityName,
    /// Who asks, as recorded in history; with authentication on, the
    /// sender's identity takes its place (SPEC.md §8).
    pub actor: Actor,
}

/// Result of `gate.list` / `config.list`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EntityListResult {
    /// One page of specs of the kind, by name.
    pub specs: Vec<EntitySpec>,
    /// Where the next page starts; nil on the last page.
    #[serde(default)]
    pub next_cursor: Option<String>,
}

/// `trigger.get`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TriggerGetRequest {
    /// Which trigger.
    pub id: TriggerId,
}

/// Result of `trigger.get` and of every action.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TriggerResult {
    /// The trigger after the request.
    pub trigger: Trigger,
}

/// `trigger.list`: exact filters, combined.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct TriggerListRequest {
    /// Only this kind.
    #[serde(default)]
    pub entity_kind: Option<EntityKind>,
    /// Only this entity name.
    #[serde(default)]
    pub entity_name: Option<EntityName>,
    /// Only this status.
    #[serde(default)]
    pub status: Option<TriggerStatus>,
    /// Items per page: default [`DEFAULT_PAGE`], at most [`MAX_PAGE`].
    #[serde(default)]
    pub limit: Option<u32>,
    /// From the previous page's `next_cursor`.
    #[serde(default)]
    pub cursor: Option<String>,
}

/// Result of `trigger.list`: newest `created_at_ms` first, then id.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TriggerListResult {
    /// One page of the matching triggers, as summaries.
    pub triggers: Vec<crate::TriggerSummary>,
    /// Where the next page starts; nil on the last page.
    #[serde(default)]
    pub next_cursor: Option<String>,
}

/// The operator actions on a trigger (SPEC.md §4). Each is sent as its own
/// command, `trigger.<verb>`, with an [`ActionRequest`]; the verb is the
/// action's word.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TriggerAction {
    /// Approve the current phase.
    Approve,
    /// Stop all progress.
    Pause,
    /// Continue after a pause, whoever or whatever paused.
    Resume,
    /// End the current phase now.
    Skip,
    /// Full roll-out now: every remaining phase at once.
    Rollout,
    /// Roll back, irreversibly.
    Abort,
}

impl TriggerAction {
    /// Every action, in contract order.
    pub const ALL: [Self; 6] = [
        Self::Approve,
        Self::Pause,
        Self::Resume,
        Self::Skip,
        Self::Rollout,
        Self::Abort,
    ];

    /// The command it is sent as.
    pub fn command(self) -> Command {
        match self {
            Self::Approve => Command::TriggerApprove,
            Self::Pause => Command::TriggerPause,
            Self::Resume => Command::TriggerResume,
            Self::Skip => Command::TriggerSkip,
            Self::Rollout => Command::TriggerRollout,
            Self::Abort => Command::TriggerAbort,
        }
    }

    /// The action `command` asks for; `None` for a command that is no action.
    pub fn of_command(command: Command) -> Option<Self> {
        Self::ALL.into_iter().find(|a| a.command() == command)
    }

    /// The verb (`approve`): its command's verb.
    pub fn as_str(self) -> &'static str {
        self.command().verb()
    }

    /// Whether the contract requires `phase_id`: the actions that move
    /// forward must name the phase they move past.
    pub fn needs_phase_id(self) -> bool {
        matches!(self, Self::Approve | Self::Skip | Self::Rollout)
    }
}

impl fmt::Display for TriggerAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `trigger.approve|pause|resume|skip|rollout|abort`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActionRequest {
    /// Which trigger.
    pub id: TriggerId,
    /// Must equal the current phase; required for approve, skip, rollout.
    #[serde(default)]
    pub phase_id: Option<PhaseId>,
    /// Who acts, as recorded in history; with authentication on, the
    /// sender's identity takes its place (SPEC.md §8).
    pub actor: Actor,
    /// Optional remark, recorded in history.
    #[serde(default)]
    pub comment: Option<String>,
}

/// `agent.list`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct AgentListRequest {
    /// Only agents of this segment.
    #[serde(default)]
    pub segment: Option<Segment>,
    /// Items per page: default [`DEFAULT_PAGE`], at most [`MAX_PAGE`].
    #[serde(default)]
    pub limit: Option<u32>,
    /// From the previous page's `next_cursor`.
    #[serde(default)]
    pub cursor: Option<String>,
}

/// `agent.forget`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentForgetRequest {
    /// The agent to forget.
    pub agent_id: AgentId,
    /// Who asks, as recorded in history; with authentication on, the
    /// sender's identity takes its place (SPEC.md §8).
    pub actor: Actor,
}

/// One agent as the coordinator sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentInfo {
    /// The agent's id.
    pub agent_id: AgentId,
    /// The segment it serves.
    pub segment: Segment,
    /// Its tier, if declared.
    pub tier: Option<String>,
    /// Heard from within 3 heartbeat intervals.
    pub live: bool,
    /// Its probes last passed.
    pub healthy: bool,
    /// Last heartbeat, Unix-epoch milliseconds.
    pub last_seen_ms: u64,
    /// The agent reported itself stale.
    pub stale: bool,
    /// The desired-state revision it has applied, all earlier ones included.
    #[serde(default)]
    pub applied_revision: u64,
    /// Entities it could not apply, with why.
    #[serde(default)]
    pub blocked: Vec<crate::BlockedEntity>,
}

/// Result of `agent.list`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentListResult {
    /// One page of known agents, by segment then id.
    pub agents: Vec<AgentInfo>,
    /// Where the next page starts; nil on the last page.
    #[serde(default)]
    pub next_cursor: Option<String>,
}

/// `POST /v1/check_gate`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckGateRequest {
    /// The gate to evaluate.
    pub gate: EntityName,
    /// The user; absent or null = a user with no fields.
    #[serde(default, deserialize_with = "null_as_default")]
    pub user: User,
}

/// Reads `null` as the type's default, as SDKs send null for "none".
fn null_as_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// Reply of `POST /v1/check_gate`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckGateResponse {
    /// The gate evaluated, as asked.
    pub gate: EntityName,
    /// Whether the user passes; `false` for an unknown gate.
    pub value: bool,
    /// The version that answered (0 for unknown).
    pub version: u64,
    /// `disabled`, `rule:<id>`, `default` or `unknown`.
    pub reason: String,
    /// Set when a rollout snapshot answered.
    pub trigger_id: Option<TriggerId>,
    /// Set when a rollout snapshot answered.
    pub phase_id: Option<PhaseId>,
    /// The agent has not synchronised for longer than its bound.
    pub stale: bool,
}

/// `POST /v1/get_config`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GetConfigRequest {
    /// The config to evaluate.
    pub config: EntityName,
    /// The user; absent or null = a user with no fields.
    #[serde(default, deserialize_with = "null_as_default")]
    pub user: User,
}

/// Reply of `POST /v1/get_config`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GetConfigResponse {
    /// The config evaluated, as asked.
    pub config: EntityName,
    /// The passing rule's value, else the default value; `{}` for an
    /// unknown config.
    pub value: ValueMap,
    /// The version that answered (0 for unknown).
    pub version: u64,
    /// `disabled`, `rule:<id>`, `default` or `unknown`.
    pub reason: String,
    /// Set when a rollout snapshot answered.
    pub trigger_id: Option<TriggerId>,
    /// Set when a rollout snapshot answered.
    pub phase_id: Option<PhaseId>,
    /// The agent has not synchronised for longer than its bound.
    pub stale: bool,
}

/// One row of `GET /v1/entities`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EntityView {
    /// Gate or config.
    pub kind: EntityKind,
    /// Its name.
    pub name: EntityName,
    /// Version every unit of the segment gets (0 = absent).
    pub base_version: u64,
    /// Version of the rollout snapshot, if one is applied.
    pub rollout_version: Option<u64>,
    /// The rollout's trigger.
    pub trigger_id: Option<TriggerId>,
    /// The rollout's phase.
    pub phase_id: Option<PhaseId>,
}

/// Reply of `GET /healthz`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Healthz {
    /// The segment served.
    pub segment: Segment,
    /// This agent, as its reports name it.
    pub agent_id: AgentId,
    /// Connected to NATS now.
    pub connected: bool,
    /// Every health probe passes and no analysis is failing.
    pub healthy: bool,
    /// Last synchronisation with the coordinator, if any.
    pub last_sync_ms: Option<u64>,
    /// Not synchronised for longer than the bound.
    pub stale: bool,
    /// Entities this agent could not apply (it keeps serving their last
    /// good version), with why.
    #[serde(default)]
    pub blocked: Vec<crate::BlockedEntity>,
    /// The latest result of every analysis this agent runs (an addition:
    /// left out when none runs).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub analyses: Vec<crate::AnalysisStatus>,
}

/// The body of an HTTP error reply: `{"error": {"code", "message"}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HttpError {
    /// The same code and message a command reply would carry.
    pub error: ApiError,
}
