//! The immutable snapshot the HTTP API evaluates against, swapped whole
//! on every applied change: readers never wait for an update.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use phasegate_eval::{AgentContext, CompiledState};
use phasegate_proto::{AgentId, EntityKind, Segment};

/// Now, in Unix-epoch milliseconds.
pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Compiled entities by kind and name.
#[derive(Default)]
pub(crate) struct Served {
    pub(crate) entities: HashMap<(EntityKind, String), Arc<CompiledState>>,
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
    pub(crate) applied_revision: AtomicU64,
    /// Evaluations by kind (gate, config) × reason (disabled, rule,
    /// default, unknown) × source (base, rollout).
    pub(crate) evaluations: [[[AtomicU64; 2]; 4]; 2],
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
