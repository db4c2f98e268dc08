//! A coordinator and two agents in one process: a gate rolls out to `dev`,
//! waits for an approval, then reaches `prod`; a service asks each agent
//! over its local HTTP API, as it would in production.

use std::net::SocketAddr;
use std::time::Duration;

use phasegate_agent::{Agent, AgentConfig};
use phasegate_client::{PhasegateClient, TriggerAction};
use phasegate_coordinator::{Coordinator, CoordinatorConfig};
use phasegate_devkit::{NatsServer, wait_until};
use phasegate_proto::{Actor, EntityKind, PhaseState, Segment, TriggerStatus};
use serde_json::json;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let nats = NatsServer::start().await?;
    let coordinator = Coordinator::start(&nats.url(), CoordinatorConfig::default()).await?;
    let state = tempfile::tempdir()?;
    let (mut agents, mut addrs) = (Vec::new(), Vec::new());
    for segment in ["dev", "prod"] {
        let mut config = AgentConfig::new(Segment::new(segment)?, nats.url());
        config.state_dir = state.path().join(segment);
        config.listen = ([127, 0, 0, 1], 0).into();
        let agent = Agent::start(config).await?;
        addrs.push(agent.local_addr());
        agents.push(agent);
    }
    let client = PhasegateClient::connect(&nats.url(), "phasegate", Duration::from_secs(5)).await?;
    let me = Actor::new("example")?;
    let patience = Duration::from_secs(30);
    wait_until("both agents known", patience, || async {
        client
            .agents(None)
            .await
            .is_ok_and(|a| a.iter().filter(|a| a.live).count() == 2)
    })
    .await?;

    let pipeline = json!({"name": "reviewed", "phases": [
        {"id": "dev", "segments": ["dev"]},
        {"id": "prod", "segments": ["prod"], "approval": {"required": true}}]});
    client
        .pipeline_put(serde_json::from_value(pipeline)?, me.clone())
        .await?;
    let gate = json!({"name": "new-checkout", "pipeline": "reviewed",
        "rules": [{"id": "everyone", "pass_percentage": 100}]});
    let put = client
        .entity_put(
            EntityKind::Gate,
            serde_json::from_value(gate)?,
            me.clone(),
            None,
            None,
        )
        .await?;
    let id = put
        .trigger
        .ok_or_else(|| anyhow::anyhow!("no rollout started"))?
        .id;

    // dev has it, prod waits for a reviewer.
    wait_until("prod awaiting approval", patience, || async {
        client
            .trigger_get(id.clone())
            .await
            .is_ok_and(|t| t.phase_state == Some(PhaseState::AwaitingApproval))
    })
    .await?;
    println!(
        "dev: {}  prod: {}",
        check_gate(addrs[0]).await?,
        check_gate(addrs[1]).await?
    );
    let t = client.trigger_get(id.clone()).await?;
    client
        .act(
            TriggerAction::Approve,
            id.clone(),
            t.current_phase_id,
            me,
            None,
        )
        .await?;
    wait_until("the rollout completed", patience, || async {
        client
            .trigger_get(id.clone())
            .await
            .is_ok_and(|t| t.status == TriggerStatus::Completed)
    })
    .await?;
    println!(
        "dev: {}  prod: {}",
        check_gate(addrs[0]).await?,
        check_gate(addrs[1]).await?
    );

    for agent in agents {
        agent.stop().await;
    }
    coordinator.stop().await;
    Ok(())
}

/// What a service does: `POST /v1/check_gate` on its local agent.
async fn check_gate(agent: SocketAddr) -> anyhow::Result<serde_json::Value> {
    let body = json!({"gate": "new-checkout", "user": {"user_id": "u-1"}}).to_string();
    let mut conn = tokio::net::TcpStream::connect(agent).await?;
    let request = format!(
        "POST /v1/check_gate HTTP/1.1\r\nHost: {agent}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    conn.write_all(request.as_bytes()).await?;
    let mut reply = String::new();
    conn.read_to_string(&mut reply).await?;
    let (_, json) = reply.split_once("\r\n\r\n").unwrap_or_default();
    let answer: serde_json::Value = serde_json::from_str(json)?;
    Ok(json!({"value": answer["value"], "version": answer["version"]}))
}

#[test]
fn runs() -> anyhow::Result<()> {
    main()
}
