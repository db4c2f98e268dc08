//! Property tests: random pipelines driven by random sequences of actions,
//! clock ticks and fleet reports, checked against the invariants of
//! SPEC.md §4 after every step.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests

mod common;

use common::*;
use phasegate_model::desired::{phase_rollout, trigger_state};
use phasegate_model::{FleetView, SegmentFleet, act, observe, tick};
use phasegate_proto::*;
use proptest::prelude::*;

const SEGMENTS: [&str; 4] = ["dev", "staging", "prod-eu", "prod-us"];
const PATTERNS: [&str; 5] = ["dev", "staging", "prod-eu", "prod-*", "*"];
const ACTORS: [&str; 3] = ["alice", "bob", "op"];

#[derive(Debug, Clone)]
enum Step {
    Act {
        action: usize,
        actor: usize,
        phase: usize,
    },
    Tick(u64),
    /// Per segment: unreachable, live, applied, healthy, settled.
    Observe(Vec<(u32, u32, u32, u32, bool)>),
}

fn arb_phase(i: usize) -> impl Strategy<Value = Phase> {
    (
        proptest::sample::subsequence(PATTERNS.to_vec(), 1..3),
        0u64..3_000,
        any::<bool>(),
        proptest::sample::subsequence(ACTORS.to_vec(), 0..3),
        0usize..3,
        0.0f64..=1.0,
        0.0f64..=100.0,
    )
        .prop_map(
            move |(segs, wait, required, approvers, policy, ratio, pct)| {
                let mut ph = phase(&format!("p{i}"), &segs, wait);
                ph.pass_percentage = pct;
                ph.apply_timeout_ms = 1_500;
                if required {
                    ph = approval(ph, &approvers, 1);
                }
                ph.health = HealthPolicy {
                    on_unhealthy: [OnUnhealthy::Pause, OnUnhealthy::Abort, OnUnhealthy::Ignore]
                        [policy],
                    min_healthy_ratio: ratio,
                };
                ph
            },
        )
}

fn arb_pipeline() -> impl Strategy<Value = Pipeline> {
    (1usize..5).prop_flat_map(|n| (0..n).map(arb_phase).collect::<Vec<_>>().prop_map(pipeline))
}

fn arb_step() -> impl Strategy<Value = Step> {
    prop_oneof![
        (0usize..6, 0usize..3, 0usize..4).prop_map(|(action, actor, phase)| Step::Act {
            action,
            actor,
            phase
        }),
        (0u64..2_500).prop_map(Step::Tick),
        proptest::collection::vec(
            (
                0u32..2,
                0u32..3,
                0u32..4,
                0u32..4,
                proptest::bool::weighted(0.85)
            ),
            SEGMENTS.len()
        )
        .prop_map(Step::Observe),
    ]
}

fn rules_of(rec: &TriggerRecord, segment: &str) -> Vec<(usize, f64)> {
    phase_rollout(rec, segment)
        .map(|r| {
            r.rules
                .iter()
                .map(|x| (x.conditions.len(), x.pass_percentage))
                .collect()
        })
        .unwrap_or_default()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn invariants_hold_under_random_operation(p in arb_pipeline(), steps in proptest::collection::vec(arb_step(), 1..60)) {
        let mut rec = start(p, 0);
        let mut now = 0u64;
        observe(&mut rec, &FleetView::new(), now);
        for step in steps {
            let before = rec.clone();
            match &step {
                Step::Act { action, actor, phase } => {
                    let mut r = req(&rec, ACTORS[*actor]);
                    r.phase_id = match phase {
                        0 | 1 => rec.trigger.current_phase_id.clone(),
                        2 => None,
                        _ => Some(PhaseId::new("elsewhere").unwrap()),
                    };
                    let res = act(&mut rec, TriggerAction::ALL[*action], &r, now);
                    if res.is_err() {
                        prop_assert_eq!(&rec, &before, "a refused action changed the trigger");
                    }
                }
                Step::Tick(dt) => {
                    now += dt;
                    tick(&mut rec, now);
                    if before.trigger.paused {
                        prop_assert_eq!(rec.trigger.current_phase, before.trigger.current_phase, "a paused trigger advanced by time");
                        prop_assert_eq!(rec.trigger.phase_state, before.trigger.phase_state, "a paused trigger advanced by time");
                        prop_assert!(rec.trigger.paused);
                    }
                }
                Step::Observe(rows) => {
                    let fleet: FleetView = SEGMENTS
                        .iter()
                        .zip(rows)
                        .map(|(s, &(unreachable, live, applied, healthy, settled))| {
                            let known = live + unreachable;
                            (s.to_string(), SegmentFleet { known, live, applied: applied.min(live), healthy: healthy.min(live), settled })
                        })
                        .collect();
                    observe(&mut rec, &fleet, now);
                    let phases = &rec.trigger.pipeline_snapshot.phases;
                    if fleet.iter().any(|(s, f)| !f.settled && f.known > 0 && phases.iter().any(|ph| phasegate_model::rollout::phase_covers(ph, s))) {
                        // Silence is not success: nothing is decided on a
                        // fleet the coordinator has not heard yet.
                        prop_assert_eq!(&rec.trigger.history, &before.trigger.history, "a decision on an unsettled fleet");
                        prop_assert_eq!(rec.trigger.phase_state, before.trigger.phase_state);
                    }
                    if before.trigger.phase_state == Some(PhaseState::Applying)
                        && rec.trigger.history.len() > before.trigger.history.len()
                        && rec.trigger.history[before.trigger.history.len()..].iter().any(|h| h.kind == HistoryType::PhaseApplied)
                    {
                        let ph = &phases[before.trigger.current_phase as usize];
                        for (s, f) in &fleet {
                            if phasegate_model::rollout::phase_covers(ph, s) {
                                prop_assert!(f.applied >= f.known, "phase applied while {} had {} of {} known agents applied", s, f.applied, f.known);
                            }
                        }
                    }
                }
            }
            let t = &rec.trigger;
            if before.trigger.status.is_finished() {
                prop_assert_eq!(&rec, &before, "a finished trigger changed");
            }
            prop_assert!(t.history.starts_with(&before.trigger.history), "history is append-only");
            prop_assert!(rec.published >= before.published);
            let baking = t.phase_state == Some(PhaseState::Baking);
            prop_assert_eq!(t.phase_ends_at_ms.is_some(), baking && !t.paused && t.status == TriggerStatus::InProgress);
            prop_assert_eq!(t.remaining_wait_ms.is_some(), baking && t.paused);
            prop_assert_eq!(t.paused_reason.is_some(), t.paused);
            prop_assert_eq!(t.phase_state.is_none(), t.status.is_finished());
            for s in SEGMENTS {
                let served = trigger_state(&rec, s);
                match t.status {
                    TriggerStatus::Aborted => {
                        prop_assert_eq!(served.base.as_ref().map(|b| b.version), Some(t.from_version));
                        prop_assert!(served.rollout.is_none());
                    }
                    TriggerStatus::Completed => {
                        prop_assert_eq!(served.base.as_ref().map(|b| b.version), Some(t.to_version));
                        prop_assert!(served.rollout.is_none());
                    }
                    TriggerStatus::InProgress => {
                        // A unit that got the new version keeps it: the
                        // segment's phase rules only ever grow.
                        let old = rules_of(&before, s);
                        let new = rules_of(&rec, s);
                        prop_assert!(new.starts_with(&old), "rules of {} shrank: {:?} -> {:?}", s, old, new);
                    }
                }
            }
        }
    }
}
