//! Fleet semantics of SPEC.md §4 (*silence is not success*) against a real
//! coordinator process: segments with dots, clean leaves, reports bound to
//! their subject's segment, restored agents after `kill -9`, and the apply
//! timeout of a phase applied while the coordinator was down.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failed expectation is a failed test

use phasegate_proto::*;
use phasegate_tests::NatsServerExt as _;
use phasegate_tests::rollout::{put_gate, put_pipeline, wait_trigger};
use phasegate_tests::{CoordEnv, FakeAgent, PATIENCE, wait_for};
use serde_json::json;

/// Gate `g` put through pipeline `p` of the one phase `phase`: its trigger.
async fn one_phase(
    c: &phasegate_client::PhasegateClient,
    phase: serde_json::Value,
) -> anyhow::Result<TriggerId> {
    put_pipeline(c, json!({"name": "p", "phases": [phase]})).await?;
    Ok(put_gate(c, json!({"name": "g", "pipeline": "p"}))
        .await?
        .trigger
        .expect("trigger")
        .id)
}

/// Waits until `agent.list` shows exactly `ids`, with their liveness.
async fn wait_agents(env: &CoordEnv, want: &[(&str, bool)], what: &str) -> anyhow::Result<()> {
    Ok(wait_for(what, PATIENCE, || async {
        let got: Vec<(String, bool)> = env
            .client
            .agents(None)
            .await
            .map_err(|e| e.to_string())?
            .into_iter()
            .map(|a| (a.agent_id.to_string(), a.live))
            .collect();
        let want: Vec<(String, bool)> = want.iter().map(|(i, l)| ((*i).to_owned(), *l)).collect();
        if got == want {
            Ok(())
        } else {
            Err(format!("{got:?}"))
        }
    })
    .await?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_segment_with_a_dot_is_seen_and_waited_for() -> anyhow::Result<()> {
    let env = CoordEnv::start().await?;
    let c = &env.client;
    let eu = FakeAgent::start(&env.nats.url(), "eu-1", "eu.prod", 100).await?;
    wait_agents(&env, &[("eu-1", true)], "the eu.prod agent listed").await?;
    let listed = c.agents(Some(Segment::new("eu.prod")?)).await?;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].segment.as_str(), "eu.prod");
    eu.set_acking(false);
    let id = one_phase(
        c,
        json!({"id": "eu", "segments": ["eu.prod"], "wait_ms": 60000}),
    )
    .await?;
    // Its phase waits for its ack: it is not baking with nobody applied.
    let t = wait_trigger(c, &id, "eu.prod counted", |t| {
        t.segments
            .get("eu.prod")
            .is_some_and(|s| s.agents_live == 1)
    })
    .await?;
    assert_eq!(t.phase_state, Some(PhaseState::Applying), "{t:?}");
    eu.set_acking(true);
    wait_trigger(c, &id, "baking once eu.prod acked", |t| {
        t.is_at("eu", PhaseState::Baking)
    })
    .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_that_leaves_cleanly_is_forgotten_at_once() -> anyhow::Result<()> {
    let env = CoordEnv::start().await?;
    let url = env.nats.url();
    let a = FakeAgent::start(&url, "dev-1", "dev", 100).await?;
    let _b = FakeAgent::start(&url, "dev-2", "dev", 100).await?;
    wait_agents(&env, &[("dev-1", true), ("dev-2", true)], "both agents").await?;
    a.leave().await?;
    wait_agents(&env, &[("dev-2", true)], "dev-1 gone after saying so").await?;
    // Its record goes next (leaving has no reply that promises durability:
    // wait for the delete before crashing).
    let kv = env
        .nats
        .client("observer")
        .await?
        .kv_existing(&Subjects::default().bucket(Bucket::Agents))
        .await?;
    phasegate_tests::wait_until("dev-1's record deleted", PATIENCE, || async {
        matches!(kv.get("dev-1").await, Ok(None))
    })
    .await?;
    // And a restart does not bring it back.
    let mut env = env;
    env.crash_and_restart().await?;
    let listed: Vec<String> = env
        .client
        .agents(None)
        .await?
        .into_iter()
        .map(|a| a.agent_id.to_string())
        .collect();
    assert_eq!(listed, vec!["dev-2".to_owned()]);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_report_for_another_segment_than_its_subject_is_ignored() -> anyhow::Result<()> {
    let env = CoordEnv::start().await?;
    let nats = env.nats.client("forger").await?;
    let report = AgentReport {
        agent_id: AgentId::new("evil")?,
        segment: Segment::new("prod-eu")?,
        tier: None,
        healthy: false,
        applied_revision: 0,
        stale: false,
        heartbeat_ms: 100,
        sent_at_ms: 0,
        blocked: Vec::new(),
        leaving: false,
        analyses: Vec::new(),
    };
    let subjects = Subjects::default();
    // Claims prod-eu on dev's subject: ignored. The same on its own
    // subject is heard, which shows the coordinator was listening.
    for segment in ["dev", "prod-eu"] {
        nats.nats()
            .publish(
                subjects.agent_report(&Segment::new(segment)?),
                encode(Encoding::MsgPack, &report)?.into(),
            )
            .await?;
        nats.flush().await;
    }
    wait_agents(&env, &[("evil", true)], "the report on its own subject").await?;
    let t = env.client.agents(Some(Segment::new("dev")?)).await?;
    assert!(t.is_empty(), "nothing was taken from dev's subject: {t:?}");
    Ok(())
}

/// A one-phase rollout on `dev` stuck in `applying`: its agent does not ack.
async fn applying_without_ack(
    env: &CoordEnv,
    apply_timeout_ms: u64,
) -> anyhow::Result<(FakeAgent, TriggerId)> {
    let dev = FakeAgent::start(&env.nats.url(), "dev-1", "dev", 100).await?;
    env.wait_live_agents(1).await?;
    dev.set_acking(false);
    let c = &env.client;
    put_pipeline(c, json!({"name": "p", "phases": [{"id": "one", "segments": ["dev"], "wait_ms": 60000, "apply_timeout_ms": apply_timeout_ms}]})).await?;
    let id = put_gate(c, json!({"name": "g", "pipeline": "p"}))
        .await?
        .trigger
        .expect("trigger")
        .id;
    wait_trigger(c, &id, "applying", |t| t.is_at("one", PhaseState::Applying)).await?;
    Ok((dev, id))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restored_agents_block_until_heard_after_a_restart() -> anyhow::Result<()> {
    let mut env = CoordEnv::start().await?;
    let (dev, id) = applying_without_ack(&env, 600_000).await?;
    let (url, c) = (env.nats.url(), env.client.clone());
    // The agent dies while the coordinator is down.
    dev.stop();
    env.crash_and_restart().await?;
    // Its liveness window passes in silence: it is known, unreachable...
    wait_agents(
        &env,
        &[("dev-1", false)],
        "dev-1 unreachable after the restart",
    )
    .await?;
    // ...and the phase still waits for it, rather than calling it applied.
    let t = wait_trigger(&c, &id, "counts after the restart", |t| {
        t.segments.get("dev").is_some_and(|s| s.agents_known == 1)
    })
    .await?;
    assert_eq!(t.phase_state, Some(PhaseState::Applying), "{t:?}");
    assert_eq!(t.segments["dev"].agents_applied, 0);
    // It comes back and acks: the phase is applied.
    let _dev = FakeAgent::start(&url, "dev-1", "dev", 100).await?;
    wait_trigger(&c, &id, "baking once dev-1 acked", |t| {
        t.is_at("one", PhaseState::Baking)
    })
    .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_apply_timeout_that_passed_while_down_does_not_pause_an_applied_phase()
-> anyhow::Result<()> {
    let mut env = CoordEnv::start().await?;
    let (dev, id) = applying_without_ack(&env, 1500).await?;
    let c = env.client.clone();
    env.coord.kill()?;
    // While the coordinator is down the agent applies, and the apply
    // timeout passes.
    dev.set_acking(true);
    let deadline = std::time::Instant::now() + std::time::Duration::from_millis(1600);
    wait_for("the apply timeout to pass", PATIENCE, || async {
        if std::time::Instant::now() >= deadline {
            Ok(())
        } else {
            Err("not yet")
        }
    })
    .await?;
    env.coord.restart()?;
    env.wait_ready().await?;
    let t = wait_trigger(&c, &id, "baking after the restart", |t| {
        t.phase_state != Some(PhaseState::Applying)
    })
    .await?;
    assert!(t.is_at("one", PhaseState::Baking), "{t:?}");
    assert!(
        !t.paused,
        "the timeout must not pause an applied phase: {t:?}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_entity_an_agent_cannot_apply_blocks_only_its_own_rollout() -> anyhow::Result<()> {
    let env = CoordEnv::start().await?;
    let c = &env.client;
    let dev = FakeAgent::start(&env.nats.url(), "dev-1", "dev", 100).await?;
    env.wait_live_agents(1).await?;
    dev.set_blocked(Some(("gate.broken", u64::MAX)));
    put_pipeline(c, json!({"name": "p", "phases": [{"id": "dev", "segments": ["dev"], "wait_ms": 60000, "health": {"on_unhealthy": "ignore"}}]})).await?;
    let broken = put_gate(c, json!({"name": "broken", "pipeline": "p"}))
        .await?
        .trigger
        .expect("trigger")
        .id;
    let fine = put_gate(c, json!({"name": "fine", "pipeline": "p"}))
        .await?
        .trigger
        .expect("trigger")
        .id;
    // The other entity's rollout goes on through the same agent...
    wait_trigger(c, &fine, "fine baking", |t| {
        t.is_at("dev", PhaseState::Baking)
    })
    .await?;
    // ...while the blocked one waits, with the reason listed.
    let t = c.trigger_get(broken.clone()).await?;
    assert_eq!(t.phase_state, Some(PhaseState::Applying), "{t:?}");
    assert_eq!(t.segments["dev"].agents_applied, 0);
    let listed = c.agents(None).await?;
    assert_eq!(listed[0].blocked[0].key, "gate.broken");
    dev.set_blocked(None);
    wait_trigger(c, &broken, "broken baking once unblocked", |t| {
        t.is_at("dev", PhaseState::Baking)
    })
    .await?;
    Ok(())
}

/// The resident memory of a process, in KiB.
fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| anyhow::anyhow!("no VmRSS for {pid}"))
}

/// §8: a flood of reports with invented agent ids leaves the coordinator's
/// memory and its writes bounded by its limits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_invented_agents_is_bounded() -> anyhow::Result<()> {
    let nats = phasegate_tests::NatsServer::start().await?;
    let url = nats.url();
    let dir = tempfile::tempdir()?;
    let conf = dir.path().join("coordinator.toml");
    std::fs::write(
        &conf,
        "metrics_listen = \"off\"\nmax_agents = 200\nmax_agents_per_segment = 50\nmax_segments = 10\n",
    )?;
    let coord = phasegate_tests::spawn_phasegate(
        "coordinator",
        &[
            "coordinator",
            "--nats-url",
            &url,
            "--config",
            conf.to_str().unwrap(),
        ],
    )?;
    let c = phasegate_client::PhasegateClient::connect(
        &url,
        "phasegate",
        std::time::Duration::from_secs(5),
    )
    .await?;
    wait_for("the coordinator", PATIENCE, || async {
        c.pipeline_list().await
    })
    .await?;
    // A real agent first, whose change after the flood marks its end.
    let real = FakeAgent::start(&url, "real-1", "real", 100).await?;
    phasegate_tests::wait_live_agents(&c, 1).await?;
    let before = rss_kib(coord.pid().expect("running"))?;
    let flood = nats.client("flood").await?;
    let subjects = Subjects::default();
    let n = 100_000u32;
    let started = std::time::Instant::now();
    for i in 0..n {
        let segment = Segment::new(format!("s{}", i % 50))?;
        let report = AgentReport {
            agent_id: AgentId::new(format!("evil-{i}"))?,
            segment: segment.clone(),
            tier: None,
            healthy: false,
            applied_revision: 0,
            stale: false,
            heartbeat_ms: 3_600_000,
            sent_at_ms: 0,
            blocked: Vec::new(),
            leaving: false,
            analyses: Vec::new(),
        };
        flood
            .nats()
            .publish(
                subjects.agent_report(&segment),
                encode(Encoding::MsgPack, &report)?.into(),
            )
            .await?;
    }
    flood.flush().await;
    let sent = started.elapsed();
    real.set_healthy(false);
    wait_for("the flood to be taken in", PATIENCE, || async {
        let a = c
            .agents(Some(Segment::new("real").map_err(|e| e.to_string())?))
            .await
            .map_err(|e| e.to_string())?;
        if a.first().is_some_and(|a| !a.healthy) {
            Ok(())
        } else {
            Err(format!("{a:?}"))
        }
    })
    .await?;
    let taken = started.elapsed();
    let listed = c.agents(None).await?.len();
    let after = rss_kib(coord.pid().expect("running"))?;
    let agents_kv = nats
        .client("inspector")
        .await?
        .kv_existing(&subjects.bucket(Bucket::Agents))
        .await?;
    let stored = agents_kv.entries().await?.len();
    println!(
        "flood: {n} reports sent in {sent:?}, taken in by {taken:?}; agents tracked {listed}, stored {stored}; coordinator RSS {before} KiB -> {after} KiB"
    );
    assert!(listed <= 200, "{listed} agents tracked");
    assert!(stored <= 200, "{stored} agents stored");
    assert!(
        after < before + 64 * 1024,
        "RSS grew from {before} to {after} KiB"
    );
    assert!(
        coord.log_tail(50).contains("limit is reached"),
        "{}",
        coord.log_tail(20)
    );
    Ok(())
}

/// A view that only moves counts is shown by `trigger.get` but written
/// nowhere: the entity's stored revision stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counts_that_merely_move_are_not_written() -> anyhow::Result<()> {
    let env = CoordEnv::start().await?;
    let c = &env.client;
    let url = env.nats.url();
    let _a = FakeAgent::start(&url, "dev-1", "dev", 100).await?;
    env.wait_live_agents(1).await?;
    let id = one_phase(
        c,
        json!({"id": "dev", "segments": ["dev"], "wait_ms": 3600000}),
    )
    .await?;
    wait_trigger(c, &id, "baking", |t| t.is_at("dev", PhaseState::Baking)).await?;
    let entities = env
        .nats
        .client("inspector")
        .await?
        .kv_existing(&Subjects::default().bucket(Bucket::Entities))
        .await?;
    let before = entities.get("gate.g").await?.expect("stored").revision;
    // A second agent joins and acks: counts move, nothing steps.
    let _b = FakeAgent::start(&url, "dev-2", "dev", 100).await?;
    let t = wait_trigger(c, &id, "two agents counted", |t| {
        t.segments
            .get("dev")
            .is_some_and(|s| s.agents_known == 2 && s.agents_applied == 2)
    })
    .await?;
    assert!(t.is_at("dev", PhaseState::Baking));
    let after = entities.get("gate.g").await?.expect("stored").revision;
    assert_eq!(before, after, "a counts-only view was written");
    Ok(())
}
