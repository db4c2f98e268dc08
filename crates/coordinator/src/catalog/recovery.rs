//! What the catalog completes after a stop or a failed write: loading and
//! repairing everything at start, and `maintain`, which retries publishes
//! of desired state, trigger actors that did not start and archives of
//! finished triggers until they succeed.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use phasegate_model as model;
use phasegate_proto::{
    DesiredEntity, EntityRecord, EntityRef, Pipeline, StoredEntity, TriggerRecord,
};
use ractor::ActorRef;

use super::{CatalogState, EntitySlot};
use crate::error::CoordinatorError;
use crate::msg::CatalogMsg;
use crate::store::{Versioned, archive_finished, load_all, to_bytes};

impl CatalogState {
    /// Loads everything and resumes every active trigger.
    pub(super) async fn recover(
        &mut self,
        myself: &ActorRef<CatalogMsg>,
    ) -> Result<(), CoordinatorError> {
        let mut pipelines = BTreeMap::new();
        for e in load_all::<Pipeline>(&self.store.pipelines).await? {
            pipelines.insert(e.value.name.clone(), (e.value, e.revision));
        }
        self.pipelines = Arc::new(pipelines);
        for e in load_all::<TriggerRecord>(&self.store.triggers).await? {
            self.finished
                .insert(e.value.trigger.id.clone(), (&e.value.trigger).into());
        }
        let mut desired = HashMap::new();
        for e in load_all::<DesiredEntity>(&self.store.desired).await? {
            let entity = EntityRef {
                kind: e.value.kind,
                name: e.value.name.clone(),
            };
            self.desired_revs.insert(entity.clone(), e.revision);
            desired.insert(entity, e.value);
        }
        for e in load_all::<StoredEntity>(&self.store.entities).await? {
            self.recover_entity(myself, e, &desired).await?;
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

    /// Takes in one stored entity: completes a finish it holds, makes sure
    /// agents were told what it serves, and resumes its active trigger.
    async fn recover_entity(
        &mut self,
        myself: &ActorRef<CatalogMsg>,
        e: Versioned<StoredEntity>,
        desired: &HashMap<EntityRef, DesiredEntity>,
    ) -> Result<(), CoordinatorError> {
        let entity = e.value.record.entity();
        let (mut stored, mut revision) = (e.value, e.revision);
        // The entity record is the commit point of a finish: a trigger it
        // holds as finished but the archive lacks (a stop between the two
        // writes) is archived now. Nothing else is settled from the
        // archive: an entity still holding its trigger as active was never
        // finished, whatever an archive says.
        if let Some(done) = stored.finished.clone() {
            archive_finished(&self.store, &e.key, &mut stored, &mut revision).await?;
            self.finished
                .insert(done.trigger.id.clone(), (&done.trigger).into());
        }
        if stored.active.is_none() {
            // Make sure agents were told (a stop may have come between the
            // entity write and the publish).
            let want = model::desired::publish(&stored.record, None);
            if desired.get(&entity) != Some(&want) {
                let rev = self.desired_revs.get(&entity).copied().unwrap_or(0);
                let new = self
                    .store
                    .write(&self.store.desired)
                    .update(&e.key, to_bytes(&want)?, rev)
                    .await?;
                self.desired_revs.insert(entity.clone(), new);
            }
        }
        let active = stored.active.is_some();
        self.entities
            .insert(entity.clone(), EntitySlot { stored, revision });
        if active {
            self.spawn_trigger(myself, &entity).await?;
        }
        Ok(())
    }

    /// Retries what failed: publishes of desired state, trigger actors that
    /// could not be started, archives of finished triggers.
    pub(super) async fn maintain(&mut self, myself: &ActorRef<CatalogMsg>) {
        self.retry_publishes().await;
        self.restart_orphans(myself).await;
        self.archive_pending().await;
    }

    async fn retry_publishes(&mut self) {
        let unpublished: Vec<EntityRef> = self.unpublished.iter().cloned().collect();
        for entity in unpublished {
            // An entity with a write in flight is published by that write.
            let record = self
                .entities
                .get(&entity)
                .filter(|s| s.stored.active.is_none() && !self.in_flight.contains_key(&entity))
                .map(|s| s.stored.record.clone());
            match record {
                Some(r) => self.publish(&entity, &r).await,
                // A trigger took it over, or it is gone: its owner publishes.
                None => {
                    self.unpublished.remove(&entity);
                }
            }
        }
    }

    /// Starts the actors of active triggers that have none.
    async fn restart_orphans(&mut self, myself: &ActorRef<CatalogMsg>) {
        let orphans: Vec<EntityRef> = self
            .entities
            .iter()
            .filter(|(entity, s)| {
                !self.in_flight.contains_key(*entity)
                    && s.stored
                        .active
                        .as_ref()
                        .is_some_and(|a| !self.actors.contains_key(&a.trigger.id))
            })
            .map(|(entity, _)| entity.clone())
            .collect();
        for entity in orphans {
            if let Err(e) = self.spawn_trigger(myself, &entity).await {
                tracing::error!(entity = %entity.name, error = %e, "cannot start a trigger actor; will retry");
            }
        }
    }

    /// Archives finished triggers whose archive write failed.
    async fn archive_pending(&mut self) {
        let pending: Vec<EntityRef> = self
            .entities
            .iter()
            .filter(|(entity, s)| {
                !self.in_flight.contains_key(*entity)
                    && s.stored.active.is_none()
                    && s.stored.finished.is_some()
            })
            .map(|(entity, _)| entity.clone())
            .collect();
        for entity in pending {
            let Some(slot) = self.entities.get(&entity) else {
                continue;
            };
            let (mut stored, mut revision) = (slot.stored.clone(), slot.revision);
            match archive_finished(&self.store, &entity.key(), &mut stored, &mut revision).await {
                Ok(()) => {
                    self.entities
                        .insert(entity, EntitySlot { stored, revision });
                }
                Err(e) => {
                    tracing::warn!(entity = %entity.name, error = %e, "cannot archive a finished trigger yet; will retry");
                    if !matches!(e, CoordinatorError::NotLeader) {
                        self.refresh(&entity).await;
                    }
                }
            }
        }
    }

    /// Publishes the desired state of an entity without an active trigger;
    /// a failure is retried by `maintain` until it succeeds.
    async fn publish(&mut self, entity: &EntityRef, record: &EntityRecord) {
        let desired = model::desired::publish(record, None);
        let rev = self.desired_revs.get(entity).copied().unwrap_or(0);
        let sent = async {
            self.store
                .write(&self.store.desired)
                .update(&entity.key(), to_bytes(&desired)?, rev)
                .await
        }
        .await;
        match sent {
            Ok(new) => {
                self.desired_revs.insert(entity.clone(), new);
                self.unpublished.remove(entity);
            }
            Err(e) => self.publish_failed(entity, &e).await,
        }
    }

    /// A publish of desired state failed: it is retried by `maintain`; a
    /// lost revision check first re-reads what is stored.
    pub(super) async fn publish_failed(&mut self, entity: &EntityRef, e: &CoordinatorError) {
        let key = entity.key();
        if e.is_conflict() {
            // Written elsewhere (a deposed leader's late write): re-read the
            // entity and the revision, and publish again from what is
            // stored, on the next `maintain`.
            tracing::warn!(%key, "desired state written elsewhere; re-reading");
            match self.store.desired.get(&key).await {
                Ok(entry) => {
                    self.desired_revs
                        .insert(entity.clone(), entry.map_or(0, |e| e.revision));
                }
                Err(err) => tracing::warn!(%key, error = %err, "cannot re-read desired state"),
            }
            if self.entities.contains_key(entity) {
                self.refresh(entity).await;
            }
        } else {
            tracing::error!(%key, error = %e, "cannot publish desired state; will retry");
        }
        self.unpublished.insert(entity.clone());
    }

    /// Re-reads an entity after a lost revision-checked write, so the retry
    /// the client was told to make can succeed.
    pub(super) async fn refresh(&mut self, entity: &EntityRef) {
        let key = entity.key();
        match self.store.entities.get(&key).await {
            Ok(Some(e)) => match phasegate_proto::decode::<StoredEntity>(
                phasegate_proto::Encoding::MsgPack,
                &e.value,
            ) {
                Ok(stored) => {
                    let revision = e.revision;
                    self.entities
                        .insert(entity.clone(), EntitySlot { stored, revision });
                }
                Err(err) => tracing::error!(%key, error = %err, "stored entity undecodable"),
            },
            Ok(None) => {}
            Err(err) => tracing::warn!(%key, error = %err, "cannot re-read entity"),
        }
    }
}
