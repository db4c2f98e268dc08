//! Helpers to drive rollouts through the typed client.

use phasegate_client::PhasegateClient;
use phasegate_proto::{Actor, EntityKind, EntityResult, PhaseId, Trigger, TriggerId};

use crate::{PATIENCE, wait_for};

/// An actor, for tests.
///
/// # Panics
///
/// On an invalid name: a bug in the test.
pub fn actor(s: &str) -> Actor {
    #[allow(clippy::expect_used)] // test helper: the names are literals
    Actor::new(s).expect("valid actor")
}

/// Stores a pipeline given as JSON.
pub async fn put_pipeline(c: &PhasegateClient, v: serde_json::Value) -> anyhow::Result<()> {
    c.pipeline_put(serde_json::from_value(v)?, actor("alice"))
        .await?;
    Ok(())
}

/// Puts a gate given as JSON, as `carol`.
pub async fn put_gate(c: &PhasegateClient, v: serde_json::Value) -> anyhow::Result<EntityResult> {
    Ok(c.entity_put(
        EntityKind::Gate,
        serde_json::from_value(v)?,
        actor("carol"),
        Some("change".into()),
        None,
    )
    .await?)
}

/// Polls the trigger until `cond` holds; fails with what it last saw.
pub async fn wait_trigger(
    c: &PhasegateClient,
    id: &TriggerId,
    what: &str,
    cond: impl Fn(&Trigger) -> bool,
) -> anyhow::Result<Trigger> {
    Ok(wait_for(what, PATIENCE, || async {
        let t = c.trigger_get(id.clone()).await.map_err(|e| e.to_string())?;
        if cond(&t) {
            Ok(t)
        } else {
            Err(format!(
                "phase {:?} state {:?} status {:?} paused {:?}",
                t.current_phase_id.as_ref().map(PhaseId::as_str),
                t.phase_state,
                t.status,
                t.paused_reason
            ))
        }
    })
    .await?)
}
