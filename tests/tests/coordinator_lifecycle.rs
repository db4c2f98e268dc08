//! The trigger lifecycle of SPEC.md §4 driven through a real coordinator
//! process, with protocol-level agents: phases that wait for acks and bake,
//! approvals, pause/resume with remaining time, skip, roll-out, abort, the
//! kill switch, frozen pipelines, health policies, apply timeouts, and
//! restarts after `kill -9` with deadlines kept.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failed expectation is a failed test

use phasegate_client::{PhasegateClient, TriggerAction};
use phasegate_proto::*;
use phasegate_tests::rollout::{actor, put_gate, put_pipeline, wait_trigger};
use phasegate_tests::{CoordEnv, FakeAgent, PATIENCE, wait_for};
use serde_json::json;

async fn act(
    c: &PhasegateClient,
    a: TriggerAction,
    t: &Trigger,
    who: &str,
) -> Result<Trigger, phasegate_bus::BusError> {
    c.act(
        a,
        t.id.clone(),
        t.current_phase_id.clone(),
        actor(who),
        None,
    )
    .await
}

fn kinds(t: &Trigger) -> Vec<HistoryType> {
    t.history.iter().map(|h| h.kind).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_walk_with_acks_bake_and_approval() -> anyhow::Result<()> {
    let env = CoordEnv::start().await?;
    let c = &env.client;
    let url = env.nats.url();
    let _dev = FakeAgent::start(&url, "dev-1", "dev", 100).await?;
    let staging = FakeAgent::start(&url, "staging-1", "staging", 100).await?;
    wait_for("both agents to register", PATIENCE, || async {
        let n = c.agents(None).await.map_err(|e| e.to_string())?.len();
        if n == 2 {
            Ok(())
        } else {
            Err(format!("{n} agents"))
        }
    })
    .await?;
    put_pipeline(
        c,
        json!({"name": "seed", "phases": [
            {"id": "dev", "segments": ["dev"], "wait_ms": 300},
            {"id": "staging", "segments": ["staging"], "wait_ms": 100,
             "approval": {"required": true, "approvers": ["alice", "bob"], "min_approvals": 1}},
            {"id": "prod", "segments": ["prod-*"], "wait_ms": 0}
        ]}),
    )
    .await?;
    // Staging will not ack at first: the phase waits in `applying`.
    staging.set_acking(false);
    let r = put_gate(c, json!({"name": "checkout", "pipeline": "seed", "rules": [{"id": "all", "pass_percentage": 100}]})).await?;
    let t = r.trigger.expect("a trigger");
    assert_eq!((t.from_version, t.to_version), (0, 1));
    let t = wait_trigger(c, &t.id, "dev baking", |t| {
        t.is_at("dev", PhaseState::Baking)
    })
    .await?;
    let ends = t.phase_ends_at_ms.expect("deadline while baking");
    assert!(t.segments["dev"].version_active && t.segments["dev"].agents_applied == 1);
    assert!(!t.segments["staging"].version_active);
    // The bake runs from the ack: it ends wait_ms after phase_applied.
    let applied_at = t
        .history
        .iter()
        .find(|h| h.kind == HistoryType::PhaseApplied)
        .map(|h| h.at_ms)
        .unwrap_or(0);
    assert_eq!(ends, applied_at + 300);
    let t = wait_trigger(c, &t.id, "staging awaiting approval", |t| {
        t.is_at("staging", PhaseState::AwaitingApproval)
    })
    .await?;
    assert!(now_ms() + 5 >= ends, "the bake was not cut short");
    let e = act(c, TriggerAction::Approve, &t, "mallory")
        .await
        .expect_err("not an approver");
    assert_eq!(e.code(), ErrorCode::Forbidden);
    let t = act(c, TriggerAction::Approve, &t, "bob").await?;
    assert_eq!(t.phase_state, Some(PhaseState::Applying));
    assert_eq!(t.approvals.len(), 1);
    // A second approval is outside awaiting_approval now.
    assert_eq!(
        act(c, TriggerAction::Approve, &t, "alice")
            .await
            .expect_err("conflict")
            .code(),
        ErrorCode::Conflict
    );
    // Stuck in applying until staging acks.
    let t = c.trigger_get(t.id.clone()).await?;
    assert_eq!(t.phase_state, Some(PhaseState::Applying));
    assert_eq!(t.segments["staging"].agents_applied, 0);
    staging.set_acking(true);
    let t = wait_trigger(c, &t.id, "completed", |t| {
        t.status == TriggerStatus::Completed
    })
    .await?;
    assert_eq!(t.phase_state, None);
    assert!(t.segments.values().all(|s| s.version_active));
    let h = kinds(&t);
    assert_eq!(h.first(), Some(&HistoryType::Started));
    assert_eq!(h.last(), Some(&HistoryType::Completed));
    assert_eq!(
        h.iter()
            .filter(|k| **k == HistoryType::PhaseApplied)
            .count(),
        3
    );
    let g = c
        .entity_get(EntityKind::Gate, EntityName::new("checkout")?)
        .await?;
    assert!(g.trigger.is_none(), "no active trigger once completed");
    assert_eq!(g.spec.version, 1);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_resume_skip_rollout_abort_and_conflicts() -> anyhow::Result<()> {
    let env = CoordEnv::start().await?;
    let c = &env.client;
    put_pipeline(
        c,
        json!({"name": "slow", "phases": [
            {"id": "one", "segments": ["dev"], "wait_ms": 60000},
            {"id": "two", "segments": ["staging"], "wait_ms": 60000,
             "approval": {"required": true, "approvers": ["alice"]}},
            {"id": "three", "segments": ["prod"], "wait_ms": 60000}
        ]}),
    )
    .await?;
    let r = put_gate(c, json!({"name": "g", "pipeline": "slow"})).await?;
    let t = wait_trigger(c, &r.trigger.expect("trigger").id, "baking", |t| {
        t.is_at("one", PhaseState::Baking)
    })
    .await?;
    // Frozen pipeline, one active trigger per entity.
    let e = c
        .pipeline_put(
            serde_json::from_value(
                json!({"name": "slow", "phases": [{"id": "x", "segments": ["dev"]}]}),
            )?,
            actor("a"),
        )
        .await;
    assert_eq!(e.expect_err("frozen").code(), ErrorCode::Conflict);
    assert_eq!(
        c.pipeline_delete(PipelineName::new("slow")?, actor("a"))
            .await
            .expect_err("frozen")
            .code(),
        ErrorCode::Conflict
    );
    let e = put_gate(
        c,
        json!({"name": "g", "pipeline": "slow", "description": "other"}),
    )
    .await;
    assert!(e.is_err(), "a put while a trigger runs is a conflict");
    assert_eq!(
        c.entity_delete(EntityKind::Gate, EntityName::new("g")?, actor("a"))
            .await
            .expect_err("active")
            .code(),
        ErrorCode::Conflict
    );
    // Wrong phase.
    let e = c
        .act(
            TriggerAction::Pause,
            t.id.clone(),
            Some(PhaseId::new("two")?),
            actor("op"),
            None,
        )
        .await;
    assert_eq!(e.expect_err("wrong phase").code(), ErrorCode::Conflict);
    // Pause keeps the remaining time; resume ends after it.
    let paused = c
        .act(
            TriggerAction::Pause,
            t.id.clone(),
            None,
            actor("op"),
            Some("look".into()),
        )
        .await?;
    assert!(paused.paused && paused.phase_ends_at_ms.is_none());
    let left = paused.remaining_wait_ms.expect("remaining while paused");
    assert!(left > 50_000 && left <= 60_000, "{left}");
    assert_eq!(
        act(c, TriggerAction::Pause, &paused, "op")
            .await
            .expect_err("paused")
            .code(),
        ErrorCode::Conflict
    );
    let before = now_ms();
    let resumed = act(c, TriggerAction::Resume, &paused, "op").await?;
    let end = resumed.phase_ends_at_ms.expect("deadline again");
    assert!(
        end >= before + left && end <= now_ms() + left,
        "ends after the remaining time, not a fresh wait"
    );
    assert_eq!(
        act(c, TriggerAction::Resume, &resumed, "op")
            .await
            .expect_err("not paused")
            .code(),
        ErrorCode::Conflict
    );
    // Skip ends the phase now; the next requires approval.
    let t = act(c, TriggerAction::Skip, &resumed, "op").await?;
    assert!(
        t.is_at("two", PhaseState::AwaitingApproval),
        "{:?}",
        t.phase_state
    );
    // Skipping or rolling out past a phase that requires approval needs an approver.
    assert_eq!(
        act(c, TriggerAction::Skip, &t, "op")
            .await
            .expect_err("forbidden")
            .code(),
        ErrorCode::Forbidden
    );
    assert_eq!(
        act(c, TriggerAction::Rollout, &t, "op")
            .await
            .expect_err("forbidden")
            .code(),
        ErrorCode::Forbidden
    );
    let done = act(c, TriggerAction::Rollout, &t, "alice").await?;
    assert_eq!(done.status, TriggerStatus::Completed);
    let h = kinds(&done);
    assert_eq!(
        &h[h.len() - 2..],
        [HistoryType::Rollout, HistoryType::Completed]
    );
    assert_eq!(
        act(c, TriggerAction::Abort, &done, "op")
            .await
            .expect_err("finished")
            .code(),
        ErrorCode::Conflict
    );

    // Abort: the entity reads as the version before; numbers continue.
    let r = put_gate(
        c,
        json!({"name": "g", "pipeline": "slow", "rules": [{"id": "r", "pass_percentage": 1}]}),
    )
    .await?;
    let t = r.trigger.expect("trigger");
    assert_eq!((t.from_version, t.to_version), (1, 2));
    let t = c
        .act(
            TriggerAction::Abort,
            t.id.clone(),
            None,
            actor("op"),
            Some("bad idea".into()),
        )
        .await?;
    assert_eq!(t.status, TriggerStatus::Aborted);
    let g = c
        .entity_get(EntityKind::Gate, EntityName::new("g")?)
        .await?;
    assert_eq!(g.spec.version, 1);
    assert!(g.spec.rules.is_empty());
    let r = put_gate(
        c,
        json!({"name": "g", "pipeline": "slow", "rules": [{"id": "r", "pass_percentage": 2}]}),
    )
    .await?;
    assert_eq!(r.spec.version, 3, "to_version + 1");

    // Kill switch: immediate, aborts the active trigger.
    let active = r.trigger.expect("trigger");
    let k = put_gate(c, json!({"name": "g", "pipeline": "slow", "enabled": false, "rules": [{"id": "r", "pass_percentage": 2}]})).await?;
    assert!(k.trigger.is_none());
    assert_eq!(k.spec.version, 4);
    let t = c.trigger_get(active.id.clone()).await?;
    assert_eq!(t.status, TriggerStatus::Aborted);
    let last = t.history.last().expect("history");
    assert_eq!(
        (last.kind, last.actor.as_str(), last.comment.as_deref()),
        (HistoryType::Aborted, "carol", Some("kill switch"))
    );
    let g = c
        .entity_get(EntityKind::Gate, EntityName::new("g")?)
        .await?;
    assert!(!g.spec.enabled && g.trigger.is_none());
    // And the pipeline is free again.
    let listed = c
        .trigger_list(TriggerListRequest {
            status: Some(TriggerStatus::Aborted),
            ..Default::default()
        })
        .await?;
    assert_eq!(listed.len(), 2);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_pauses_recovers_and_aborts() -> anyhow::Result<()> {
    let env = CoordEnv::start().await?;
    let c = &env.client;
    let url = env.nats.url();
    let a1 = FakeAgent::start(&url, "eu-1", "prod-eu", 100).await?;
    let _a2 = FakeAgent::start(&url, "eu-2", "prod-eu", 100).await?;
    put_pipeline(
        c,
        json!({"name": "careful", "phases": [
            {"id": "eu", "segments": ["prod-eu"], "wait_ms": 60000, "health": {"on_unhealthy": "pause", "min_healthy_ratio": 0.9}}
        ]}),
    )
    .await?;
    put_pipeline(
        c,
        json!({"name": "strict", "phases": [
            {"id": "eu", "segments": ["prod-eu"], "wait_ms": 60000, "health": {"on_unhealthy": "abort", "min_healthy_ratio": 0.9}}
        ]}),
    )
    .await?;
    let r = put_gate(c, json!({"name": "g", "pipeline": "careful"})).await?;
    let id = r.trigger.expect("trigger").id;
    wait_trigger(c, &id, "baking with both agents", |t| {
        t.is_at("eu", PhaseState::Baking)
            && t.segments
                .get("prod-eu")
                .is_some_and(|s| s.agents_live == 2)
    })
    .await?;
    a1.set_healthy(false);
    let t = wait_trigger(c, &id, "paused by health", |t| {
        t.paused_reason == Some(PausedReason::Health)
    })
    .await?;
    assert!(kinds(&t).contains(&HistoryType::HealthDegraded));
    assert!(t.remaining_wait_ms.is_some());
    a1.set_healthy(true);
    let t = wait_trigger(c, &id, "resumed by recovery", |t| !t.paused).await?;
    assert!(kinds(&t).contains(&HistoryType::HealthRecovered));
    assert!(t.phase_ends_at_ms.is_some());
    c.act(TriggerAction::Abort, id, None, actor("op"), None)
        .await?;

    let r = put_gate(c, json!({"name": "h", "pipeline": "strict"})).await?;
    let id = r.trigger.expect("trigger").id;
    wait_trigger(c, &id, "baking", |t| t.is_at("eu", PhaseState::Baking)).await?;
    a1.set_healthy(false);
    let t = wait_trigger(c, &id, "aborted by health", |t| {
        t.status == TriggerStatus::Aborted
    })
    .await?;
    let last = t.history.last().expect("history");
    assert_eq!(
        (last.kind, last.actor.as_str()),
        (HistoryType::Aborted, "phasegate")
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_timeout_pauses_and_silent_agents_block_until_forgotten() -> anyhow::Result<()> {
    let env = CoordEnv::start().await?;
    let c = &env.client;
    let url = env.nats.url();
    let stuck = FakeAgent::start(&url, "dev-1", "dev", 100).await?;
    env.wait_live_agents(1).await?;
    stuck.set_acking(false);
    // Health is ignored here: an unreachable agent also counts as unhealthy.
    put_pipeline(c, json!({"name": "p", "phases": [{"id": "one", "segments": ["dev"], "apply_timeout_ms": 300, "health": {"on_unhealthy": "ignore"}}]})).await?;
    let r = put_gate(c, json!({"name": "g", "pipeline": "p"})).await?;
    let id = r.trigger.expect("trigger").id;
    let t = wait_trigger(c, &id, "apply timeout", |t| {
        t.paused_reason == Some(PausedReason::ApplyTimeout)
    })
    .await?;
    assert_eq!(t.phase_state, Some(PhaseState::Applying));
    // Silence is not success (SPEC.md §4): a dead agent stays known and
    // keeps blocking; the apply timeout pauses the trigger again.
    stuck.stop();
    wait_for(
        "the stopped agent to be listed, unreachable",
        PATIENCE,
        || async {
            let a = c.agents(None).await.map_err(|e| e.to_string())?;
            if a.len() == 1 && !a[0].live {
                Ok(())
            } else {
                Err(format!("{a:?}"))
            }
        },
    )
    .await?;
    let t = act(c, TriggerAction::Resume, &t, "op").await?;
    assert!(!t.paused);
    let t = wait_trigger(c, &id, "paused again by the apply timeout", |t| {
        t.paused_reason == Some(PausedReason::ApplyTimeout)
    })
    .await?;
    assert_eq!(t.phase_state, Some(PhaseState::Applying));
    let dev = &t.segments["dev"];
    assert_eq!(
        (dev.agents_known, dev.agents_live, dev.agents_applied),
        (1, 0, 0)
    );
    // The operator decides: forget it, and the phase can complete.
    c.agent_forget(AgentId::new("dev-1")?, actor("op")).await?;
    assert!(
        c.agents(None).await?.is_empty(),
        "a forgotten agent is not listed"
    );
    let err = c
        .agent_forget(AgentId::new("dev-1")?, actor("op"))
        .await
        .expect_err("forgetting an unknown agent");
    assert_eq!(err.code(), ErrorCode::NotFound, "{err}");
    act(c, TriggerAction::Resume, &t, "op").await?;
    wait_trigger(c, &id, "completed once the dead agent is forgotten", |t| {
        t.status == TriggerStatus::Completed
    })
    .await?;
    Ok(())
}

/// A trigger through a two-phase pipeline, baking phase one for `wait_ms`.
async fn baking_in_phase_one(env: &CoordEnv, wait_ms: u64) -> anyhow::Result<(TriggerId, Trigger)> {
    put_pipeline(
        &env.client,
        json!({"name": "p", "phases": [
            {"id": "one", "segments": ["dev"], "wait_ms": wait_ms},
            {"id": "two", "segments": ["staging"], "wait_ms": 60000}
        ]}),
    )
    .await?;
    let r = put_gate(&env.client, json!({"name": "g", "pipeline": "p"})).await?;
    let id = r.trigger.expect("trigger").id;
    let t = wait_trigger(&env.client, &id, "baking", |t| {
        t.is_at("one", PhaseState::Baking)
    })
    .await?;
    Ok((id, t))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_mid_bake_keeps_the_deadline() -> anyhow::Result<()> {
    let mut env = CoordEnv::start().await?;
    let (id, t) = baking_in_phase_one(&env, 2000).await?;
    let ends = t.phase_ends_at_ms.expect("deadline");
    env.crash_and_restart().await?;
    let after = env.client.trigger_get(id.clone()).await?;
    assert!(
        after.is_at("one", PhaseState::Baking),
        "same phase after restart: {after:?}"
    );
    assert_eq!(
        after.phase_ends_at_ms,
        Some(ends),
        "same deadline after restart"
    );
    let t = wait_trigger(&env.client, &id, "phase two", |t| {
        t.current_phase_id.as_ref().map(PhaseId::as_str) == Some("two")
    })
    .await?;
    assert!(now_ms() >= ends, "not before the deadline");
    // Pause survives a crash too, with its remaining time.
    let p = env
        .client
        .act(TriggerAction::Pause, id.clone(), None, actor("op"), None)
        .await?;
    env.crash_and_restart().await?;
    let after = env.client.trigger_get(id.clone()).await?;
    assert!(after.paused);
    assert_eq!(after.remaining_wait_ms, p.remaining_wait_ms);
    assert_eq!(t.id, after.id);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deadline_that_passed_while_down_fires_at_once() -> anyhow::Result<()> {
    let mut env = CoordEnv::start().await?;
    let (id, t) = baking_in_phase_one(&env, 400).await?;
    let ends = t.phase_ends_at_ms.expect("deadline");
    env.coord.kill()?;
    // The passing of time while the coordinator is down is the behaviour
    // under test: wait until the wall clock is past the deadline.
    wait_for(
        "the deadline to pass while the coordinator is down",
        PATIENCE,
        || async {
            if now_ms() > ends + 50 {
                Ok(())
            } else {
                Err("deadline not passed")
            }
        },
    )
    .await?;
    env.coord.restart()?;
    env.wait_ready().await?;
    let t = wait_trigger(&env.client, &id, "phase two at once", |t| {
        t.current_phase_id.as_ref().map(PhaseId::as_str) == Some("two")
    })
    .await?;
    let started_two = t
        .history
        .iter()
        .rfind(|h| h.kind == HistoryType::PhaseStarted)
        .map(|h| h.at_ms)
        .unwrap_or(0);
    assert!(started_two > ends, "fired after the restart");
    Ok(())
}
