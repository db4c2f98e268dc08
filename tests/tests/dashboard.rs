//! The web console (`phasegate dashboard`, issue 15) in a real headless
//! Chromium against a real secured installation: nats-server with the
//! configuration `phasegate auth init` writes, a coordinator and one agent
//! per segment (processes), and two consoles: alice's (an admin and the
//! approver) and carol's (an editor, no approver). The browser side is
//! `tests/browser/dashboard.py`; this test starts everything, does what
//! the browser cannot (stop and continue an agent, put changes, read the
//! agents), and checks the outcome through the command API and the agents.
//!
//! Screenshots of the main views land in `target/dashboard-screenshots/`
//! (git-ignored).

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failed expectation is a failed test

use std::time::Duration;

use phasegate_client::{PhasegateClient, Security};
use phasegate_proto::{HistoryType, PhaseState, TriggerStatus};
use phasegate_tests::browser::{Browser, DashboardProc};
use phasegate_tests::faults::install::signal;
use phasegate_tests::rollout::{put_gate, put_pipeline, wait_trigger};
use phasegate_tests::secured::AuthDir;
use phasegate_tests::{AgentProc, PATIENCE, spawn_phasegate, wait_for, workspace_root};
use serde_json::json;

/// The consoles poll the coordinator this often: fast enough that each
/// live step shows within a fraction of the browser's patience.
const POLL_MS: u64 = 200;

/// The bake of the first phase: long enough for the browser to see it.
const BAKE_MS: u64 = 2_500;

/// How long the browser may take to reach its next step (it waits for
/// each of its own expectations up to 10 s).
const STEP_PATIENCE: Duration = Duration::from_secs(40);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_shows_rollouts_live_and_acts_as_its_user() -> anyhow::Result<()> {
    let browser = Browser::find()?;
    let auth = AuthDir::init(&["dev", "staging"], &["alice:admin", "carol:editor"])?;
    let nats = auth.serve().await?;
    let url = nats.url();
    let conf = auth.file("coordinator.toml").display().to_string();
    let _coord = spawn_phasegate(
        "coordinator",
        &[
            "coordinator",
            "--nats-url",
            &url,
            "--config",
            &conf,
            "--metrics-listen",
            "127.0.0.1:0",
        ],
    )?;
    let agent = |segment: &'static str| {
        let creds = auth.file(&format!("agent-{segment}.creds"));
        let url = url.clone();
        async move {
            let creds = creds.display().to_string();
            AgentProc::start(
                &url,
                &format!("{segment}-1"),
                segment,
                &["--nats-creds", &creds],
            )
            .await
        }
    };
    let dev = agent("dev").await?;
    let staging = agent("staging").await?;
    let alice_creds = auth.file("operator-alice.creds");
    let alice = PhasegateClient::connect_secured(
        &url,
        Security {
            creds: Some(alice_creds.clone()),
            ..Security::default()
        },
        "phasegate",
        Duration::from_secs(5),
    )
    .await?;
    wait_for("the coordinator", PATIENCE, || async {
        alice.pipeline_list().await
    })
    .await?;
    phasegate_tests::wait_live_agents(&alice, 2).await?;
    let alice_console =
        DashboardProc::start("dashboard-alice", &url, Some(&alice_creds), POLL_MS).await?;
    let carol_console = DashboardProc::start(
        "dashboard-carol",
        &url,
        Some(&auth.file("operator-carol.creds")),
        POLL_MS,
    )
    .await?;

    // dev bakes (health ignored: the agent is stopped on purpose below),
    // then staging waits for alice's approval.
    put_pipeline(
        &alice,
        json!({"name": "standard", "description": "dev, then staging once reviewed", "phases": [
            {"id": "dev", "segments": ["dev"], "wait_ms": BAKE_MS,
             "health": {"on_unhealthy": "ignore", "min_healthy_ratio": 1.0}},
            {"id": "staging", "segments": ["staging"],
             "approval": {"required": true, "approvers": ["alice"], "min_approvals": 1}}]}),
    )
    .await?;

    // The dev agent is stopped: the first phase stays `applying` until the
    // browser has seen it so.
    signal(dev.proc.pid(), "STOP");
    let first = put_gate(
        &alice,
        json!({"name": "checkout", "pipeline": "standard", "description": "new checkout flow",
               "rules": [{"id": "all", "pass_percentage": 100}]}),
    )
    .await?
    .trigger
    .expect("a trigger");
    let shots = workspace_root().join("target/dashboard-screenshots");
    let mut script = browser.run(
        &workspace_root().join("tests/browser/dashboard.py"),
        &[
            "--alice".into(),
            alice_console.url(),
            "--carol".into(),
            carol_console.url(),
            "--trigger".into(),
            first.id.to_string(),
            "--shots".into(),
            shots.display().to_string(),
        ],
    )?;

    script.step("applying", STEP_PATIENCE).await?;
    signal(dev.proc.pid(), "CONT");
    script.go(None).await?;

    script.step("approved", STEP_PATIENCE).await?;
    let done = wait_trigger(&alice, &first.id, "the first rollout completed", |t| {
        t.status == TriggerStatus::Completed
    })
    .await?;
    let approvals: Vec<&str> = done
        .history
        .iter()
        .filter(|h| h.kind == HistoryType::Approved)
        .map(|h| h.actor.as_str())
        .collect();
    assert_eq!(approvals, ["alice"], "only alice's approval counts");
    // A second change, to be aborted in the browser: it bakes in dev.
    let second = put_gate(
        &alice,
        json!({"name": "checkout", "pipeline": "standard", "description": "new checkout flow",
               "rules": [{"id": "all", "pass_percentage": 0}]}),
    )
    .await?
    .trigger
    .expect("a trigger");
    wait_trigger(
        &alice,
        &second.id,
        "the second rollout baking in dev",
        |t| t.is_at("dev", PhaseState::Baking),
    )
    .await?;
    let served = dev.check_gate("checkout", json!({"user_id": "u1"})).await?;
    assert_eq!(
        served["version"],
        json!(2),
        "dev serves the new version: {served}"
    );
    script
        .go(Some(json!({"trigger": second.id, "from_version": 1})))
        .await?;

    script.step("aborted", STEP_PATIENCE).await?;
    let aborted = alice.trigger_get(second.id.clone()).await?;
    assert_eq!(aborted.status, TriggerStatus::Aborted);
    let entry = aborted
        .history
        .iter()
        .find(|h| h.kind == HistoryType::Aborted)
        .expect("an aborted entry");
    assert_eq!(entry.actor.as_str(), "alice");
    assert_eq!(entry.comment.as_deref(), Some("wrong rules, rolling back"));
    for agent in [&dev, &staging] {
        wait_for("every segment back on version 1", PATIENCE, || async {
            let v = agent
                .check_gate("checkout", json!({"user_id": "u1"}))
                .await
                .map_err(|e| e.to_string())?;
            if v["version"] == json!(1) && v["value"] == json!(true) && v["trigger_id"].is_null() {
                Ok(())
            } else {
                Err(v.to_string())
            }
        })
        .await?;
    }
    script.go(None).await?;
    script.finish(STEP_PATIENCE).await?;
    assert!(
        shots.join("rollouts.png").exists(),
        "screenshots in {}",
        shots.display()
    );
    Ok(())
}
