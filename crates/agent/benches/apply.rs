//! What applying one desired-state change costs on disk with 10,000
//! entities stored: before (the single-file state, cloned and rewritten
//! whole for every batch) and after (one record appended to the journal).
//! Also the whole writes that remain: a bulk catch-up or compaction, and
//! a start.
//!
//! `cargo bench -p phasegate-agent --bench apply` prints the figures.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a benchmark: fail loudly

use std::time::{Duration, Instant};

use phasegate_agent::state::{
    DiskState, EntityRecord, FileChange, Loaded, Store, StoredDesired, legacy,
};
use phasegate_proto::{DesiredEntity, EntityKind, EntityName, EntitySpec, Segment};

const ENTITIES: usize = 10_000;
const RUNS: usize = 30;

fn entity(i: usize, revision: u64) -> StoredDesired {
    let name = EntityName::new(format!("gate-{i:05}")).unwrap();
    let mut spec: EntitySpec = serde_json::from_value(serde_json::json!({
        "kind": "gate", "name": name.as_str(), "version": revision,
        "description": "checkout flow for the new payment provider, owned by team payments",
        "rules": [
            {"id": "staff", "pass_percentage": 100, "conditions": [{"field": "email", "op": "str_matches", "values": ["@corp\\.io$"]}]},
            {"id": "beta", "pass_percentage": 50, "conditions": [{"field": "country", "op": "any", "values": ["DE", "FR", "NL"]}]}
        ]
    }))
    .unwrap();
    spec.version = revision;
    StoredDesired {
        revision,
        desired: DesiredEntity {
            kind: EntityKind::Gate,
            name,
            base: Some(spec),
            rollout: None,
        },
    }
}

fn state() -> DiskState {
    let mut s = DiskState {
        segment: Some(Segment::new("dev").unwrap()),
        applied_revision: ENTITIES as u64,
        generation: Some(1),
        last_sync_ms: Some(1),
        ..DiskState::default()
    };
    for i in 0..ENTITIES {
        s.entities
            .insert(format!("gate.gate-{i:05}"), entity(i, i as u64 + 1));
    }
    s
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn size_of_dir(dir: &std::path::Path) -> u64 {
    let mut total = 0;
    for e in std::fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        let m = e.metadata().unwrap();
        total += if m.is_dir() {
            size_of_dir(&e.path())
        } else {
            m.len()
        };
    }
    total
}

fn main() {
    let base = state();
    println!("{ENTITIES} entities, one change applied {RUNS} times each way (median)");

    // Before: every batch that changed something cloned the whole state
    // (plan_batch's `next`) and rewrote the one file with it.
    let old = tempfile::tempdir().unwrap();
    legacy::save(old.path(), &base).unwrap();
    let mut disk = base.clone();
    let mut before = Vec::new();
    for _ in 0..RUNS {
        let t = Instant::now();
        let mut next = disk.clone();
        let revision = next.applied_revision + 1;
        next.entities
            .insert("gate.gate-00042".into(), entity(42, revision));
        next.applied_revision = revision;
        legacy::save(old.path(), &next).unwrap();
        disk = next;
        before.push(t.elapsed());
    }
    let file = std::fs::metadata(old.path().join(legacy::FILE))
        .unwrap()
        .len();
    let before = median(before);
    println!(
        "before: {:>9.3} ms per change (clone + rewrite + fsync of a {:.1} MiB file)",
        before.as_secs_f64() * 1e3,
        file as f64 / (1024.0 * 1024.0)
    );

    // After: the key's record, appended to the journal.
    let new = tempfile::tempdir().unwrap();
    let (mut store, _) = Store::open(new.path());
    let t = Instant::now();
    store.replace(&base).unwrap();
    let whole = t.elapsed();
    let mut disk = base.clone();
    let mut after = Vec::new();
    for _ in 0..RUNS {
        let t = Instant::now();
        let revision = disk.applied_revision + 1;
        let change = FileChange::Write(Box::new(EntityRecord {
            key: "gate.gate-00042".into(),
            stored: Some(entity(42, revision)),
            blocked: None,
        }));
        let mut progress = disk.progress();
        progress.applied_revision = revision;
        store
            .write(&progress, std::slice::from_ref(&change))
            .unwrap();
        disk.apply(change);
        disk.applied_revision = revision;
        after.push(t.elapsed());
    }
    let after = median(after);
    println!(
        "after:  {:>9.3} ms per change (one record appended to the journal, one fdatasync)",
        after.as_secs_f64() * 1e3
    );
    println!(
        "ratio:  {:>9.1}x",
        before.as_secs_f64() / after.as_secs_f64()
    );
    println!(
        "whole write (start, compaction after >= {ENTITIES} records): {:.3} ms, \
         {:.4} ms per change amortised over the changes that trigger compaction",
        whole.as_secs_f64() * 1e3,
        whole.as_secs_f64() * 1e3 / ENTITIES as f64
    );
    // The watermark goes to disk with the next sync, not per change.
    store.write_meta(&disk.progress()).unwrap();
    let t = Instant::now();
    let (_, loaded) = Store::open(new.path());
    let load = t.elapsed();
    let Loaded::Ok { state, damaged } = loaded else {
        panic!("{loaded:?}")
    };
    assert!(damaged.is_empty());
    assert_eq!(state, disk, "what was written reads back");
    println!(
        "start:  {:>9.3} ms to read and check {} KiB on disk",
        load.as_secs_f64() * 1e3,
        size_of_dir(new.path()) / 1024
    );
}
