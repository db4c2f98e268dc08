//! How a trigger actor makes a step durable and known: the revision-checked
//! write of its entity (the commit point), then the desired state agents
//! derive their view from, then the catalog's copy.

use phasegate_model::{self as model, FleetView};
use phasegate_proto::{ApiError, ErrorCode, StoredEntity, TriggerRecord};
use tracing::Instrument;

use super::{Lifecycle, Publish, TriggerState};
use crate::error::CoordinatorError;
use crate::msg::{CatalogMsg, DirectoryMsg};
use crate::store::to_bytes;

/// `next` as it is written: a finished trigger is settled into its entity
/// and kept beside it as `finished`, in the same record. Returns the
/// finished trigger too.
fn with_finish_settled(mut next: StoredEntity) -> (StoredEntity, Option<TriggerRecord>) {
    let finished = next
        .active
        .as_ref()
        .filter(|a| a.trigger.status.is_finished())
        .cloned();
    if let Some(rec) = &finished {
        model::settle(&mut next.record, rec);
        next.active = None;
        next.finished = Some(rec.clone());
    }
    (next, finished)
}

impl TriggerState {
    /// Makes `next` durable, then adopts it: publishes desired state, tells
    /// the directory and the catalog. A finished trigger is settled into its
    /// entity and kept in the same record (`finished`): that one write is
    /// the commit point. Archiving it afterwards is idempotent and repaired
    /// at start if a stop comes in between.
    pub(super) async fn commit(&mut self, next: StoredEntity) -> Result<(), ApiError> {
        let before = self
            .active()
            .map(|a| (a.trigger.history.len(), a.trigger.phase_state));
        let (next, finished) = with_finish_settled(next);
        self.write_entity(&next).await?;
        let after = finished
            .as_ref()
            .or(next.active.as_ref())
            .map(|a| a.trigger.clone());
        self.stored = next;
        if let (Some((seen, state_before)), Some(t)) = (before, after) {
            self.record_steps(&t, seen, state_before);
        }
        if let Some(rec) = &finished {
            tracing::info!(trigger_id = %rec.trigger.id, status = ?rec.trigger.status, "trigger finished");
            // Readable by id from the archive; a failure is repaired at
            // start, from what the entity's record holds.
            if let Err(e) = crate::store::archive_finished(
                &self.store,
                &self.key,
                &mut self.stored,
                &mut self.revision,
            )
            .await
            {
                tracing::warn!(trigger_id = %rec.trigger.id, error = %e, "cannot archive the finished trigger yet; done at the next start");
            }
        }
        Box::pin(self.publish_or_retry()).await;
        let msg = match finished {
            Some(rec) => CatalogMsg::TriggerFinished {
                stored: self.stored.clone(),
                revision: self.revision,
                desired_revision: self.desired_revision,
                trigger: Box::new(rec),
            },
            None => CatalogMsg::TriggerUpdated {
                stored: self.stored.clone(),
                revision: self.revision,
                desired_revision: self.desired_revision,
            },
        };
        let _ = self.catalog.cast(msg);
        Ok(())
    }

    /// Writes the entity, checked against the revision last written.
    async fn write_entity(&mut self, next: &StoredEntity) -> Result<(), ApiError> {
        let bytes = to_bytes(next).map_err(ApiError::from)?;
        let written = self
            .store
            .write(&self.store.entities)
            .update(&self.key, bytes, self.revision)
            .await;
        self.revision = match written {
            Ok(r) => r,
            Err(e) if e.is_conflict() => self.resolve_conflict(next).await?,
            Err(e) => return Err(ApiError::from(e)),
        };
        Ok(())
    }

    /// Our cached revision was stale. If what is stored is exactly what we
    /// meant to write (a write that succeeded but whose answer was lost),
    /// adopt its revision; otherwise someone else wrote the key, and the
    /// actor restarts from the store (see `Catalog::handle_supervisor_evt`).
    async fn resolve_conflict(&mut self, next: &StoredEntity) -> Result<u64, ApiError> {
        let stored = self
            .store
            .entities
            .get(&self.key)
            .await
            .map_err(|e| ApiError::from(CoordinatorError::from(e)))?;
        if let Some(e) = stored
            && phasegate_proto::decode::<StoredEntity>(phasegate_proto::Encoding::MsgPack, &e.value)
                .ok()
                .as_ref()
                == Some(next)
        {
            return Ok(e.revision);
        }
        self.lifecycle = Lifecycle::Stale;
        Err(ApiError::new(
            ErrorCode::Unavailable,
            "the trigger was changed elsewhere; reloading, retry",
        ))
    }

    /// Takes in a fleet view when it moves only progress counts: applies
    /// them in place and tells the catalog just those, with no copy of the
    /// record. `false` when the view may step the trigger: the caller then
    /// runs the model on a copy and commits it.
    pub(super) fn counts_only(&mut self, view: &FleetView, now: u64) -> bool {
        let id = self.id.clone();
        let Some(rec) = self.stored.active.as_mut().filter(|a| a.trigger.id == id) else {
            return true;
        };
        if rec.trigger.status.is_finished() {
            return true;
        }
        // A probe without the history (the only large part): what the
        // model would do, computed on a small copy.
        let history = std::mem::take(&mut rec.trigger.history);
        let mut probe = rec.clone();
        model::observe(&mut probe, view, now);
        let unchanged_counts = probe.trigger.segments == rec.trigger.segments;
        let counts = std::mem::take(&mut probe.trigger.segments);
        let updated = probe.trigger.updated_at_ms;
        // Compared without counts and `updated_at_ms`: the probe's counts
        // are already set aside, the record's are for the comparison.
        let only_counts = probe.trigger.history.is_empty() && {
            let rec_counts = std::mem::take(&mut rec.trigger.segments);
            probe.trigger.updated_at_ms = rec.trigger.updated_at_ms;
            let same = &probe == rec;
            rec.trigger.segments = rec_counts;
            same
        };
        rec.trigger.history = history;
        if only_counts && !unchanged_counts {
            rec.trigger.segments = counts;
            rec.trigger.updated_at_ms = updated;
            let _ = self.catalog.cast(CatalogMsg::TriggerProgress {
                entity: self.entity.clone(),
                id,
                segments: rec.trigger.segments.clone(),
                updated_at_ms: updated,
            });
        }
        only_counts
    }

    /// Publishes desired state; on failure, marks it for a retry (every
    /// message and the retry timer try again) and counts no acks until then.
    /// A lost revision check means someone else wrote the entity's desired
    /// state (a deposed or a new leader): the actor restarts from the store.
    pub(super) async fn publish_or_retry(&mut self) {
        match self.publish_desired().await {
            Ok(()) => self.lifecycle.set_publish(Publish::Done),
            Err(e) if e.is_conflict() => {
                tracing::warn!(trigger_id = %self.id, "desired state written elsewhere; reloading");
                self.lifecycle = Lifecycle::Stale;
            }
            Err(e) => {
                tracing::error!(trigger_id = %self.id, error = %e, "cannot publish desired state; will retry");
                self.lifecycle.set_publish(Publish::Pending);
            }
        }
    }

    async fn publish_desired(&mut self) -> Result<(), CoordinatorError> {
        let desired = model::desired::publish(&self.stored.record, self.stored.active.as_ref());
        if self.desired.as_ref() == Some(&desired) {
            return Ok(());
        }
        // The agents' apply spans hang under this one.
        let span = self.span("publish desired state");
        let mut sent = desired.clone();
        if let Some(r) = sent.rollout.as_mut() {
            r.trace_parent = phasegate_bus::trace::traceparent_of(&span);
        }
        // Revision-checked: a deposed leader's late write cannot overwrite
        // its successor's, nor the other way round.
        let revision = self
            .store
            .write(&self.store.desired)
            .update(&self.key, to_bytes(&sent)?, self.desired_revision)
            .instrument(span)
            .await?;
        self.desired = Some(desired);
        self.desired_revision = revision;
        let _ = self.directory.cast(DirectoryMsg::Revision {
            id: self.id.clone(),
            revision,
        });
        Ok(())
    }
}
