//! The catalog: pipelines, entities and the index of triggers. It answers
//! every command except trigger actions, which it hands to the actor of the
//! trigger; while a trigger runs, that actor owns the entity's record and
//! the catalog keeps a read copy it is told about after every write.

use std::cmp::Reverse;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use futures_util::StreamExt;

use phasegate_model::{self as model, Action, PutKind, PutRequest};
use phasegate_proto::{
    ActionRequest, ApiError, EntityGetRequest, EntityKind, EntityListResult, EntityPutRequest,
    EntityResult, EntitySpec, Pipeline, PipelineDeleteRequest, PipelineName, PipelinePutRequest,
    StoredEntity, Trigger, TriggerId, TriggerListRequest, TriggerListResult, TriggerRecord,
    TriggerStatus, TriggerSummary, entity_key,
};
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent};

use crate::clock::{new_trigger_id, now_ms};
use crate::directory::DirectoryMsg;
use crate::error::CoordinatorError;
use crate::page::{Page, PageRequest, page};
use crate::store::{Store, load_all, to_bytes};
use crate::trigger::{TriggerActor, TriggerArgs, TriggerMsg};

/// Pipelines by name, with the revision of their stored value.
pub(crate) type Pipelines = BTreeMap<PipelineName, (Pipeline, u64)>;

use crate::reply::ReplyTo;
use crate::writes::{AfterWrite, PendingWrite, Queued, Written};

/// Messages of the catalog.
pub(crate) enum CatalogMsg {
    PipelinePut(PipelinePutRequest, ReplyTo<Pipeline>),
    PipelineGet(PipelineName, ReplyTo<Pipeline>),
    PipelineList(PageRequest<String>, ReplyTo<Page<Pipeline>>),
    PipelineDelete(PipelineDeleteRequest, ReplyTo<()>),
    /// With the `traceparent` of the command, for a trigger it may start.
    EntityPut(
        EntityKind,
        EntityPutRequest,
        Option<String>,
        ReplyTo<EntityResult>,
    ),
    EntityGet(EntityKind, EntityGetRequest, ReplyTo<EntityResult>),
    EntityList(EntityKind, PageRequest<String>, ReplyTo<EntityListResult>),
    EntityDelete(
        EntityKind,
        phasegate_proto::EntityDeleteRequest,
        ReplyTo<()>,
    ),
    TriggerGet(TriggerId, ReplyTo<Trigger>),
    /// The filters of the request, and its page checked.
    TriggerList(
        TriggerListRequest,
        PageRequest<TriggerOrder>,
        ReplyTo<TriggerListResult>,
    ),
    TriggerAct(Action, ActionRequest, ReplyTo<Trigger>),
    /// Periodic: retries failed publishes and trigger actors that did not start.
    Maintain,
    /// Active triggers by phase state and paused, for metrics.
    Stats(RpcReplyPort<Vec<(String, bool, u64)>>),
    /// An entity write made off the mailbox came back (see `writes`).
    Written(Box<crate::writes::Written>),
    /// From a trigger actor: only progress counts moved (not persisted).
    /// From a trigger actor: new analysis results (shown, not persisted).
    TriggerAnalysis {
        entity: (EntityKind, String),
        id: TriggerId,
        analysis: crate::analysis::SegmentAnalyses,
    },
    TriggerProgress {
        entity: (EntityKind, String),
        id: TriggerId,
        segments: std::collections::BTreeMap<String, phasegate_proto::SegmentProgress>,
        updated_at_ms: u64,
    },
    /// From a trigger actor, after each write.
    TriggerUpdated {
        key: String,
        stored: StoredEntity,
        revision: u64,
        desired_revision: u64,
    },
    /// From a trigger actor, after its last write.
    TriggerFinished {
        key: String,
        stored: StoredEntity,
        revision: u64,
        desired_revision: u64,
        trigger: Box<TriggerRecord>,
    },
}

impl CatalogMsg {
    /// The message, unless it is a command whose deadline passed: that one
    /// is refused (`unavailable`, never carried out) and dropped.
    fn unexpired(self) -> Option<Self> {
        use CatalogMsg as M;
        Some(match self {
            M::PipelinePut(a, r) => M::PipelinePut(a, r.unexpired()?),
            M::PipelineGet(a, r) => M::PipelineGet(a, r.unexpired()?),
            M::PipelineList(p, r) => M::PipelineList(p, r.unexpired()?),
            M::PipelineDelete(a, r) => M::PipelineDelete(a, r.unexpired()?),
            M::EntityPut(k, a, t, r) => M::EntityPut(k, a, t, r.unexpired()?),
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

/// What deciding a put ends in.
enum Prepared {
    /// Answered without a write (a no-op put).
    Done(Box<EntityResult>),
    /// A write to carry out, and what its answer will say.
    Write(Box<(PendingWrite, PutAnswer)>),
}

/// The answer of a put, once its write succeeded.
struct PutAnswer {
    spec: Box<EntitySpec>,
    created: Option<Box<Trigger>>,
    actor: phasegate_proto::Actor,
    change: PutKind,
}

/// The catalog's arguments.
pub(crate) struct CatalogArgs {
    pub(crate) store: Store,
    pub(crate) directory: ActorRef<DirectoryMsg>,
    pub(crate) metrics: std::sync::Arc<phasegate_telemetry::metrics::Registry>,
}

/// The order of `trigger.list`: newest `created_at_ms` first, then id.
pub(crate) type TriggerOrder = (Reverse<u64>, String);

fn trigger_order(created_at_ms: u64, id: &TriggerId) -> TriggerOrder {
    (Reverse(created_at_ms), id.to_string())
}

/// What the catalog keeps in memory of a finished trigger: what filtering
/// and ordering `trigger.list` need. The trigger itself is read from
/// `<p>_triggers` when asked for, so memory does not grow with history;
/// an entry whose record has expired from the bucket
/// (`trigger_retention_days`) is dropped when found missing.
#[derive(Debug, Clone)]
struct FinishedEntry {
    entity: phasegate_proto::EntityRef,
    status: TriggerStatus,
    created_at_ms: u64,
}

impl From<&Trigger> for FinishedEntry {
    fn from(t: &Trigger) -> Self {
        Self {
            entity: t.entity.clone(),
            status: t.status,
            created_at_ms: t.created_at_ms,
        }
    }
}

/// A trigger `trigger.list` may show: active ones are in memory, finished
/// ones are read from the bucket for the page.
enum Listed {
    Summary(Box<TriggerSummary>),
    Stored(TriggerId),
}

struct EntitySlot {
    stored: StoredEntity,
    revision: u64,
}

pub(crate) struct CatalogState {
    metrics: std::sync::Arc<phasegate_telemetry::metrics::Registry>,
    store: Store,
    directory: ActorRef<DirectoryMsg>,
    pipelines: Arc<Pipelines>,
    entities: BTreeMap<(EntityKind, String), EntitySlot>,
    /// Finished triggers, as an index; see [`FinishedEntry`].
    finished: HashMap<TriggerId, FinishedEntry>,
    actors: HashMap<TriggerId, ActorRef<TriggerMsg>>,
    /// Entities whose desired state could not be published yet.
    unpublished: std::collections::BTreeSet<String>,
    /// The pipeline each write in flight attaches or starts a trigger on:
    /// in use, as if already written.
    in_flight_pipelines: HashMap<(EntityKind, String), PipelineName>,
    /// Entities with a write in flight, and the commands waiting for it.
    in_flight: HashMap<(EntityKind, String), std::collections::VecDeque<Queued>>,
    /// The revision of each entity's desired state as last written or read:
    /// writes are checked against it (see `leader`).
    desired_revs: HashMap<String, u64>,
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
            unpublished: std::collections::BTreeSet::new(),
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
        match msg {
            CatalogMsg::PipelinePut(req, reply) => {
                reply.send(state.pipeline_put(req).await);
            }
            CatalogMsg::PipelineGet(name, reply) => {
                reply.send(
                    state
                        .pipelines
                        .get(&name)
                        .map(|(p, _)| p.clone())
                        .ok_or_else(|| {
                            ApiError::not_found(format!("pipeline {name} does not exist"))
                        }),
                );
            }
            CatalogMsg::PipelineList(req, reply) => {
                let p = page(state.pipelines.values(), |(p, _)| p.name.to_string(), &req);
                reply.send(Ok(Page {
                    items: p.items.into_iter().map(|(p, _)| p.clone()).collect(),
                    next_cursor: p.next_cursor,
                }));
            }
            CatalogMsg::PipelineDelete(req, reply) => {
                reply.send(state.pipeline_delete(req).await);
            }
            CatalogMsg::EntityPut(kind, req, trace, reply) => {
                state.entity_put(&myself, kind, req, trace, reply).await
            }
            CatalogMsg::EntityGet(kind, req, reply) => {
                reply.send(state.entity_get(kind, &req));
            }
            CatalogMsg::EntityList(kind, req, reply) => {
                let specs = state
                    .entities
                    .range((kind, String::new())..)
                    .take_while(|((k, _), _)| *k == kind)
                    .filter_map(|((_, name), slot)| {
                        slot.stored.record.latest.as_ref().map(|s| (name, s))
                    });
                let p = page(specs, |(name, _)| (*name).clone(), &req);
                reply.send(Ok(EntityListResult {
                    specs: p.items.into_iter().map(|(_, s)| s.clone()).collect(),
                    next_cursor: p.next_cursor,
                }));
            }
            CatalogMsg::EntityDelete(kind, req, reply) => {
                state.entity_delete(&myself, kind, req, reply)
            }
            CatalogMsg::Written(w) => state.written(&myself, *w).await,
            CatalogMsg::TriggerGet(id, reply) => {
                reply.send(state.trigger_get(&id).await);
            }
            CatalogMsg::TriggerList(req, page, reply) => {
                reply.send(state.trigger_list(&req, &page).await);
            }
            CatalogMsg::TriggerAct(action, req, reply) => state.trigger_act(action, req, reply),
            CatalogMsg::Maintain => state.maintain(&myself).await,
            CatalogMsg::Stats(reply) => {
                let mut counts: BTreeMap<(String, bool), u64> = BTreeMap::new();
                for a in state
                    .entities
                    .values()
                    .filter_map(|s| s.stored.active.as_ref())
                {
                    let st = a
                        .trigger
                        .phase_state
                        .and_then(|p| serde_json_word(&p))
                        .unwrap_or_default();
                    *counts.entry((st, a.trigger.paused)).or_default() += 1;
                }
                let _ = reply.send(counts.into_iter().map(|((s, p), n)| (s, p, n)).collect());
            }
            CatalogMsg::TriggerAnalysis {
                entity,
                id,
                analysis,
            } => {
                if let Some(active) = state
                    .entities
                    .get_mut(&entity)
                    .and_then(|s| s.stored.active.as_mut())
                    .filter(|a| a.trigger.id == id)
                {
                    active.trigger.analysis = analysis;
                }
            }
            CatalogMsg::TriggerProgress {
                entity,
                id,
                segments,
                updated_at_ms,
            } => state.adopt_progress(&entity, &id, segments, updated_at_ms),
            CatalogMsg::TriggerUpdated {
                key,
                stored,
                revision,
                desired_revision,
            } => {
                state.adopt_desired(&key, desired_revision);
                state.adopt(&key, stored, revision);
            }
            CatalogMsg::TriggerFinished {
                key,
                stored,
                revision,
                desired_revision,
                trigger,
            } => {
                state.actors.remove(&trigger.trigger.id);
                state
                    .finished
                    .insert(trigger.trigger.id.clone(), (&trigger.trigger).into());
                state.adopt_desired(&key, desired_revision);
                state.adopt(&key, stored, revision);
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
            let failed = state
                .actors
                .iter()
                .find(|(_, a)| a.get_id() == cell.get_id())
                .map(|(id, _)| id.clone());
            if let Some(id) = failed {
                tracing::error!(trigger_id = %id, error = %err, "trigger actor failed; restarting from stored state");
                state.actors.remove(&id);
                let found = state
                    .entities
                    .iter()
                    .find(|(_, s)| s.stored.active.as_ref().is_some_and(|a| a.trigger.id == id))
                    .map(|(k, _)| k.clone());
                if let Some(k) = found
                    && let Err(e) = state.reload_and_spawn(&myself, &k).await
                {
                    tracing::error!(trigger_id = %id, error = %e, "cannot restart trigger actor");
                }
            }
        }
        Ok(())
    }
}

/// The wire word of a unit enum value (`applying`).
fn serde_json_word<T: serde::Serialize>(v: &T) -> Option<String> {
    let bytes = phasegate_proto::encode(phasegate_proto::Encoding::Json, v).ok()?;
    let s = String::from_utf8(bytes).ok()?;
    Some(s.trim_matches('"').to_owned())
}

fn store_err(e: impl Into<CoordinatorError>) -> ApiError {
    ApiError::from(e.into())
}

impl CatalogState {
    /// Loads everything and resumes every active trigger.
    async fn recover(&mut self, myself: &ActorRef<CatalogMsg>) -> Result<(), CoordinatorError> {
        let mut pipelines = BTreeMap::new();
        for e in load_all::<Pipeline>(&self.store.pipelines).await? {
            pipelines.insert(e.value.name.clone(), (e.value, e.revision));
        }
        self.pipelines = Arc::new(pipelines);
        for e in load_all::<TriggerRecord>(&self.store.triggers).await? {
            self.finished
                .insert(e.value.trigger.id.clone(), (&e.value.trigger).into());
        }
        let desired: HashMap<String, (phasegate_proto::DesiredEntity, u64)> =
            load_all::<phasegate_proto::DesiredEntity>(&self.store.desired)
                .await?
                .into_iter()
                .map(|e| (e.key, (e.value, e.revision)))
                .collect();
        for (key, (_, rev)) in &desired {
            self.desired_revs.insert(key.clone(), *rev);
        }
        for e in load_all::<StoredEntity>(&self.store.entities).await? {
            let kind = e.value.record.kind;
            let name = e.value.record.name.to_string();
            let mut stored = e.value;
            let mut revision = e.revision;
            // The entity record is the commit point of a finish: a trigger
            // it holds as finished but the archive lacks (a stop between
            // the two writes) is archived now. Nothing else is settled
            // from the archive: an entity still holding its trigger as
            // active was never finished, whatever an archive says.
            if let Some(done) = stored.finished.clone() {
                crate::store::archive_finished(&self.store, &e.key, &mut stored, &mut revision)
                    .await?;
                self.finished
                    .insert(done.trigger.id.clone(), (&done.trigger).into());
            }
            if stored.active.is_none() {
                // Make sure agents were told (a stop may have come between
                // the entity write and the publish).
                let want = model::desired::publish(&stored.record, None);
                let published = desired.get(&e.key).map(|(d, _)| d);
                if published != Some(&want) {
                    let rev = self.desired_revs.get(&e.key).copied().unwrap_or(0);
                    let new = self
                        .store
                        .write(&self.store.desired)
                        .update(&e.key, to_bytes(&want)?, rev)
                        .await?;
                    self.desired_revs.insert(e.key.clone(), new);
                }
            }
            self.entities
                .insert((kind, name.clone()), EntitySlot { stored, revision });
            if self
                .entities
                .get(&(kind, name.clone()))
                .is_some_and(|s| s.stored.active.is_some())
            {
                self.spawn_trigger(myself, &(kind, name)).await?;
            }
        }
        tracing::info!(
            pipelines = self.pipelines.len(),
            entities = self.entities.len(),
            active_triggers = self.actors.len(),
            finished_triggers = self.finished.len(),
            "state recovered"
        );
        Ok(())
    }

    async fn spawn_trigger(
        &mut self,
        myself: &ActorRef<CatalogMsg>,
        k: &(EntityKind, String),
    ) -> Result<(), CoordinatorError> {
        let Some(slot) = self.entities.get(k) else {
            return Ok(());
        };
        let Some(id) = slot.stored.active.as_ref().map(|a| a.trigger.id.clone()) else {
            return Ok(());
        };
        let key = entity_key(slot.stored.record.kind, &slot.stored.record.name);
        // Boxed: the actor's start runs inside this handler's future, and
        // both are large; on the worker's stack together they overflow it.
        let (actor, _) = Box::pin(Actor::spawn_linked(
            None,
            TriggerActor,
            TriggerArgs {
                key,
                stored: slot.stored.clone(),
                revision: slot.revision,
                store: self.store.clone(),
                catalog: myself.clone(),
                directory: self.directory.clone(),
                metrics: self.metrics.clone(),
            },
            myself.get_cell(),
        ))
        .await
        .map_err(|e| CoordinatorError::Actor(e.to_string()))?;
        self.actors.insert(id, actor);
        Ok(())
    }

    async fn reload_and_spawn(
        &mut self,
        myself: &ActorRef<CatalogMsg>,
        k: &(EntityKind, String),
    ) -> Result<(), CoordinatorError> {
        // What is stored is the truth; the failed actor's copy may be ahead.
        self.refresh(k).await;
        self.spawn_trigger(myself, k).await
    }

    /// Progress counts of an active trigger, shown by `trigger.get`.
    fn adopt_progress(
        &mut self,
        entity: &(EntityKind, String),
        id: &TriggerId,
        segments: std::collections::BTreeMap<String, phasegate_proto::SegmentProgress>,
        updated_at_ms: u64,
    ) {
        if let Some(active) = self
            .entities
            .get_mut(entity)
            .and_then(|s| s.stored.active.as_mut())
            .filter(|a| &a.trigger.id == id)
        {
            active.trigger.segments = segments;
            active.trigger.updated_at_ms = updated_at_ms;
        }
    }

    /// A trigger actor wrote the entity's desired state: later writes of
    /// the catalog are checked against that revision.
    fn adopt_desired(&mut self, key: &str, revision: u64) {
        let slot = self.desired_revs.entry(key.to_owned()).or_default();
        *slot = (*slot).max(revision);
    }

    /// The catalog's key of a bucket key `<kind>.<name>`.
    fn slot_key(&self, key: &str) -> Option<(EntityKind, String)> {
        self.entities
            .iter()
            .find(|(_, s)| entity_key(s.stored.record.kind, &s.stored.record.name) == key)
            .map(|(k, _)| k.clone())
    }

    fn adopt(&mut self, key: &str, stored: StoredEntity, revision: u64) {
        let k = (stored.record.kind, stored.record.name.to_string());
        debug_assert_eq!(key, entity_key(k.0, &stored.record.name));
        match self.entities.get_mut(&k) {
            // Writes of one key are ordered by revision: never go back.
            Some(slot) if slot.revision > revision => {}
            Some(slot) => {
                slot.stored = stored;
                slot.revision = revision;
            }
            None => {
                self.entities.insert(k, EntitySlot { stored, revision });
            }
        }
    }

    fn pipeline_in_use(&self, name: &PipelineName) -> bool {
        self.entities.values().any(|s| {
            s.stored
                .active
                .as_ref()
                .is_some_and(|a| &a.trigger.pipeline == name)
        })
    }

    /// `unavailable` while an entity write in flight attaches `name` or
    /// starts a trigger on it: the pipeline command waits for it to land
    /// (and is not carried out now).
    fn pipeline_settled(&self, name: &PipelineName) -> Result<(), ApiError> {
        if self.in_flight_pipelines.values().any(|p| p == name) {
            return Err(ApiError::new(
                phasegate_proto::ErrorCode::Unavailable,
                format!("a write using pipeline {name} is in flight; not carried out; retry"),
            ));
        }
        Ok(())
    }

    async fn pipeline_put(&mut self, req: PipelinePutRequest) -> Result<Pipeline, ApiError> {
        let p = req.pipeline;
        model::validate_pipeline(&p).map_err(|e| ApiError::invalid(e.to_string()))?;
        let existing = self.pipelines.get(&p.name);
        if existing.is_some_and(|(old, _)| old == &p) {
            return Ok(p);
        }
        self.pipeline_settled(&p.name)?;
        if self.pipeline_in_use(&p.name) {
            return Err(ApiError::conflict(format!(
                "pipeline {} is used by an active trigger; it is frozen until that trigger finishes",
                p.name
            )));
        }
        let revision = existing.map_or(0, |(_, r)| *r);
        let written = self
            .store
            .write(&self.store.pipelines)
            .update(p.name.as_str(), to_bytes(&p).map_err(store_err)?, revision)
            .await;
        let new_rev = match written {
            Ok(r) => r,
            Err(e) => {
                // Lost to another write, or unconfirmed and perhaps stored
                // later: what is stored is the truth for the retry.
                self.refresh_pipeline(&p.name).await;
                return Err(store_err(e));
            }
        };
        tracing::info!(pipeline = %p.name, actor = %req.actor, "pipeline stored");
        Arc::make_mut(&mut self.pipelines).insert(p.name.clone(), (p.clone(), new_rev));
        Ok(p)
    }

    /// Re-reads one pipeline after a failed write.
    async fn refresh_pipeline(&mut self, name: &PipelineName) {
        match self.store.pipelines.get(name.as_str()).await {
            Ok(Some(e)) => {
                match phasegate_proto::decode::<Pipeline>(
                    phasegate_proto::Encoding::MsgPack,
                    &e.value,
                ) {
                    Ok(p) => {
                        Arc::make_mut(&mut self.pipelines).insert(name.clone(), (p, e.revision));
                    }
                    Err(err) => {
                        tracing::error!(pipeline = %name, error = %err, "stored pipeline undecodable")
                    }
                }
            }
            Ok(None) => {
                Arc::make_mut(&mut self.pipelines).remove(name);
            }
            Err(err) => tracing::warn!(pipeline = %name, error = %err, "cannot re-read pipeline"),
        }
    }

    async fn pipeline_delete(&mut self, req: PipelineDeleteRequest) -> Result<(), ApiError> {
        if !self.pipelines.contains_key(&req.name) {
            return Err(ApiError::not_found(format!(
                "pipeline {} does not exist",
                req.name
            )));
        }
        self.pipeline_settled(&req.name)?;
        if self.pipeline_in_use(&req.name) {
            return Err(ApiError::conflict(format!(
                "pipeline {} is used by an active trigger",
                req.name
            )));
        }
        let attached = self.entities.values().find(|s| {
            s.stored
                .record
                .latest
                .as_ref()
                .is_some_and(|l| l.pipeline.as_ref() == Some(&req.name))
        });
        if let Some(s) = attached {
            return Err(ApiError::conflict(format!(
                "pipeline {} is attached to {} {}; detach it first",
                req.name, s.stored.record.kind, s.stored.record.name
            )));
        }
        self.store
            .write(&self.store.pipelines)
            .delete(req.name.as_str())
            .await
            .map_err(store_err)?;
        tracing::info!(pipeline = %req.name, actor = %req.actor, "pipeline deleted");
        Arc::make_mut(&mut self.pipelines).remove(&req.name);
        Ok(())
    }

    async fn entity_put(
        &mut self,
        myself: &ActorRef<CatalogMsg>,
        kind: EntityKind,
        req: EntityPutRequest,
        trace: Option<String>,
        reply: ReplyTo<EntityResult>,
    ) {
        let k = (kind, req.spec.name.to_string());
        // One write of an entity at a time: later commands wait their turn.
        if let Some(queue) = self.in_flight.get_mut(&k) {
            queue.push_back(Queued::Put(req, trace, reply));
            return;
        }
        // While a trigger runs, its actor owns the record.
        if let Some(slot) = self.entities.get(&k)
            && let Some(active) = &slot.stored.active
            && let Some(actor) = self.actors.get(&active.trigger.id)
        {
            let msg = TriggerMsg::Put {
                req,
                pipelines: self.pipelines.clone(),
                reply,
            };
            if let Err(e) = actor.cast(msg) {
                tracing::warn!(error = %e, "trigger actor gone while forwarding a put");
            }
            return;
        }
        match self.prepare_put(kind, req, trace).await {
            Ok(Prepared::Done(result)) => reply.send(Ok(*result)),
            Ok(Prepared::Write(w)) => {
                let (write, then) = *w;
                let PutAnswer {
                    spec,
                    created,
                    actor,
                    change,
                } = then;
                let then = AfterWrite::Put {
                    spec,
                    created,
                    actor,
                    change,
                    reply,
                };
                self.start_write(myself, PendingWrite { then, ..write });
            }
            Err(e) => reply.send(Err(e)),
        }
    }

    /// Decides a put of an entity without an active trigger: the model's
    /// outcome, and the write that carries it out (if any).
    async fn prepare_put(
        &mut self,
        kind: EntityKind,
        req: EntityPutRequest,
        trace: Option<String>,
    ) -> Result<Prepared, ApiError> {
        let k = (kind, req.spec.name.to_string());
        let (current, revision) = match self.entities.get(&k) {
            Some(s) => (s.stored.clone(), s.revision),
            None => (
                StoredEntity {
                    record: model::new_record(kind, req.spec.name.clone()),
                    active: None,
                    finished: None,
                },
                0,
            ),
        };
        let now = now_ms();
        let pipelines = self.pipelines.clone();
        let actor = req.actor.clone();
        let outcome = model::put(
            &current.record,
            current.active.as_ref(),
            PutRequest {
                spec: req.spec,
                actor: req.actor,
                comment: req.comment,
                expected_version: req.expected_version,
            },
            &|name| pipelines.get(name).map(|(p, _)| p.clone()),
            new_trigger_id(now),
            now,
        )?;
        if outcome.kind == PutKind::NoOp {
            return Ok(Prepared::Done(Box::new(EntityResult {
                spec: outcome.spec,
                trigger: None,
            })));
        }
        let mut created = outcome.created.clone();
        if let Some(rec) = created.as_mut() {
            self.show_fleet(rec).await;
            // The trigger's own trace starts here, under the command's span;
            // every later step of the rollout joins it (see `trace_parent`).
            let span = tracing::info_span!(
                "phasegate.trigger",
                otel.name = "trigger started",
                phasegate.trigger_id = %rec.trigger.id,
                phasegate.entity = %entity_key(kind, &rec.snapshot.name),
                phasegate.actor = %actor,
                phasegate.phase_id = %rec.trigger.current_phase_id.as_ref().map_or("", |p| p.as_str()),
            );
            phasegate_bus::trace::continue_from_traceparent(&span, trace.as_deref());
            rec.trace_parent = phasegate_bus::trace::traceparent_of(&span);
        }
        // A kill switch while the trigger's actor is not running: the
        // aborted trigger is kept beside the entity in the same write (the
        // commit point), then archived so it stays readable by id.
        let stored = StoredEntity {
            record: outcome.record,
            active: created.clone(),
            // A finished trigger still waiting for its archive stays.
            finished: outcome.aborted.clone().or(current.finished),
        };
        let key = entity_key(kind, &stored.record.name);
        // Without a trigger, agents are told at once; with one, its actor
        // publishes the first phase.
        let publish = match &created {
            Some(_) => None,
            None => Some(self.desired_bytes(&key, &stored.record)?),
        };
        let write = PendingWrite {
            id: k,
            key,
            stored,
            revision,
            publish,
            then: AfterWrite::Placeholder,
        };
        Ok(Prepared::Write(Box::new((
            write,
            PutAnswer {
                spec: Box::new(outcome.spec),
                created: created.map(|c| Box::new(c.trigger)),
                actor,
                change: outcome.kind,
            },
        ))))
    }

    /// Fills a new trigger's segments with the fleet as it stands, for the
    /// reply: shown, not acted on (the trigger's actor takes its steps from
    /// its own fleet views); no ack counted yet.
    async fn show_fleet(&self, rec: &mut TriggerRecord) {
        let Ok(ractor::rpc::CallResult::Success(view)) = self
            .directory
            .call(
                DirectoryMsg::Snapshot,
                Some(std::time::Duration::from_secs(2)),
            )
            .await
        else {
            return;
        };
        let phases = &rec.trigger.pipeline_snapshot.phases;
        let published = rec.published as usize;
        for (segment, f) in view {
            // Only the segments the pipeline covers (SPEC.md §6).
            if !phases
                .iter()
                .any(|ph| model::rollout::phase_covers(ph, &segment))
            {
                continue;
            }
            let active = phases
                .iter()
                .take(published)
                .any(|ph| model::rollout::phase_covers(ph, &segment));
            rec.trigger.segments.insert(
                segment,
                phasegate_proto::SegmentProgress {
                    version_active: active,
                    agents_live: f.live,
                    agents_applied: 0,
                    agents_healthy: f.healthy,
                    agents_known: f.known,
                },
            );
        }
    }

    /// The desired state of an entity without a trigger, encoded, with the
    /// revision its write is checked against.
    fn desired_bytes(
        &self,
        key: &str,
        record: &phasegate_proto::EntityRecord,
    ) -> Result<(bytes::Bytes, u64), ApiError> {
        let desired = model::desired::publish(record, None);
        let rev = self.desired_revs.get(key).copied().unwrap_or(0);
        Ok((to_bytes(&desired).map_err(store_err)?, rev))
    }

    /// Marks the entity busy and carries the write out off the mailbox.
    fn start_write(&mut self, myself: &ActorRef<CatalogMsg>, write: PendingWrite) {
        self.in_flight.entry(write.id.clone()).or_default();
        let pipeline = write
            .stored
            .active
            .as_ref()
            .map(|a| a.trigger.pipeline.clone())
            .or_else(|| {
                write
                    .stored
                    .record
                    .latest
                    .as_ref()
                    .and_then(|l| l.pipeline.clone())
            });
        if let Some(p) = pipeline {
            self.in_flight_pipelines.insert(write.id.clone(), p);
        }
        crate::writes::spawn(self.store.clone(), myself.clone(), write);
    }

    /// Adopts a write that came back, answers its command, then lets the
    /// commands that waited for it run, in order.
    async fn written(&mut self, myself: &ActorRef<CatalogMsg>, w: Written) {
        let Written {
            write,
            entity,
            desired,
        } = w;
        let PendingWrite {
            id,
            key,
            stored,
            then,
            ..
        } = write;
        self.in_flight_pipelines.remove(&id);
        match entity {
            Err(e) => {
                if !matches!(e, CoordinatorError::NotLeader) {
                    // Lost to another writer, or unconfirmed and perhaps
                    // stored after all: what is stored is the truth (and
                    // `maintain` drives what it holds).
                    self.refresh(&id).await;
                }
                let e = ApiError::from(e);
                match then {
                    AfterWrite::Put { reply, .. } => reply.send(Err(e)),
                    AfterWrite::Delete { reply, .. } => reply.send(Err(e)),
                    AfterWrite::Placeholder => {}
                }
            }
            Ok(revision) => {
                self.wrote(myself, &id, &key, stored, revision, desired, then)
                    .await;
            }
        }
        self.run_queued(myself, &id).await;
    }

    /// A write succeeded: adopt it, publish bookkeeping, answer.
    #[allow(clippy::too_many_arguments)] // the parts of one written command
    async fn wrote(
        &mut self,
        myself: &ActorRef<CatalogMsg>,
        id: &(EntityKind, String),
        key: &str,
        mut stored: StoredEntity,
        mut revision: u64,
        desired: Option<Result<u64, CoordinatorError>>,
        then: AfterWrite,
    ) {
        if let Some(done) = stored.finished.clone() {
            if let Err(e) =
                crate::store::archive_finished(&self.store, key, &mut stored, &mut revision).await
            {
                tracing::warn!(trigger_id = %done.trigger.id, error = %e, "cannot archive the finished trigger yet; retried");
            }
            self.finished
                .insert(done.trigger.id.clone(), (&done.trigger).into());
        }
        let record = stored.record.clone();
        self.entities
            .insert(id.clone(), EntitySlot { stored, revision });
        match desired {
            Some(Ok(rev)) => {
                self.desired_revs.insert(key.to_owned(), rev);
                self.unpublished.remove(key);
            }
            Some(Err(e)) => self.publish_failed(key, &e).await,
            None => {}
        }
        match then {
            AfterWrite::Put {
                spec,
                created,
                actor,
                change,
                reply,
                ..
            } => {
                tracing::info!(kind = %id.0, name = %id.1, version = spec.version, change = ?change, %actor, "entity stored");
                if created.is_some() {
                    // The trigger actor publishes the first phase and
                    // drives it. The trigger is stored: an actor that
                    // cannot start now is retried by `maintain`.
                    if let Err(e) = self.spawn_trigger(myself, id).await {
                        tracing::error!(error = %e, "cannot start the trigger actor; will retry");
                    }
                }
                reply.send(Ok(EntityResult {
                    spec: *spec,
                    trigger: created.map(|t| *t),
                }));
            }
            AfterWrite::Delete { actor, reply } => {
                tracing::info!(kind = %id.0, name = %id.1, %actor, "entity deleted");
                reply.send(Ok(()));
            }
            AfterWrite::Placeholder => {}
        }
        debug_assert!(record.kind == id.0);
    }

    /// Runs the commands that waited for `id`'s write, until one starts a
    /// write of its own (the rest wait for that one).
    async fn run_queued(&mut self, myself: &ActorRef<CatalogMsg>, id: &(EntityKind, String)) {
        let Some(mut queue) = self.in_flight.remove(id) else {
            return;
        };
        while let Some(next) = queue.pop_front() {
            match next {
                Queued::Put(req, trace, reply) => {
                    if let Some(reply) = reply.unexpired() {
                        Box::pin(self.entity_put(myself, id.0, req, trace, reply)).await;
                    }
                }
                Queued::Delete(req, reply) => {
                    if let Some(reply) = reply.unexpired() {
                        self.entity_delete(myself, id.0, req, reply);
                    }
                }
            }
            if let Some(busy) = self.in_flight.get_mut(id) {
                busy.extend(queue);
                return;
            }
        }
    }

    fn entity_get(
        &self,
        kind: EntityKind,
        req: &EntityGetRequest,
    ) -> Result<EntityResult, ApiError> {
        let slot = self
            .entities
            .get(&(kind, req.name.to_string()))
            .filter(|s| s.stored.record.latest.is_some())
            .ok_or_else(|| ApiError::not_found(format!("{kind} {} does not exist", req.name)))?;
        let spec: EntitySpec =
            slot.stored.record.latest.clone().ok_or_else(|| {
                ApiError::not_found(format!("{kind} {} does not exist", req.name))
            })?;
        Ok(EntityResult {
            spec,
            trigger: slot.stored.active.as_ref().map(|a| a.trigger.clone()),
        })
    }

    fn entity_delete(
        &mut self,
        myself: &ActorRef<CatalogMsg>,
        kind: EntityKind,
        req: phasegate_proto::EntityDeleteRequest,
        reply: ReplyTo<()>,
    ) {
        let k = (kind, req.name.to_string());
        if let Some(queue) = self.in_flight.get_mut(&k) {
            queue.push_back(Queued::Delete(req, reply));
            return;
        }
        let prepared = (|| {
            let slot = self.entities.get(&k).ok_or_else(|| {
                ApiError::not_found(format!("{kind} {} does not exist", req.name))
            })?;
            let record = model::delete(&slot.stored.record)?;
            let key = entity_key(kind, &req.name);
            let publish = Some(self.desired_bytes(&key, &record)?);
            Ok::<_, ApiError>(PendingWrite {
                id: k.clone(),
                key,
                stored: StoredEntity {
                    record,
                    active: None,
                    finished: slot.stored.finished.clone(),
                },
                revision: slot.revision,
                publish,
                then: AfterWrite::Placeholder,
            })
        })();
        match prepared {
            Ok(write) => {
                let then = AfterWrite::Delete {
                    actor: req.actor,
                    reply,
                };
                self.start_write(myself, PendingWrite { then, ..write });
            }
            Err(e) => reply.send(Err(e)),
        }
    }

    /// Re-reads an entity after a lost revision-checked write, so the retry
    /// the client was told to make can succeed.
    async fn refresh(&mut self, k: &(EntityKind, String)) {
        let Ok(name) = phasegate_proto::EntityName::new(k.1.clone()) else {
            return;
        };
        let key = entity_key(k.0, &name);
        match self.store.entities.get(&key).await {
            Ok(Some(e)) => match phasegate_proto::decode::<StoredEntity>(
                phasegate_proto::Encoding::MsgPack,
                &e.value,
            ) {
                Ok(stored) => {
                    self.entities.insert(
                        k.clone(),
                        EntitySlot {
                            stored,
                            revision: e.revision,
                        },
                    );
                }
                Err(err) => tracing::error!(%key, error = %err, "stored entity undecodable"),
            },
            Ok(None) => {}
            Err(err) => tracing::warn!(%key, error = %err, "cannot re-read entity"),
        }
    }

    /// Publishes the desired state of an entity without an active trigger;
    /// a failure is retried by [`CatalogMsg::Maintain`] until it succeeds.
    async fn publish(&mut self, key: &str, record: &phasegate_proto::EntityRecord) {
        let desired = model::desired::publish(record, None);
        let rev = self.desired_revs.get(key).copied().unwrap_or(0);
        let sent = async {
            self.store
                .write(&self.store.desired)
                .update(key, to_bytes(&desired)?, rev)
                .await
        }
        .await;
        match sent {
            Ok(new) => {
                self.desired_revs.insert(key.to_owned(), new);
                self.unpublished.remove(key);
            }
            Err(e) => self.publish_failed(key, &e).await,
        }
    }

    /// A publish of desired state failed: it is retried by `maintain`; a
    /// lost revision check first re-reads what is stored.
    async fn publish_failed(&mut self, key: &str, e: &CoordinatorError) {
        match e {
            e if e.is_conflict() => {
                // Written elsewhere (a deposed leader's late write): re-read
                // the entity and the revision, and publish again from what
                // is stored, on the next `maintain`.
                tracing::warn!(%key, "desired state written elsewhere; re-reading");
                match self.store.desired.get(key).await {
                    Ok(entry) => {
                        self.desired_revs
                            .insert(key.to_owned(), entry.map_or(0, |e| e.revision));
                    }
                    Err(err) => tracing::warn!(%key, error = %err, "cannot re-read desired state"),
                }
                if let Some(k) = self.slot_key(key) {
                    self.refresh(&k).await;
                }
                self.unpublished.insert(key.to_owned());
            }
            e => {
                tracing::error!(%key, error = %e, "cannot publish desired state; will retry");
                self.unpublished.insert(key.to_owned());
            }
        }
    }

    /// Retries what failed: publishes of desired state, and trigger actors
    /// that could not be started.
    async fn maintain(&mut self, myself: &ActorRef<CatalogMsg>) {
        let keys: Vec<String> = self.unpublished.iter().cloned().collect();
        for key in keys {
            // An entity with a write in flight is published by that write.
            let record = self
                .entities
                .iter()
                .find(|(k, s)| {
                    entity_key(s.stored.record.kind, &s.stored.record.name) == key
                        && s.stored.active.is_none()
                        && !self.in_flight.contains_key(*k)
                })
                .map(|(_, s)| s.stored.record.clone());
            match record {
                Some(r) => self.publish(&key, &r).await,
                // A trigger took it over, or it is gone: its owner publishes.
                None => {
                    self.unpublished.remove(&key);
                }
            }
        }
        let orphans: Vec<(EntityKind, String)> = self
            .entities
            .iter()
            .filter(|(k, s)| {
                !self.in_flight.contains_key(*k)
                    && s.stored
                        .active
                        .as_ref()
                        .is_some_and(|a| !self.actors.contains_key(&a.trigger.id))
            })
            .map(|(k, _)| k.clone())
            .collect();
        for k in orphans {
            if let Err(e) = self.spawn_trigger(myself, &k).await {
                tracing::error!(entity = %k.1, error = %e, "cannot start a trigger actor; will retry");
            }
        }
        // Finished triggers whose archive write failed: archived now.
        let pending: Vec<(EntityKind, String)> = self
            .entities
            .iter()
            .filter(|(k, s)| {
                !self.in_flight.contains_key(*k)
                    && s.stored.active.is_none()
                    && s.stored.finished.is_some()
            })
            .map(|(k, _)| k.clone())
            .collect();
        for k in pending {
            let Some(slot) = self.entities.get_mut(&k) else {
                continue;
            };
            let key = entity_key(slot.stored.record.kind, &slot.stored.record.name);
            let (mut stored, mut revision) = (slot.stored.clone(), slot.revision);
            match crate::store::archive_finished(&self.store, &key, &mut stored, &mut revision)
                .await
            {
                Ok(()) => {
                    self.entities.insert(k, EntitySlot { stored, revision });
                }
                Err(e) => {
                    tracing::warn!(entity = %k.1, error = %e, "cannot archive a finished trigger yet; will retry");
                    if !matches!(e, CoordinatorError::NotLeader) {
                        self.refresh(&k).await;
                    }
                }
            }
        }
    }

    /// The active trigger `id`, if it is one.
    fn active_trigger(&self, id: &TriggerId) -> Option<&Trigger> {
        self.entities.values().find_map(|s| {
            s.stored
                .active
                .as_ref()
                .filter(|a| &a.trigger.id == id)
                .map(|a| &a.trigger)
        })
    }

    /// The whole trigger: active ones from memory, finished ones from the
    /// bucket.
    async fn trigger_get(&mut self, id: &TriggerId) -> Result<Trigger, ApiError> {
        if let Some(t) = self.active_trigger(id) {
            return Ok(t.clone());
        }
        let missing = || ApiError::not_found(format!("trigger {id} does not exist"));
        if !self.finished.contains_key(id) {
            return Err(missing());
        }
        self.read_finished(id).await?.ok_or_else(missing)
    }

    /// A finished trigger not archived yet (its archive write failed): its
    /// entity's record holds it until `maintain` or a restart archives it.
    fn pending_finished(&self, id: &TriggerId) -> Option<Trigger> {
        self.entities.values().find_map(|s| {
            s.stored
                .finished
                .as_ref()
                .filter(|f| &f.trigger.id == id)
                .map(|f| f.trigger.clone())
        })
    }

    /// Reads a finished trigger from the bucket; `None` (and the index
    /// entry dropped) when its record has expired.
    async fn read_finished(&mut self, id: &TriggerId) -> Result<Option<Trigger>, ApiError> {
        if let Some(pending) = self.pending_finished(id) {
            return Ok(Some(pending));
        }
        let found = read_stored_trigger(&self.store, id).await?;
        if found.is_none() {
            tracing::debug!(trigger_id = %id, "finished trigger expired from the bucket; forgotten");
            self.finished.remove(id);
        }
        Ok(found)
    }

    /// One page of `trigger.list`: filtered and ordered over the active
    /// triggers and the index of finished ones; only the finished triggers
    /// of the page are read from the bucket.
    async fn trigger_list(
        &mut self,
        req: &TriggerListRequest,
        page_req: &PageRequest<TriggerOrder>,
    ) -> Result<TriggerListResult, ApiError> {
        let matches = |entity: &phasegate_proto::EntityRef, status: TriggerStatus| {
            req.entity_kind.is_none_or(|k| entity.kind == k)
                && req.entity_name.as_ref().is_none_or(|n| &entity.name == n)
                && req.status.is_none_or(|s| status == s)
        };
        let active = self
            .entities
            .values()
            .filter_map(|s| s.stored.active.as_ref().map(|a| &a.trigger))
            .filter(|t| matches(&t.entity, t.status))
            .map(|t| (trigger_order(t.created_at_ms, &t.id), Some(t), &t.id));
        let finished = self
            .finished
            .iter()
            .filter(|(_, f)| matches(&f.entity, f.status))
            .map(|(id, f)| (trigger_order(f.created_at_ms, id), None, id));
        let p = page(active.chain(finished), |(k, _, _)| k.clone(), page_req);
        let next_cursor = p.next_cursor;
        let listed: Vec<Listed> = p
            .items
            .into_iter()
            .map(|(_, active, id)| match active {
                Some(t) => Listed::Summary(Box::new(t.into())),
                None => Listed::Stored(id.clone()),
            })
            .collect();
        // Read the page's finished triggers a few at a time, in order.
        let store = self.store.clone();
        let read: Vec<(Listed, Result<Option<Trigger>, ApiError>)> =
            futures_util::stream::iter(listed)
                .map(|l| {
                    let store = store.clone();
                    async move {
                        let got = match &l {
                            Listed::Stored(id) => read_stored_trigger(&store, id).await,
                            Listed::Summary(_) => Ok(None),
                        };
                        (l, got)
                    }
                })
                .buffered(16)
                .collect()
                .await;
        let mut triggers = Vec::with_capacity(read.len());
        for (l, got) in read {
            match l {
                Listed::Summary(s) => triggers.push(*s),
                Listed::Stored(id) => match got? {
                    Some(t) => triggers.push(TriggerSummary::from(&t)),
                    // Not archived yet: its entity's record holds it.
                    None => match self.pending_finished(&id) {
                        Some(t) => triggers.push(TriggerSummary::from(&t)),
                        None => {
                            self.finished.remove(&id);
                        }
                    },
                },
            }
        }
        Ok(TriggerListResult {
            triggers,
            next_cursor,
        })
    }

    fn trigger_act(&mut self, action: Action, req: ActionRequest, reply: ReplyTo<Trigger>) {
        if matches!(action, Action::Approve | Action::Skip | Action::Rollout)
            && req.phase_id.is_none()
        {
            reply.send(Err(ApiError::invalid(format!(
                "phase_id is required for {}: name the phase you act on",
                action.as_str()
            ))));
            return;
        }
        if let Some(actor) = self.actors.get(&req.id) {
            let id = req.id.clone();
            if let Err(e) = actor.cast(TriggerMsg::Act { action, req, reply }) {
                tracing::warn!(trigger_id = %id, error = %e, "trigger actor gone while forwarding an action");
            }
            return;
        }
        let answer = if self.finished.contains_key(&req.id) {
            Err(ApiError::conflict(format!(
                "trigger {} is finished; it no longer accepts actions",
                req.id
            )))
        } else if self.active_trigger(&req.id).is_some() {
            Err(ApiError::new(
                phasegate_proto::ErrorCode::Unavailable,
                "the trigger is being restarted; retry",
            ))
        } else {
            Err(ApiError::not_found(format!(
                "trigger {} does not exist",
                req.id
            )))
        };
        reply.send(answer);
    }
}

/// A finished trigger as stored in `<p>_triggers`; `None` when it is not
/// there (expired, or never archived).
async fn read_stored_trigger(store: &Store, id: &TriggerId) -> Result<Option<Trigger>, ApiError> {
    let Some(e) = store.triggers.get(id.as_str()).await.map_err(store_err)? else {
        return Ok(None);
    };
    let rec: TriggerRecord = phasegate_proto::decode(phasegate_proto::Encoding::MsgPack, &e.value)
        .map_err(|err| {
            tracing::error!(trigger_id = %id, error = %err, "stored trigger undecodable");
            ApiError::new(
                phasegate_proto::ErrorCode::Internal,
                format!("trigger {id} is stored in a form this coordinator cannot read"),
            )
        })?;
    Ok(Some(rec.trigger))
}
