//! Triggers as the catalog knows them: reads (`trigger.get`,
//! `trigger.list`), actions handed to the trigger's actor, the trigger
//! actors it spawns and restarts, and the copies of their writes it keeps.

use std::cmp::Reverse;
use std::collections::BTreeMap;

use futures_util::StreamExt;
use phasegate_proto::{
    ActionRequest, ApiError, EntityRef, ErrorCode, SegmentProgress, StoredEntity, Trigger,
    TriggerAction, TriggerId, TriggerListRequest, TriggerListResult, TriggerRecord, TriggerStatus,
    TriggerSummary,
};
use ractor::{Actor, ActorId, ActorProcessingErr, ActorRef};

use super::{CatalogState, EntitySlot, store_err};
use crate::error::CoordinatorError;
use crate::msg::{ActiveCount, CatalogMsg, TriggerMsg, TriggerOrder};
use crate::page::{PageRequest, page};
use crate::reply::ReplyTo;
use crate::store::Store;
use crate::trigger::{TriggerActor, TriggerArgs};

fn trigger_order(created_at_ms: u64, id: &TriggerId) -> TriggerOrder {
    (Reverse(created_at_ms), id.to_string())
}

/// What the catalog keeps in memory of a finished trigger: what filtering
/// and ordering `trigger.list` need. The trigger itself is read from
/// `<p>_triggers` when asked for, so memory does not grow with history;
/// an entry whose record has expired from the bucket
/// (`trigger_retention_days`) is dropped when found missing.
#[derive(Debug, Clone)]
pub(super) struct FinishedEntry {
    entity: EntityRef,
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

impl CatalogState {
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
    pub(super) async fn trigger_get(&mut self, id: &TriggerId) -> Result<Trigger, ApiError> {
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
    pub(super) async fn trigger_list(
        &mut self,
        req: &TriggerListRequest,
        page_req: &PageRequest<TriggerOrder>,
    ) -> Result<TriggerListResult, ApiError> {
        let (listed, next_cursor) = self.listed(req, page_req);
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

    /// The triggers of one page of `trigger.list`, in order, and the
    /// cursor of the next page.
    fn listed(
        &self,
        req: &TriggerListRequest,
        page_req: &PageRequest<TriggerOrder>,
    ) -> (Vec<Listed>, Option<String>) {
        let matches = |entity: &EntityRef, status: TriggerStatus| {
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
        let listed = p
            .items
            .into_iter()
            .map(|(_, active, id)| match active {
                Some(t) => Listed::Summary(Box::new(t.into())),
                None => Listed::Stored(id.clone()),
            })
            .collect();
        (listed, p.next_cursor)
    }

    /// Hands an action to the trigger's actor, or explains why there is
    /// none.
    pub(super) fn trigger_act(
        &mut self,
        action: TriggerAction,
        req: ActionRequest,
        reply: ReplyTo<Trigger>,
    ) {
        if action.needs_phase_id() && req.phase_id.is_none() {
            reply.send(Err(ApiError::invalid(format!(
                "phase_id is required for {action}: name the phase you act on"
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
                ErrorCode::Unavailable,
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

    /// Active triggers by phase state and paused, for metrics.
    pub(super) fn active_counts(&self) -> Vec<ActiveCount> {
        let mut counts: BTreeMap<(&'static str, bool), u64> = BTreeMap::new();
        for a in self
            .entities
            .values()
            .filter_map(|s| s.stored.active.as_ref())
        {
            let state = a.trigger.phase_state.map_or("", |p| p.as_str());
            *counts.entry((state, a.trigger.paused)).or_default() += 1;
        }
        counts
            .into_iter()
            .map(|((phase_state, paused), triggers)| ActiveCount {
                phase_state,
                paused,
                triggers,
            })
            .collect()
    }

    /// Starts the actor of `entity`'s active trigger, if it has one.
    pub(super) async fn spawn_trigger(
        &mut self,
        myself: &ActorRef<CatalogMsg>,
        entity: &EntityRef,
    ) -> Result<(), CoordinatorError> {
        let Some(slot) = self.entities.get(entity) else {
            return Ok(());
        };
        let Some(id) = slot.stored.active.as_ref().map(|a| a.trigger.id.clone()) else {
            return Ok(());
        };
        // Boxed: the actor's start runs inside this handler's future, and
        // both are large; on the worker's stack together they overflow it.
        let (actor, _) = Box::pin(Actor::spawn_linked(
            None,
            TriggerActor,
            TriggerArgs {
                entity: entity.clone(),
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

    /// A trigger actor failed: it starts again from what is stored, which
    /// is the truth (the failed actor's copy may be ahead).
    pub(super) async fn restart_failed(
        &mut self,
        myself: &ActorRef<CatalogMsg>,
        failed: ActorId,
        err: &ActorProcessingErr,
    ) {
        let Some(id) = self
            .actors
            .iter()
            .find(|(_, a)| a.get_id() == failed)
            .map(|(id, _)| id.clone())
        else {
            return;
        };
        tracing::error!(trigger_id = %id, error = %err, "trigger actor failed; restarting from stored state");
        self.actors.remove(&id);
        let found = self
            .entities
            .iter()
            .find(|(_, s)| s.stored.active.as_ref().is_some_and(|a| a.trigger.id == id))
            .map(|(k, _)| k.clone());
        if let Some(entity) = found {
            self.refresh(&entity).await;
            if let Err(e) = self.spawn_trigger(myself, &entity).await {
                tracing::error!(trigger_id = %id, error = %e, "cannot restart trigger actor");
            }
        }
    }

    /// The latest analysis results of an active trigger, shown by
    /// `trigger.get` (not persisted).
    pub(super) fn show_analysis(
        &mut self,
        entity: &EntityRef,
        id: &TriggerId,
        analysis: crate::analysis::SegmentAnalyses,
    ) {
        let active = self.entities.get_mut(entity).map(|s| &mut s.stored);
        crate::analysis::show(active, id, analysis);
    }

    /// A finished trigger's actor is gone; its summary stays listed.
    pub(super) fn forget_actor(&mut self, finished: &phasegate_proto::TriggerRecord) {
        self.actors.remove(&finished.trigger.id);
        self.finished
            .insert(finished.trigger.id.clone(), (&finished.trigger).into());
    }

    /// Progress counts of an active trigger, shown by `trigger.get`.
    pub(super) fn adopt_progress(
        &mut self,
        entity: &EntityRef,
        id: &TriggerId,
        segments: BTreeMap<String, SegmentProgress>,
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

    /// A trigger actor wrote its entity, and its desired state up to
    /// `desired_revision`: later writes of the catalog are checked against
    /// those revisions.
    pub(super) fn adopt(&mut self, stored: StoredEntity, revision: u64, desired_revision: u64) {
        let entity = stored.record.entity();
        let desired = self.desired_revs.entry(entity.clone()).or_default();
        *desired = (*desired).max(desired_revision);
        match self.entities.get_mut(&entity) {
            // Writes of one key are ordered by revision: never go back.
            Some(slot) if slot.revision > revision => {}
            Some(slot) => {
                slot.stored = stored;
                slot.revision = revision;
            }
            None => {
                self.entities
                    .insert(entity, EntitySlot { stored, revision });
            }
        }
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
                ErrorCode::Internal,
                format!("trigger {id} is stored in a form this coordinator cannot read"),
            )
        })?;
    Ok(Some(rec.trigger))
}
