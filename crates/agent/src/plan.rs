//! The pure core of the sync actor: what one batch of desired-state
//! changes does to the agent's state. No IO, no clock, no actor: the
//! actor ([`crate::sync`]) carries the returned [`Plan`] out — write
//! `next` when `persist` says so, then swap `serve` into the snapshot,
//! then publish the watermark and the blocked keys.
//!
//! Rules, per change, in revision order:
//! - a revision at or below the one already stored for its key is a replay
//!   and changes nothing (never an older revision over a newer one);
//! - a readable revision (decodes, sits under its own key, compiles for
//!   this segment) is stored and served, and unblocks its key;
//! - an unreadable one leaves the key's last good version stored and
//!   served, and blocks the key at that revision, with why;
//! - a deletion removes the key and its block.
//!
//! Every change is *processed*, readable or not, so the watermark
//! (`applied_revision`) is simply the highest revision seen: a blocked key
//! no longer holds back the acks of every other key. What the agent could
//! not apply is said per key instead (`AgentReport.blocked`).

use std::sync::Arc;

use phasegate_bus::KvChange;
use phasegate_eval::CompiledState;
use phasegate_proto::{BlockedEntity, DesiredEntity, Encoding, EntityKind, decode, entity_key};

use crate::state::{DiskState, StoredDesired};

/// What a batch does.
pub(crate) struct Plan {
    /// The state after the batch (the watermark included).
    pub(crate) next: DiskState,
    /// Something that must survive a restart changed (an entity, a block):
    /// `next` must be written before anything of the batch is served or
    /// acked. When false, only the watermark moved, and it stands for
    /// state that is already on disk (see `crate::sync` on why that is
    /// not written for its own sake).
    pub(crate) persist: bool,
    /// Changes to the served snapshot, in order.
    pub(crate) serve: Vec<ServeChange>,
    /// Rollouts applied by this batch, to be traced.
    pub(crate) traces: Vec<ApplyTrace>,
    /// Keys newly blocked (or blocked at a newer revision) by this batch.
    pub(crate) newly_blocked: Vec<BlockedEntity>,
    /// The watch had delivered everything that existed when it began.
    pub(crate) current: bool,
}

/// One change of the served snapshot.
pub(crate) enum ServeChange {
    /// Serve this compiled state for the entity.
    Put {
        /// Its kind.
        kind: EntityKind,
        /// Its name.
        name: String,
        /// The revision that brought it.
        revision: u64,
        /// What is served.
        compiled: Arc<CompiledState>,
    },
    /// Serve nothing for the entity any more.
    Remove {
        /// Its kind.
        kind: EntityKind,
        /// Its name.
        name: String,
    },
}

/// A rollout that reached this segment, for the `apply` span.
pub(crate) struct ApplyTrace {
    /// The desired-state key.
    pub(crate) key: String,
    /// The revision applied.
    pub(crate) revision: u64,
    /// The rollout's trigger.
    pub(crate) trigger_id: String,
    /// The phase covering this segment.
    pub(crate) phase_id: String,
    /// The rollout's trace context, if it carried one.
    pub(crate) trace_parent: Option<String>,
}

/// Compiles what `segment` serves of `d`.
///
/// # Errors
///
/// The compiler's message, for operators.
pub(crate) fn compile(segment: &str, d: &DesiredEntity) -> Result<Arc<CompiledState>, String> {
    let view = phasegate_model::desired::view(d, segment);
    CompiledState::new(d.kind, &view)
        .map(Arc::new)
        .map_err(|e| format!("cannot compile: {e}"))
}

/// A readable revision, or why it is not.
fn read(segment: &str, c: &KvChange, bytes: &[u8]) -> Result<Readable, String> {
    let d = decode::<DesiredEntity>(Encoding::MsgPack, bytes)
        .map_err(|e| format!("cannot decode: {e}"))?;
    let key = entity_key(d.kind, &d.name);
    if key != c.key {
        return Err(format!("holds {key}, not the entity of its key"));
    }
    let compiled = compile(segment, &d)?;
    Ok(Readable {
        desired: d,
        compiled,
    })
}

struct Readable {
    desired: DesiredEntity,
    compiled: Arc<CompiledState>,
}

/// Plans `batch` (changes of the desired-state bucket, in revision order)
/// on top of `disk`, for the agent of `segment`.
pub(crate) fn plan_batch(disk: &DiskState, segment: &str, batch: &[KvChange]) -> Plan {
    let mut next = disk.clone();
    let mut plan = Plan {
        next: DiskState::default(),
        persist: false,
        serve: Vec::new(),
        traces: Vec::new(),
        newly_blocked: Vec::new(),
        current: false,
    };
    // Keys the batch may have changed: `persist` compares only these.
    let mut touched: Vec<&str> = Vec::new();
    for c in batch {
        plan.current |= c.seen_current;
        next.applied_revision = next.applied_revision.max(c.revision);
        let stored = next.entities.get(&c.key).map(|e| e.revision);
        let blocked = next.blocked.get(&c.key).map(|b| b.revision);
        // A revision equal to the blocked one is read again: an agent
        // upgraded since may read it now.
        if stored.is_some_and(|r| r >= c.revision) || blocked.is_some_and(|r| r > c.revision) {
            continue;
        }
        touched.push(&c.key);
        let Some(bytes) = &c.value else {
            next.blocked.remove(&c.key);
            if let Some(old) = next.entities.remove(&c.key) {
                plan.serve.push(ServeChange::Remove {
                    kind: old.desired.kind,
                    name: old.desired.name.to_string(),
                });
            }
            continue;
        };
        match read(segment, c, bytes) {
            Ok(Readable { desired, compiled }) => {
                if let Some(r) = &desired.rollout {
                    let view = phasegate_model::desired::view(&desired, segment);
                    if let Some(v) = &view.rollout {
                        plan.traces.push(ApplyTrace {
                            key: c.key.clone(),
                            revision: c.revision,
                            trigger_id: r.trigger_id.to_string(),
                            phase_id: v.phase_id.to_string(),
                            trace_parent: r.trace_parent.clone(),
                        });
                    }
                }
                next.blocked.remove(&c.key);
                plan.serve.push(ServeChange::Put {
                    kind: desired.kind,
                    name: desired.name.to_string(),
                    revision: c.revision,
                    compiled,
                });
                next.entities.insert(
                    c.key.clone(),
                    StoredDesired {
                        revision: c.revision,
                        desired,
                    },
                );
            }
            Err(error) => {
                let entry = BlockedEntity {
                    key: c.key.clone(),
                    revision: c.revision,
                    error,
                };
                if next.blocked.get(&c.key) != Some(&entry) {
                    plan.newly_blocked.push(entry.clone());
                    next.blocked.insert(c.key.clone(), entry);
                }
            }
        }
    }
    // Exact, so that a put undone within the batch writes nothing either.
    plan.persist = touched.iter().any(|k| {
        disk.entities.get(*k) != next.entities.get(*k)
            || disk.blocked.get(*k) != next.blocked.get(*k)
    });
    plan.next = next;
    plan
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is the failure report

    use std::collections::BTreeMap;

    use bytes::Bytes;
    use phasegate_proto::{EntityName, EntitySpec, encode};
    use proptest::prelude::*;

    use super::*;

    const SEGMENT: &str = "dev";

    /// What a change writes, as the tests describe it.
    #[derive(Debug, Clone, Copy, PartialEq)]
    enum Op {
        /// A readable entity whose base has this version.
        Good(u64),
        /// Bytes that are not MessagePack.
        Undecodable,
        /// A readable entity under another entity's key.
        WrongKey,
        /// Decodes, but declares the other kind: does not compile.
        Uncompilable,
        /// A tombstone.
        Delete,
    }

    const KEYS: [&str; 3] = ["gate.a", "gate.b", "config.c"];

    fn kind_name(key: &str) -> (EntityKind, &str) {
        match key.split_once('.') {
            Some(("gate", n)) => (EntityKind::Gate, n),
            Some((_, n)) => (EntityKind::Config, n),
            None => unreachable!(),
        }
    }

    fn desired(kind: EntityKind, name: &str, spec_kind: EntityKind, version: u64) -> Bytes {
        let name = EntityName::new(name).unwrap();
        let mut spec = EntitySpec::new(spec_kind, name.clone());
        spec.version = version;
        let d = DesiredEntity {
            kind,
            name,
            base: Some(spec),
            rollout: None,
        };
        encode(Encoding::MsgPack, &d).unwrap().into()
    }

    fn change(key: &str, revision: u64, op: Op) -> KvChange {
        let (kind, name) = kind_name(key);
        let other = match kind {
            EntityKind::Gate => EntityKind::Config,
            EntityKind::Config => EntityKind::Gate,
        };
        let value = match op {
            Op::Good(v) => Some(desired(kind, name, kind, v)),
            Op::Undecodable => Some(Bytes::from_static(b"\xc1 not msgpack")),
            Op::WrongKey => Some(desired(kind, "elsewhere", kind, 1)),
            Op::Uncompilable => Some(desired(kind, name, other, 1)),
            Op::Delete => None,
        };
        KvChange {
            key: key.to_owned(),
            value,
            revision,
            seen_current: true,
        }
    }

    fn version_of(s: &StoredDesired) -> u64 {
        s.desired.base.as_ref().map_or(0, |b| b.version)
    }

    #[test]
    fn an_unreadable_revision_blocks_its_key_only_and_keeps_the_last_good_version() {
        let disk = DiskState::default();
        let p = plan_batch(
            &disk,
            SEGMENT,
            &[
                change("gate.a", 1, Op::Good(1)),
                change("gate.b", 2, Op::Good(1)),
            ],
        );
        assert!(p.persist);
        assert_eq!(p.serve.len(), 2);
        let p = plan_batch(
            &p.next,
            SEGMENT,
            &[
                change("gate.a", 3, Op::Undecodable),
                change("gate.b", 4, Op::Good(2)),
            ],
        );
        assert_eq!(p.next.applied_revision, 4, "the watermark moves past it");
        assert_eq!(version_of(&p.next.entities["gate.a"]), 1, "last good kept");
        assert_eq!(version_of(&p.next.entities["gate.b"]), 2);
        let b = &p.next.blocked["gate.a"];
        assert_eq!((b.key.as_str(), b.revision), ("gate.a", 3));
        assert!(b.error.contains("cannot decode"), "{}", b.error);
        assert_eq!(p.newly_blocked.len(), 1);
        assert!(p.persist);
        // Only gate.b changes what is served.
        assert!(matches!(&p.serve[..], [ServeChange::Put { name, .. }] if name == "b"));
        // A later readable revision unblocks it.
        let p = plan_batch(&p.next, SEGMENT, &[change("gate.a", 5, Op::Good(3))]);
        assert!(p.next.blocked.is_empty());
        assert_eq!(version_of(&p.next.entities["gate.a"]), 3);
    }

    #[test]
    fn wrong_keys_and_uncompilable_specs_block_with_why() {
        let p = plan_batch(
            &DiskState::default(),
            SEGMENT,
            &[
                change("gate.a", 1, Op::WrongKey),
                change("gate.b", 2, Op::Uncompilable),
            ],
        );
        assert!(p.next.entities.is_empty());
        assert!(p.next.blocked["gate.a"].error.contains("gate.elsewhere"));
        assert!(
            p.next.blocked["gate.b"].error.contains("cannot compile"),
            "{}",
            p.next.blocked["gate.b"].error
        );
        assert!(p.serve.is_empty());
    }

    #[test]
    fn a_replay_changes_nothing_on_disk_but_may_move_the_watermark() {
        let p = plan_batch(
            &DiskState::default(),
            SEGMENT,
            &[
                change("gate.a", 1, Op::Good(1)),
                change("gate.b", 2, Op::Undecodable),
                change("config.c", 3, Op::Good(1)),
                change("config.c", 4, Op::Delete),
            ],
        );
        let mut on_disk = p.next;
        // The state file lags behind: written at revision 2 only.
        on_disk.applied_revision = 2;
        // What a watch with history delivers after a restart.
        let replay = [
            change("gate.a", 1, Op::Good(1)),
            change("gate.b", 2, Op::Undecodable),
            change("config.c", 4, Op::Delete),
        ];
        let p = plan_batch(&on_disk, SEGMENT, &replay);
        assert!(!p.persist, "nothing to write");
        assert!(p.serve.is_empty() && p.newly_blocked.is_empty());
        assert_eq!(p.next.applied_revision, 4);
    }

    #[test]
    fn deleting_a_blocked_key_unblocks_it() {
        let p = plan_batch(
            &DiskState::default(),
            SEGMENT,
            &[change("gate.a", 1, Op::Undecodable)],
        );
        let p = plan_batch(&p.next, SEGMENT, &[change("gate.a", 2, Op::Delete)]);
        assert!(p.persist && p.next.blocked.is_empty());
        assert!(p.serve.is_empty(), "nothing was served for it");
        // A deletion of something unknown writes nothing.
        let p = plan_batch(&p.next, SEGMENT, &[change("gate.b", 3, Op::Delete)]);
        assert!(!p.persist);
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (1u64..100).prop_map(Op::Good),
            1 => Just(Op::Undecodable),
            1 => Just(Op::WrongKey),
            1 => Just(Op::Uncompilable),
            1 => Just(Op::Delete),
        ]
    }

    fn batches() -> impl Strategy<Value = Vec<Vec<(usize, Op)>>> {
        prop::collection::vec(prop::collection::vec((0..KEYS.len(), op()), 1..6), 1..8)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// Against a model of the bucket: after every batch, each key serves
        /// its last readable revision since its last deletion, is blocked
        /// exactly when its latest revision is unreadable, the watermark is
        /// the highest revision seen, `persist` is exactly "the stored state
        /// changed", the served snapshot mirrors what is stored, and neither
        /// how changes are batched nor a replay of the bucket changes
        /// anything.
        #[test]
        fn batches_follow_the_bucket(batches in batches()) {
            let mut disk = DiskState::default();
            let mut revision = 0u64;
            // key -> (latest op, its revision); key -> last good (revision, version)
            let mut latest: BTreeMap<&str, (Op, u64)> = BTreeMap::new();
            let mut good: BTreeMap<&str, (u64, u64)> = BTreeMap::new();
            let mut served: BTreeMap<String, u64> = BTreeMap::new();
            let mut all = Vec::new();
            for batch in &batches {
                let changes: Vec<KvChange> = batch
                    .iter()
                    .map(|&(k, op)| {
                        revision += 1;
                        latest.insert(KEYS[k], (op, revision));
                        match op {
                            Op::Good(v) => { good.insert(KEYS[k], (revision, v)); }
                            Op::Delete => { good.remove(KEYS[k]); }
                            _ => {}
                        }
                        change(KEYS[k], revision, op)
                    })
                    .collect();
                all.extend(changes.iter().cloned());
                let p = plan_batch(&disk, SEGMENT, &changes);
                prop_assert_eq!(p.next.applied_revision, revision);
                prop_assert_eq!(
                    p.persist,
                    p.next.entities != disk.entities || p.next.blocked != disk.blocked
                );
                for s in &p.serve {
                    match s {
                        ServeChange::Put { kind, name, revision, .. } => {
                            served.insert(entity_key(*kind, &EntityName::new(name.as_str()).unwrap()), *revision);
                        }
                        ServeChange::Remove { kind, name } => {
                            served.remove(&entity_key(*kind, &EntityName::new(name.as_str()).unwrap()));
                        }
                    }
                }
                for key in KEYS {
                    let stored = p.next.entities.get(key).map(|s| (s.revision, version_of(s)));
                    prop_assert_eq!(stored, good.get(key).copied(), "{} stored", key);
                    prop_assert_eq!(served.get(key).copied(), stored.map(|s| s.0), "{} served", key);
                    let blocked = p.next.blocked.get(key).map(|b| b.revision);
                    let expect = match latest.get(key) {
                        Some((Op::Undecodable | Op::WrongKey | Op::Uncompilable, r)) => Some(*r),
                        _ => None,
                    };
                    prop_assert_eq!(blocked, expect, "{} blocked", key);
                }
                disk = p.next;
            }
            // Batching does not matter.
            let whole = plan_batch(&DiskState::default(), SEGMENT, &all);
            prop_assert_eq!(&whole.next, &disk);
            // A watch with history after a restart replays the latest
            // revision of every key: nothing to write or serve.
            let mut replay: Vec<KvChange> = latest
                .iter()
                .map(|(k, (op, r))| change(k, *r, *op))
                .collect();
            replay.sort_by_key(|c| c.revision);
            let again = plan_batch(&disk, SEGMENT, &replay);
            prop_assert!(!again.persist);
            prop_assert!(again.serve.is_empty());
            prop_assert_eq!(&again.next, &disk);
        }
    }
}
