//! The coordinator's per-trigger cost at the design size: 100 segments,
//! 1,000 agents, 10,000 active triggers. Prints what one fleet view costs a
//! trigger (`observe`), what a timer step costs (`tick`), and what a full
//! round over 10,000 triggers would take on this machine.
//!
//! `cargo bench -p phasegate-model --bench scale`
#![allow(clippy::unwrap_used, clippy::expect_used)] // a benchmark: fail loudly

use std::hint::black_box;
use std::time::Instant;

use phasegate_model::{FleetView, SegmentFleet, StartParams, observe, rollout, tick};
use phasegate_proto::*;

fn pipeline() -> Pipeline {
    serde_json::from_value(serde_json::json!({
        "name": "seed",
        "phases": [
            {"id": "dev", "segments": ["dev-*"], "wait_ms": 600000},
            {"id": "staging", "segments": ["staging-*"], "wait_ms": 600000},
            {"id": "prod-us-west", "segments": ["prod-us-west-*"], "pass_percentage": 10, "wait_ms": 600000},
            {"id": "prod-us-east", "segments": ["prod-us-*"], "wait_ms": 600000},
            {"id": "prod-eu", "segments": ["prod-eu-*"], "wait_ms": 600000}
        ]
    }))
    .unwrap()
}

fn main() {
    // 100 segments, 10 agents each: 1,000 agents.
    let prefixes = ["dev", "staging", "prod-us-west", "prod-us-east", "prod-eu"];
    let mut fleet = FleetView::new();
    for i in 0..100 {
        let seg = format!("{}-{i}", prefixes[i % prefixes.len()]);
        fleet.insert(
            seg,
            SegmentFleet {
                known: 10,
                settled: true,
                live: 10,
                applied: 10,
                healthy: 10,
            },
        );
    }
    let spec = {
        let mut s = EntitySpec::new(EntityKind::Gate, EntityName::new("g").unwrap());
        s.version = 2;
        s
    };
    let mut rec = rollout::start(StartParams {
        id: TriggerId::new("t-bench").unwrap(),
        snapshot: spec,
        base: None,
        pipeline: pipeline(),
        actor: Actor::new("bench").unwrap(),
        comment: None,
        now_ms: 0,
    });
    observe(&mut rec, &fleet, 1);
    let n = 20_000u32;
    let t = Instant::now();
    for i in 0..n {
        observe(black_box(&mut rec), black_box(&fleet), 2 + u64::from(i));
    }
    let per_observe = t.elapsed() / n;
    let t = Instant::now();
    for i in 0..n {
        tick(black_box(&mut rec), 3 + u64::from(i));
    }
    let per_tick = t.elapsed() / n;
    println!(
        "observe (one fleet view of 100 segments / 1,000 agents): {per_observe:?} per trigger"
    );
    println!("tick (a timer step with nothing due): {per_tick:?} per trigger");
    println!(
        "a fleet view for each of 10,000 active triggers: {:?} of one core (views are only sent to triggers covering a changed segment)",
        per_observe * 10_000
    );
}
