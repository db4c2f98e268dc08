//! The messages of the coordinator's actors, in one room. Actors depend on
//! these and on nothing of each other's modules, so the catalog, the
//! trigger actors and the directory can each be read (and changed) alone.
//!
//! Questions (commands, metrics) carry a reply port; everything else is a
//! tell. A command's port is a [`ReplyTo`], which refuses it unstarted once
//! its deadline has passed (see `reply`).

use std::cmp::Reverse;
use std::collections::BTreeMap;
use std::sync::Arc;

use phasegate_model::FleetView;
use phasegate_model::fleet::SegmentStats;
use phasegate_proto::{
    ActionRequest, AgentId, AgentInfo, AgentReport, ApiError, EntityDeleteRequest,
    EntityGetRequest, EntityKind, EntityListResult, EntityPutRequest, EntityRef, EntityResult,
    Pipeline, PipelineDeleteRequest, PipelineName, PipelinePutRequest, Segment, SegmentPattern,
    SegmentProgress, StoredEntity, Trigger, TriggerAction, TriggerId, TriggerListRequest,
    TriggerListResult, TriggerRecord,
};
use ractor::{ActorRef, RpcReplyPort};

use crate::page::{Page, PageRequest};
use crate::reply::ReplyTo;
use crate::writes::Written;

/// Pipelines by name, with the revision of their stored value.
pub(crate) type Pipelines = BTreeMap<PipelineName, (Pipeline, u64)>;

/// The order of `trigger.list`: newest `created_at_ms` first, then id.
pub(crate) type TriggerOrder = (Reverse<u64>, String);

/// Messages of the catalog.
pub(crate) enum CatalogMsg {
    PipelinePut(PipelinePutRequest, ReplyTo<Pipeline>),
    PipelineGet(PipelineName, ReplyTo<Pipeline>),
    PipelineList(PageRequest<String>, ReplyTo<Page<Pipeline>>),
    PipelineDelete(PipelineDeleteRequest, ReplyTo<()>),
    EntityPut {
        kind: EntityKind,
        req: EntityPutRequest,
        /// The command's `traceparent`: a trigger the put starts joins it.
        trace: Option<String>,
        reply: ReplyTo<EntityResult>,
    },
    EntityGet(EntityKind, EntityGetRequest, ReplyTo<EntityResult>),
    EntityList(EntityKind, PageRequest<String>, ReplyTo<EntityListResult>),
    EntityDelete(EntityKind, EntityDeleteRequest, ReplyTo<()>),
    TriggerGet(TriggerId, ReplyTo<Trigger>),
    /// The filters of the request, and its page checked.
    TriggerList(
        TriggerListRequest,
        PageRequest<TriggerOrder>,
        ReplyTo<TriggerListResult>,
    ),
    TriggerAct(TriggerAction, ActionRequest, ReplyTo<Trigger>),
    /// Periodic: retries failed publishes and archives, and trigger actors
    /// that did not start.
    Maintain,
    /// Active triggers by phase state and paused, for metrics.
    Stats(RpcReplyPort<Vec<ActiveCount>>),
    /// An entity write made off the mailbox came back (see `writes`).
    Written(Box<Written>),
    /// From a trigger actor: new analysis results (shown, not persisted).
    TriggerAnalysis {
        entity: EntityRef,
        id: TriggerId,
        analysis: crate::analysis::SegmentAnalyses,
    },
    /// From a trigger actor: only progress counts moved (not persisted).
    TriggerProgress {
        entity: EntityRef,
        id: TriggerId,
        segments: BTreeMap<String, SegmentProgress>,
        updated_at_ms: u64,
    },
    /// From a trigger actor, after each write of its entity.
    TriggerUpdated {
        stored: StoredEntity,
        revision: u64,
        desired_revision: u64,
    },
    /// From a trigger actor, after its last write: `stored` holds the
    /// settled entity, `trigger` the finished trigger.
    TriggerFinished {
        stored: StoredEntity,
        revision: u64,
        desired_revision: u64,
        trigger: Box<TriggerRecord>,
    },
}

impl CatalogMsg {
    /// The message, unless it is a command whose deadline passed: that one
    /// is refused (`unavailable`, never carried out) and dropped.
    pub(crate) fn unexpired(self) -> Option<Self> {
        use CatalogMsg as M;
        Some(match self {
            M::PipelinePut(a, r) => M::PipelinePut(a, r.unexpired()?),
            M::PipelineGet(a, r) => M::PipelineGet(a, r.unexpired()?),
            M::PipelineList(p, r) => M::PipelineList(p, r.unexpired()?),
            M::PipelineDelete(a, r) => M::PipelineDelete(a, r.unexpired()?),
            M::EntityPut {
                kind,
                req,
                trace,
                reply,
            } => M::EntityPut {
                kind,
                req,
                trace,
                reply: reply.unexpired()?,
            },
            M::EntityGet(k, a, r) => M::EntityGet(k, a, r.unexpired()?),
            M::EntityList(k, p, r) => M::EntityList(k, p, r.unexpired()?),
            M::EntityDelete(k, a, r) => M::EntityDelete(k, a, r.unexpired()?),
            M::TriggerGet(a, r) => M::TriggerGet(a, r.unexpired()?),
            M::TriggerList(a, p, r) => M::TriggerList(a, p, r.unexpired()?),
            M::TriggerAct(x, a, r) => M::TriggerAct(x, a, r.unexpired()?),
            other => other,
        })
    }
}

/// How many active triggers stand in one phase state, paused or not: one
/// series of the `phasegate_triggers_active` gauge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ActiveCount {
    /// The phase state's word; empty for a trigger between phases.
    pub(crate) phase_state: &'static str,
    pub(crate) paused: bool,
    pub(crate) triggers: u64,
}

/// Messages of a trigger actor.
pub(crate) enum TriggerMsg {
    /// An operator action.
    Act {
        action: TriggerAction,
        req: ActionRequest,
        reply: ReplyTo<Trigger>,
    },
    /// A put of the entity while the trigger runs (kill switch, no-op or
    /// conflict).
    Put {
        req: EntityPutRequest,
        pipelines: Arc<Pipelines>,
        reply: ReplyTo<EntityResult>,
    },
    /// The fleet as the directory sees it for this trigger, with acks
    /// counted against desired-state `revision`.
    Fleet {
        view: FleetView,
        revision: u64,
        /// The latest result of each of the trigger's analyses per segment.
        analysis: crate::analysis::SegmentAnalyses,
    },
    /// A deadline may have passed.
    Tick,
}

/// Messages of the directory.
pub(crate) enum DirectoryMsg {
    /// An agent's heartbeat, ack or goodbye.
    Report(AgentReport),
    /// Reports can arrive from now on: restored agents' liveness windows
    /// start here.
    Listening,
    /// A trigger actor wants fleet views for its phases' segments,
    /// counting acks of entity `key` at or above `revision`.
    Register {
        id: TriggerId,
        key: String,
        patterns: Vec<SegmentPattern>,
        revision: u64,
        actor: ActorRef<TriggerMsg>,
    },
    /// The trigger published a new revision: acks are counted against it.
    Revision { id: TriggerId, revision: u64 },
    /// The trigger finished.
    Unregister(TriggerId),
    /// Periodic: liveness, settling, forgetting.
    Sweep,
    /// Sends the views of triggers whose segments changed.
    Flush,
    /// The fleet with no acks counted, for a trigger about to start.
    Snapshot(RpcReplyPort<FleetView>),
    /// Agent counts per segment, for metrics.
    Stats(RpcReplyPort<Vec<SegmentStats>>),
    /// `agent.list`: every known agent.
    List {
        segment: Option<Segment>,
        reply: RpcReplyPort<Vec<AgentInfo>>,
    },
    /// `agent.forget`.
    Forget {
        agent_id: AgentId,
        reply: RpcReplyPort<Result<(), ApiError>>,
    },
}
