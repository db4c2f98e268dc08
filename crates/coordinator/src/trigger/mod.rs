//! One actor per active trigger. It owns its entity's stored record while
//! the trigger runs: every change of the rollout is computed by the pure
//! model on a copy, written with a revision check, and only then adopted,
//! published to agents and answered ([`commit`]). Its steps are traced and
//! counted in [`steps`].

mod commit;
mod steps;

use std::sync::Arc;
use std::time::Duration;

use phasegate_model::{self as model, FleetView, PutOutcome};
use phasegate_proto::{
    ActionRequest, ApiError, DesiredEntity, EntityPutRequest, EntityRef, EntityResult, ErrorCode,
    PhaseState, StoredEntity, Trigger, TriggerAction, TriggerId, TriggerRecord, now_ms,
};
use phasegate_telemetry::metrics::Registry;
use ractor::concurrency::JoinHandle;
use ractor::{Actor, ActorProcessingErr, ActorRef};
use tracing::Instrument;

use crate::clock::new_trigger_id;
use crate::msg::{CatalogMsg, DirectoryMsg, Pipelines, TriggerMsg};
use crate::store::Store;

pub(crate) struct TriggerArgs {
    pub(crate) entity: EntityRef,
    pub(crate) stored: StoredEntity,
    pub(crate) revision: u64,
    pub(crate) store: Store,
    pub(crate) catalog: ActorRef<CatalogMsg>,
    pub(crate) directory: ActorRef<DirectoryMsg>,
    pub(crate) metrics: Arc<Registry>,
}

/// Where the actor stands; what it may do follows from it. It replaces
/// three flags (fleet settled, publish pending, reload) of which not every
/// combination could happen: once stale, nothing else matters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Lifecycle {
    /// Taking part: `fleet` says whether it may take steps, `publish`
    /// whether agents know the latest decision.
    Running { fleet: FleetState, publish: Publish },
    /// The stored record or desired state was written elsewhere: the actor
    /// fails once the message at hand is handled, and the catalog restarts
    /// it from the store (see `Catalog::handle_supervisor_evt`). Agents may
    /// not know what is stored, so acks count for nothing meanwhile.
    Stale,
}

/// Whether the directory's last fleet view was settled (SPEC.md §4
/// *Fleet*): until the first view, and after a restart until every
/// restored agent has reported or stayed silent for a liveness window,
/// the trigger takes no step, not even on a deadline, since a step taken
/// now could call a phase applied that nobody has applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FleetState {
    Unsettled,
    Settled,
}

/// Whether the desired state of the latest decision is published.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Publish {
    Done,
    /// The last publish failed: retried on every message and by a timer,
    /// and no ack counts until it succeeds.
    Pending,
}

impl Lifecycle {
    fn may_step(self) -> bool {
        matches!(
            self,
            Self::Running {
                fleet: FleetState::Settled,
                ..
            }
        )
    }

    fn publish_pending(self) -> bool {
        matches!(
            self,
            Self::Running {
                publish: Publish::Pending,
                ..
            } | Self::Stale
        )
    }

    fn set_fleet(&mut self, to: FleetState) {
        if let Self::Running { fleet, .. } = self {
            *fleet = to;
        }
    }

    fn set_publish(&mut self, to: Publish) {
        if let Self::Running { publish, .. } = self {
            *publish = to;
        }
    }
}

pub(crate) struct TriggerState {
    entity: EntityRef,
    /// The entity's key in the entity and desired-state buckets.
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
    desired: Option<DesiredEntity>,
    timer: Option<JoinHandle<Result<(), ractor::MessagingErr<TriggerMsg>>>>,
    deadline: Option<u64>,
    lifecycle: Lifecycle,
    /// The trigger's trace, kept past its end for the last spans.
    trace_parent: Option<String>,
    metrics: Arc<Registry>,
    /// When the current phase started applying (this process's view).
    applying_since: Option<u64>,
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
        let active = args
            .stored
            .active
            .as_ref()
            .ok_or("trigger actor started without an active trigger")?;
        let applying = active.trigger.phase_state == Some(PhaseState::Applying);
        Ok(TriggerState {
            key: args.entity.key(),
            entity: args.entity,
            id: active.trigger.id.clone(),
            trace_parent: active.trace_parent.clone(),
            applying_since: applying.then(now_ms),
            stored: args.stored,
            revision: args.revision,
            store: args.store,
            catalog: args.catalog,
            directory: args.directory,
            desired_revision: 0,
            desired: None,
            timer: None,
            deadline: None,
            lifecycle: Lifecycle::Running {
                fleet: FleetState::Unsettled,
                publish: Publish::Done,
            },
            metrics: args.metrics,
        })
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
            state.desired = phasegate_proto::decode::<DesiredEntity>(
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
        if state.lifecycle.publish_pending() {
            Box::pin(state.publish_or_retry()).await;
        }
        match msg {
            TriggerMsg::Act { action, req, reply } => {
                let Some(reply) = reply.unexpired() else {
                    return Ok(());
                };
                reply.send(state.act(action, req).await);
            }
            TriggerMsg::Put {
                req,
                pipelines,
                reply,
            } => {
                let Some(reply) = reply.unexpired() else {
                    return Ok(());
                };
                reply.send(state.put(req, &pipelines).await);
            }
            TriggerMsg::Fleet {
                view,
                revision,
                analysis,
            } => {
                // Shown at once, like counts; persisted with the next step,
                // which reads them (the history names failing analyses).
                crate::analysis::adopt(
                    &mut state.stored,
                    &state.entity,
                    &state.id,
                    analysis,
                    &state.catalog,
                );
                state.observe(view, revision).await;
            }
            TriggerMsg::Tick => state.tick(&myself).await,
        }
        state.next(&myself)
    }
}

/// A desired state as compared: the trace context is not part of it.
fn without_trace(mut d: DesiredEntity) -> DesiredEntity {
    if let Some(r) = d.rollout.as_mut() {
        r.trace_parent = None;
    }
    d
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
    fn active(&self) -> Option<&TriggerRecord> {
        self.stored
            .active
            .as_ref()
            .filter(|a| a.trigger.id == self.id)
    }

    fn finished(&self) -> bool {
        self.active().is_none_or(|a| a.trigger.status.is_finished())
    }

    /// An operator action: the model on a copy, committed, traced and
    /// counted.
    async fn act(
        &mut self,
        action: TriggerAction,
        req: ActionRequest,
    ) -> Result<Trigger, ApiError> {
        let span = tracing::info_span!(
            "phasegate.action",
            otel.name = %format!("action {action}"),
            phasegate.trigger_id = %self.id,
            phasegate.entity = %self.key,
            phasegate.phase_id = %req.phase_id.as_ref().map_or("", |p| p.as_str()),
            phasegate.action = action.as_str(),
            phasegate.actor = %req.actor,
            trace_id = %self.trace_id(),
        );
        phasegate_bus::trace::continue_from_traceparent(&span, self.trace_parent.as_deref());
        let answer = async {
            let now = now_ms();
            let mut next = self.stored.clone();
            match next.active.as_mut() {
                Some(rec) => model::act(rec, action, &req, now)?,
                None => return Err(ApiError::conflict("the trigger is finished")),
            }
            // The trigger as it was acted on, even if finishing it moved it
            // out of the entity's record.
            let view = next.active.as_ref().map(|a| a.trigger.clone());
            Box::pin(self.commit(next)).await?;
            tracing::info!("action applied");
            view.ok_or_else(|| ApiError::conflict("the trigger is finished"))
        }
        .instrument(span)
        .await;
        let result = match &answer {
            Ok(_) => "ok",
            Err(e) => e.code.as_str(),
        };
        self.metrics.inc(
            "phasegate_actions_total",
            "trigger actions, by action and result code",
            &[("action", action.as_str()), ("result", result)],
            1.0,
        );
        answer
    }

    /// A put of the entity while the trigger runs: a no-op, the kill
    /// switch (which aborts the trigger), or a conflict.
    async fn put(
        &mut self,
        req: EntityPutRequest,
        pipelines: &Pipelines,
    ) -> Result<EntityResult, ApiError> {
        let now = now_ms();
        let outcome = model::put(
            &self.stored.record,
            self.stored.active.as_ref(),
            req,
            &|name| pipelines.get(name).map(|(p, _)| p.clone()),
            new_trigger_id(now),
            now,
        )?;
        let (record, spec, aborted) = match outcome {
            PutOutcome::NoOp { spec } => {
                return Ok(EntityResult {
                    spec,
                    trigger: None,
                });
            }
            PutOutcome::KillSwitch {
                record,
                spec,
                aborted: Some(aborted),
            } => (record, spec, aborted),
            PutOutcome::KillSwitch { aborted: None, .. } => {
                return Err(ApiError::new(
                    ErrorCode::Internal,
                    "kill switch without trigger",
                ));
            }
            // The model refuses every other put while a trigger runs.
            PutOutcome::Immediate { .. } | PutOutcome::Triggered { .. } => {
                return Err(ApiError::conflict("the entity has an active trigger"));
            }
        };
        // The same path as any finish: one write of the entity, whose
        // record already has the disabled version as its base (settling is
        // a no-op once the trigger is detached), with the aborted trigger
        // beside it.
        self.commit(StoredEntity {
            record,
            active: Some(aborted),
            finished: self.stored.finished.clone(),
        })
        .await?;
        tracing::warn!(trigger_id = %self.id, "kill switch: trigger aborted, entity disabled everywhere");
        Ok(EntityResult {
            spec,
            trigger: None,
        })
    }

    /// Takes in a fleet view: progress counts, acks and health.
    async fn observe(&mut self, mut view: FleetView, revision: u64) {
        let settled = self
            .active()
            .is_none_or(|rec| model::fleet_settled(rec, &view));
        self.lifecycle.set_fleet(if settled {
            FleetState::Settled
        } else {
            FleetState::Unsettled
        });
        if revision < self.desired_revision || self.lifecycle.publish_pending() {
            // Acks of an older revision (a view computed before the
            // directory learnt of our latest publish, or a publish that has
            // not happened yet) say nothing about the current phase: keep
            // live and healthy, drop applied.
            for f in view.values_mut() {
                f.applied = 0;
            }
        }
        let now = now_ms();
        if self.counts_only(&view, now) {
            // Only counts moved (or nothing): shown, not persisted, and no
            // copy of the record made.
            return;
        }
        let mut next = self.stored.clone();
        if let Some(rec) = next.active.as_mut() {
            model::observe(rec, &view, now);
        }
        if let Err(e) = Box::pin(self.commit(next)).await {
            tracing::warn!(trigger_id = %self.id, error = %e, "cannot persist progress; will retry on the next report");
        }
    }

    /// A deadline may have passed: the model's `tick`, on a settled fleet.
    async fn tick(&mut self, myself: &ActorRef<TriggerMsg>) {
        if !self.lifecycle.may_step() {
            return;
        }
        self.deadline = None;
        let now = now_ms();
        let mut next = self.stored.clone();
        if let Some(rec) = next.active.as_mut() {
            model::tick(rec, now);
        }
        if material_change(&mut self.stored, &mut next)
            && let Err(e) = Box::pin(self.commit(next)).await
        {
            tracing::warn!(trigger_id = %self.id, error = %e, "cannot persist a deadline step; retrying");
            self.arm_retry(myself);
        }
    }

    /// What follows a message: fail when stale, stay to retry a publish,
    /// stop once finished, or wait for the next deadline.
    fn next(&mut self, myself: &ActorRef<TriggerMsg>) -> Result<(), ActorProcessingErr> {
        match self.lifecycle {
            // Failing hands the decision to the supervisor, which restarts
            // this actor from what is stored.
            Lifecycle::Stale => {
                return Err("stored trigger changed elsewhere; restarting from the store".into());
            }
            // Agents must learn what was decided: stay until they can.
            Lifecycle::Running {
                publish: Publish::Pending,
                ..
            } => self.arm_retry(myself),
            Lifecycle::Running {
                publish: Publish::Done,
                ..
            } if self.finished() => myself.stop(None),
            Lifecycle::Running { .. } => self.arm(myself),
        }
        Ok(())
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
