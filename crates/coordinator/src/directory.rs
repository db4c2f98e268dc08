//! The agent directory: a thin actor around [`phasegate_model::Fleet`],
//! which decides who is known, live, unreachable and applied (SPEC.md §4
//! *Fleet*). The actor feeds it reports and the time, persists the agents
//! it is told to, and sends each trigger actor the view of its segments.
//!
//! Work per report is O(1) in the fleet plus marking the triggers that
//! cover the agent's segment. Views are coalesced but never wait for a
//! timer: a report that changes something queues one `Flush`, which runs
//! after the reports already in the mailbox, so a thousand acks arriving
//! together cost one view per affected trigger. The periodic sweep only
//! notices silence (liveness, settling after a restart, forgetting).

use std::collections::HashSet;
use std::time::Duration;

use phasegate_bus::Kv;
use phasegate_model::Fleet;
use phasegate_model::fleet::{Changes, Persist};
use phasegate_proto::{AgentId, AgentRecord, AgentReport, ApiError, TriggerId, now_ms};
use ractor::{Actor, ActorProcessingErr, ActorRef};

use crate::msg::{DirectoryMsg, TriggerMsg};
use crate::registry::Registry;
use crate::store::{load_all, to_bytes};

pub(crate) struct DirectoryArgs {
    pub(crate) agents_kv: Kv,
    pub(crate) sweep_ms: u64,
    pub(crate) forget_after_ms: u64,
    pub(crate) limits: phasegate_model::fleet::Limits,
    /// Checked before every write: a deposed leader writes no agent.
    pub(crate) lease: crate::leader::Lease,
}

pub(crate) struct DirectoryState {
    /// Writes to the agents bucket, carried out in order by one task.
    persist: tokio::sync::mpsc::UnboundedSender<Persist>,
    fleet: Fleet,
    regs: Registry<ActorRef<TriggerMsg>>,
    dirty: HashSet<TriggerId>,
    /// A `Flush` is queued.
    flush_queued: bool,
    /// Reports of unknown agents ignored for the limits, for the log.
    refused: u64,
}

pub(crate) struct Directory;

impl Actor for Directory {
    type Msg = DirectoryMsg;
    type State = DirectoryState;
    type Arguments = DirectoryArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: DirectoryArgs,
    ) -> Result<DirectoryState, ActorProcessingErr> {
        let mut fleet = Fleet::new(args.forget_after_ms).with_limits(args.limits);
        // Agents known before a restart stay known; no decision is taken
        // on their segments until each reports or stays silent for a whole
        // liveness window from `Listening`.
        let restored = load_all::<AgentRecord>(&args.agents_kv).await?;
        fleet.restore(restored.into_iter().map(|e| e.value), now_ms());
        myself.send_interval(Duration::from_millis(args.sweep_ms.max(1)), || {
            DirectoryMsg::Sweep
        });
        let (persist, queue) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(persist_agents(args.agents_kv, args.lease, queue));
        Ok(DirectoryState {
            persist,
            fleet,
            regs: Registry::default(),
            dirty: HashSet::new(),
            flush_queued: false,
            refused: 0,
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        msg: DirectoryMsg,
        state: &mut DirectoryState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            DirectoryMsg::Report(r) => state.report(&r),
            DirectoryMsg::Listening => state.fleet.listening(now_ms()),
            DirectoryMsg::Register {
                id,
                key,
                patterns,
                revision,
                actor,
            } => {
                let segments = state.fleet.segments();
                state
                    .regs
                    .register(id.clone(), key, patterns, revision, actor, segments);
                // At once: a phase whose segments have no agent must not wait.
                state.send_view(&id, now_ms());
            }
            DirectoryMsg::Revision { id, revision } => {
                if state.regs.set_revision(&id, revision) {
                    state.send_view(&id, now_ms());
                }
            }
            DirectoryMsg::Unregister(id) => {
                state.regs.unregister(&id);
                state.dirty.remove(&id);
            }
            DirectoryMsg::Sweep => {
                let changes = state.fleet.expire(now_ms());
                state.carry_out(changes);
            }
            DirectoryMsg::Flush => state.flush(),
            DirectoryMsg::Snapshot(reply) => {
                let _ = reply.send(state.fleet.view("", u64::MAX, now_ms()));
            }
            DirectoryMsg::Stats(reply) => {
                let _ = reply.send(state.fleet.stats(now_ms()));
            }
            DirectoryMsg::List { segment, reply } => {
                let _ = reply.send(state.fleet.list(segment.as_ref(), now_ms()));
            }
            DirectoryMsg::Forget { agent_id, reply } => {
                let _ = reply.send(state.forget(&agent_id));
            }
        }
        if !state.dirty.is_empty() && !state.flush_queued {
            // After the reports already queued: they coalesce into it.
            state.flush_queued = myself.cast(DirectoryMsg::Flush).is_ok();
        }
        Ok(())
    }
}

impl DirectoryState {
    /// An agent's heartbeat, ack or goodbye.
    fn report(&mut self, r: &AgentReport) {
        if r.leaving {
            tracing::info!(agent_id = %r.agent_id, segment = %r.segment, "agent left");
        }
        let changes = self.fleet.report(r, now_ms());
        self.carry_out(changes);
    }

    /// Sends the views of the triggers marked since the last flush.
    fn flush(&mut self) {
        self.flush_queued = false;
        let now = now_ms();
        let dirty: Vec<TriggerId> = self.dirty.drain().collect();
        for id in dirty {
            self.send_view(&id, now);
        }
    }

    /// `agent.forget`: `not_found` for an agent not known.
    fn forget(&mut self, agent_id: &AgentId) -> Result<(), ApiError> {
        let changes = self
            .fleet
            .forget(agent_id)
            .ok_or_else(|| ApiError::not_found(format!("agent {agent_id} is not known")))?;
        tracing::info!(%agent_id, "agent forgotten by an operator");
        self.carry_out(changes);
        Ok(())
    }

    /// Persists what the fleet says to, and marks the triggers whose
    /// segments changed.
    fn carry_out(&mut self, changes: Changes) {
        if changes.is_empty() {
            return;
        }
        if changes.refused {
            // Logged sparingly: a flood must not turn into a log flood.
            if self.refused.is_power_of_two() || self.refused == 0 {
                tracing::warn!(
                    refused = self.refused + 1,
                    "reports of unknown agents ignored: the agent or segment limit is reached"
                );
            }
            self.refused += 1;
        }
        // Only the triggers the change concerns (see `registry`).
        let concerned = self.regs.concerned(&changes, self.fleet.segments());
        self.dirty.extend(concerned);
        for p in changes.persist {
            // The task ends only with the actor.
            let _ = self.persist.send(p);
        }
    }

    /// Computes the fleet as trigger `id` sees it and sends it.
    fn send_view(&mut self, id: &TriggerId, now: u64) {
        self.dirty.remove(id);
        let Some(reg) = self.regs.get(id) else {
            return;
        };
        let view = reg
            .segments
            .iter()
            .map(|s| {
                (
                    s.clone(),
                    self.fleet.segment(s, &reg.key, reg.revision, now),
                )
            })
            .collect();
        let analysis = crate::analysis::of_segments(&self.fleet, id, &reg.segments, now);
        if let Err(e) = reg.actor.cast(TriggerMsg::Fleet {
            view,
            revision: reg.revision,
            analysis,
        }) {
            tracing::debug!(trigger_id = %id, error = %e, "trigger actor gone");
        }
    }
}

/// Writes agent records in the order the fleet decided them, off the actor
/// so a slow JetStream never holds up reports. A lost put is made good by
/// the agent's next report that changes its record, a lost delete by the
/// agent being forgotten again after a restart.
async fn persist_agents(
    kv: Kv,
    lease: crate::leader::Lease,
    mut queue: tokio::sync::mpsc::UnboundedReceiver<Persist>,
) {
    while let Some(p) = queue.recv().await {
        if !lease.holds() {
            // A coordinator that may have lost its lease (one frozen past
            // it, say) must not forget its successor's agents.
            continue;
        }
        match p {
            Persist::Put(rec) => match to_bytes(&rec) {
                Ok(bytes) => {
                    if let Err(e) = kv.put(rec.agent_id.as_str(), bytes).await {
                        tracing::warn!(agent_id = %rec.agent_id, error = %e, "cannot persist agent");
                    }
                }
                Err(e) => tracing::warn!(error = %e, "cannot encode agent"),
            },
            Persist::Delete(id) => {
                if let Err(e) = kv.delete(id.as_str()).await {
                    tracing::warn!(agent_id = %id, error = %e, "cannot forget agent");
                }
            }
        }
    }
}
