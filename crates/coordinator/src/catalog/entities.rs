//! Gate and config commands. A put or delete is decided here by the pure
//! model and carried out as one revision-checked write (see `in_flight`);
//! while a trigger runs, its actor decides puts instead.

use phasegate_model::{self as model, PutOutcome};
use phasegate_proto::{
    Actor, ApiError, EntityDeleteRequest, EntityGetRequest, EntityKind, EntityListResult,
    EntityPutRequest, EntityRef, EntityResult, SegmentProgress, StoredEntity, TriggerRecord,
    now_ms,
};
use ractor::ActorRef;

use super::{CatalogState, store_err};
use crate::clock::new_trigger_id;
use crate::msg::{CatalogMsg, DirectoryMsg, TriggerMsg};
use crate::page::{PageRequest, page};
use crate::reply::ReplyTo;
use crate::store::to_bytes;
use crate::writes::{AfterWrite, EntityWrite, PendingWrite, PutAnswer, Queued};

/// What deciding a put ends in.
enum Prepared {
    /// Answered without a write (a no-op put).
    Done(Box<EntityResult>),
    /// A write to carry out, and what its answer will say.
    Write(Box<EntityWrite>, PutAnswer),
}

impl CatalogState {
    pub(super) async fn entity_put(
        &mut self,
        myself: &ActorRef<CatalogMsg>,
        kind: EntityKind,
        req: EntityPutRequest,
        trace: Option<String>,
        reply: ReplyTo<EntityResult>,
    ) {
        let entity = EntityRef {
            kind,
            name: req.spec.name.clone(),
        };
        // One write of an entity at a time: later commands wait their turn.
        if let Some(queue) = self.in_flight.get_mut(&entity) {
            queue.push_back(Queued::Put { req, trace, reply });
            return;
        }
        // While a trigger runs, its actor owns the record.
        if let Some(slot) = self.entities.get(&entity)
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
        match self.prepare_put(entity, req, trace).await {
            Ok(Prepared::Done(result)) => reply.send(Ok(*result)),
            Ok(Prepared::Write(write, answer)) => {
                let then = AfterWrite::Put { answer, reply };
                self.start_write(
                    myself,
                    PendingWrite {
                        write: *write,
                        then,
                    },
                );
            }
            Err(e) => reply.send(Err(e)),
        }
    }

    /// Decides a put of an entity without a running trigger actor: the
    /// model's outcome, and the write that carries it out (if any).
    async fn prepare_put(
        &mut self,
        entity: EntityRef,
        req: EntityPutRequest,
        trace: Option<String>,
    ) -> Result<Prepared, ApiError> {
        let (current, revision) = self.current(&entity);
        let actor = req.actor.clone();
        let outcome = self.decide_put(&current, req)?;
        let change = outcome.change();
        let (record, spec, created, aborted) = match outcome {
            PutOutcome::NoOp { spec } => {
                let trigger = None;
                return Ok(Prepared::Done(Box::new(EntityResult { spec, trigger })));
            }
            PutOutcome::Immediate { record, spec } => (record, spec, None, None),
            PutOutcome::KillSwitch {
                record,
                spec,
                aborted,
            } => (record, spec, None, aborted),
            PutOutcome::Triggered {
                record,
                spec,
                created,
            } => (record, spec, Some(created), None),
        };
        let created = match created {
            Some(rec) => Some(self.started(rec, &entity, &actor, trace.as_deref()).await),
            None => None,
        };
        // A kill switch while the trigger's actor is not running: the
        // aborted trigger is kept beside the entity in the same write (the
        // commit point), then archived so it stays readable by id. A
        // finished trigger still waiting for its archive stays.
        let stored = StoredEntity {
            record,
            active: created.clone(),
            finished: aborted.or(current.finished),
        };
        let publish = self.desired_for(&entity, &stored)?;
        let answer = PutAnswer {
            spec: Box::new(spec),
            created: created.map(|c| Box::new(c.trigger)),
            actor,
            change,
        };
        let write = EntityWrite {
            entity,
            stored,
            revision,
            publish,
        };
        Ok(Prepared::Write(Box::new(write), answer))
    }

    /// The model's decision on a put of `current`.
    fn decide_put(
        &self,
        current: &StoredEntity,
        req: EntityPutRequest,
    ) -> Result<PutOutcome, ApiError> {
        let now = now_ms();
        model::put(
            &current.record,
            current.active.as_ref(),
            req,
            &|name| self.pipelines.get(name).map(|(p, _)| p.clone()),
            new_trigger_id(now),
            now,
        )
    }

    /// The entity as stored, with its revision; a fresh record (revision 0:
    /// the key must not exist) for one never written.
    fn current(&self, entity: &EntityRef) -> (StoredEntity, u64) {
        match self.entities.get(entity) {
            Some(s) => (s.stored.clone(), s.revision),
            None => {
                let record = model::new_record(entity.kind, entity.name.clone());
                let stored = StoredEntity {
                    record,
                    active: None,
                    finished: None,
                };
                (stored, 0)
            }
        }
    }

    /// A trigger a put creates, ready to store and show: its segments
    /// filled with the fleet as it stands, and its own trace begun under
    /// the command's span (every later step of the rollout joins it, see
    /// `trace_parent`).
    async fn started(
        &self,
        mut rec: TriggerRecord,
        entity: &EntityRef,
        actor: &Actor,
        trace: Option<&str>,
    ) -> TriggerRecord {
        self.show_fleet(&mut rec).await;
        let span = tracing::info_span!(
            "phasegate.trigger",
            otel.name = "trigger started",
            phasegate.trigger_id = %rec.trigger.id,
            phasegate.entity = %entity.key(),
            phasegate.actor = %actor,
            phasegate.phase_id = %rec.trigger.current_phase_id.as_ref().map_or("", |p| p.as_str()),
        );
        phasegate_bus::trace::continue_from_traceparent(&span, trace);
        rec.trace_parent = phasegate_bus::trace::traceparent_of(&span);
        rec
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
                SegmentProgress {
                    version_active: active,
                    agents_live: f.live,
                    agents_applied: 0,
                    agents_healthy: f.healthy,
                    agents_known: f.known,
                },
            );
        }
    }

    /// The desired state to publish once `stored` is written, encoded, with
    /// the revision its write is checked against. Without a trigger, agents
    /// are told at once; with one, `None`: its actor publishes each phase.
    fn desired_for(
        &self,
        entity: &EntityRef,
        stored: &StoredEntity,
    ) -> Result<Option<(bytes::Bytes, u64)>, ApiError> {
        if stored.active.is_some() {
            return Ok(None);
        }
        let desired = model::desired::publish(&stored.record, None);
        let rev = self.desired_revs.get(entity).copied().unwrap_or(0);
        Ok(Some((to_bytes(&desired).map_err(store_err)?, rev)))
    }

    pub(super) fn entity_get(
        &self,
        kind: EntityKind,
        req: &EntityGetRequest,
    ) -> Result<EntityResult, ApiError> {
        let entity = EntityRef {
            kind,
            name: req.name.clone(),
        };
        let slot = self.entities.get(&entity);
        let Some((slot, spec)) = slot.and_then(|s| Some((s, s.stored.record.latest.clone()?)))
        else {
            return Err(ApiError::not_found(format!(
                "{kind} {} does not exist",
                req.name
            )));
        };
        Ok(EntityResult {
            spec,
            trigger: slot.stored.active.as_ref().map(|a| a.trigger.clone()),
        })
    }

    /// One page of the latest specs of `kind`, by name.
    pub(super) fn entity_list(
        &self,
        kind: EntityKind,
        req: &PageRequest<String>,
    ) -> EntityListResult {
        let specs = self
            .entities
            .iter()
            .filter(|(e, _)| e.kind == kind)
            .filter_map(|(e, slot)| slot.stored.record.latest.as_ref().map(|s| (&e.name, s)));
        let p = page(specs, |(name, _)| name.to_string(), req);
        EntityListResult {
            specs: p.items.into_iter().map(|(_, s)| s.clone()).collect(),
            next_cursor: p.next_cursor,
        }
    }

    pub(super) fn entity_delete(
        &mut self,
        myself: &ActorRef<CatalogMsg>,
        kind: EntityKind,
        req: EntityDeleteRequest,
        reply: ReplyTo<()>,
    ) {
        let entity = EntityRef {
            kind,
            name: req.name.clone(),
        };
        if let Some(queue) = self.in_flight.get_mut(&entity) {
            queue.push_back(Queued::Delete { req, reply });
            return;
        }
        match self.prepare_delete(entity) {
            Ok(write) => {
                let then = AfterWrite::Delete {
                    actor: req.actor,
                    reply,
                };
                self.start_write(myself, PendingWrite { write, then });
            }
            Err(e) => reply.send(Err(e)),
        }
    }

    /// The write of a delete: everywhere at once, desired state included.
    fn prepare_delete(&self, entity: EntityRef) -> Result<EntityWrite, ApiError> {
        let slot = self
            .entities
            .get(&entity)
            .ok_or_else(|| ApiError::not_found(format!("{entity} does not exist")))?;
        let stored = StoredEntity {
            record: model::delete(&slot.stored.record)?,
            active: None,
            finished: slot.stored.finished.clone(),
        };
        Ok(EntityWrite {
            publish: self.desired_for(&entity, &stored)?,
            revision: slot.revision,
            stored,
            entity,
        })
    }
}
