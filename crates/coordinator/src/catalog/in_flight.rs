//! One write of an entity at a time. A decided write is carried out off
//! the mailbox (`crate::writes`); commands for the same entity queue
//! behind it and run, in order, once it is answered.

use phasegate_proto::{ApiError, EntityRef, EntityResult, StoredEntity};
use ractor::ActorRef;

use super::{CatalogState, EntitySlot};
use crate::error::CoordinatorError;
use crate::msg::CatalogMsg;
use crate::writes::{AfterWrite, EntityWrite, PendingWrite, PutAnswer, Queued, Written};

impl CatalogState {
    /// Marks the entity busy and carries the write out off the mailbox.
    pub(super) fn start_write(&mut self, myself: &ActorRef<CatalogMsg>, pending: PendingWrite) {
        let w = &pending.write;
        self.in_flight.entry(w.entity.clone()).or_default();
        let pipeline = match &w.stored.active {
            Some(a) => Some(a.trigger.pipeline.clone()),
            None => w
                .stored
                .record
                .latest
                .as_ref()
                .and_then(|l| l.pipeline.clone()),
        };
        if let Some(p) = pipeline {
            self.in_flight_pipelines.insert(w.entity.clone(), p);
        }
        let catalog = myself.clone();
        crate::writes::spawn(self.store.clone(), pending, move |written| {
            if catalog
                .cast(CatalogMsg::Written(Box::new(written)))
                .is_err()
            {
                tracing::debug!("catalog gone before a write was answered");
            }
        });
    }

    /// Adopts a write that came back, answers its command, then lets the
    /// commands that waited for it run, in order.
    pub(super) async fn written(&mut self, myself: &ActorRef<CatalogMsg>, w: Written) {
        let Written {
            pending,
            entity_revision,
            desired_revision,
        } = w;
        let PendingWrite {
            write: EntityWrite { entity, stored, .. },
            then,
        } = pending;
        self.in_flight_pipelines.remove(&entity);
        match entity_revision {
            Err(e) => {
                if !matches!(e, CoordinatorError::NotLeader) {
                    // Lost to another writer, or unconfirmed and perhaps
                    // stored after all: what is stored is the truth (and
                    // `maintain` drives what it holds).
                    self.refresh(&entity).await;
                }
                let e = ApiError::from(e);
                match then {
                    AfterWrite::Put { reply, .. } => reply.send(Err(e)),
                    AfterWrite::Delete { reply, .. } => reply.send(Err(e)),
                }
            }
            Ok(revision) => {
                self.adopt_written(&entity, stored, revision).await;
                match desired_revision {
                    Some(Ok(rev)) => {
                        self.desired_revs.insert(entity.clone(), rev);
                        self.unpublished.remove(&entity);
                    }
                    Some(Err(e)) => self.publish_failed(&entity, &e).await,
                    None => {}
                }
                self.answer(myself, &entity, then).await;
            }
        }
        self.run_queued(myself, &entity).await;
    }

    /// Keeps the entity as written; a trigger the write finished (its
    /// commit point) is archived and indexed.
    async fn adopt_written(&mut self, entity: &EntityRef, mut stored: StoredEntity, revision: u64) {
        let mut revision = revision;
        if let Some(done) = stored.finished.clone() {
            let key = entity.key();
            if let Err(e) =
                crate::store::archive_finished(&self.store, &key, &mut stored, &mut revision).await
            {
                tracing::warn!(trigger_id = %done.trigger.id, error = %e, "cannot archive the finished trigger yet; retried");
            }
            self.finished
                .insert(done.trigger.id.clone(), (&done.trigger).into());
        }
        self.entities
            .insert(entity.clone(), EntitySlot { stored, revision });
    }

    /// Answers the command of a write that succeeded, and starts the
    /// trigger a put created.
    async fn answer(
        &mut self,
        myself: &ActorRef<CatalogMsg>,
        entity: &EntityRef,
        then: AfterWrite,
    ) {
        match then {
            AfterWrite::Put { answer, reply } => {
                let PutAnswer {
                    spec,
                    created,
                    actor,
                    change,
                } = answer;
                tracing::info!(kind = %entity.kind, name = %entity.name, version = spec.version, change, %actor, "entity stored");
                if created.is_some() {
                    // The trigger actor publishes the first phase and
                    // drives it. The trigger is stored: an actor that
                    // cannot start now is retried by `maintain`.
                    if let Err(e) = self.spawn_trigger(myself, entity).await {
                        tracing::error!(error = %e, "cannot start the trigger actor; will retry");
                    }
                }
                reply.send(Ok(EntityResult {
                    spec: *spec,
                    trigger: created.map(|t| *t),
                }));
            }
            AfterWrite::Delete { actor, reply } => {
                tracing::info!(kind = %entity.kind, name = %entity.name, %actor, "entity deleted");
                reply.send(Ok(()));
            }
        }
    }

    /// Runs the commands that waited for `entity`'s write, until one starts
    /// a write of its own (the rest wait for that one).
    async fn run_queued(&mut self, myself: &ActorRef<CatalogMsg>, entity: &EntityRef) {
        let Some(mut queue) = self.in_flight.remove(entity) else {
            return;
        };
        while let Some(next) = queue.pop_front() {
            match next {
                Queued::Put { req, trace, reply } => {
                    if let Some(reply) = reply.unexpired() {
                        Box::pin(self.entity_put(myself, entity.kind, req, trace, reply)).await;
                    }
                }
                Queued::Delete { req, reply } => {
                    if let Some(reply) = reply.unexpired() {
                        self.entity_delete(myself, entity.kind, req, reply);
                    }
                }
            }
            if let Some(busy) = self.in_flight.get_mut(entity) {
                busy.extend(queue);
                return;
            }
        }
    }
}
