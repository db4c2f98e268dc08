//! The catalog: pipelines, entities and the index of triggers. It answers
//! every command except trigger actions, which it hands to the actor of the
//! trigger; while a trigger runs, that actor owns the entity's record and
//! the catalog keeps a read copy it is told about after every write.
//!
//! Its rooms: [`pipelines`] (pipeline commands), [`entities`] (gate and
//! config commands, decided here), [`in_flight`] (one write per entity at a
//! time, carried out off the mailbox by `crate::writes`), [`triggers`]
//! (trigger reads and actions, and the trigger actors it supervises), and
//! [`recovery`] (loading at start, and `maintain`, which retries what
//! failed).

mod entities;
mod in_flight;
mod pipelines;
mod recovery;
mod triggers;

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::Arc;

use phasegate_proto::{ApiError, EntityRef, PipelineName, StoredEntity, TriggerId};
use phasegate_telemetry::metrics::Registry;
use ractor::{Actor, ActorProcessingErr, ActorRef, SupervisionEvent};

use crate::error::CoordinatorError;
use crate::msg::{CatalogMsg, DirectoryMsg, Pipelines, TriggerMsg};
use crate::store::Store;
use crate::writes::Queued;
use triggers::FinishedEntry;

pub(crate) struct CatalogArgs {
    pub(crate) store: Store,
    pub(crate) directory: ActorRef<DirectoryMsg>,
    pub(crate) metrics: Arc<Registry>,
}

/// An entity as last written or read, with the revision its next write is
/// checked against.
struct EntitySlot {
    stored: StoredEntity,
    revision: u64,
}

pub(crate) struct CatalogState {
    metrics: Arc<Registry>,
    store: Store,
    directory: ActorRef<DirectoryMsg>,
    pipelines: Arc<Pipelines>,
    entities: BTreeMap<EntityRef, EntitySlot>,
    /// Finished triggers, as an index; see [`FinishedEntry`].
    finished: HashMap<TriggerId, FinishedEntry>,
    actors: HashMap<TriggerId, ActorRef<TriggerMsg>>,
    /// Entities whose desired state could not be published yet.
    unpublished: BTreeSet<EntityRef>,
    /// The pipeline each write in flight attaches or starts a trigger on:
    /// in use, as if already written.
    in_flight_pipelines: HashMap<EntityRef, PipelineName>,
    /// Entities with a write in flight, and the commands waiting for it.
    in_flight: HashMap<EntityRef, VecDeque<Queued>>,
    /// The revision of each entity's desired state as last written or read:
    /// writes are checked against it (see `leader`).
    desired_revs: HashMap<EntityRef, u64>,
}

pub(crate) struct Catalog;

impl Actor for Catalog {
    type Msg = CatalogMsg;
    type State = CatalogState;
    type Arguments = CatalogArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: CatalogArgs,
    ) -> Result<CatalogState, ActorProcessingErr> {
        let mut state = CatalogState {
            metrics: args.metrics,
            store: args.store,
            directory: args.directory,
            pipelines: Arc::new(BTreeMap::new()),
            entities: BTreeMap::new(),
            finished: HashMap::new(),
            actors: HashMap::new(),
            unpublished: BTreeSet::new(),
            desired_revs: HashMap::new(),
            in_flight: HashMap::new(),
            in_flight_pipelines: HashMap::new(),
        };
        state.recover(&myself).await?;
        myself.send_interval(std::time::Duration::from_secs(1), || CatalogMsg::Maintain);
        Ok(state)
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        msg: CatalogMsg,
        state: &mut CatalogState,
    ) -> Result<(), ActorProcessingErr> {
        let Some(msg) = msg.unexpired() else {
            return Ok(());
        };
        use CatalogMsg as M;
        match msg {
            M::PipelinePut(req, reply) => reply.send(state.pipeline_put(req).await),
            M::PipelineGet(name, reply) => reply.send(state.pipeline_get(&name)),
            M::PipelineList(req, reply) => reply.send(Ok(state.pipeline_list(&req))),
            M::PipelineDelete(req, reply) => reply.send(state.pipeline_delete(req).await),
            M::EntityPut {
                kind,
                req,
                trace,
                reply,
            } => state.entity_put(&myself, kind, req, trace, reply).await,
            M::EntityGet(kind, req, reply) => reply.send(state.entity_get(kind, &req)),
            M::EntityList(kind, req, reply) => reply.send(Ok(state.entity_list(kind, &req))),
            M::EntityDelete(kind, req, reply) => state.entity_delete(&myself, kind, req, reply),
            M::Written(w) => state.written(&myself, *w).await,
            M::TriggerGet(id, reply) => reply.send(state.trigger_get(&id).await),
            M::TriggerList(req, page, reply) => reply.send(state.trigger_list(&req, &page).await),
            M::TriggerAct(action, req, reply) => state.trigger_act(action, req, reply),
            M::Maintain => state.maintain(&myself).await,
            M::Stats(reply) => {
                let _ = reply.send(state.active_counts());
            }
            M::TriggerAnalysis {
                entity,
                id,
                analysis,
            } => state.show_analysis(&entity, &id, analysis),
            M::TriggerProgress {
                entity,
                id,
                segments,
                updated_at_ms,
            } => state.adopt_progress(&entity, &id, segments, updated_at_ms),
            M::TriggerUpdated {
                stored,
                revision,
                desired_revision,
            } => state.adopt(stored, revision, desired_revision),
            M::TriggerFinished {
                stored,
                revision,
                desired_revision,
                trigger,
            } => {
                state.forget_actor(&trigger);
                state.adopt(stored, revision, desired_revision);
            }
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<Self::Msg>,
        evt: SupervisionEvent,
        state: &mut CatalogState,
    ) -> Result<(), ActorProcessingErr> {
        // The one place that decides restart-or-stop for trigger actors: a
        // trigger actor that stops normally has finished; one that fails is
        // restarted from what is stored, which is the truth.
        if let SupervisionEvent::ActorFailed(cell, err) = evt {
            state.restart_failed(&myself, cell.get_id(), &err).await;
        }
        Ok(())
    }
}

fn store_err(e: impl Into<CoordinatorError>) -> ApiError {
    ApiError::from(e.into())
}
