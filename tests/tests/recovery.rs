//! Commit points and recovery (SPEC.md §4, durability): the settled entity
//! record is the one write that finishes a trigger. A coordinator stopped
//! anywhere around it comes back to exactly one of "still running" or
//! "finished", never to a mix, and repairing the rest is idempotent.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failed expectation is a failed test

use phasegate_client::TriggerAction;
use phasegate_proto::*;
use phasegate_tests::CoordEnv;
use phasegate_tests::NatsServerExt as _;
use phasegate_tests::rollout::{actor, put_gate, put_pipeline, wait_trigger};
use serde_json::json;

const GATE_KEY: &str = "gate.g";

async fn stored_entity(env: &CoordEnv) -> anyhow::Result<(StoredEntity, u64)> {
    let c = env.nats.client("inspector").await?;
    let kv = c
        .kv_existing(&Subjects::default().bucket(Bucket::Entities))
        .await?;
    let e = kv.get(GATE_KEY).await?.expect("entity stored");
    Ok((decode(Encoding::MsgPack, &e.value)?, e.revision))
}

/// A trigger waiting for approval, so nothing moves it by itself.
async fn waiting_trigger(env: &CoordEnv) -> anyhow::Result<Trigger> {
    put_pipeline(
        &env.client,
        json!({"name": "p", "phases": [{"id": "one", "segments": ["dev"],
            "approval": {"required": true}}]}),
    )
    .await?;
    let t = put_gate(&env.client, json!({"name": "g", "pipeline": "p"}))
        .await?
        .trigger
        .expect("trigger");
    wait_trigger(&env.client, &t.id, "awaiting approval", |t| {
        t.phase_state == Some(PhaseState::AwaitingApproval)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_archive_without_the_entity_write_finishes_nothing() -> anyhow::Result<()> {
    let mut env = CoordEnv::start().await?;
    let t = waiting_trigger(&env).await?;
    env.coord.kill()?;
    // What an older write order left after a stop between the archive and
    // the entity write: the archive says aborted, the entity says running.
    let (stored, _) = stored_entity(&env).await?;
    let mut aborted = stored.active.clone().expect("active trigger");
    aborted.trigger.status = TriggerStatus::Aborted;
    aborted.trigger.phase_state = None;
    let c = env.nats.client("writer").await?;
    let triggers = c
        .kv_existing(&Subjects::default().bucket(Bucket::Triggers))
        .await?;
    triggers
        .put(t.id.as_str(), encode(Encoding::MsgPack, &aborted)?.into())
        .await?;
    env.coord.restart()?;
    env.wait_ready().await?;
    // The entity record is the truth: the trigger still runs and can still
    // be acted on.
    let g = env
        .client
        .entity_get(EntityKind::Gate, EntityName::new("g")?)
        .await?;
    let running = g.trigger.expect("still active");
    assert_eq!(running.status, TriggerStatus::InProgress);
    let t = env
        .client
        .act(
            TriggerAction::Approve,
            t.id.clone(),
            t.current_phase_id.clone(),
            actor("op"),
            None,
        )
        .await?;
    // With no agent in dev the approved phase applies and completes.
    assert_eq!(t.status, TriggerStatus::Completed);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_finish_committed_but_not_archived_is_archived_at_start() -> anyhow::Result<()> {
    let mut env = CoordEnv::start().await?;
    let t = waiting_trigger(&env).await?;
    env.coord.kill()?;
    // The commit point happened (entity settled, the aborted trigger
    // beside it), then the stop: no archive.
    let (mut stored, revision) = stored_entity(&env).await?;
    let mut rec = stored.active.take().expect("active trigger");
    rec.trigger.status = TriggerStatus::Aborted;
    rec.trigger.phase_state = None;
    phasegate_model::settle(&mut stored.record, &rec);
    stored.finished = Some(rec);
    let c = env.nats.client("writer").await?;
    let entities = c
        .kv_existing(&Subjects::default().bucket(Bucket::Entities))
        .await?;
    entities
        .update(
            GATE_KEY,
            encode(Encoding::MsgPack, &stored)?.into(),
            revision,
        )
        .await?;
    env.coord.restart()?;
    env.wait_ready().await?;
    let got = env.client.trigger_get(t.id.clone()).await?;
    assert_eq!(got.status, TriggerStatus::Aborted);
    let triggers = c
        .kv_existing(&Subjects::default().bucket(Bucket::Triggers))
        .await?;
    assert!(
        triggers.get(t.id.as_str()).await?.is_some(),
        "archived at start"
    );
    let (after, _) = stored_entity(&env).await?;
    assert!(
        after.finished.is_none(),
        "the record no longer holds it once archived"
    );
    assert!(after.active.is_none());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_switch_is_one_write_and_stays_disabled() -> anyhow::Result<()> {
    let mut env = CoordEnv::start().await?;
    let t = waiting_trigger(&env).await?;
    let r = env
        .client
        .entity_put(
            EntityKind::Gate,
            serde_json::from_value(json!({"name": "g", "pipeline": "p", "enabled": false}))?,
            actor("op"),
            None,
            None,
        )
        .await?;
    assert!(!r.spec.enabled);
    env.crash_and_restart().await?;
    let g = env
        .client
        .entity_get(EntityKind::Gate, EntityName::new("g")?)
        .await?;
    assert!(!g.spec.enabled, "the kill switch survives a restart");
    assert!(g.trigger.is_none());
    assert_eq!(
        env.client.trigger_get(t.id.clone()).await?.status,
        TriggerStatus::Aborted
    );
    let (stored, _) = stored_entity(&env).await?;
    assert!(stored.finished.is_none());
    assert_eq!(stored.record.base.as_ref().map(|b| b.enabled), Some(false));
    Ok(())
}
