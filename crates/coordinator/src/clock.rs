//! Fresh trigger ids: the one place the coordinator draws randomness, so
//! the model can stay pure. (The time comes from `phasegate_proto::now_ms`,
//! like everywhere else.)

use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};

use phasegate_proto::TriggerId;

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
