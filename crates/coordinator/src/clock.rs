//! Wall-clock time and fresh ids: the only places the coordinator reads
//! the clock or randomness, so the model can stay pure.

use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use phasegate_proto::TriggerId;

/// Now, in Unix-epoch milliseconds.
pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// A trigger id unique forever: the creation time, a process-wide counter
/// and 64 random bits (std's per-process random hasher keys).
pub(crate) fn new_trigger_id(now_ms: u64) -> TriggerId {
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(n);
    h.write_u64(now_ms);
    TriggerId::generate(now_ms, h.finish())
}
