//! The pure core of the sync actor: what one batch of desired-state
//! changes does to the agent's state. No IO, no clock, no actor: the
//! actor ([`crate::sync`]) carries the returned [`Plan`] out — write the
//! entity files it lists (then the watermark), then swap `serve` into the
//! snapshot, then publish the watermark and the blocked keys.
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

use std::collections::BTreeMap;
use std::sync::Arc;

use phasegate_bus::KvChange;
use phasegate_eval::CompiledState;
use phasegate_proto::{BlockedEntity, DesiredEntity, Encoding, EntityKind, decode, entity_key};

use crate::state::{DiskState, EntityRecord, FileChange, StoredDesired};

/// What a batch does.
pub(crate) struct Plan {
    /// The files to write or delete, one per key whose stored entity or
    /// block changed: they must be on disk before anything of the batch is
    /// served or acked. Empty when only the watermark moved, which stands
    /// for state already on disk (see `crate::sync` on why that is not
    /// written for its own sake).
    pub(crate) files: Vec<FileChange>,
    /// The watermark after the batch.
    pub(crate) applied_revision: u64,
    /// Changes to the served snapshot, in order.
    pub(crate) serve: Vec<ServeChange>,
    /// Rollouts applied by this batch, to be traced.
    pub(crate) traces: Vec<ApplyTrace>,
    /// Keys newly blocked (or blocked at a newer revision) by this batch.
    pub(crate) newly_blocked: Vec<BlockedEntity>,
    /// The watch had delivered everything that existed when it began.
    pub(crate) current: bool,
}

impl Plan {
    /// Something that must survive a restart changed.
    pub(crate) fn persist(&self) -> bool {
        !self.files.is_empty()
    }

    /// Takes the plan's effects on what is stored into `disk`, once they
    /// are written.
    pub(crate) fn apply_to(&self, disk: &mut DiskState) {
        for f in &self.files {
            disk.apply(f.clone());
        }
        disk.applied_revision = self.applied_revision;
    }
}

/// One change of the served snapshot.
pub(crate) enum ServeChange {
    /// Serve this compiled state for the entity.
    Put {
        kind: EntityKind,
        name: String,
        /// The revision that brought it.
        revision: u64,
        compiled: Arc<CompiledState>,
    },
    /// Serve nothing for the entity any more.
    Remove { kind: EntityKind, name: String },
}

/// A rollout that reached this segment, for the `apply` span.
pub(crate) struct ApplyTrace {
    /// The desired-state key.
    pub(crate) key: String,
    pub(crate) revision: u64,
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
/// on top of `disk`, for the agent of `segment`. Costs O(the batch): only
/// the keys it touches are looked at, copied and compared.
pub(crate) fn plan_batch(disk: &DiskState, segment: &str, batch: &[KvChange]) -> Plan {
    let mut plan = Plan {
        files: Vec::new(),
        applied_revision: disk.applied_revision,
        serve: Vec::new(),
        traces: Vec::new(),
        newly_blocked: Vec::new(),
        current: false,
    };
    // What the batch has made of the keys it touched so far; a key not
    // here is as on `disk`.
    let mut touched: BTreeMap<&str, KeyState> = BTreeMap::new();
    for c in batch {
        plan.current |= c.seen_current;
        plan.applied_revision = plan.applied_revision.max(c.revision);
        if is_replay(disk, &touched, c) {
            continue;
        }
        let key = touched
            .entry(&c.key)
            .or_insert_with(|| KeyState::on_disk(disk, &c.key));
        match &c.value {
            None => key.delete(&mut plan),
            Some(bytes) => match read(segment, c, bytes) {
                Ok(readable) => key.store(c, readable, segment, &mut plan),
                Err(error) => key.block(c, error, &mut plan),
            },
        }
    }
    plan.files = file_changes(disk, touched);
    plan
}

/// Whether `c` is at or below the revision already held for its key (by
/// the batch so far, else on `disk`): a replay, which changes nothing. A
/// revision equal to the blocked one is read again: an agent upgraded
/// since may read it now.
fn is_replay(disk: &DiskState, touched: &BTreeMap<&str, KeyState>, c: &KvChange) -> bool {
    let (stored, blocked) = match touched.get(c.key.as_str()) {
        Some(s) => (
            s.stored.as_ref().map(|e| e.revision),
            s.blocked.as_ref().map(|b| b.revision),
        ),
        None => (
            disk.entities.get(&c.key).map(|e| e.revision),
            disk.blocked.get(&c.key).map(|b| b.revision),
        ),
    };
    stored.is_some_and(|r| r >= c.revision) || blocked.is_some_and(|r| r > c.revision)
}

/// One file change per touched key whose stored entity or block differs
/// from `disk`. Exact, so that a put undone within the batch writes
/// nothing either.
fn file_changes(disk: &DiskState, touched: BTreeMap<&str, KeyState>) -> Vec<FileChange> {
    touched
        .into_iter()
        .filter(|(key, k)| {
            disk.entities.get(*key) != k.stored.as_ref()
                || disk.blocked.get(*key) != k.blocked.as_ref()
        })
        .map(|(key, k)| {
            if k.stored.is_none() && k.blocked.is_none() {
                FileChange::Delete(key.to_owned())
            } else {
                FileChange::Write(Box::new(EntityRecord {
                    key: key.to_owned(),
                    stored: k.stored,
                    blocked: k.blocked,
                }))
            }
        })
        .collect()
}

/// The `apply` span's facts when `desired` carries a rollout with a phase
/// covering `segment`.
fn apply_trace(c: &KvChange, desired: &DesiredEntity, segment: &str) -> Option<ApplyTrace> {
    let rollout = desired.rollout.as_ref()?;
    let view = phasegate_model::desired::view(desired, segment);
    let phase = view.rollout.as_ref()?;
    Some(ApplyTrace {
        key: c.key.clone(),
        revision: c.revision,
        trigger_id: rollout.trigger_id.to_string(),
        phase_id: phase.phase_id.to_string(),
        trace_parent: rollout.trace_parent.clone(),
    })
}

/// What a batch has made of one key so far.
struct KeyState {
    stored: Option<StoredDesired>,
    blocked: Option<BlockedEntity>,
}

impl KeyState {
    fn on_disk(disk: &DiskState, key: &str) -> Self {
        Self {
            stored: disk.entities.get(key).cloned(),
            blocked: disk.blocked.get(key).cloned(),
        }
    }

    /// A deletion: the key and its block go; what was served stops.
    fn delete(&mut self, plan: &mut Plan) {
        self.blocked = None;
        if let Some(old) = self.stored.take() {
            plan.serve.push(ServeChange::Remove {
                kind: old.desired.kind,
                name: old.desired.name.to_string(),
            });
        }
    }

    /// A readable revision: stored and served, and the key unblocked.
    fn store(&mut self, c: &KvChange, readable: Readable, segment: &str, plan: &mut Plan) {
        let Readable { desired, compiled } = readable;
        plan.traces.extend(apply_trace(c, &desired, segment));
        self.blocked = None;
        plan.serve.push(ServeChange::Put {
            kind: desired.kind,
            name: desired.name.to_string(),
            revision: c.revision,
            compiled,
        });
        self.stored = Some(StoredDesired {
            revision: c.revision,
            desired,
        });
    }

    /// An unreadable revision: the last good version stays; the key is
    /// blocked at this revision, with why.
    fn block(&mut self, c: &KvChange, error: String, plan: &mut Plan) {
        let entry = BlockedEntity {
            key: c.key.clone(),
            revision: c.revision,
            error,
        };
        if self.blocked.as_ref() != Some(&entry) {
            plan.newly_blocked.push(entry.clone());
            self.blocked = Some(entry);
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is the failure report

    use std::collections::BTreeMap;

    use bytes::Bytes;
    use phasegate_proto::{EntityName, EntitySpec, encode};
    use proptest::prelude::*;

    use super::*;
    use crate::state::{Loaded, Store};

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

    /// Plans `batch` on `disk`, and the state once the plan is carried out.
    fn step(disk: &DiskState, batch: &[KvChange]) -> (Plan, DiskState) {
        let p = plan_batch(disk, SEGMENT, batch);
        let mut next = disk.clone();
        p.apply_to(&mut next);
        (p, next)
    }

    fn version_of(s: &StoredDesired) -> u64 {
        s.desired.base.as_ref().map_or(0, |b| b.version)
    }

    #[test]
    fn an_unreadable_revision_blocks_its_key_only_and_keeps_the_last_good_version() {
        let disk = DiskState::default();
        let (p, next) = step(
            &disk,
            &[
                change("gate.a", 1, Op::Good(1)),
                change("gate.b", 2, Op::Good(1)),
            ],
        );
        assert!(p.persist());
        assert_eq!(p.serve.len(), 2);
        let (p, next) = step(
            &next,
            &[
                change("gate.a", 3, Op::Undecodable),
                change("gate.b", 4, Op::Good(2)),
            ],
        );
        assert_eq!(next.applied_revision, 4, "the watermark moves past it");
        assert_eq!(version_of(&next.entities["gate.a"]), 1, "last good kept");
        assert_eq!(version_of(&next.entities["gate.b"]), 2);
        let b = &next.blocked["gate.a"];
        assert_eq!((b.key.as_str(), b.revision), ("gate.a", 3));
        assert!(b.error.contains("cannot decode"), "{}", b.error);
        assert_eq!(p.newly_blocked.len(), 1);
        assert!(p.persist());
        // Only gate.b changes what is served.
        assert!(matches!(&p.serve[..], [ServeChange::Put { name, .. }] if name == "b"));
        // A later readable revision unblocks it.
        let (_, next) = step(&next, &[change("gate.a", 5, Op::Good(3))]);
        assert!(next.blocked.is_empty());
        assert_eq!(version_of(&next.entities["gate.a"]), 3);
    }

    #[test]
    fn wrong_keys_and_uncompilable_specs_block_with_why() {
        let (p, next) = step(
            &DiskState::default(),
            &[
                change("gate.a", 1, Op::WrongKey),
                change("gate.b", 2, Op::Uncompilable),
            ],
        );
        assert!(next.entities.is_empty());
        assert!(next.blocked["gate.a"].error.contains("gate.elsewhere"));
        assert!(
            next.blocked["gate.b"].error.contains("cannot compile"),
            "{}",
            next.blocked["gate.b"].error
        );
        assert!(p.serve.is_empty());
    }

    #[test]
    fn a_replay_changes_nothing_on_disk_but_may_move_the_watermark() {
        let (_, next) = step(
            &DiskState::default(),
            &[
                change("gate.a", 1, Op::Good(1)),
                change("gate.b", 2, Op::Undecodable),
                change("config.c", 3, Op::Good(1)),
                change("config.c", 4, Op::Delete),
            ],
        );
        let mut on_disk = next;
        // The state file lags behind: written at revision 2 only.
        on_disk.applied_revision = 2;
        // What a watch with history delivers after a restart.
        let replay = [
            change("gate.a", 1, Op::Good(1)),
            change("gate.b", 2, Op::Undecodable),
            change("config.c", 4, Op::Delete),
        ];
        let (p, next) = step(&on_disk, &replay);
        assert!(!p.persist(), "nothing to write");
        assert!(p.serve.is_empty() && p.newly_blocked.is_empty());
        assert_eq!(next.applied_revision, 4);
    }

    #[test]
    fn deleting_a_blocked_key_unblocks_it() {
        let (_, next) = step(
            &DiskState::default(),
            &[change("gate.a", 1, Op::Undecodable)],
        );
        let (p, next) = step(&next, &[change("gate.a", 2, Op::Delete)]);
        assert!(p.persist() && next.blocked.is_empty());
        assert!(p.serve.is_empty(), "nothing was served for it");
        // A deletion of something unknown writes nothing.
        let (p, _) = step(&next, &[change("gate.b", 3, Op::Delete)]);
        assert!(!p.persist());
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
                let (p, next) = step(&disk, &changes);
                prop_assert_eq!(next.applied_revision, revision);
                prop_assert_eq!(
                    p.persist(),
                    next.entities != disk.entities || next.blocked != disk.blocked
                );
                // One file change per key that changed, and only those.
                let mut changed: Vec<&str> = KEYS
                    .into_iter()
                    .filter(|k| next.entities.get(*k) != disk.entities.get(*k) || next.blocked.get(*k) != disk.blocked.get(*k))
                    .collect();
                changed.sort_unstable();
                let files: Vec<&str> = p.files.iter().map(|f| match f {
                    FileChange::Write(r) => r.key.as_str(),
                    FileChange::Delete(k) => k.as_str(),
                }).collect();
                prop_assert_eq!(files, changed);
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
                    let stored = next.entities.get(key).map(|s| (s.revision, version_of(s)));
                    prop_assert_eq!(stored, good.get(key).copied(), "{} stored", key);
                    prop_assert_eq!(served.get(key).copied(), stored.map(|s| s.0), "{} served", key);
                    let blocked = next.blocked.get(key).map(|b| b.revision);
                    let expect = match latest.get(key) {
                        Some((Op::Undecodable | Op::WrongKey | Op::Uncompilable, r)) => Some(*r),
                        _ => None,
                    };
                    prop_assert_eq!(blocked, expect, "{} blocked", key);
                }
                disk = next;
            }
            // Batching does not matter.
            let (_, whole) = step(&DiskState::default(), &all);
            prop_assert_eq!(&whole, &disk);
            // A watch with history after a restart replays the latest
            // revision of every key: nothing to write or serve.
            let mut replay: Vec<KvChange> = latest
                .iter()
                .map(|(k, (op, r))| change(k, *r, *op))
                .collect();
            replay.sort_by_key(|c| c.revision);
            let (again, next) = step(&disk, &replay);
            prop_assert!(!again.persist());
            prop_assert!(again.serve.is_empty());
            prop_assert_eq!(&next, &disk);
        }
    }

    proptest! {
        // Fewer cases: every batch is fsynced.
        #![proptest_config(ProptestConfig::with_cases(24))]

        /// Plan → disk → reload: carrying each plan's file changes out on a
        /// real directory and reading it back gives the state the plans
        /// describe (so the same served state), whatever the batches.
        #[test]
        fn planned_files_reload_to_the_planned_state(batches in batches()) {
            let dir = tempfile::tempdir().unwrap();
            let (mut store, _) = Store::open(dir.path());
            let mut disk = DiskState { segment: Some(phasegate_proto::Segment::new(SEGMENT).unwrap()), ..DiskState::default() };
            store.replace(&disk).unwrap();
            let mut revision = 0u64;
            for batch in &batches {
                let changes: Vec<KvChange> = batch
                    .iter()
                    .map(|&(k, op)| { revision += 1; change(KEYS[k], revision, op) })
                    .collect();
                let (p, next) = step(&disk, &changes);
                if p.persist() {
                    store.write(&next.progress(), &p.files).unwrap();
                }
                disk = next;
                let (_, loaded) = Store::open(dir.path());
                let Loaded::Ok { state, damaged } = loaded else { panic!("{loaded:?}") };
                prop_assert!(damaged.is_empty());
                prop_assert_eq!(&state.entities, &disk.entities);
                prop_assert_eq!(&state.blocked, &disk.blocked);
                prop_assert!(state.applied_revision <= disk.applied_revision, "the watermark on disk never leads");
            }
        }
    }
}
