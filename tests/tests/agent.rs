//! The agent (SPEC.md §5) as a real process against a real coordinator and
//! nats-server: phases reaching it with the right answers, percentages and
//! conditions, catching up after being down, serving from disk when NATS is
//! unreachable (and saying it is stale), a corrupt state file, health
//! probes reaching the coordinator, and malformed HTTP requests.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failed expectation is a failed test

use phasegate_client::TriggerAction;
use phasegate_proto::*;
use phasegate_tests::NatsServerExt as _;
use phasegate_tests::http::HealthEndpoint;
use phasegate_tests::rollout::{actor, put_gate, put_pipeline, wait_trigger};
use phasegate_tests::{AgentProc, CoordEnv, PATIENCE, wait_for, wait_until};
use serde_json::{Value, json};

/// Polls `check_gate` until `cond` holds on the answer.
async fn until_answer(
    a: &AgentProc,
    gate: &str,
    user: Value,
    what: &str,
    cond: impl Fn(&Value) -> bool,
) -> anyhow::Result<Value> {
    Ok(wait_for(what, PATIENCE, || async {
        let v = a
            .check_gate(gate, user.clone())
            .await
            .map_err(|e| e.to_string())?;
        if cond(&v) { Ok(v) } else { Err(v.to_string()) }
    })
    .await?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn phases_reach_agents_with_percentages_and_conditions() -> anyhow::Result<()> {
    let env = CoordEnv::start().await?;
    let c = &env.client;
    let url = env.nats.url();
    let dev = AgentProc::start(&url, "dev-1", "dev", &["--tier", "development"]).await?;
    let eu = AgentProc::start(&url, "eu-1", "prod-eu", &[]).await?;
    env.wait_live_agents(2).await?;
    // Base version everywhere first, without a pipeline.
    put_gate(
        c,
        json!({"name": "checkout", "rules": [{"id": "nobody", "pass_percentage": 0}]}),
    )
    .await?;
    until_answer(
        &dev,
        "checkout",
        json!({"user_id": "u1"}),
        "base version 1 at dev",
        |v| v["version"] == 1,
    )
    .await?;
    put_pipeline(c, json!({"name": "p", "phases": [
        {"id": "dev-half", "segments": ["dev"], "pass_percentage": 50},
        {"id": "eu-de", "segments": ["prod-*"], "conditions": [{"field": "country", "op": "any", "values": ["DE"]}], "approval": {"required": true}, "wait_ms": 60000}
    ]}))
    .await?;
    let r = put_gate(c, json!({"name": "checkout", "pipeline": "p", "rules": [{"id": "all", "pass_percentage": 100}]})).await?;
    let t = r.trigger.expect("trigger");
    wait_trigger(c, &t.id, "dev applied", |t| {
        t.current_phase_id.as_ref().map(PhaseId::as_str) == Some("eu-de")
    })
    .await?;
    // At dev: units in the phase's 50% get version 2 from the snapshot, the rest the base.
    let salt = r.spec.effective_salt().to_owned();
    let (mut new, mut old) = (0, 0);
    for i in 0..40 {
        let unit = format!("user-{i}");
        let v = dev.check_gate("checkout", json!({"user_id": unit})).await?;
        let inside = phasegate_eval::passes(50.0, phasegate_eval::bucket(&salt, &unit));
        if inside {
            new += 1;
            assert_eq!(
                (
                    v["version"].clone(),
                    v["value"].clone(),
                    v["reason"].clone()
                ),
                (json!(2), json!(true), json!("rule:all")),
                "{unit}: {v}"
            );
            assert_eq!(v["trigger_id"], json!(t.id.as_str()));
            assert_eq!(v["phase_id"], json!("dev-half"));
        } else {
            old += 1;
            assert_eq!(
                (
                    v["version"].clone(),
                    v["value"].clone(),
                    v["reason"].clone()
                ),
                (json!(1), json!(false), json!("rule:nobody")),
                "{unit}: {v}"
            );
            assert_eq!(v["trigger_id"], Value::Null);
        }
        assert_eq!(v["stale"], json!(false));
    }
    assert!(
        new > 5 && old > 5,
        "both sides of the split were exercised: {new}/{old}"
    );
    // prod-eu is not opened yet.
    let v = eu
        .check_gate("checkout", json!({"user_id": "x", "country": "DE"}))
        .await?;
    assert_eq!(v["version"], json!(1));
    let (_, list) = dev.http.get(dev.addr, "/v1/entities").await?;
    assert_eq!(
        list,
        json!([{"kind": "gate", "name": "checkout", "base_version": 1, "rollout_version": 2, "trigger_id": t.id.as_str(), "phase_id": "dev-half"}])
    );
    // Approve the EU phase: only German users there.
    let t = c.trigger_get(t.id.clone()).await?;
    c.act(
        TriggerAction::Approve,
        t.id.clone(),
        t.current_phase_id.clone(),
        actor("bob"),
        None,
    )
    .await?;
    until_answer(
        &eu,
        "checkout",
        json!({"user_id": "x", "country": "de"}),
        "a German user on the snapshot",
        |v| v["version"] == 2,
    )
    .await?;
    let v = eu
        .check_gate("checkout", json!({"user_id": "x", "country": "FR"}))
        .await?;
    assert_eq!(v["version"], json!(1), "{v}");
    // The bake would hold the version this long; skip it to complete.
    c.act(
        TriggerAction::Skip,
        t.id.clone(),
        t.current_phase_id.clone(),
        actor("bob"),
        None,
    )
    .await?;
    // Completed: version 2 is the base at both, no trigger in answers.
    wait_trigger(c, &t.id, "completed", |t| {
        t.status == TriggerStatus::Completed
    })
    .await?;
    let v = until_answer(
        &eu,
        "checkout",
        json!({"user_id": "x", "country": "FR"}),
        "base version 2",
        |v| v["version"] == 2,
    )
    .await?;
    assert_eq!(v["trigger_id"], Value::Null);
    // Unknown entities.
    let v = dev.check_gate("nope", json!({})).await?;
    assert_eq!(
        v,
        json!({"gate": "nope", "value": false, "version": 0, "reason": "unknown", "trigger_id": null, "phase_id": null, "stale": false})
    );
    let v = dev.get_config("nope", json!({})).await?;
    assert_eq!(
        (v["value"].clone(), v["reason"].clone()),
        (json!({}), json!("unknown"))
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configs_and_the_tier_reach_the_agent() -> anyhow::Result<()> {
    let env = CoordEnv::start().await?;
    let c = &env.client;
    let dev = AgentProc::start(&env.nats.url(), "dev-1", "dev", &["--tier", "development"]).await?;
    c.entity_put(
        EntityKind::Config,
        serde_json::from_value(json!({"name": "limits", "default_value": {"n": 1},
            "rules": [{"id": "devs", "pass_percentage": 100, "conditions": [{"field": "tier", "op": "any", "values": ["development"]}], "value": {"n": 9}}]}))?,
        actor("a"),
        None,
        None,
    )
    .await?;
    let v = wait_for("the config at dev", PATIENCE, || async {
        let v = dev
            .get_config("limits", json!({"user_id": "u"}))
            .await
            .map_err(|e| e.to_string())?;
        if v["version"] == 1 {
            Ok(v)
        } else {
            Err(v.to_string())
        }
    })
    .await?;
    assert_eq!(
        (v["value"].clone(), v["reason"].clone()),
        (json!({"n": 9}), json!("rule:devs"))
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_down_during_a_phase_catches_up() -> anyhow::Result<()> {
    let env = CoordEnv::start().await?;
    let c = &env.client;
    let mut dev = AgentProc::start(&env.nats.url(), "dev-1", "dev", &[]).await?;
    put_pipeline(
        c,
        json!({"name": "p", "phases": [
            {"id": "one", "segments": ["staging"], "wait_ms": 60000},
            {"id": "two", "segments": ["dev"], "wait_ms": 60000}
        ]}),
    )
    .await?;
    let r = put_gate(c, json!({"name": "g", "pipeline": "p"})).await?;
    let t = r.trigger.expect("trigger");
    wait_trigger(c, &t.id, "phase one baking", |t| {
        t.phase_state == Some(PhaseState::Baking)
    })
    .await?;
    dev.proc.kill()?;
    // dev's agent is down when phase two opens dev.
    let t = c
        .act(
            TriggerAction::Skip,
            t.id.clone(),
            t.current_phase_id.clone(),
            actor("op"),
            None,
        )
        .await?;
    assert_eq!(
        t.current_phase_id.as_ref().map(PhaseId::as_str),
        Some("two")
    );
    dev.proc.restart()?;
    dev.wait_serving().await?;
    let v = until_answer(
        &dev,
        "g",
        json!({"user_id": "u"}),
        "the missed phase applied",
        |v| v["phase_id"] == "two",
    )
    .await?;
    assert_eq!(v["version"], json!(1));
    // And the coordinator sees its ack: phase two bakes.
    wait_trigger(c, &t.id, "phase two baking", |t| {
        t.phase_state == Some(PhaseState::Baking) && t.segments["dev"].agents_applied == 1
    })
    .await?;
    // A rollback is just a newer revision.
    c.act(TriggerAction::Abort, t.id.clone(), None, actor("op"), None)
        .await?;
    until_answer(
        &dev,
        "g",
        json!({"user_id": "u"}),
        "rolled back to absent",
        |v| v["reason"] == "unknown",
    )
    .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarted_without_nats_serves_from_disk_and_turns_stale() -> anyhow::Result<()> {
    let mut env = CoordEnv::start().await?;
    let c = &env.client;
    let mut dev = AgentProc::start(
        &env.nats.url(),
        "dev-1",
        "dev",
        &["--stale-after-ms", "400"],
    )
    .await?;
    put_gate(
        c,
        json!({"name": "g", "rules": [{"id": "all", "pass_percentage": 100}]}),
    )
    .await?;
    until_answer(&dev, "g", json!({"user_id": "u"}), "applied", |v| {
        v["version"] == 1
    })
    .await?;
    env.coord.kill()?;
    env.nats.kill()?;
    dev.proc.kill()?;
    dev.proc.restart()?;
    dev.wait_serving().await?;
    // Straight from disk, before NATS exists again.
    let v = dev.check_gate("g", json!({"user_id": "u"})).await?;
    assert_eq!(
        (v["value"].clone(), v["version"].clone()),
        (json!(true), json!(1)),
        "{v}"
    );
    let h = dev.healthz().await?;
    assert_eq!(h["connected"], json!(false));
    until_answer(
        &dev,
        "g",
        json!({"user_id": "u"}),
        "stale after the bound",
        |v| v["stale"] == true,
    )
    .await?;
    let h = dev.healthz().await?;
    assert_eq!(h["stale"], json!(true));
    // NATS back: in sync again.
    env.nats.restart().await?;
    wait_until("the agent to be in sync again", PATIENCE, || async {
        dev.healthz()
            .await
            .map(|h| h["stale"] == false && h["connected"] == true)
            .unwrap_or(false)
    })
    .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_state_file_is_never_served() -> anyhow::Result<()> {
    let mut env = CoordEnv::start().await?;
    let c = &env.client;
    let mut dev = AgentProc::start(&env.nats.url(), "dev-1", "dev", &[]).await?;
    put_gate(
        c,
        json!({"name": "g", "rules": [{"id": "all", "pass_percentage": 100}]}),
    )
    .await?;
    until_answer(&dev, "g", json!({"user_id": "u"}), "applied", |v| {
        v["version"] == 1
    })
    .await?;
    dev.proc.kill()?;
    // Half-written: the tail of the gate's record is lost (the last record
    // of the journal, in the current entities directory).
    let file = std::fs::read_dir(&dev.state_dir)?
        .filter_map(Result::ok)
        .map(|e| e.path().join("journal.bin"))
        .find(|p| p.exists())
        .expect("the journal");
    let bytes = std::fs::read(&file)?;
    std::fs::write(&file, &bytes[..bytes.len() / 2])?;
    env.coord.kill()?;
    env.nats.kill()?;
    dev.proc.restart()?;
    dev.wait_serving().await?;
    let v = dev.check_gate("g", json!({"user_id": "u"})).await?;
    assert_eq!(
        v["reason"],
        json!("unknown"),
        "a corrupt file is not served: {v}"
    );
    assert_eq!(v["stale"], json!(true));
    let moved = std::fs::read_dir(&dev.state_dir)?
        .filter_map(Result::ok)
        .any(|e| e.file_name().to_string_lossy().contains("corrupt"));
    assert!(moved, "the corrupt file is kept aside for inspection");
    let h = dev.healthz().await?;
    assert_eq!(
        h["last_sync_ms"],
        Value::Null,
        "with an entity lost, the agent no longer knows itself in sync: {h}"
    );
    wait_until("the agent to report the corrupt file", PATIENCE, || async {
        dev.proc.log_tail(200).contains("corrupt")
    })
    .await?;
    // Once NATS is back it catches up from the coordinator's published state.
    env.nats.restart().await?;
    until_answer(&dev, "g", json!({"user_id": "u"}), "state recovered", |v| {
        v["version"] == 1
    })
    .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_health_url_reaches_the_coordinator() -> anyhow::Result<()> {
    let env = CoordEnv::start().await?;
    let c = &env.client;
    let probe = HealthEndpoint::start().await?;
    let url = probe.url();
    let _eu = AgentProc::start(&env.nats.url(), "eu-1", "prod-eu", &["--health-url", &url]).await?;
    env.wait_live_agents(1).await?;
    put_pipeline(
        c,
        json!({"name": "p", "phases": [{"id": "eu", "segments": ["prod-eu"], "wait_ms": 60000}]}),
    )
    .await?;
    let r = put_gate(c, json!({"name": "g", "pipeline": "p"})).await?;
    let id = r.trigger.expect("trigger").id;
    wait_trigger(c, &id, "baking", |t| {
        t.phase_state == Some(PhaseState::Baking)
    })
    .await?;
    probe.set_status(503);
    let t = wait_trigger(c, &id, "paused by health", |t| {
        t.paused_reason == Some(PausedReason::Health)
    })
    .await?;
    assert_eq!(t.segments["prod-eu"].agents_healthy, 0);
    let agents = c.agents(Some(Segment::new("prod-eu")?)).await?;
    assert!(!agents[0].healthy);
    probe.set_status(204);
    wait_trigger(c, &id, "resumed", |t| !t.paused).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_http_requests_get_400_or_413() -> anyhow::Result<()> {
    let env = CoordEnv::start().await?;
    let dev = AgentProc::start(&env.nats.url(), "dev-1", "dev", &[]).await?;
    let big = format!(
        r#"{{"gate": "g", "user": {{"custom": {{"x": "{}"}}}}}}"#,
        "y".repeat(100 * 1024)
    );
    let cases: Vec<(&str, &str, Vec<u8>)> = vec![
        ("bad json", "/v1/check_gate", b"{\"gate\": ".to_vec()),
        ("not an object", "/v1/check_gate", b"[]".to_vec()),
        (
            "missing name",
            "/v1/check_gate",
            br#"{"user": {}}"#.to_vec(),
        ),
        (
            "invalid name",
            "/v1/check_gate",
            br#"{"gate": "Not Valid"}"#.to_vec(),
        ),
        ("wrong type", "/v1/get_config", br#"{"config": 7}"#.to_vec()),
        (
            "missing config name",
            "/v1/get_config",
            br#"{"gate": "g"}"#.to_vec(),
        ),
        ("oversized", "/v1/check_gate", big.into_bytes()),
    ];
    for (what, path, body) in cases {
        let (status, v) = dev.http.call("POST", dev.addr, path, body).await?;
        let want = if what == "oversized" { 413 } else { 400 };
        assert_eq!(status, want, "{what}: {v}");
        assert_eq!(v["error"]["code"], json!("invalid"), "{what}: {v}");
        assert!(
            v["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
            "{what}"
        );
    }
    // A null user is a user with no fields.
    let (status, v) = dev
        .http
        .call(
            "POST",
            dev.addr,
            "/v1/check_gate",
            br#"{"gate": "g", "user": null}"#.to_vec(),
        )
        .await?;
    assert_eq!((status, v["reason"].clone()), (200, json!("unknown")));
    // User fields of any shape are simply evaluated.
    let v = dev
        .check_gate(
            "g",
            json!({"user_id": [1], "email": {"a": 1}, "custom": "x", "country": null}),
        )
        .await?;
    assert_eq!(v["reason"], json!("unknown"));
    let (status, _) = dev.http.get(dev.addr, "/v2/nothing").await?;
    assert_eq!(status, 404);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stops_cleanly_even_without_nats() -> anyhow::Result<()> {
    // Nothing listens on port 1: the agent serves from disk and never connects.
    let mut a = AgentProc::start("nats://127.0.0.1:1", "lonely-1", "dev", &[]).await?;
    let status = a.proc.terminate(std::time::Duration::from_secs(5)).await?;
    assert!(status.success(), "{status:?}");
    Ok(())
}

type Reports = std::pin::Pin<Box<dyn futures_util::Stream<Item = (String, bytes::Bytes)> + Send>>;

/// Reads agent reports until one satisfies `cond`; returns it.
async fn report_where(
    reports: &mut Reports,
    what: &str,
    cond: impl Fn(&AgentReport) -> bool,
) -> anyhow::Result<AgentReport> {
    use futures_util::StreamExt;
    let deadline = tokio::time::Instant::now() + PATIENCE;
    let mut last = None;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let next = tokio::time::timeout(left, reports.next()).await;
        let Ok(Some((_, payload))) = next else {
            anyhow::bail!("no report where {what} within {PATIENCE:?}; last seen: {last:?}");
        };
        let r = decode::<AgentReport>(Encoding::MsgPack, &payload)?;
        if cond(&r) {
            return Ok(r);
        }
        last = Some(r);
    }
}

/// A desired-state record of gate `name` whose base has `version`.
fn desired_gate(name: &str, version: u64) -> anyhow::Result<bytes::Bytes> {
    let mut spec = EntitySpec::new(EntityKind::Gate, EntityName::new(name)?);
    spec.version = version;
    let d = DesiredEntity {
        kind: EntityKind::Gate,
        name: EntityName::new(name)?,
        base: Some(spec),
        rollout: None,
    };
    Ok(encode(Encoding::MsgPack, &d)?.into())
}

/// The `blocked` list of `/healthz` as (key, revision) pairs.
async fn healthz_blocked(a: &AgentProc) -> anyhow::Result<Vec<(String, u64)>> {
    let h = a.healthz().await?;
    let list = h["blocked"]
        .as_array()
        .ok_or_else(|| anyhow::anyhow!("no blocked list in {h}"))?;
    Ok(list
        .iter()
        .map(|b| {
            (
                b["key"].as_str().unwrap_or_default().to_owned(),
                b["revision"].as_u64().unwrap_or_default(),
            )
        })
        .collect())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_revision_blocks_its_key_only_and_is_remembered() -> anyhow::Result<()> {
    let mut nats = phasegate_tests::NatsServer::start().await?;
    let client = nats.client("test").await?;
    let subjects = Subjects::default();
    let kv = client
        .kv(
            &subjects.bucket(Bucket::Desired),
            phasegate_bus::BucketOptions::default(),
        )
        .await?;
    let mut dev = AgentProc::start(&nats.url(), "dev-1", "dev", &[]).await?;
    let mut reports = client
        .subscribe_payloads(subjects.agent_report(&Segment::new("dev")?))
        .await?;
    kv.put("gate.g", desired_gate("g", 1)?).await?;
    until_answer(&dev, "g", json!({}), "version 1 applied", |v| {
        v["version"] == 1
    })
    .await?;
    // A value this agent cannot read (a newer writer, a bug), then a good
    // change of another key.
    let r2 = kv
        .put("gate.g", bytes::Bytes::from_static(b"\xc1 not msgpack"))
        .await?;
    let r3 = kv.put("gate.h", desired_gate("h", 1)?).await?;
    // The watermark moves past the unreadable revision (gate.h is acked),
    // and the key is reported blocked at that revision, with why.
    let r = report_where(&mut reports, "gate.h acked and gate.g blocked", |r| {
        r.applied_revision >= r3 && !r.blocked.is_empty()
    })
    .await?;
    assert_eq!(r.blocked.len(), 1, "{r:?}");
    assert_eq!(
        (r.blocked[0].key.as_str(), r.blocked[0].revision),
        ("gate.g", r2)
    );
    assert!(r.blocked[0].error.contains("decode"), "{r:?}");
    assert_eq!(
        healthz_blocked(&dev).await?,
        vec![("gate.g".to_owned(), r2)]
    );
    // It keeps serving the last good version, never the unreadable one.
    let v = dev.check_gate("g", json!({})).await?;
    assert_eq!(v["version"], json!(1), "{v}");
    let v = dev.check_gate("h", json!({})).await?;
    assert_eq!(v["version"], json!(1), "{v}");
    // Restarted without NATS, it still says so (the block is on disk).
    nats.kill()?;
    dev.proc.restart()?;
    dev.wait_serving().await?;
    assert_eq!(
        healthz_blocked(&dev).await?,
        vec![("gate.g".to_owned(), r2)]
    );
    assert_eq!(dev.check_gate("g", json!({})).await?["version"], json!(1));
    // A readable revision of the same key unblocks it.
    nats.restart().await?;
    let r4 = kv.put("gate.g", desired_gate("g", 4)?).await?;
    report_where(&mut reports, "gate.g unblocked and acked", |r| {
        r.applied_revision >= r4 && r.blocked.is_empty()
    })
    .await?;
    until_answer(&dev, "g", json!({}), "version 4 applied", |v| {
        v["version"] == 4
    })
    .await?;
    assert!(healthz_blocked(&dev).await?.is_empty());
    // A server restart keeps the bucket's generation: no rebuild.
    assert!(
        !dev.proc.log_tail(1_000).contains("created again"),
        "{}",
        dev.proc.log_tail(50)
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recreated_desired_bucket_is_read_afresh() -> anyhow::Result<()> {
    let nats = phasegate_tests::NatsServer::start().await?;
    let client = nats.client("test").await?;
    let subjects = Subjects::default();
    let bucket = subjects.bucket(Bucket::Desired);
    let kv = client
        .kv(&bucket, phasegate_bus::BucketOptions::default())
        .await?;
    let dev = AgentProc::start(&nats.url(), "dev-1", "dev", &[]).await?;
    let mut reports = client
        .subscribe_payloads(subjects.agent_report(&Segment::new("dev")?))
        .await?;
    kv.put("gate.old", desired_gate("old", 1)?).await?;
    let mut high = 0;
    for version in 1..=5 {
        high = kv.put("gate.g", desired_gate("g", version)?).await?;
    }
    report_where(&mut reports, "the old bucket's revisions acked", |r| {
        r.applied_revision == high
    })
    .await?;
    until_answer(&dev, "g", json!({}), "version 5 applied", |v| {
        v["version"] == 5
    })
    .await?;
    // Data loss, or an operator: the bucket is deleted and created again,
    // and its revisions start over, far below what the agent has seen.
    client.jetstream().delete_key_value(&bucket).await?;
    let kv = client
        .kv(&bucket, phasegate_bus::BucketOptions::default())
        .await?;
    let low = kv.put("gate.g", desired_gate("g", 7)?).await?;
    assert!(low < high, "revisions restarted: {low} < {high}");
    until_answer(
        &dev,
        "g",
        json!({}),
        "the new bucket's version served",
        |v| v["version"] == 7,
    )
    .await?;
    report_where(&mut reports, "the new, low revision acked", |r| {
        r.applied_revision == low
    })
    .await?;
    // What only the old bucket held is gone.
    let v = dev.check_gate("old", json!({})).await?;
    assert_eq!(v["reason"], json!("unknown"), "{v}");
    // And it follows the new bucket from there.
    let next = kv.put("gate.g", desired_gate("g", 8)?).await?;
    until_answer(&dev, "g", json!({}), "version 8 served", |v| {
        v["version"] == 8
    })
    .await?;
    report_where(&mut reports, "the next revision acked", |r| {
        r.applied_revision == next
    })
    .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopping_agent_says_it_is_leaving() -> anyhow::Result<()> {
    let nats = phasegate_tests::NatsServer::start().await?;
    let client = nats.client("test").await?;
    let subjects = Subjects::default();
    let mut reports = client
        .subscribe_payloads(subjects.agent_report(&Segment::new("dev")?))
        .await?;
    let mut dev = AgentProc::start(&nats.url(), "dev-1", "dev", &[]).await?;
    report_where(&mut reports, "a heartbeat", |r| {
        r.agent_id.as_str() == "dev-1" && !r.leaving
    })
    .await?;
    let status = dev.proc.terminate(PATIENCE).await?;
    assert!(status.success(), "{status:?}");
    let r = report_where(&mut reports, "the leaving report", |r| r.leaving).await?;
    assert_eq!(r.agent_id.as_str(), "dev-1");
    Ok(())
}

/// A health endpoint the test steers: answers `status` after `delay_ms`,
/// and the next `bad_next` requests slowly (after `bad_delay_ms`); counts
/// the requests it has taken.
struct Probe {
    addr: std::net::SocketAddr,
    status: std::sync::Arc<std::sync::atomic::AtomicU16>,
    delay_ms: std::sync::Arc<std::sync::atomic::AtomicU64>,
    bad_next: std::sync::Arc<std::sync::atomic::AtomicU64>,
    taken: std::sync::Arc<std::sync::atomic::AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

const BAD_DELAY: std::time::Duration = std::time::Duration::from_millis(1_000);

impl Probe {
    async fn start() -> anyhow::Result<Self> {
        use std::sync::Arc;
        use std::sync::atomic::{AtomicU16, AtomicU64, Ordering};
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let status = Arc::new(AtomicU16::new(200));
        let delay_ms = Arc::new(AtomicU64::new(0));
        let bad_next = Arc::new(AtomicU64::new(0));
        let taken = Arc::new(AtomicU64::new(0));
        let (s, d, b, t) = (
            status.clone(),
            delay_ms.clone(),
            bad_next.clone(),
            taken.clone(),
        );
        let task = tokio::spawn(async move {
            while let Ok((mut sock, _)) = listener.accept().await {
                // Decided when the request is taken, counted after.
                let bad = b
                    .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                    .is_ok();
                let code = s.load(Ordering::SeqCst);
                let delay = if bad {
                    BAD_DELAY
                } else {
                    std::time::Duration::from_millis(d.load(Ordering::SeqCst))
                };
                t.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let mut buf = [0u8; 1024];
                    let _ = sock.read(&mut buf).await;
                    // The fault under test: a slow service, not a wait of the test.
                    tokio::time::sleep(delay).await;
                    let reply = format!(
                        "HTTP/1.1 {code} X\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                    );
                    let _ = sock.write_all(reply.as_bytes()).await;
                    let _ = sock.shutdown().await;
                });
            }
        });
        Ok(Self {
            addr,
            status,
            delay_ms,
            bad_next,
            taken,
            task,
        })
    }

    fn url(&self) -> String {
        format!("http://{}/health", self.addr)
    }

    fn taken(&self) -> u64 {
        self.taken.load(std::sync::atomic::Ordering::SeqCst)
    }
}

impl Drop for Probe {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Reads reports until the probe has taken `n` requests; every report
/// read must say healthy.
async fn healthy_until_taken(reports: &mut Reports, probe: &Probe, n: u64) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while probe.taken() < n {
        let r = report_where(reports, "any report", |_| true).await?;
        assert!(
            r.healthy,
            "turned unhealthy after {} probes: {r:?}",
            probe.taken()
        );
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "the probe took {} requests, expected {n}",
            probe.taken()
        );
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probes_flapping_once_do_not_make_an_agent_unhealthy() -> anyhow::Result<()> {
    use std::sync::atomic::Ordering;
    let nats = phasegate_tests::NatsServer::start().await?;
    let client = nats.client("test").await?;
    let subjects = Subjects::default();
    let mut reports = client
        .subscribe_payloads(subjects.agent_report(&Segment::new("prod-eu")?))
        .await?;
    let probe = Probe::start().await?;
    let url = probe.url();
    let _eu = AgentProc::start(
        &nats.url(),
        "eu-1",
        "prod-eu",
        &[
            "--health-url",
            &url,
            "--probe-timeout-ms",
            "400",
            "--unhealthy-after",
            "3",
            "--healthy-after",
            "2",
        ],
    )
    .await?;
    report_where(&mut reports, "a healthy report", |r| r.healthy).await?;
    // Probes slower than the heartbeat (100 ms) but within their own
    // timeout pass.
    probe.delay_ms.store(200, Ordering::SeqCst);
    let n = probe.taken();
    healthy_until_taken(&mut reports, &probe, n + 4).await?;
    probe.delay_ms.store(0, Ordering::SeqCst);
    // Two rounds in a row time out: fewer than three, still healthy.
    probe.bad_next.store(2, Ordering::SeqCst);
    let n = probe.taken();
    healthy_until_taken(&mut reports, &probe, n + 2 + 3).await?;
    // Failing for good: unhealthy, but only after three failed rounds.
    probe.status.store(503, Ordering::SeqCst);
    let n = probe.taken();
    report_where(&mut reports, "an unhealthy report", |r| !r.healthy).await?;
    let failed = probe.taken() - n;
    assert!(failed >= 3, "unhealthy after {failed} failed probes");
    // Back: healthy again after two passing rounds.
    probe.status.store(200, Ordering::SeqCst);
    let n = probe.taken();
    report_where(&mut reports, "a healthy report again", |r| r.healthy).await?;
    let passed = probe.taken() - n;
    assert!(passed >= 2, "healthy after {passed} passing probes");
    Ok(())
}
