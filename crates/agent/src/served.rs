//! The immutable snapshot the HTTP API evaluates against, swapped whole
//! on every applied change: readers never wait for an update.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use phasegate_eval::{AgentContext, CompiledState};
use phasegate_proto::{AgentId, BlockedEntity, EntityKind, Segment};

/// Now, in Unix-epoch milliseconds.
pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Compiled entities by kind and name: one map per kind, so a lookup
/// borrows the requested name instead of building a key.
#[derive(Default, Clone)]
pub(crate) struct Served {
    maps: [HashMap<String, Arc<CompiledState>>; 2],
}

fn slot(kind: EntityKind) -> usize {
    usize::from(kind == EntityKind::Config)
}

impl Served {
    pub(crate) fn get(&self, kind: EntityKind, name: &str) -> Option<&Arc<CompiledState>> {
        self.maps[slot(kind)].get(name)
    }

    pub(crate) fn insert(&mut self, kind: EntityKind, name: String, state: Arc<CompiledState>) {
        self.maps[slot(kind)].insert(name, state);
    }

    pub(crate) fn remove(&mut self, kind: EntityKind, name: &str) {
        self.maps[slot(kind)].remove(name);
    }

    pub(crate) fn values(&self) -> impl Iterator<Item = &Arc<CompiledState>> {
        self.maps.iter().flat_map(HashMap::values)
    }

    pub(crate) fn len(&self) -> usize {
        self.maps.iter().map(HashMap::len).sum()
    }
}

/// State shared by the actors and the HTTP handlers.
pub(crate) struct Shared {
    pub(crate) segment: Segment,
    pub(crate) agent_id: AgentId,
    pub(crate) context: AgentContext,
    pub(crate) served: ArcSwap<Served>,
    /// Unix ms of the last moment the agent knew itself in sync; 0 = never.
    pub(crate) last_sync_ms: AtomicU64,
    pub(crate) stale_after_ms: u64,
    pub(crate) healthy: AtomicBool,
    pub(crate) connected: AtomicBool,
    /// The desired-state watch has delivered everything that existed.
    pub(crate) current: AtomicBool,
    /// The watermark acked to the coordinator. Stored (`Release`) only
    /// after `blocked` for the same state, and loaded (`Acquire`) before
    /// it, so a report never pairs a new watermark with old blocks.
    pub(crate) applied_revision: AtomicU64,
    /// Keys this agent could not apply, with why.
    pub(crate) blocked: ArcSwap<Vec<BlockedEntity>>,
    /// Evaluations by kind (gate, config) × reason (disabled, rule,
    /// default, unknown) × source (base, rollout).
    pub(crate) evaluations: [[[AtomicU64; 2]; 4]; 2],
    /// HTTP connections open and refused.
    pub(crate) http: crate::serve::ConnStats,
    /// Metric analyses: latest results, counters, the running set.
    pub(crate) analysis: crate::analysis::Board,
}

/// Reason classes, in the order of [`Shared::evaluations`].
pub(crate) const REASONS: [&str; 4] = ["disabled", "rule", "default", "unknown"];

impl Shared {
    /// Not synchronised for longer than the bound (or never).
    pub(crate) fn stale(&self) -> bool {
        let last = self.last_sync_ms.load(Ordering::Relaxed);
        last == 0 || now_ms().saturating_sub(last) > self.stale_after_ms
    }

    /// Counts one evaluation.
    pub(crate) fn count(&self, kind: EntityKind, a: &phasegate_eval::Answer<'_>) {
        let k = usize::from(kind == EntityKind::Config);
        let r = match a.reason {
            phasegate_eval::Reason::Disabled => 0,
            phasegate_eval::Reason::Rule(_) => 1,
            phasegate_eval::Reason::Default => 2,
            phasegate_eval::Reason::Unknown => 3,
        };
        let s = usize::from(a.trigger_id.is_some());
        self.evaluations[k][r][s].fetch_add(1, Ordering::Relaxed);
    }

    /// The last sync, if any.
    pub(crate) fn last_sync(&self) -> Option<u64> {
        match self.last_sync_ms.load(Ordering::Relaxed) {
            0 => None,
            t => Some(t),
        }
    }
}
