//! One actor per active trigger. It owns its entity's stored record while
//! the trigger runs: every change of the rollout is computed by the pure
//! model on a copy, written with a revision check, and only then adopted,
//! published to agents and answered.

use std::sync::Arc;
use std::time::Duration;

use phasegate_model::{self as model, Action, FleetView, PutKind, PutRequest};
use phasegate_proto::{
    ActionRequest, ApiError, EntityPutRequest, EntityResult, PhaseState, StoredEntity, Trigger,
    TriggerId,
};
use phasegate_telemetry::metrics::Registry;
use ractor::concurrency::JoinHandle;
use ractor::{Actor, ActorProcessingErr, ActorRef};

use crate::reply::ReplyTo;
use tracing::Instrument;

use crate::catalog::{CatalogMsg, Pipelines};
use crate::clock::{new_trigger_id, now_ms};
use crate::directory::DirectoryMsg;
use crate::store::{Store, to_bytes};

/// Messages of a trigger actor.
pub(crate) enum TriggerMsg {
    /// An operator action.
    Act {
        action: Action,
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

/// What a trigger actor starts from.
pub(crate) struct TriggerArgs {
    pub(crate) key: String,
    pub(crate) stored: StoredEntity,
    pub(crate) revision: u64,
    pub(crate) store: Store,
    pub(crate) catalog: ActorRef<CatalogMsg>,
    pub(crate) directory: ActorRef<DirectoryMsg>,
    pub(crate) metrics: Arc<Registry>,
}

pub(crate) struct TriggerState {
    key: String,
    id: TriggerId,
    stored: StoredEntity,
    revision: u64,
    store: Store,
    catalog: ActorRef<CatalogMsg>,
    directory: ActorRef<DirectoryMsg>,
    /// Revision of the last desired state published for the entity.
    desired_revision: u64,
    /// The desired state last published, to skip writes that change nothing.
    desired: Option<phasegate_proto::DesiredEntity>,
    timer: Option<JoinHandle<Result<(), ractor::MessagingErr<TriggerMsg>>>>,
    deadline: Option<u64>,
    /// Whether the directory's last fleet view was settled (SPEC.md §4
    /// *Fleet*): until the first view, and after a restart until every
    /// restored agent has reported or stayed silent for a liveness window,
    /// the trigger takes no step, not even on a deadline, since a step
    /// taken now could call a phase applied that nobody has applied.
    fleet_settled: bool,
    /// The trigger's trace, kept past its end for the last spans.
    trace_parent: Option<String>,
    metrics: Arc<Registry>,
    /// When the current phase started applying (this process's view).
    applying_since: Option<u64>,
    /// The last publish failed: retried on every message and by a timer.
    needs_publish: bool,
    /// The stored record moved under us: restart from the store.
    reload: bool,
}

pub(crate) struct TriggerActor;

impl Actor for TriggerActor {
    type Msg = TriggerMsg;
    type State = TriggerState;
    type Arguments = TriggerArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        args: TriggerArgs,
    ) -> Result<TriggerState, ActorProcessingErr> {
        let id = args
            .stored
            .active
            .as_ref()
            .map(|a| a.trigger.id.clone())
            .ok_or("trigger actor started without an active trigger")?;
        let mut state = TriggerState {
            key: args.key,
            id,
            stored: args.stored,
            revision: args.revision,
            store: args.store,
            catalog: args.catalog,
            directory: args.directory,
            desired_revision: 0,
            desired: None,
            timer: None,
            deadline: None,
            fleet_settled: false,
            trace_parent: None,
            metrics: args.metrics,
            applying_since: None,
            needs_publish: false,
            reload: false,
        };
        state.trace_parent = state.active().and_then(|a| a.trace_parent.clone());
        if state.active().and_then(|a| a.trigger.phase_state) == Some(PhaseState::Applying) {
            state.applying_since = Some(now_ms());
        }
        Ok(state)
    }

    /// Runs in the actor's own task once it is spawned, before any message:
    /// the catalog that spawned it does not wait for these round trips.
    async fn post_start(
        &self,
        myself: ActorRef<Self::Msg>,
        state: &mut TriggerState,
    ) -> Result<(), ActorProcessingErr> {
        // What agents were last told, so a restart only re-publishes when
        // the stored rollout moved on without its desired state.
        if let Some(e) = state.store.desired.get(&state.key).await? {
            state.desired_revision = e.revision;
            state.desired = phasegate_proto::decode::<phasegate_proto::DesiredEntity>(
                phasegate_proto::Encoding::MsgPack,
                &e.value,
            )
            .ok()
            .map(without_trace);
        }
        Box::pin(state.publish_or_retry()).await;
        let patterns = state
            .active()
            .map(|a| {
                a.trigger
                    .pipeline_snapshot
                    .phases
                    .iter()
                    .flat_map(|p| p.segments.iter().cloned())
                    .collect()
            })
            .unwrap_or_default();
        state.directory.cast(DirectoryMsg::Register {
            id: state.id.clone(),
            key: state.key.clone(),
            patterns,
            revision: state.desired_revision,
            actor: myself.clone(),
        })?;
        // A deadline that passed while the coordinator was down fires as
        // soon as the fleet is settled (the directory sends a view at once).
        Ok(())
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<Self::Msg>,
        state: &mut TriggerState,
    ) -> Result<(), ActorProcessingErr> {
        if let Some(t) = state.timer.take() {
            t.abort();
        }
        let _ = state
            .directory
            .cast(DirectoryMsg::Unregister(state.id.clone()));
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        msg: TriggerMsg,
        state: &mut TriggerState,
    ) -> Result<(), ActorProcessingErr> {
        if state.needs_publish {
            Box::pin(state.publish_or_retry()).await;
        }
        match msg {
            TriggerMsg::Act { action, req, reply } => {
                let Some(reply) = reply.unexpired() else {
                    return Ok(());
                };
                let span = tracing::info_span!(
                    "phasegate.action",
                    otel.name = %format!("action {}", action.as_str()),
                    phasegate.trigger_id = %state.id,
                    phasegate.entity = %state.key,
                    phasegate.phase_id = %req.phase_id.as_ref().map_or("", |p| p.as_str()),
                    phasegate.action = action.as_str(),
                    phasegate.actor = %req.actor,
                    trace_id = %state.trace_id(),
                );
                phasegate_bus::trace::continue_from_traceparent(
                    &span,
                    state.trace_parent.as_deref(),
                );
                let answer = async {
                    let now = now_ms();
                    let mut next = state.stored.clone();
                    match next.active.as_mut() {
                        Some(rec) => model::act(rec, action, &req, now)?,
                        None => return Err(ApiError::conflict("the trigger is finished")),
                    }
                    // The trigger as it was acted on, even if finishing it
                    // moved it out of the entity's record.
                    let view = next.active.as_ref().map(|a| a.trigger.clone());
                    Box::pin(state.commit(next)).await?;
                    tracing::info!("action applied");
                    view.ok_or_else(|| ApiError::conflict("the trigger is finished"))
                }
                .instrument(span)
                .await;
                let result = match &answer {
                    Ok(_) => "ok",
                    Err(e) => e.code.as_str(),
                };
                state.metrics.inc(
                    "phasegate_actions_total",
                    "trigger actions, by action and result code",
                    &[("action", action.as_str()), ("result", result)],
                    1.0,
                );
                reply.send(answer);
            }
            TriggerMsg::Put {
                req,
                pipelines,
                reply,
            } => {
                let Some(reply) = reply.unexpired() else {
                    return Ok(());
                };
                let answer = state.put(req, &pipelines).await;
                reply.send(answer);
            }
            TriggerMsg::Fleet {
                mut view,
                revision,
                analysis,
            } => {
                // Shown at once, like counts; persisted with the next step,
                // which reads them (the history names failing analyses).
                crate::analysis::adopt(&mut state.stored, &state.id, analysis, &state.catalog);
                state.fleet_settled = state
                    .active()
                    .is_none_or(|rec| model::fleet_settled(rec, &view));
                if revision < state.desired_revision || state.needs_publish {
                    // Acks of an older revision (a view computed before the
                    // directory learnt of our latest publish, or a publish
                    // that has not happened yet) say nothing about the
                    // current phase: keep live and healthy, drop applied.
                    for f in view.values_mut() {
                        f.applied = 0;
                    }
                }
                let now = now_ms();
                if state.counts_only(&view, now) {
                    // Only counts moved (or nothing): shown, not persisted,
                    // and no copy of the record made.
                } else {
                    let mut next = state.stored.clone();
                    if let Some(rec) = next.active.as_mut() {
                        model::observe(rec, &view, now);
                    }
                    if let Err(e) = Box::pin(state.commit(next)).await {
                        tracing::warn!(trigger_id = %state.id, error = %e, "cannot persist progress; will retry on the next report");
                    }
                }
            }
            TriggerMsg::Tick if !state.fleet_settled => {}
            TriggerMsg::Tick => {
                state.deadline = None;
                let now = now_ms();
                let mut next = state.stored.clone();
                if let Some(rec) = next.active.as_mut() {
                    model::tick(rec, now);
                }
                if material_change(&mut state.stored, &mut next)
                    && let Err(e) = Box::pin(state.commit(next)).await
                {
                    tracing::warn!(trigger_id = %state.id, error = %e, "cannot persist a deadline step; retrying");
                    state.arm_retry(&myself);
                }
            }
        }
        if state.reload {
            // Failing hands the decision to the supervisor, which restarts
            // this actor from what is stored.
            return Err("stored trigger changed elsewhere; restarting from the store".into());
        }
        if state.needs_publish {
            // Agents must learn what was decided: stay until they can.
            state.arm_retry(&myself);
        } else if state.finished() {
            myself.stop(None);
        } else {
            state.arm(&myself);
        }
        Ok(())
    }
}

/// A desired state as compared: the trace context is not part of it.
fn without_trace(mut d: phasegate_proto::DesiredEntity) -> phasegate_proto::DesiredEntity {
    if let Some(r) = d.rollout.as_mut() {
        r.trace_parent = None;
    }
    d
}

/// The wire name of a history type (`phase_applied`).
fn serde_kind(k: phasegate_proto::HistoryType) -> &'static str {
    use phasegate_proto::HistoryType as H;
    match k {
        H::Started => "started",
        H::Approved => "approved",
        H::PhaseStarted => "phase_started",
        H::PhaseApplied => "phase_applied",
        H::Paused => "paused",
        H::Resumed => "resumed",
        H::Skipped => "skipped",
        H::Rollout => "rollout",
        H::Aborted => "aborted",
        H::HealthDegraded => "health_degraded",
        H::HealthRecovered => "health_recovered",
        H::Completed => "completed",
    }
}

/// True when `next` differs from `prev` in more than live agent counts.
/// Compares in place, without copying either record: progress counts and
/// `updated_at_ms` are set aside for the comparison and put back.
fn material_change(prev: &mut StoredEntity, next: &mut StoredEntity) -> bool {
    let (Some(a), Some(b)) = (prev.active.as_mut(), next.active.as_mut()) else {
        return prev != next;
    };
    let counts_a = std::mem::take(&mut a.trigger.segments);
    let counts_b = std::mem::take(&mut b.trigger.segments);
    let updated_b = std::mem::replace(&mut b.trigger.updated_at_ms, a.trigger.updated_at_ms);
    let differ = prev != next;
    if let (Some(a), Some(b)) = (prev.active.as_mut(), next.active.as_mut()) {
        a.trigger.segments = counts_a;
        b.trigger.segments = counts_b;
        b.trigger.updated_at_ms = updated_b;
    }
    differ
}

impl TriggerState {
    fn active(&self) -> Option<&phasegate_proto::TriggerRecord> {
        self.stored
            .active
            .as_ref()
            .filter(|a| a.trigger.id == self.id)
    }

    fn finished(&self) -> bool {
        self.active().is_none_or(|a| a.trigger.status.is_finished())
    }

    /// Makes `next` durable, then adopts it: publishes desired state, tells
    /// the directory and the catalog. A finished trigger is settled into its
    /// entity and kept in the same record (`finished`): that one write is
    /// the commit point. Archiving it afterwards is idempotent and repaired
    /// at start if a stop comes in between.
    async fn commit(&mut self, mut next: StoredEntity) -> Result<(), ApiError> {
        let before = self
            .active()
            .map(|a| (a.trigger.history.len(), a.trigger.phase_state));
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
        let bytes = to_bytes(&next).map_err(ApiError::from)?;
        let revision = match self
            .store
            .write(&self.store.entities)
            .update(&self.key, bytes, self.revision)
            .await
        {
            Ok(r) => r,
            Err(e) if e.is_conflict() => self.resolve_conflict(&next).await?,
            Err(e) => return Err(ApiError::from(e)),
        };
        self.revision = revision;
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
        match &finished {
            Some(rec) => {
                let _ = self.catalog.cast(CatalogMsg::TriggerFinished {
                    key: self.key.clone(),
                    stored: self.stored.clone(),
                    revision: self.revision,
                    desired_revision: self.desired_revision,
                    trigger: Box::new(rec.clone()),
                });
            }
            None => self.notify_catalog(),
        }
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
            .map_err(|e| ApiError::from(crate::error::CoordinatorError::from(e)))?;
        if let Some(e) = stored
            && phasegate_proto::decode::<StoredEntity>(phasegate_proto::Encoding::MsgPack, &e.value)
                .ok()
                .as_ref()
                == Some(next)
        {
            return Ok(e.revision);
        }
        self.reload = true;
        Err(ApiError::new(
            phasegate_proto::ErrorCode::Unavailable,
            "the trigger was changed elsewhere; reloading, retry",
        ))
    }

    /// Takes in a fleet view when it moves only progress counts: applies
    /// them in place and tells the catalog just those, with no copy of the
    /// record. `false` when the view may step the trigger: the caller then
    /// runs the model on a copy and commits it.
    fn counts_only(&mut self, view: &FleetView, now: u64) -> bool {
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
            let entity = (self.stored.record.kind, self.stored.record.name.to_string());
            let _ = self.catalog.cast(CatalogMsg::TriggerProgress {
                entity,
                id,
                segments: rec.trigger.segments.clone(),
                updated_at_ms: updated,
            });
        }
        only_counts
    }

    fn notify_catalog(&self) {
        let _ = self.catalog.cast(CatalogMsg::TriggerUpdated {
            key: self.key.clone(),
            stored: self.stored.clone(),
            revision: self.revision,
            desired_revision: self.desired_revision,
        });
    }

    /// Publishes desired state; on failure, marks it for a retry (every
    /// message and the retry timer try again) and counts no acks until then.
    /// A lost revision check means someone else wrote the entity's desired
    /// state (a deposed or a new leader): the actor restarts from the store.
    async fn publish_or_retry(&mut self) {
        match self.publish_desired().await {
            Ok(()) => self.needs_publish = false,
            Err(e) if e.is_conflict() => {
                tracing::warn!(trigger_id = %self.id, "desired state written elsewhere; reloading");
                self.needs_publish = true;
                self.reload = true;
            }
            Err(e) => {
                tracing::error!(trigger_id = %self.id, error = %e, "cannot publish desired state; will retry");
                self.needs_publish = true;
            }
        }
    }

    /// A span of this trigger's trace.
    fn span(&self, name: &str) -> tracing::Span {
        let phase = self
            .active()
            .and_then(|a| a.trigger.current_phase_id.as_ref())
            .map_or("", |p| p.as_str())
            .to_owned();
        let span = tracing::info_span!(
            "phasegate.rollout",
            otel.name = %name,
            phasegate.trigger_id = %self.id,
            phasegate.entity = %self.key,
            phasegate.phase_id = %phase,
            trace_id = %self.trace_id(),
        );
        phasegate_bus::trace::continue_from_traceparent(&span, self.trace_parent.as_deref());
        span
    }

    /// The trigger's trace id, for logs (empty when traces are off).
    fn trace_id(&self) -> &str {
        self.trace_parent
            .as_deref()
            .and_then(phasegate_bus::trace::trace_id_of)
            .unwrap_or("")
    }

    /// Spans and metrics for the steps a commit recorded in history.
    fn record_steps(
        &mut self,
        t: &phasegate_proto::Trigger,
        seen: usize,
        state_before: Option<PhaseState>,
    ) {
        let now = now_ms();
        for h in t.history.iter().skip(seen) {
            let kind = serde_kind(h.kind);
            let phase = h.phase_id.as_ref().map_or("", |p| p.as_str());
            let span = tracing::info_span!(
                "phasegate.step",
                otel.name = %kind,
                phasegate.trigger_id = %self.id,
                phasegate.entity = %self.key,
                phasegate.phase_id = %phase,
                phasegate.actor = %h.actor,
                trace_id = %self.trace_id(),
            );
            phasegate_bus::trace::continue_from_traceparent(&span, self.trace_parent.as_deref());
            span.in_scope(|| {
                tracing::info!(
                    instance = self.store.lease.instance(),
                    at_ms = h.at_ms,
                    comment = h.comment.as_deref().unwrap_or(""),
                    "{kind}"
                )
            });
            self.metrics.inc(
                "phasegate_phase_transitions_total",
                "steps recorded in trigger histories, by type",
                &[("type", kind)],
                1.0,
            );
            if h.kind == phasegate_proto::HistoryType::PhaseApplied
                && let Some(since) = self.applying_since.take()
            {
                #[allow(clippy::cast_precision_loss)] // milliseconds, far below 2^52
                let secs = h.at_ms.saturating_sub(since) as f64 / 1000.0;
                self.metrics.observe(
                    "phasegate_apply_latency_seconds",
                    "from a phase's publish to every live agent having applied it",
                    &[],
                    secs,
                );
            }
        }
        if t.phase_state == Some(PhaseState::Applying) && state_before != Some(PhaseState::Applying)
        {
            self.applying_since = Some(now);
        }
    }

    async fn publish_desired(&mut self) -> Result<(), crate::error::CoordinatorError> {
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

    async fn put(
        &mut self,
        req: EntityPutRequest,
        pipelines: &Pipelines,
    ) -> Result<EntityResult, ApiError> {
        let now = now_ms();
        let outcome = model::put(
            &self.stored.record,
            self.stored.active.as_ref(),
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
        match outcome.kind {
            PutKind::NoOp => Ok(EntityResult {
                spec: outcome.spec,
                trigger: None,
            }),
            PutKind::KillSwitch => {
                let aborted = outcome.aborted.ok_or_else(|| {
                    ApiError::new(
                        phasegate_proto::ErrorCode::Internal,
                        "kill switch without trigger",
                    )
                })?;
                // The same path as any finish: one write of the entity, whose
                // record already has the disabled version as its base
                // (settling is a no-op once the trigger is detached), with
                // the aborted trigger beside it.
                self.commit(StoredEntity {
                    record: outcome.record,
                    active: Some(aborted),
                    finished: self.stored.finished.clone(),
                })
                .await?;
                tracing::warn!(trigger_id = %self.id, "kill switch: trigger aborted, entity disabled everywhere");
                Ok(EntityResult {
                    spec: outcome.spec,
                    trigger: None,
                })
            }
            // The model refuses every other put while a trigger runs.
            PutKind::Immediate | PutKind::Triggered => {
                Err(ApiError::conflict("the entity has an active trigger"))
            }
        }
    }

    /// Arms the timer for the next deadline, if it moved.
    fn arm(&mut self, myself: &ActorRef<TriggerMsg>) {
        let next = self.active().and_then(model::next_deadline_ms);
        if next == self.deadline {
            return;
        }
        if let Some(t) = self.timer.take() {
            t.abort();
        }
        self.deadline = next;
        if let Some(at) = next {
            let wait = Duration::from_millis(at.saturating_sub(now_ms()));
            self.timer = Some(myself.send_after(wait, || TriggerMsg::Tick));
        }
    }

    fn arm_retry(&mut self, myself: &ActorRef<TriggerMsg>) {
        if let Some(t) = self.timer.take() {
            t.abort();
        }
        self.deadline = Some(now_ms() + 500);
        self.timer = Some(myself.send_after(Duration::from_millis(500), || TriggerMsg::Tick));
    }
}
