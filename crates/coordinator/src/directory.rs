//! The agent directory: fed by agent reports, it knows which agents are
//! live, healthy and what they applied, and tells each trigger actor what
//! its segments look like.
//!
//! Work per report is O(1) plus marking the triggers that cover the agent's
//! segment; fleet views are computed in batches on a timer (`sweep_ms`), so
//! a thousand acks arriving together cost one view per affected trigger,
//! not one per ack.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::time::Duration;

use phasegate_bus::Kv;
use phasegate_model::{FleetView, SegmentFleet};
use phasegate_proto::{
    AgentId, AgentInfo, AgentRecord, AgentReport, Segment, SegmentPattern, TriggerId,
};
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};

use crate::clock::now_ms;
use crate::store::{load_all, to_bytes};
use crate::trigger::TriggerMsg;

/// Messages of the directory.
pub(crate) enum DirectoryMsg {
    /// An agent's heartbeat or ack.
    Report(AgentReport),
    /// A trigger actor wants fleet views for its phases' segments,
    /// counting acks at or above `revision`.
    Register {
        id: TriggerId,
        patterns: Vec<SegmentPattern>,
        revision: u64,
        actor: ActorRef<TriggerMsg>,
    },
    /// The trigger published a new revision: acks are counted against it.
    Revision { id: TriggerId, revision: u64 },
    /// The trigger finished.
    Unregister(TriggerId),
    /// Periodic: liveness, forgetting, and sending pending fleet views.
    Sweep,
    /// The fleet with no acks counted, for a trigger about to start.
    Snapshot(RpcReplyPort<FleetView>),
    /// Live and healthy agents per segment, for metrics.
    Stats(RpcReplyPort<Vec<(String, u64, u64)>>),
    /// `agent.list`.
    List {
        segment: Option<Segment>,
        reply: RpcReplyPort<Vec<AgentInfo>>,
    },
}

struct AgentState {
    segment: Segment,
    tier: Option<String>,
    healthy: bool,
    applied: u64,
    stale: bool,
    heartbeat_ms: u64,
    last_seen_ms: u64,
    live: bool,
}

impl AgentState {
    fn live_at(&self, now: u64) -> bool {
        now.saturating_sub(self.last_seen_ms) <= self.heartbeat_ms.saturating_mul(3)
    }
}

struct Registration {
    patterns: Vec<SegmentPattern>,
    revision: u64,
    actor: ActorRef<TriggerMsg>,
}

impl Registration {
    fn covers(&self, segment: &str) -> bool {
        self.patterns.iter().any(|p| p.matches(segment))
    }
}

/// The directory's arguments.
pub(crate) struct DirectoryArgs {
    pub(crate) agents_kv: Kv,
    pub(crate) sweep_ms: u64,
    pub(crate) forget_after_ms: u64,
}

pub(crate) struct DirectoryState {
    kv: Kv,
    agents: HashMap<AgentId, AgentState>,
    by_segment: BTreeMap<String, BTreeSet<AgentId>>,
    regs: HashMap<TriggerId, Registration>,
    dirty: HashSet<TriggerId>,
    forget_after_ms: u64,
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
        let now = now_ms();
        let mut state = DirectoryState {
            kv: args.agents_kv,
            agents: HashMap::new(),
            by_segment: BTreeMap::new(),
            regs: HashMap::new(),
            dirty: HashSet::new(),
            forget_after_ms: args.forget_after_ms,
        };
        // Agents known before a restart count as live until they miss three
        // heartbeats, so a phase is not called applied just because the
        // coordinator has not heard from anyone yet. Their acks start at 0.
        for e in load_all::<AgentRecord>(&state.kv).await? {
            let r = e.value;
            state
                .by_segment
                .entry(r.segment.to_string())
                .or_default()
                .insert(r.agent_id.clone());
            state.agents.insert(
                r.agent_id,
                AgentState {
                    segment: r.segment,
                    tier: r.tier,
                    healthy: true,
                    applied: 0,
                    stale: false,
                    heartbeat_ms: r.heartbeat_ms,
                    last_seen_ms: now,
                    live: true,
                },
            );
        }
        myself.send_interval(Duration::from_millis(args.sweep_ms.max(1)), || {
            DirectoryMsg::Sweep
        });
        Ok(state)
    }

    async fn handle(
        &self,
        _myself: ActorRef<Self::Msg>,
        msg: DirectoryMsg,
        state: &mut DirectoryState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            DirectoryMsg::Report(r) => state.report(r),
            DirectoryMsg::Register {
                id,
                patterns,
                revision,
                actor,
            } => {
                state.regs.insert(
                    id.clone(),
                    Registration {
                        patterns,
                        revision,
                        actor,
                    },
                );
                // The first view goes out at once: a phase whose segments
                // have no agent must not wait for a sweep.
                state.send_view(&id, now_ms());
            }
            DirectoryMsg::Revision { id, revision } => {
                if let Some(r) = state.regs.get_mut(&id) {
                    r.revision = revision;
                    state.dirty.insert(id.clone());
                    state.send_view(&id, now_ms());
                }
            }
            DirectoryMsg::Unregister(id) => {
                state.regs.remove(&id);
                state.dirty.remove(&id);
            }
            DirectoryMsg::Sweep => state.sweep(now_ms()),
            DirectoryMsg::Snapshot(reply) => {
                let _ = reply.send(state.view(u64::MAX, now_ms()));
            }
            DirectoryMsg::Stats(reply) => {
                let now = now_ms();
                let out = state
                    .by_segment
                    .iter()
                    .map(|(seg, ids)| {
                        let live: Vec<&AgentState> = ids
                            .iter()
                            .filter_map(|i| state.agents.get(i))
                            .filter(|a| a.live_at(now))
                            .collect();
                        let healthy = live.iter().filter(|a| a.healthy).count() as u64;
                        (seg.clone(), live.len() as u64, healthy)
                    })
                    .collect();
                let _ = reply.send(out);
            }
            DirectoryMsg::List { segment, reply } => {
                let now = now_ms();
                let mut out: Vec<AgentInfo> = state
                    .agents
                    .iter()
                    .filter(|(_, a)| segment.as_ref().is_none_or(|s| &a.segment == s))
                    .map(|(id, a)| AgentInfo {
                        agent_id: id.clone(),
                        segment: a.segment.clone(),
                        tier: a.tier.clone(),
                        live: a.live_at(now),
                        healthy: a.healthy,
                        last_seen_ms: a.last_seen_ms,
                        stale: a.stale,
                        applied_revision: a.applied,
                        blocked: Vec::new(),
                    })
                    .collect();
                out.sort_by(|a, b| (&a.segment, &a.agent_id).cmp(&(&b.segment, &b.agent_id)));
                let _ = reply.send(out);
            }
        }
        Ok(())
    }
}

impl DirectoryState {
    fn report(&mut self, r: AgentReport) {
        let now = now_ms();
        let heartbeat_ms = r.heartbeat_ms.clamp(10, 3_600_000);
        let segment_key = r.segment.to_string();
        let new_segment = !self.by_segment.contains_key(&segment_key);
        let (material, persist) = match self.agents.get_mut(&r.agent_id) {
            Some(a) => {
                let moved = a.segment != r.segment;
                let persist = moved || a.tier != r.tier || a.heartbeat_ms != heartbeat_ms;
                let material = moved
                    || !a.live
                    || a.healthy != r.healthy
                    || a.applied != r.applied_revision
                    || a.stale != r.stale;
                if moved {
                    if let Some(set) = self.by_segment.get_mut(a.segment.as_str()) {
                        set.remove(&r.agent_id);
                    }
                    self.dirty.extend(
                        self.regs
                            .iter()
                            .filter(|(_, reg)| reg.covers(a.segment.as_str()))
                            .map(|(id, _)| id.clone()),
                    );
                }
                a.segment = r.segment.clone();
                a.tier = r.tier.clone();
                a.healthy = r.healthy;
                a.applied = r.applied_revision;
                a.stale = r.stale;
                a.heartbeat_ms = heartbeat_ms;
                a.last_seen_ms = now;
                a.live = true;
                (material, persist)
            }
            None => {
                self.agents.insert(
                    r.agent_id.clone(),
                    AgentState {
                        segment: r.segment.clone(),
                        tier: r.tier.clone(),
                        healthy: r.healthy,
                        applied: r.applied_revision,
                        stale: r.stale,
                        heartbeat_ms,
                        last_seen_ms: now,
                        live: true,
                    },
                );
                tracing::info!(agent_id = %r.agent_id, segment = %r.segment, "agent joined");
                (true, true)
            }
        };
        self.by_segment
            .entry(segment_key.clone())
            .or_default()
            .insert(r.agent_id.clone());
        if persist {
            let rec = AgentRecord {
                agent_id: r.agent_id.clone(),
                segment: r.segment.clone(),
                tier: r.tier.clone(),
                heartbeat_ms,
                first_seen_ms: now,
            };
            // Off the actor: a slow JetStream must not hold up reports.
            match to_bytes(&rec) {
                Ok(bytes) => {
                    let kv = self.kv.clone();
                    let id = r.agent_id.clone();
                    tokio::spawn(async move {
                        if let Err(e) = kv.put(id.as_str(), bytes).await {
                            tracing::warn!(agent_id = %id, error = %e, "cannot persist agent");
                        }
                    });
                }
                Err(e) => tracing::warn!(error = %e, "cannot encode agent"),
            }
        }
        if new_segment {
            // Every trigger lists every segment with agents.
            self.dirty.extend(self.regs.keys().cloned());
        } else if material {
            self.mark_covering(&segment_key);
        }
    }

    fn mark_covering(&mut self, segment: &str) {
        self.dirty.extend(
            self.regs
                .iter()
                .filter(|(_, reg)| reg.covers(segment))
                .map(|(id, _)| id.clone()),
        );
    }

    fn sweep(&mut self, now: u64) {
        let mut changed = Vec::new();
        let mut forget = Vec::new();
        for (id, a) in &mut self.agents {
            let live = a.live_at(now);
            if live != a.live {
                a.live = live;
                tracing::info!(agent_id = %id, segment = %a.segment, live, "agent liveness changed");
                changed.push(a.segment.to_string());
            }
            if now.saturating_sub(a.last_seen_ms) > self.forget_after_ms {
                forget.push(id.clone());
            }
        }
        if !forget.is_empty() {
            // Forgotten for good: a restart must not bring them back.
            let kv = self.kv.clone();
            let ids = forget.clone();
            tokio::spawn(async move {
                for id in ids {
                    if let Err(e) = kv.delete(id.as_str()).await {
                        tracing::warn!(agent_id = %id, error = %e, "cannot forget agent");
                    }
                }
            });
        }
        for id in forget {
            if let Some(a) = self.agents.remove(&id)
                && let Some(set) = self.by_segment.get_mut(a.segment.as_str())
            {
                set.remove(&id);
                if set.is_empty() {
                    self.by_segment.remove(a.segment.as_str());
                    self.dirty.extend(self.regs.keys().cloned());
                }
            }
        }
        for s in changed {
            self.mark_covering(&s);
        }
        let dirty: Vec<TriggerId> = self.dirty.drain().collect();
        for id in dirty {
            self.send_view(&id, now);
        }
    }

    /// The fleet by segment, counting as applied the live agents at or
    /// above `revision`.
    fn view(&self, revision: u64, now: u64) -> FleetView {
        let mut view = FleetView::new();
        for (segment, ids) in &self.by_segment {
            let mut f = SegmentFleet::default();
            for a in ids.iter().filter_map(|i| self.agents.get(i)) {
                if !a.live_at(now) {
                    continue;
                }
                f.live += 1;
                f.healthy += u32::from(a.healthy);
                f.applied += u32::from(a.applied >= revision);
            }
            view.insert(segment.clone(), f);
        }
        view
    }

    /// Computes the fleet as trigger `id` sees it and sends it.
    fn send_view(&mut self, id: &TriggerId, now: u64) {
        self.dirty.remove(id);
        let Some(reg) = self.regs.get(id) else {
            return;
        };
        let view = self.view(reg.revision, now);
        if let Err(e) = reg.actor.cast(TriggerMsg::Fleet(view, reg.revision)) {
            tracing::debug!(trigger_id = %id, error = %e, "trigger actor gone");
        }
    }
}
