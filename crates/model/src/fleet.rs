//! The fleet as the coordinator knows it (SPEC.md §4 *Fleet: silence is not
//! success*): which agents are **known** to each segment, which of those
//! are **live** and which are **unreachable**, what each has applied and
//! whether its probes pass.
//!
//! Plain data and decisions, no IO and no clock: the directory actor feeds
//! it reports and the time, carries out the [`Persist`] effects it returns
//! and hands triggers the views it computes.
//!
//! - An agent is known from its first report until it is forgotten: it
//!   said it was leaving, an operator ran `agent.forget`, or it was silent
//!   for `forget_after_ms`.
//! - A known agent is live while heard from within three of its heartbeats
//!   (counted since this coordinator could hear it); otherwise it is
//!   unreachable, which blocks `applying` like a missing ack and counts as
//!   unhealthy.
//! - Agents restored from the store after a coordinator restart are known
//!   but not yet **settled**: until each has reported, or stayed silent for
//!   a full liveness window counted from when the coordinator could first
//!   hear it, no fleet-based decision is taken for its segment.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use phasegate_proto::{AgentId, AgentInfo, AgentRecord, AgentReport, BlockedEntity, Segment};

/// How many heartbeats an agent may miss before it is unreachable.
pub const MISSED_HEARTBEATS: u64 = 3;

/// The shortest and longest heartbeat interval the fleet believes, in ms:
/// a report claiming an hour-long heartbeat must not keep a dead agent
/// live for three hours, nor a 0 ms one flap.
pub const HEARTBEAT_BOUNDS_MS: (u64, u64) = (10, 60_000);

/// What the coordinator knows of one segment's agents for one trigger.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SegmentFleet {
    /// Known agents: live or unreachable.
    pub known: u32,
    /// Agents heard from within [`MISSED_HEARTBEATS`] heartbeats.
    pub live: u32,
    /// Live agents that applied the revision the trigger published for its
    /// entity (and are not blocked on that entity).
    pub applied: u32,
    /// Live agents whose probes pass.
    pub healthy: u32,
    /// Every agent restored after a coordinator restart has reported or
    /// stayed silent for a full liveness window: decisions may be taken.
    pub settled: bool,
}

/// The fleet by segment name.
pub type FleetView = BTreeMap<String, SegmentFleet>;

/// A write the directory must make to the agents bucket so a restarted
/// coordinator knows the same agents.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Persist {
    /// Store (or refresh) the agent's record.
    Put(AgentRecord),
    /// The agent is forgotten.
    Delete(AgentId),
}

/// An agent's applied revision moved and nothing else about it changed:
/// only the triggers of its segment whose revision lies between the two
/// see a difference (work proportional to what changed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AckMove {
    /// The agent's segment.
    pub segment: String,
    /// Its applied revision before the report.
    pub from: u64,
    /// Its applied revision after the report.
    pub to: u64,
}

impl AckMove {
    /// True when a trigger counting acks at or above `revision` sees it.
    pub fn crosses(&self, revision: u64) -> bool {
        let (lo, hi) = (self.from.min(self.to), self.from.max(self.to));
        lo < revision && revision <= hi
    }
}

/// What a report or an expiry changed.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Changes {
    /// Segments whose view changed for every trigger covering them (an
    /// agent joined, left, turned unreachable or healthy, ...).
    pub segments: BTreeSet<String>,
    /// Applied revisions that moved with nothing else changing.
    pub acks: Vec<AckMove>,
    /// Entity keys an agent started or stopped being blocked on: only the
    /// trigger of each key sees a difference.
    pub blocked_keys: BTreeSet<String>,
    /// Writes to make, in order.
    pub persist: Vec<Persist>,
    /// A segment gained its first or lost its last known agent: triggers
    /// whose globs match it list it or stop listing it.
    pub segment_set_changed: bool,
    /// The report came from an unknown agent beyond the [`Limits`]: it was
    /// ignored.
    pub refused: bool,
}

/// How many agents and segments the fleet tracks at most: reports of
/// further unknown agents are ignored, so a flood of invented agent ids
/// cannot grow memory or fan out writes without bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Known agents in all.
    pub max_agents: usize,
    /// Known agents in one segment.
    pub max_agents_per_segment: usize,
    /// Segments with known agents.
    pub max_segments: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_agents: 10_000,
            max_agents_per_segment: 2_000,
            max_segments: 1_000,
        }
    }
}

impl Changes {
    fn touch(&mut self, segment: &Segment) {
        self.segments.insert(segment.to_string());
    }

    /// True when nothing changed.
    pub fn is_empty(&self) -> bool {
        self.segments.is_empty()
            && self.acks.is_empty()
            && self.blocked_keys.is_empty()
            && self.persist.is_empty()
            && !self.segment_set_changed
            && !self.refused
    }
}

#[derive(Debug, Clone, PartialEq)]
struct Agent {
    segment: Segment,
    tier: Option<String>,
    healthy: bool,
    applied: u64,
    stale: bool,
    heartbeat_ms: u64,
    /// Last report, or when the coordinator could first hear a restored
    /// agent.
    last_seen_ms: u64,
    /// Reported since this coordinator started.
    heard: bool,
    /// Liveness as of the last [`Fleet::expire`] or report.
    live: bool,
    /// Settledness as of the last [`Fleet::expire`] or report.
    settled: bool,
    first_seen_ms: u64,
    blocked: Vec<BlockedEntity>,
    /// The latest result of every analysis it runs.
    analyses: Vec<phasegate_proto::AnalysisStatus>,
}

impl Agent {
    fn window(&self) -> u64 {
        self.heartbeat_ms.saturating_mul(MISSED_HEARTBEATS)
    }

    fn live_at(&self, now: u64) -> bool {
        self.heard && now.saturating_sub(self.last_seen_ms) <= self.window()
    }

    fn settled_at(&self, now: u64) -> bool {
        self.heard || now.saturating_sub(self.last_seen_ms) > self.window()
    }

    fn blocked_on(&self, key: &str) -> bool {
        self.blocked.iter().any(|b| b.key == key)
    }

    fn record(&self, id: &AgentId) -> AgentRecord {
        AgentRecord {
            agent_id: id.clone(),
            segment: self.segment.clone(),
            tier: self.tier.clone(),
            heartbeat_ms: self.heartbeat_ms,
            first_seen_ms: self.first_seen_ms,
        }
    }
}

/// Every known agent, indexed by segment.
#[derive(Debug, Clone, Default)]
pub struct Fleet {
    agents: HashMap<AgentId, Agent>,
    by_segment: BTreeMap<String, BTreeSet<AgentId>>,
    forget_after_ms: u64,
    limits: Limits,
}

impl Fleet {
    /// An empty fleet that forgets agents silent for `forget_after_ms`.
    pub fn new(forget_after_ms: u64) -> Self {
        Self {
            forget_after_ms,
            ..Self::default()
        }
    }

    /// The same fleet, tracking at most `limits`.
    pub fn with_limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// Whether one more agent (a new one, or one moving in) may be
    /// tracked in `segment`.
    fn has_room(&self, segment: &str, new: bool) -> bool {
        let l = &self.limits;
        if new && self.agents.len() >= l.max_agents {
            return false;
        }
        match self.by_segment.get(segment) {
            Some(ids) => ids.len() < l.max_agents_per_segment,
            None => self.by_segment.len() < l.max_segments,
        }
    }

    /// Agents known before a restart: known, not live, and unsettled until
    /// they report or stay silent for a liveness window from `now` (when
    /// the coordinator could first hear them).
    pub fn restore(&mut self, records: impl IntoIterator<Item = AgentRecord>, now: u64) {
        for r in records {
            let (lo, hi) = HEARTBEAT_BOUNDS_MS;
            let agent = Agent {
                segment: r.segment.clone(),
                tier: r.tier,
                healthy: false,
                applied: 0,
                stale: false,
                heartbeat_ms: r.heartbeat_ms.clamp(lo, hi),
                last_seen_ms: now,
                heard: false,
                live: false,
                settled: false,
                first_seen_ms: r.first_seen_ms,
                blocked: Vec::new(),
                analyses: Vec::new(),
            };
            self.insert(r.agent_id, agent);
        }
    }

    /// The coordinator can hear reports from `now` on: restored agents
    /// not heard from yet get their full liveness window from here.
    pub fn listening(&mut self, now: u64) {
        for a in self.agents.values_mut().filter(|a| !a.heard) {
            a.last_seen_ms = now;
        }
    }

    fn insert(&mut self, id: AgentId, agent: Agent) {
        self.by_segment
            .entry(agent.segment.to_string())
            .or_default()
            .insert(id.clone());
        self.agents.insert(id, agent);
    }

    /// Removes an agent from the index; true when its segment has no known
    /// agent left.
    fn remove(&mut self, id: &AgentId) -> Option<(Agent, bool)> {
        let agent = self.agents.remove(id)?;
        let mut emptied = false;
        if let Some(set) = self.by_segment.get_mut(agent.segment.as_str()) {
            set.remove(id);
            if set.is_empty() {
                self.by_segment.remove(agent.segment.as_str());
                emptied = true;
            }
        }
        Some((agent, emptied))
    }

    /// Takes in one report received at `now`.
    pub fn report(&mut self, r: &AgentReport, now: u64) -> Changes {
        let mut out = Changes::default();
        if r.leaving {
            // A clean stop: it no longer counts, and a restart must not
            // bring it back.
            if let Some((agent, emptied)) = self.remove(&r.agent_id) {
                out.touch(&agent.segment);
                out.segment_set_changed = emptied;
                out.persist.push(Persist::Delete(r.agent_id.clone()));
            }
            return out;
        }
        let (lo, hi) = HEARTBEAT_BOUNDS_MS;
        let heartbeat_ms = r.heartbeat_ms.clamp(lo, hi);
        let mut fresh = Agent {
            segment: r.segment.clone(),
            tier: r.tier.clone(),
            healthy: r.healthy,
            applied: r.applied_revision,
            stale: r.stale,
            heartbeat_ms,
            last_seen_ms: now,
            heard: true,
            live: true,
            settled: true,
            first_seen_ms: now,
            blocked: r.blocked.clone(),
            analyses: r.analyses.clone(),
        };
        match self.agents.get(&r.agent_id).cloned() {
            Some(old)
                if old.segment != fresh.segment && !self.has_room(r.segment.as_str(), false) =>
            {
                // Moving to a full segment: stays where it was.
                out.refused = true;
            }
            Some(old) => {
                fresh.first_seen_ms = old.first_seen_ms;
                let moved = old.segment != fresh.segment;
                if moved
                    || old.tier != fresh.tier
                    || old.heartbeat_ms != fresh.heartbeat_ms
                    || !old.heard
                {
                    out.persist.push(Persist::Put(fresh.record(&r.agent_id)));
                }
                // Liveness as of now, not as of the last expiry: an agent
                // that came back before the sweep noticed it gone still
                // changed the view.
                let material = moved
                    || !old.live_at(now)
                    || !old.settled
                    || old.healthy != fresh.healthy
                    || old.stale != fresh.stale
                    // New analysis results reach the triggers covering
                    // the segment (`trigger.get` shows them).
                    || old.analyses != fresh.analyses;
                if !material && old.applied != fresh.applied {
                    out.acks.push(AckMove {
                        segment: r.segment.to_string(),
                        from: old.applied,
                        to: fresh.applied,
                    });
                }
                if !material && old.blocked != fresh.blocked {
                    let keys = |b: &[BlockedEntity]| -> BTreeSet<String> {
                        b.iter().map(|e| e.key.clone()).collect()
                    };
                    let (was, is) = (keys(&old.blocked), keys(&fresh.blocked));
                    out.blocked_keys
                        .extend(was.symmetric_difference(&is).cloned());
                    // A key blocked at another revision changes nothing
                    // here: the agent still cannot serve it.
                }
                if moved {
                    if let Some((_, emptied)) = self.remove(&r.agent_id) {
                        out.segment_set_changed |= emptied;
                    }
                    out.touch(&old.segment);
                    out.segment_set_changed |= !self.by_segment.contains_key(r.segment.as_str());
                    self.insert(r.agent_id.clone(), fresh);
                } else if let Some(slot) = self.agents.get_mut(&r.agent_id) {
                    *slot = fresh;
                }
                if material {
                    out.touch(&r.segment);
                }
            }
            None if !self.has_room(r.segment.as_str(), true) => out.refused = true,
            None => {
                out.segment_set_changed = !self.by_segment.contains_key(r.segment.as_str());
                out.persist.push(Persist::Put(fresh.record(&r.agent_id)));
                self.insert(r.agent_id.clone(), fresh);
                out.touch(&r.segment);
            }
        }
        out
    }

    /// `agent.forget`: the agent is no longer known. `None` when it was not.
    pub fn forget(&mut self, id: &AgentId) -> Option<Changes> {
        let (agent, emptied) = self.remove(id)?;
        let mut out = Changes {
            segment_set_changed: emptied,
            ..Changes::default()
        };
        out.touch(&agent.segment);
        out.persist.push(Persist::Delete(id.clone()));
        Some(out)
    }

    /// Liveness at `now`: agents that turned unreachable, restored agents
    /// whose window passed, and agents silent long enough to be forgotten.
    pub fn expire(&mut self, now: u64) -> Changes {
        let mut out = Changes::default();
        let mut forget = Vec::new();
        for (id, a) in &mut self.agents {
            let live = a.live_at(now);
            if live != a.live {
                a.live = live;
                out.touch(&a.segment);
            }
            if !a.settled && a.settled_at(now) {
                // A restored agent's window passed in silence: its segment
                // may be decided on now, with it unreachable.
                a.settled = true;
                out.touch(&a.segment);
            }
            if now.saturating_sub(a.last_seen_ms) > self.forget_after_ms {
                forget.push(id.clone());
            }
        }
        for id in forget {
            if let Some((agent, emptied)) = self.remove(&id) {
                out.touch(&agent.segment);
                out.segment_set_changed |= emptied;
                out.persist.push(Persist::Delete(id));
            }
        }
        out
    }

    /// One segment as a trigger of entity `key` sees it, counting as
    /// applied the live agents at or above `revision` not blocked on `key`.
    pub fn segment(&self, segment: &str, key: &str, revision: u64, now: u64) -> SegmentFleet {
        let mut f = SegmentFleet {
            settled: true,
            ..SegmentFleet::default()
        };
        let Some(ids) = self.by_segment.get(segment) else {
            return f;
        };
        for a in ids.iter().filter_map(|i| self.agents.get(i)) {
            f.known += 1;
            f.settled &= a.settled_at(now);
            if !a.live_at(now) {
                continue;
            }
            f.live += 1;
            f.healthy += u32::from(a.healthy);
            f.applied += u32::from(a.applied >= revision && !a.blocked_on(key));
        }
        f
    }

    /// The latest result of each analysis of `trigger` in `segment`, from
    /// its live agents (see [`crate::analysis::summarize`]).
    pub fn analyses(
        &self,
        segment: &str,
        trigger: &phasegate_proto::TriggerId,
        now: u64,
    ) -> Vec<phasegate_proto::SegmentAnalysis> {
        let Some(ids) = self.by_segment.get(segment) else {
            return Vec::new();
        };
        crate::analysis::summarize(
            trigger,
            ids.iter().filter_map(|i| {
                let a = self.agents.get(i)?;
                a.live_at(now).then_some((i, a.analyses.as_slice()))
            }),
        )
    }

    /// Every segment with a known agent, as a trigger of entity `key` sees
    /// it (see [`Fleet::segment`]).
    pub fn view(&self, key: &str, revision: u64, now: u64) -> FleetView {
        self.by_segment
            .keys()
            .map(|s| (s.clone(), self.segment(s, key, revision, now)))
            .collect()
    }

    /// Names of the segments with a known agent.
    pub fn segments(&self) -> impl Iterator<Item = &str> + Clone {
        self.by_segment.keys().map(String::as_str)
    }

    /// Every known agent (of `segment`, if given), by segment then id.
    pub fn list(&self, segment: Option<&Segment>, now: u64) -> Vec<AgentInfo> {
        let segments: Vec<(&String, &BTreeSet<AgentId>)> = match segment {
            Some(s) => self
                .by_segment
                .get_key_value(s.as_str())
                .into_iter()
                .collect(),
            None => self.by_segment.iter().collect(),
        };
        segments
            .into_iter()
            .flat_map(|(_, ids)| ids.iter())
            .filter_map(|id| self.agents.get(id).map(|a| (id, a)))
            .map(|(id, a)| AgentInfo {
                agent_id: id.clone(),
                segment: a.segment.clone(),
                tier: a.tier.clone(),
                live: a.live_at(now),
                healthy: a.healthy && a.live_at(now),
                last_seen_ms: a.last_seen_ms,
                stale: a.stale,
                applied_revision: a.applied,
                blocked: a.blocked.clone(),
            })
            .collect()
    }

    /// Known, live and live-healthy agents per segment, for metrics.
    pub fn stats(&self, now: u64) -> Vec<SegmentStats> {
        self.by_segment
            .keys()
            .map(|s| {
                let f = self.segment(s, "", u64::MAX, now);
                SegmentStats {
                    segment: s.clone(),
                    known: f.known,
                    live: f.live,
                    healthy: f.healthy,
                }
            })
            .collect()
    }

    /// How many agents are known.
    pub fn len(&self) -> usize {
        self.agents.len()
    }

    /// True when no agent is known.
    pub fn is_empty(&self) -> bool {
        self.agents.is_empty()
    }
}

/// Agent counts of one segment, for metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentStats {
    /// The segment, the metrics' `segment` label.
    pub segment: String,
    /// Known agents: live or unreachable.
    pub known: u32,
    /// Agents heard from within [`MISSED_HEARTBEATS`] heartbeats.
    pub live: u32,
    /// Live agents whose probes pass.
    pub healthy: u32,
}
