//! The one watch of the coordinator that every open tab shares.
//!
//! A single task asks the coordinator, every `--poll-ms` (and at once after
//! an action), for the active triggers and the agents, and publishes what
//! changed on a `tokio::sync::watch` channel; each event stream (`GET
//! /api/events`) only reads that channel. So the coordinator's load does
//! not grow with the number of tabs, and each change is serialised once,
//! not once per tab.
//!
//! It polls the command API rather than watching the triggers bucket: the
//! dashboard acts with an operator's credentials, and in a secured
//! installation (SPEC.md §8) an operator may only send commands. A full
//! `trigger.get` is only asked for a trigger whose summary changed
//! (`updated_at_ms`).
//!
//! This is a plain task with an interval, not an actor: it has one
//! message (poll now), no state anyone else reads but through the channel,
//! and nothing to supervise; if it fails, it says so in the status part and
//! tries again at the next period.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use phasegate_client::{ClientError, PhasegateClient};
use phasegate_proto::{
    AgentInfo, EntityKind, EntityRef, ErrorCode, Trigger, TriggerId, TriggerListRequest,
    TriggerStatus,
};
use serde::Serialize;
use tokio::sync::{Notify, watch};

use super::specs::SpecCache;

/// The most active triggers shown in full; the rest are counted.
const MAX_DETAILED: usize = 500;

/// How many polls apart the poller lists every gate and config, so the
/// version an entity had before its next rollout is known for the diff.
const PRIME_EVERY: u64 = 60;

/// The status before the first poll has answered.
const CONNECTING: &str = "connecting to the coordinator";

/// One part of the live view, serialised once for every subscriber.
#[derive(Debug)]
pub(crate) struct Part {
    /// Grows with every change of the part: a stream sends a part when its
    /// `seq` differs from the one it sent last.
    pub(crate) seq: u64,
    /// The part as JSON, the `data:` of its event.
    pub(crate) json: String,
}

/// What the event streams send: three parts that change independently.
#[derive(Debug, Clone)]
pub(crate) struct Snapshot {
    /// `{"active": [Trigger…], "omitted": n, "finished_seq": k}`: the
    /// active triggers in full, newest first; `finished_seq` grows when
    /// one finishes (a page showing finished ones reloads them).
    pub(crate) rollouts: Arc<Part>,
    /// `{"agents": [AgentInfo…]}`, every known agent.
    pub(crate) agents: Arc<Part>,
    /// `{"error": message or null}`: whether the last poll reached the
    /// coordinator.
    pub(crate) status: Arc<Part>,
}

#[derive(Serialize)]
struct RolloutsPart<'a> {
    active: &'a [Trigger],
    omitted: usize,
    finished_seq: u64,
}

#[derive(Serialize)]
struct AgentsPart<'a> {
    agents: &'a [AgentInfo],
}

#[derive(Serialize)]
struct StatusPart<'a> {
    error: Option<&'a str>,
}

fn part<T: Serialize>(seq: u64, value: &T) -> Arc<Part> {
    // The types are plain data: serialising them cannot fail; if it ever
    // did, the part says so rather than taking the poller down.
    let json = serde_json::to_string(value)
        .unwrap_or_else(|e| format!("{{\"error\":\"cannot serialise: {e}\"}}"));
    Arc::new(Part { seq, json })
}

/// An agent as compared between polls: without `last_seen_ms`, which
/// changes with every heartbeat and is no news by itself.
fn agent_news(a: &AgentInfo) -> AgentInfo {
    AgentInfo {
        last_seen_ms: 0,
        ..a.clone()
    }
}

/// The poller: owns the last view and the channel it is published on.
pub(crate) struct Poller {
    client: PhasegateClient,
    every: Duration,
    specs: Arc<Mutex<SpecCache>>,
    poke: Arc<Notify>,
    tx: watch::Sender<Snapshot>,
    /// The active triggers of the last poll, by id.
    details: HashMap<TriggerId, Trigger>,
    active: Vec<Trigger>,
    omitted: usize,
    finished_seq: u64,
    agents: Vec<AgentInfo>,
    error: Option<String>,
    seq: u64,
    polls: u64,
}

impl Poller {
    /// A poller of `client`, every `every`, recording the specs it sees in
    /// `specs`; `poke` makes it poll at once.
    pub(crate) fn new(
        client: PhasegateClient,
        every: Duration,
        specs: Arc<Mutex<SpecCache>>,
        poke: Arc<Notify>,
    ) -> Self {
        let empty = Snapshot {
            rollouts: part(
                0,
                &RolloutsPart {
                    active: &[],
                    omitted: 0,
                    finished_seq: 0,
                },
            ),
            agents: part(0, &AgentsPart { agents: &[] }),
            status: part(
                0,
                &StatusPart {
                    error: Some(CONNECTING),
                },
            ),
        };
        let (tx, _) = watch::channel(empty);
        Self {
            client,
            every,
            specs,
            poke,
            tx,
            details: HashMap::new(),
            active: Vec::new(),
            omitted: 0,
            finished_seq: 0,
            agents: Vec::new(),
            error: Some(CONNECTING.to_owned()),
            seq: 0,
            polls: 0,
        }
    }

    /// A receiver of the live view.
    pub(crate) fn subscribe(&self) -> watch::Receiver<Snapshot> {
        self.tx.subscribe()
    }

    /// Polls until `stopping` turns true.
    pub(crate) async fn run(mut self, mut stopping: watch::Receiver<bool>) {
        let mut tick = tokio::time::interval(self.every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                () = self.poke.notified() => {}
                changed = stopping.changed() => {
                    if changed.is_err() || *stopping.borrow() {
                        return;
                    }
                }
            }
            let result = self.poll().await;
            self.set_error(result.err().map(|e| e.to_string()));
        }
    }

    fn next_seq(&mut self) -> u64 {
        self.seq += 1;
        self.seq
    }

    fn set_error(&mut self, error: Option<String>) {
        if error == self.error {
            return;
        }
        if let Some(e) = &error {
            tracing::warn!(error = %e, "cannot poll the coordinator");
        }
        self.error = error;
        let seq = self.next_seq();
        let status = part(
            seq,
            &StatusPart {
                error: self.error.as_deref(),
            },
        );
        self.tx.send_modify(|s| s.status = status);
    }

    /// One round: active triggers, then agents; publishes what changed.
    async fn poll(&mut self) -> Result<(), ClientError> {
        if self.polls.is_multiple_of(PRIME_EVERY) {
            self.prime_specs().await?;
        }
        self.polls += 1;
        self.poll_triggers().await?;
        self.poll_agents().await
    }

    async fn poll_triggers(&mut self) -> Result<(), ClientError> {
        let summaries = self
            .client
            .trigger_list(TriggerListRequest {
                status: Some(TriggerStatus::InProgress),
                limit: Some(phasegate_proto::MAX_PAGE),
                ..TriggerListRequest::default()
            })
            .await?;
        let mut details = HashMap::with_capacity(summaries.len().min(MAX_DETAILED));
        let mut active = Vec::with_capacity(details.capacity());
        for s in summaries.iter().take(MAX_DETAILED) {
            let t = match self.details.get(&s.id) {
                Some(t) if t.updated_at_ms == s.updated_at_ms => t.clone(),
                _ => match self.client.trigger_get(s.id.clone()).await {
                    Ok(t) => t,
                    // Gone between the list and the get: not active.
                    Err(e) if e.code() == ErrorCode::NotFound => continue,
                    Err(e) => return Err(e),
                },
            };
            if t.status.is_finished() {
                continue;
            }
            details.insert(t.id.clone(), t.clone());
            active.push(t);
        }
        let omitted = summaries.len().saturating_sub(MAX_DETAILED);
        let finished: Vec<EntityRef> = self
            .details
            .values()
            .filter(|t| !details.contains_key(&t.id))
            .map(|t| t.entity.clone())
            .collect();
        for entity in &finished {
            // The version it settled on (the new one, or the old one after
            // an abort) is the "before" of its next rollout.
            self.remember_entity(entity).await;
        }
        self.details = details;
        if !finished.is_empty() {
            self.finished_seq += 1;
        }
        if active != self.active || omitted != self.omitted || !finished.is_empty() {
            self.active = active;
            self.omitted = omitted;
            let seq = self.next_seq();
            let rollouts = part(
                seq,
                &RolloutsPart {
                    active: &self.active,
                    omitted,
                    finished_seq: self.finished_seq,
                },
            );
            self.tx.send_modify(|s| s.rollouts = rollouts);
        }
        Ok(())
    }

    async fn poll_agents(&mut self) -> Result<(), ClientError> {
        let agents = self.client.agents(None).await?;
        let news = agents.len() != self.agents.len()
            || agents
                .iter()
                .zip(&self.agents)
                .any(|(a, b)| agent_news(a) != agent_news(b));
        if news {
            self.agents = agents;
            let seq = self.next_seq();
            let part = part(
                seq,
                &AgentsPart {
                    agents: &self.agents,
                },
            );
            self.tx.send_modify(|s| s.agents = part);
        }
        Ok(())
    }

    /// Records the current spec of every gate and config.
    async fn prime_specs(&self) -> Result<(), ClientError> {
        for kind in [EntityKind::Gate, EntityKind::Config] {
            let specs = self.client.entity_list(kind).await?;
            let mut cache = super::specs::lock(&self.specs);
            for spec in &specs {
                cache.remember(spec);
            }
        }
        Ok(())
    }

    async fn remember_entity(&self, entity: &EntityRef) {
        // Best effort: a deleted entity has nothing to remember.
        if let Ok(r) = self
            .client
            .entity_get(entity.kind, entity.name.clone())
            .await
        {
            super::specs::lock(&self.specs).remember(&r.spec);
        }
    }
}
