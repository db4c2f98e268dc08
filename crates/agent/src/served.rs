//! The immutable snapshot the HTTP API evaluates against, swapped whole
//! on every applied change: readers never wait for an update.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use arc_swap::ArcSwap;
use phasegate_eval::{AgentContext, CompiledState};
use phasegate_proto::{AgentId, BlockedEntity, EntityKind, Segment};

pub(crate) use phasegate_proto::now_ms;

/// Shards per kind of [`Served`].
const SHARDS: usize = 64;

/// One shard: entities by name.
type Shard = HashMap<String, Arc<CompiledState>>;

/// Compiled entities by kind and name: per kind, shards by a hash of the
/// name, each behind its own `Arc`. A lookup borrows the requested name
/// instead of building a key. A changed snapshot is a clone of this (one
/// `Arc` per shard) with only the changed shards copied, so applying a
/// change costs O(entities / 64), not O(entities).
#[derive(Clone)]
pub(crate) struct Served {
    shards: [Vec<Arc<Shard>>; 2],
}

impl Default for Served {
    fn default() -> Self {
        let empty = || (0..SHARDS).map(|_| Arc::new(Shard::new())).collect();
        Self {
            shards: [empty(), empty()],
        }
    }
}

/// Where `kind` sits in the per-kind arrays: gate 0, config 1.
pub(crate) fn kind_index(kind: EntityKind) -> usize {
    usize::from(kind == EntityKind::Config)
}

/// The shard of `name` (FNV-1a: cheap for short names, stable).
fn shard_of(name: &str) -> usize {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in name.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    // The remainder is below SHARDS.
    usize::try_from(h % SHARDS as u64).unwrap_or(0)
}

impl Served {
    pub(crate) fn get(&self, kind: EntityKind, name: &str) -> Option<&Arc<CompiledState>> {
        self.shards[kind_index(kind)][shard_of(name)].get(name)
    }

    pub(crate) fn insert(&mut self, kind: EntityKind, name: String, state: Arc<CompiledState>) {
        let shard = &mut self.shards[kind_index(kind)][shard_of(&name)];
        Arc::make_mut(shard).insert(name, state);
    }

    pub(crate) fn remove(&mut self, kind: EntityKind, name: &str) {
        let shard = &mut self.shards[kind_index(kind)][shard_of(name)];
        if shard.contains_key(name) {
            Arc::make_mut(shard).remove(name);
        }
    }

    pub(crate) fn values(&self) -> impl Iterator<Item = &Arc<CompiledState>> {
        self.shards.iter().flatten().flat_map(|s| s.values())
    }

    /// Every entity with its kind and name.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (EntityKind, &str, &Arc<CompiledState>)> {
        EntityKind::ALL.iter().copied().flat_map(move |kind| {
            self.shards[kind_index(kind)]
                .iter()
                .flat_map(move |s| s.iter().map(move |(name, c)| (kind, name.as_str(), c)))
        })
    }

    pub(crate) fn len(&self) -> usize {
        self.shards.iter().flatten().map(|s| s.len()).sum()
    }
}

/// Connection counters of the HTTP server (`serve.rs`), shown by
/// `/metrics`.
#[derive(Debug, Default)]
pub(crate) struct ConnStats {
    /// Connections open now.
    pub(crate) open: AtomicU64,
    /// Connections closed at accept because every slot was taken.
    pub(crate) refused: AtomicU64,
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
    pub(crate) http: ConnStats,
    /// Tells the OFREP event streams that what is served changed.
    pub(crate) push: crate::sse::Push,
    /// Evaluations per flag, version, variant and reason.
    pub(crate) flags: crate::flag_metrics::FlagMetrics,
    /// Metric analyses: latest results, counters, the running set.
    pub(crate) analysis: crate::analysis::Board,
}

/// Reason classes, in the order of [`Shared::evaluations`].
pub(crate) const REASONS: [&str; 4] = ["disabled", "rule", "default", "unknown"];

impl Shared {
    /// The state of an agent with these settings that has served nothing
    /// yet: healthy until a probe says otherwise, never synchronised.
    pub(crate) fn new(config: &crate::AgentConfig) -> Self {
        Self {
            segment: config.segment.clone(),
            agent_id: config.agent_id.clone(),
            context: AgentContext::new(config.segment.to_string(), config.tier.clone()),
            served: ArcSwap::from_pointee(Served::default()),
            last_sync_ms: AtomicU64::new(0),
            stale_after_ms: config.stale_after_ms,
            healthy: AtomicBool::new(true),
            connected: AtomicBool::new(false),
            current: AtomicBool::new(false),
            applied_revision: AtomicU64::new(0),
            blocked: ArcSwap::from_pointee(Vec::new()),
            evaluations: Default::default(),
            http: ConnStats::default(),
            push: crate::sse::Push::new(
                config.max_event_streams,
                std::time::Duration::from_millis(config.event_stream_keep_alive_ms),
            ),
            flags: crate::flag_metrics::FlagMetrics::default(),
            analysis: crate::analysis::Board::default(),
        }
    }

    /// Not synchronised for longer than the bound (or never).
    pub(crate) fn stale(&self) -> bool {
        let last = self.last_sync_ms.load(Ordering::Relaxed);
        last == 0 || now_ms().saturating_sub(last) > self.stale_after_ms
    }

    /// Counts one evaluation.
    pub(crate) fn count(&self, kind: EntityKind, a: &phasegate_eval::Answer<'_>) {
        let k = kind_index(kind);
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
