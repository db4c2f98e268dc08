//! End-to-end faults with real processes: the demo (open and secured) as a
//! newcomer runs it, and nats-server itself restarted in the middle of a
//! rollout.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failed expectation is a failed test

use std::process::Command;

use phasegate_proto::*;
use phasegate_tests::rollout::wait_trigger;
use phasegate_tests::{
    AgentProc, CoordEnv, PATIENCE, nats_server_binary, phasegate_binary, wait_for,
};
use serde_json::json;

/// Runs `phasegate demo <args>` as a newcomer would; its stdout when it
/// exits 0.
fn demo(args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new(phasegate_binary()?)
        .arg("demo")
        .args(args)
        .env("PHASEGATE_NATS_SERVER", nats_server_binary()?)
        .env_remove("PHASEGATE_NATS_URL")
        .env_remove("PHASEGATE_NATS_CREDS")
        .output()?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "demo {args:?} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(stdout)
}

const DEMO_STEPS: [&str; 7] = [
    "approved",
    "health_degraded",
    "paused",
    "health_recovered",
    "completed",
    "aborted",
    "every step above happened",
];

#[test]
fn the_demo_runs_to_the_end() -> anyhow::Result<()> {
    let stdout = demo(&[])?;
    for step in DEMO_STEPS {
        assert!(stdout.contains(step), "the demo shows {step}:\n{stdout}");
    }
    Ok(())
}

/// The same walk in a secured installation: anonymous refused, an editor
/// who is no approver refused even when declaring the approver's name, and
/// the approval recorded under the approver's identity.
#[test]
fn the_secured_demo_runs_to_the_end() -> anyhow::Result<()> {
    let stdout = demo(&["--secured"])?;
    for step in DEMO_STEPS.iter().chain(&[
        "an anonymous connection is refused: cannot connect to nats",
        "authorization violation",
        "mallory, an editor but no approver, approves first, declaring actor \"bob\"",
        "refused: forbidden: mallory",
        "the approval is recorded as bob, the identity of bob's credentials",
    ]) {
        assert!(
            stdout.contains(step),
            "the secured demo shows {step}:\n{stdout}"
        );
    }
    let approvals: Vec<&str> = stdout
        .lines()
        .filter(|l| l.split_whitespace().nth(1) == Some("approved"))
        .collect();
    assert!(
        approvals.len() == 1 && approvals[0].contains("prod-us-west   bob: metrics look good"),
        "one approval, by bob: {approvals:?}\n{stdout}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_restarted_mid_rollout_everything_reconnects_and_finishes() -> anyhow::Result<()> {
    let mut env = CoordEnv::start().await?;
    let url = env.nats.url();
    let dev = AgentProc::start(&url, "dev-1", "dev", &[]).await?;
    let prod = AgentProc::start(&url, "prod-1", "prod", &[]).await?;
    let c = env.client.clone();
    // Both agents known before the change, so the phase waits for dev's ack.
    env.wait_live_agents(2).await?;
    let actor = Actor::new("op")?;
    c.pipeline_put(
        serde_json::from_value(json!({"name": "p", "phases": [
            {"id": "dev", "segments": ["dev"], "wait_ms": 1500},
            {"id": "prod", "segments": ["prod"], "wait_ms": 200}
        ]}))?,
        actor.clone(),
    )
    .await?;
    let r = c
        .entity_put(EntityKind::Gate, serde_json::from_value(json!({"name": "g", "pipeline": "p", "rules": [{"id": "all", "pass_percentage": 100}]}))?, actor, None, None)
        .await?;
    let id = r.trigger.expect("trigger").id;
    wait_trigger(&c, &id, "dev baking", |t| {
        t.phase_state == Some(PhaseState::Baking)
    })
    .await?;
    env.nats.kill()?;
    // While NATS is down the agents keep answering from what they hold.
    let v = dev.check_gate("g", json!({"user_id": "u"})).await?;
    assert_eq!(v["version"], json!(1));
    env.nats.restart().await?;
    let t = wait_trigger(&c, &id, "completed after the restart", |t| {
        t.status == TriggerStatus::Completed
    })
    .await?;
    assert!(t.segments["prod"].version_active);
    wait_for("prod serving v1 as its base", PATIENCE, || async {
        let v = prod
            .check_gate("g", json!({"user_id": "u"}))
            .await
            .map_err(|e| e.to_string())?;
        if v["version"] == 1 && v["trigger_id"].is_null() {
            Ok(())
        } else {
            Err(v.to_string())
        }
    })
    .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standby_coordinator_takes_over_when_the_leader_dies() -> anyhow::Result<()> {
    let nats = phasegate_tests::NatsServer::start().await?;
    let url = nats.url();
    let dir = tempfile::tempdir()?;
    let conf = dir.path().join("coordinator.toml");
    std::fs::write(&conf, "leader_lease_ms = 1000\nmetrics_listen = \"off\"\n")?;
    let conf = conf.to_str().unwrap();
    let mut leader = phasegate_tests::spawn_phasegate(
        "coordinator-a",
        &[
            "coordinator",
            "--nats-url",
            &url,
            "--config",
            conf,
            "--instance-id",
            "a",
        ],
    )?;
    let client = phasegate_client::PhasegateClient::connect(
        &url,
        "phasegate",
        std::time::Duration::from_secs(2),
    )
    .await?;
    wait_for("the leader to answer", PATIENCE, || async {
        client.pipeline_list().await
    })
    .await?;
    client
        .pipeline_put(
            serde_json::from_value(
                json!({"name": "p", "phases": [{"id": "dev", "segments": ["dev"]}]}),
            )?,
            Actor::new("alice")?,
        )
        .await?;
    let standby = phasegate_tests::spawn_phasegate(
        "coordinator-b",
        &[
            "coordinator",
            "--nats-url",
            &url,
            "--config",
            conf,
            "--instance-id",
            "b",
        ],
    )?;
    phasegate_tests::wait_until("the second coordinator to stand by", PATIENCE, || async {
        standby.log_tail(50).contains("standing by")
    })
    .await?;
    leader.kill()?;
    // The standby leads once the lease lapses, with the stored state.
    let p = wait_for("the standby to take over", PATIENCE, || async {
        if standby.log_tail(50).contains("leading") {
            client
                .pipeline_get(PipelineName::new("p").map_err(|e| e.to_string())?)
                .await
                .map_err(|e| e.to_string())
        } else {
            Err("not leading yet".to_owned())
        }
    })
    .await?;
    assert_eq!(p.phases.len(), 1);
    Ok(())
}
