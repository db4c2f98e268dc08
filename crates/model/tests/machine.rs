//! Table and scenario tests of the trigger state machine (SPEC.md §4).
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests

mod common;

use common::*;
use phasegate_model::rollout::{health_ratio, phase_covers};
use phasegate_model::{FleetView, act, next_deadline_ms, observe, tick};
use phasegate_proto::HistoryType as H;
use phasegate_proto::*;

/// Builds a trigger in each state the table covers.
fn in_state(name: &str) -> TriggerRecord {
    let p = pipeline(vec![
        approval(phase("one", &["dev"], 1_000), &[], 1),
        phase("two", &["staging"], 1_000),
    ]);
    let mut rec = start(p, 0);
    let one_agent = fleet(&[("dev", 1, 0, 1)]);
    observe(&mut rec, &one_agent, 0);
    let pause = |rec: &mut TriggerRecord| run(rec, TriggerAction::Pause, "op", 10).unwrap();
    match name {
        "awaiting" => {}
        "awaiting+paused" => pause(&mut rec),
        "applying" | "applying+paused" | "baking" | "baking+paused" => {
            run(&mut rec, TriggerAction::Approve, "op", 5).unwrap();
            assert_eq!(rec.trigger.phase_state, Some(PhaseState::Applying));
            if name.starts_with("baking") {
                observe(&mut rec, &fleet(&[("dev", 1, 1, 1)]), 6);
                assert_eq!(rec.trigger.phase_state, Some(PhaseState::Baking));
            }
            if name.ends_with("paused") {
                pause(&mut rec);
            }
        }
        "completed" => {
            run(&mut rec, TriggerAction::Rollout, "op", 5).unwrap();
        }
        "aborted" => {
            run(&mut rec, TriggerAction::Abort, "op", 5).unwrap();
        }
        other => panic!("unknown state {other}"),
    }
    rec
}

fn code(r: Result<(), ApiError>) -> &'static str {
    match r {
        Ok(()) => "ok",
        Err(e) => e.code.as_str(),
    }
}

#[test]
fn every_action_in_every_state() {
    // approve, pause, resume, skip, rollout, abort
    let table: [(&str, [&str; 6]); 8] = [
        ("awaiting", ["ok", "ok", "conflict", "ok", "ok", "ok"]),
        (
            "awaiting+paused",
            ["ok", "conflict", "ok", "ok", "ok", "ok"],
        ),
        ("applying", ["conflict", "ok", "conflict", "ok", "ok", "ok"]),
        (
            "applying+paused",
            ["conflict", "conflict", "ok", "ok", "ok", "ok"],
        ),
        ("baking", ["conflict", "ok", "conflict", "ok", "ok", "ok"]),
        (
            "baking+paused",
            ["conflict", "conflict", "ok", "ok", "ok", "ok"],
        ),
        ("completed", ["conflict"; 6]),
        ("aborted", ["conflict"; 6]),
    ];
    for (state, expected) in table {
        for (action, want) in TriggerAction::ALL.iter().zip(expected) {
            let mut rec = in_state(state);
            let before = rec.clone();
            let got = code(run(&mut rec, *action, "op2", 20));
            assert_eq!(got, want, "{action:?} in {state}");
            if got != "ok" {
                assert_eq!(
                    rec, before,
                    "a refused {action:?} changed the trigger in {state}"
                );
            }
            // The wrong phase is a conflict, whatever the state.
            let mut rec = in_state(state);
            let mut wrong = req(&rec, "op2");
            wrong.phase_id = Some(PhaseId::new("nope").unwrap());
            assert_eq!(
                code(act(&mut rec, *action, &wrong, 20)),
                "conflict",
                "{action:?} wrong phase in {state}"
            );
            // Forward moves must name the phase; stopping need not.
            let mut rec = in_state(state);
            let mut bare = req(&rec, "op2");
            bare.phase_id = None;
            let got = code(act(&mut rec, *action, &bare, 20));
            if matches!(
                action,
                TriggerAction::Approve | TriggerAction::Skip | TriggerAction::Rollout
            ) {
                assert_eq!(got, "invalid", "{action:?} without phase_id in {state}");
            } else {
                assert_eq!(got, want, "{action:?} without phase_id in {state}");
            }
        }
    }
}

#[test]
fn seed_pipeline_walks_to_completion() {
    let mut rec = start(seed_pipeline(), 1_000);
    let all = ["dev", "staging", "prod-us-west", "prod-us-east", "prod-eu"];
    // One agent per segment; nothing acked yet.
    let unacked: Vec<_> = all.iter().map(|s| (*s, 1, 0, 1)).collect();
    observe(&mut rec, &fleet(&unacked), 1_000);
    let t = &rec.trigger;
    assert_eq!(t.phase_state, Some(PhaseState::Applying));
    assert_eq!(t.current_phase_id.as_ref().unwrap().as_str(), "dev");
    assert!(t.segments["dev"].version_active);
    assert!(!t.segments["staging"].version_active);
    assert_eq!(next_deadline_ms(&rec), Some(6_000), "apply timeout armed");

    // dev acks: bake starts at the ack, not at publish.
    let acked = |upto: usize| -> Vec<(&str, u32, u32, u32)> {
        all.iter()
            .enumerate()
            .map(|(i, s)| (*s, 1, u32::from(i < upto), 1))
            .collect()
    };
    observe(&mut rec, &fleet(&acked(1)), 1_500);
    assert_eq!(rec.trigger.phase_state, Some(PhaseState::Baking));
    assert_eq!(rec.trigger.phase_ends_at_ms, Some(2_500));
    tick(&mut rec, 2_499);
    assert_eq!(rec.trigger.current_phase, 0, "bake not over yet");
    tick(&mut rec, 2_500);
    assert_eq!(
        rec.trigger.current_phase_id.as_ref().unwrap().as_str(),
        "staging"
    );
    assert_eq!(rec.trigger.phase_state, Some(PhaseState::Applying));
    // The stale ack of dev's revision does not count for staging.
    assert_eq!(rec.trigger.segments["staging"].agents_applied, 0);
    observe(&mut rec, &fleet(&acked(2)), 2_600);
    tick(&mut rec, 3_600);
    assert_eq!(
        rec.trigger.current_phase_id.as_ref().unwrap().as_str(),
        "us-west"
    );
    assert_eq!(rec.trigger.phase_state, Some(PhaseState::AwaitingApproval));
    assert_eq!(next_deadline_ms(&rec), None, "approval has no deadline");
    tick(&mut rec, 100_000);
    assert_eq!(rec.trigger.phase_state, Some(PhaseState::AwaitingApproval));
    let mut charlie = req(&rec, "charlie");
    charlie.comment = Some("lgtm".into());
    assert_eq!(
        code(act(&mut rec, TriggerAction::Approve, &charlie, 100_000)),
        "forbidden"
    );
    run(&mut rec, TriggerAction::Approve, "alice", 100_000).unwrap();
    assert_eq!(rec.trigger.phase_state, Some(PhaseState::Applying));
    assert_eq!(rec.trigger.approvals.len(), 1);
    observe(&mut rec, &fleet(&acked(3)), 100_100);
    tick(&mut rec, 101_100);
    observe(&mut rec, &fleet(&acked(4)), 101_200);
    tick(&mut rec, 102_200);
    assert!(rec.trigger.approvals.is_empty(), "approvals are per phase");
    observe(&mut rec, &fleet(&acked(5)), 102_300);
    tick(&mut rec, 103_300);
    let t = &rec.trigger;
    assert_eq!(t.status, TriggerStatus::Completed);
    assert_eq!(t.phase_state, None);
    assert!(t.segments.values().all(|s| s.version_active));
    let h = history(&rec);
    assert_eq!(h.first(), Some(&H::Started));
    assert_eq!(h.last(), Some(&H::Completed));
    assert_eq!(h.iter().filter(|k| **k == H::PhaseStarted).count(), 5);
    assert_eq!(h.iter().filter(|k| **k == H::PhaseApplied).count(), 5);
    assert_eq!(h.iter().filter(|k| **k == H::Approved).count(), 1);
    assert_eq!(rec.trigger.history[0].comment.as_deref(), Some("ship it"));
    assert_eq!(rec.trigger.history[0].actor.as_str(), "carol");
}

#[test]
fn segments_without_agents_do_not_block() {
    let mut rec = start(pipeline(vec![phase("a", &["dev", "prod-*"], 0)]), 0);
    observe(&mut rec, &FleetView::new(), 0);
    assert_eq!(
        rec.trigger.status,
        TriggerStatus::Completed,
        "no agent anywhere"
    );
    let mut rec = start(pipeline(vec![phase("a", &["prod-*"], 0)]), 0);
    // An agent that is not live does not block either.
    observe(
        &mut rec,
        &fleet(&[("prod-eu", 0, 0, 0), ("prod-us", 1, 0, 1)]),
        0,
    );
    assert_eq!(rec.trigger.phase_state, Some(PhaseState::Applying));
    observe(
        &mut rec,
        &fleet(&[("prod-eu", 0, 0, 0), ("prod-us", 1, 1, 1)]),
        1,
    );
    assert_eq!(rec.trigger.status, TriggerStatus::Completed);
    assert!(
        rec.trigger.segments.contains_key("prod-eu"),
        "registered segments listed"
    );
}

#[test]
fn min_approvals_and_once_per_actor() {
    let p = pipeline(vec![approval(
        phase("a", &["dev"], 0),
        &["alice", "bob", "eve"],
        2,
    )]);
    let mut rec = start(p, 0);
    observe(&mut rec, &fleet(&[("dev", 1, 0, 1)]), 0);
    run(&mut rec, TriggerAction::Approve, "alice", 1).unwrap();
    assert_eq!(rec.trigger.phase_state, Some(PhaseState::AwaitingApproval));
    assert_eq!(
        code(run(&mut rec, TriggerAction::Approve, "alice", 2)),
        "conflict"
    );
    assert_eq!(
        code(run(&mut rec, TriggerAction::Approve, "mallory", 2)),
        "forbidden"
    );
    run(&mut rec, TriggerAction::Approve, "bob", 3).unwrap();
    assert_eq!(rec.trigger.phase_state, Some(PhaseState::Applying));
    let who: Vec<_> = rec
        .trigger
        .approvals
        .iter()
        .map(|a| a.actor.as_str())
        .collect();
    assert_eq!(who, ["alice", "bob"]);
}

#[test]
fn pause_keeps_the_remaining_time() {
    let mut rec = start(
        pipeline(vec![
            phase("a", &["dev"], 10_000),
            phase("b", &["staging"], 0),
        ]),
        0,
    );
    observe(&mut rec, &fleet(&[("dev", 1, 1, 1)]), 1_000);
    assert_eq!(rec.trigger.phase_ends_at_ms, Some(11_000));
    run(&mut rec, TriggerAction::Pause, "op", 4_000).unwrap();
    assert_eq!(rec.trigger.phase_ends_at_ms, None);
    assert_eq!(rec.trigger.remaining_wait_ms, Some(7_000));
    assert_eq!(rec.trigger.paused_reason, Some(PausedReason::Manual));
    assert_eq!(next_deadline_ms(&rec), None);
    tick(&mut rec, 50_000);
    assert_eq!(
        rec.trigger.current_phase, 0,
        "a paused trigger never advances by time"
    );
    run(&mut rec, TriggerAction::Resume, "op", 60_000).unwrap();
    assert_eq!(rec.trigger.phase_ends_at_ms, Some(67_000));
    assert_eq!(rec.trigger.remaining_wait_ms, None);
    tick(&mut rec, 67_000);
    assert_eq!(rec.trigger.current_phase, 1);
}

#[test]
fn applied_while_paused_waits_for_resume_with_full_bake() {
    let mut rec = start(pipeline(vec![phase("a", &["dev"], 3_000)]), 0);
    observe(&mut rec, &fleet(&[("dev", 2, 1, 2)]), 0);
    run(&mut rec, TriggerAction::Pause, "op", 10).unwrap();
    observe(&mut rec, &fleet(&[("dev", 2, 2, 2)]), 20);
    let t = &rec.trigger;
    assert_eq!(
        t.phase_state,
        Some(PhaseState::Baking),
        "acks still recorded"
    );
    assert!(t.paused);
    assert_eq!(t.remaining_wait_ms, Some(3_000));
    assert_eq!(t.phase_ends_at_ms, None);
    run(&mut rec, TriggerAction::Resume, "op", 100).unwrap();
    assert_eq!(rec.trigger.phase_ends_at_ms, Some(3_100));
}

#[test]
fn approved_while_paused_waits_for_resume() {
    let mut rec = start(pipeline(vec![approval(phase("a", &["dev"], 0), &[], 1)]), 0);
    run(&mut rec, TriggerAction::Pause, "op", 1).unwrap();
    run(&mut rec, TriggerAction::Approve, "alice", 2).unwrap();
    assert_eq!(rec.trigger.phase_state, Some(PhaseState::AwaitingApproval));
    assert_eq!(rec.published, 0, "nothing published while paused");
    run(&mut rec, TriggerAction::Resume, "op", 3).unwrap();
    assert_eq!(
        rec.trigger.status,
        TriggerStatus::Completed,
        "no agents: applies at once"
    );
}

#[test]
fn apply_timeout_pauses_resume_waits_again_skip_moves_on() {
    let mut rec = start(
        pipeline(vec![
            phase("a", &["dev"], 0),
            phase("b", &["staging"], 1_000),
        ]),
        0,
    );
    observe(&mut rec, &fleet(&[("dev", 1, 0, 1)]), 0);
    assert_eq!(next_deadline_ms(&rec), Some(5_000));
    tick(&mut rec, 4_999);
    assert!(!rec.trigger.paused);
    tick(&mut rec, 5_000);
    assert!(rec.trigger.paused);
    assert_eq!(rec.trigger.paused_reason, Some(PausedReason::ApplyTimeout));
    assert_eq!(
        rec.trigger.history.last().unwrap().actor.as_str(),
        "phasegate"
    );
    run(&mut rec, TriggerAction::Resume, "op", 7_000).unwrap();
    assert_eq!(next_deadline_ms(&rec), Some(12_000), "resume waits again");
    tick(&mut rec, 12_000);
    assert_eq!(rec.trigger.paused_reason, Some(PausedReason::ApplyTimeout));
    run(&mut rec, TriggerAction::Skip, "op", 13_000).unwrap();
    let t = &rec.trigger;
    assert!(!t.paused, "skip clears paused");
    assert_eq!(t.current_phase_id.as_ref().unwrap().as_str(), "b");
    assert_eq!(
        t.phase_state,
        Some(PhaseState::Baking),
        "staging has no agent"
    );
    assert_eq!(t.phase_ends_at_ms, Some(14_000));
}

#[test]
fn skip_publishes_an_unpublished_phase() {
    let p = pipeline(vec![
        approval(phase("a", &["dev"], 0), &["alice"], 1),
        approval(phase("b", &["staging"], 0), &[], 1),
    ]);
    let mut rec = start(p, 0);
    assert_eq!(rec.published, 0);
    assert_eq!(
        code(run(&mut rec, TriggerAction::Skip, "bob", 1)),
        "forbidden"
    );
    run(&mut rec, TriggerAction::Skip, "alice", 1).unwrap();
    assert_eq!(rec.published, 1, "the skipped phase is published");
    assert_eq!(rec.trigger.current_phase_id.as_ref().unwrap().as_str(), "b");
    assert!(phasegate_model::desired::phase_rollout(&rec, "dev").is_some());
    assert!(phasegate_model::desired::phase_rollout(&rec, "staging").is_none());
    run(&mut rec, TriggerAction::Skip, "bob", 2).unwrap();
    assert_eq!(
        rec.trigger.status,
        TriggerStatus::Completed,
        "skip past the last phase completes"
    );
}

#[test]
fn rollout_needs_approvers_of_every_remaining_phase() {
    let p = pipeline(vec![
        phase("a", &["dev"], 1_000),
        approval(phase("b", &["staging"], 0), &["alice"], 1),
    ]);
    let mut rec = start(p, 0);
    assert_eq!(
        code(run(&mut rec, TriggerAction::Rollout, "bob", 1)),
        "forbidden"
    );
    run(&mut rec, TriggerAction::Rollout, "alice", 1).unwrap();
    let h = history(&rec);
    assert_eq!(&h[h.len() - 2..], [H::Rollout, H::Completed]);
    assert_eq!(rec.trigger.status, TriggerStatus::Completed);
    assert_eq!(rec.trigger.phase_state, None);
}

#[test]
fn health_pause_and_recovery() {
    let p = pipeline(vec![
        phase("a", &["dev"], 10_000),
        phase("b", &["staging"], 0),
    ]);
    let mut rec = start(p, 0);
    observe(
        &mut rec,
        &fleet(&[("dev", 2, 2, 2), ("staging", 1, 0, 0)]),
        0,
    );
    assert_eq!(
        health_ratio(&rec.trigger),
        1.0,
        "staging not active: its sick agent does not count"
    );
    assert!(!rec.trigger.paused);
    observe(
        &mut rec,
        &fleet(&[("dev", 2, 2, 1), ("staging", 1, 0, 0)]),
        2_000,
    );
    assert!(rec.trigger.paused);
    assert_eq!(rec.trigger.paused_reason, Some(PausedReason::Health));
    assert_eq!(rec.trigger.remaining_wait_ms, Some(8_000));
    assert!(history(&rec).contains(&H::HealthDegraded));
    // Still unhealthy: no second record.
    observe(&mut rec, &fleet(&[("dev", 2, 2, 0)]), 2_500);
    assert_eq!(
        history(&rec)
            .iter()
            .filter(|k| **k == H::HealthDegraded)
            .count(),
        1
    );
    observe(&mut rec, &fleet(&[("dev", 2, 2, 2)]), 3_000);
    assert!(!rec.trigger.paused, "health paused it, health resumes it");
    assert_eq!(rec.trigger.phase_ends_at_ms, Some(11_000));
    assert!(history(&rec).contains(&H::HealthRecovered));

    // Paused by health, then by an operator: recovery does not resume.
    observe(&mut rec, &fleet(&[("dev", 2, 2, 1)]), 4_000);
    run(&mut rec, TriggerAction::Resume, "op", 4_100).unwrap();
    run(&mut rec, TriggerAction::Pause, "op", 4_200).unwrap();
    observe(&mut rec, &fleet(&[("dev", 2, 2, 2)]), 4_300);
    assert!(rec.trigger.paused);
    assert_eq!(rec.trigger.paused_reason, Some(PausedReason::Manual));
}

#[test]
fn health_abort_and_ignore() {
    let mut ph = phase("a", &["dev"], 10_000);
    ph.health = HealthPolicy {
        on_unhealthy: OnUnhealthy::Abort,
        min_healthy_ratio: 0.5,
    };
    let mut rec = start(pipeline(vec![ph.clone()]), 0);
    observe(&mut rec, &fleet(&[("dev", 4, 4, 2)]), 0);
    assert_eq!(
        rec.trigger.status,
        TriggerStatus::InProgress,
        "0.5 is not below 0.5"
    );
    observe(&mut rec, &fleet(&[("dev", 4, 4, 1)]), 10);
    assert_eq!(rec.trigger.status, TriggerStatus::Aborted);
    let last = rec.trigger.history.last().unwrap();
    assert_eq!((last.kind, last.actor.as_str()), (H::Aborted, "phasegate"));
    let h = history(&rec);
    assert_eq!(&h[h.len() - 2..], [H::HealthDegraded, H::Aborted]);

    ph.health.on_unhealthy = OnUnhealthy::Ignore;
    let mut rec = start(pipeline(vec![ph]), 0);
    observe(&mut rec, &fleet(&[("dev", 4, 4, 0)]), 0);
    assert!(!rec.trigger.paused);
    assert_eq!(rec.trigger.status, TriggerStatus::InProgress);
    assert!(history(&rec).contains(&H::HealthDegraded));
}

#[test]
fn globs_cover_segments() {
    let ph = phase("a", &["prod-us-*"], 0);
    assert!(phase_covers(&ph, "prod-us-west"));
    assert!(!phase_covers(&ph, "prod-eu"));
}

#[test]
fn finished_fields_are_cleared() {
    let mut rec = in_state("baking+paused");
    run(&mut rec, TriggerAction::Abort, "op", 30).unwrap();
    let t = &rec.trigger;
    assert_eq!(t.status, TriggerStatus::Aborted);
    assert!(!t.paused && t.paused_reason.is_none());
    assert!(
        t.phase_state.is_none() && t.phase_ends_at_ms.is_none() && t.remaining_wait_ms.is_none()
    );
    assert!(t.segments.values().all(|s| !s.version_active));
    assert_eq!(next_deadline_ms(&rec), None);
}

#[test]
fn health_is_judged_afresh_in_each_phase() {
    let mut one = phase("one", &["dev"], 0);
    one.health.on_unhealthy = OnUnhealthy::Ignore;
    let mut two = phase("two", &["dev"], 10_000);
    two.health = HealthPolicy {
        on_unhealthy: OnUnhealthy::Abort,
        min_healthy_ratio: 1.0,
    };
    let mut rec = start(pipeline(vec![one, two]), 0);
    // Unhealthy during phase one: recorded, ignored; the phase moves on.
    observe(&mut rec, &fleet(&[("dev", 2, 2, 1)]), 0);
    assert!(history(&rec).contains(&H::HealthDegraded));
    assert_eq!(
        rec.trigger.current_phase_id.as_ref().unwrap().as_str(),
        "two"
    );
    // Still unhealthy under phase two's policy: it aborts.
    observe(&mut rec, &fleet(&[("dev", 2, 2, 1)]), 1);
    assert_eq!(rec.trigger.status, TriggerStatus::Aborted);
}

#[test]
fn long_comments_are_refused() {
    let mut rec = start(pipeline(vec![phase("a", &["dev"], 1_000)]), 0);
    let mut r = req(&rec, "op");
    r.comment = Some("x".repeat(2000));
    let e = act(&mut rec, TriggerAction::Pause, &r, 1).unwrap_err();
    assert_eq!(e.code, ErrorCode::Invalid);
}

#[test]
fn history_is_bounded_and_keeps_its_start() {
    let mut rec = start(pipeline(vec![phase("a", &["dev"], 60_000)]), 0);
    observe(&mut rec, &fleet(&[("dev", 2, 2, 2)]), 0);
    // A flapping probe: degraded, paused, recovered, resumed, over and over.
    for i in 0..1_300u64 {
        observe(&mut rec, &fleet(&[("dev", 2, 2, 1)]), 10 + 2 * i);
        observe(&mut rec, &fleet(&[("dev", 2, 2, 2)]), 11 + 2 * i);
    }
    // 5,200 entries do not fit: the oldest after `started` made room.
    assert!(rec.trigger.history.len() < 5_200);
    let history = phasegate_proto::encode(Encoding::MsgPack, &rec.trigger.history).unwrap();
    assert!(history.len() <= phasegate_model::rollout::HISTORY_BUDGET_BYTES);
    assert!(
        history.len() > phasegate_model::rollout::HISTORY_BUDGET_BYTES / 2,
        "the budget is used, not wasted: {}",
        history.len()
    );
    assert_eq!(rec.trigger.history[0].kind, H::Started);
    assert_eq!(rec.trigger.history.last().unwrap().kind, H::Resumed);
    let last_at = rec.trigger.history.last().unwrap().at_ms;
    assert_eq!(last_at, 11 + 2 * 1_299, "the latest entries stay");
    // Ending still has room and drops nothing more.
    let before = rec.trigger.history.len();
    let mut r = req(&rec, "op");
    r.comment = Some("y".repeat(1024));
    act(&mut rec, TriggerAction::Abort, &r, 5_000).unwrap();
    assert_eq!(rec.trigger.history.len(), before + 1);
    assert!(
        phasegate_proto::encode(Encoding::MsgPack, &rec)
            .unwrap()
            .len()
            < 512 * 1024
    );
}
