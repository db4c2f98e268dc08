//! A gate put and its rollout watched through `phasegate-client`: what an
//! operator's own tooling does. It starts a nats-server and a coordinator
//! of its own; against an installation, connect the client to its URL.

use std::time::Duration;

use phasegate_client::PhasegateClient;
use phasegate_coordinator::{Coordinator, CoordinatorConfig};
use phasegate_devkit::NatsServer;
use phasegate_proto::{Actor, EntityKind, TriggerStatus};
use serde_json::json;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let nats = NatsServer::start().await?;
    let coordinator = Coordinator::start(&nats.url(), CoordinatorConfig::default()).await?;
    let client = PhasegateClient::connect(&nats.url(), "phasegate", Duration::from_secs(5)).await?;
    let me = Actor::new("example")?;

    // dev at once, then every prod segment after a short bake.
    let pipeline = json!({"name": "two-step", "phases": [
        {"id": "dev", "segments": ["dev"]},
        {"id": "prod", "segments": ["prod-*"], "wait_ms": 200}]});
    client
        .pipeline_put(serde_json::from_value(pipeline)?, me.clone())
        .await?;
    let gate = json!({"name": "new-checkout", "pipeline": "two-step",
        "rules": [{"id": "everyone", "pass_percentage": 100}]});
    let put = client
        .entity_put(
            EntityKind::Gate,
            serde_json::from_value(gate)?,
            me,
            None,
            None,
        )
        .await?;
    let id = put
        .trigger
        .ok_or_else(|| anyhow::anyhow!("no rollout started"))?
        .id;

    // Watch it: print each history entry once, until it is finished.
    let (mut shown, deadline) = (0, tokio::time::Instant::now() + Duration::from_secs(30));
    loop {
        let t = client.trigger_get(id.clone()).await?;
        for h in &t.history[shown..] {
            let phase = h.phase_id.as_ref().map_or("-", |p| p.as_str());
            println!("{:<16} phase {phase:<5} by {}", h.kind, h.actor);
        }
        shown = t.history.len();
        if t.status != TriggerStatus::InProgress {
            println!("{id}: {}", t.status);
            anyhow::ensure!(t.status == TriggerStatus::Completed, "not completed");
            break;
        }
        anyhow::ensure!(tokio::time::Instant::now() < deadline, "still {}", t.status);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    coordinator.stop().await;
    Ok(())
}

#[test]
fn runs() -> anyhow::Result<()> {
    main()
}
