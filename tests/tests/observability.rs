//! Observability with the real binaries: one OpenTelemetry trace per
//! rollout across the CLI, the coordinator (also after `kill -9`) and the
//! agents, received by an OTLP/HTTP receiver of our own; and Prometheus
//! metrics that move as a rollout does.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failed expectation is a failed test

use std::collections::BTreeSet;
use std::process::Command;

use phasegate_client::TriggerAction;
use phasegate_proto::*;
use phasegate_tests::free_port;
use phasegate_tests::otlp::{OtlpReceiver, RecvSpan};
use phasegate_tests::rollout::wait_trigger;
use phasegate_tests::{AgentProc, CoordEnv, PATIENCE, phasegate_binary, wait_for};
use serde_json::json;

async fn until_spans(
    r: &OtlpReceiver,
    what: &str,
    cond: impl Fn(&[RecvSpan]) -> bool,
) -> anyhow::Result<Vec<RecvSpan>> {
    Ok(wait_for(what, PATIENCE, || async {
        let s = r.spans();
        if cond(&s) {
            Ok(s)
        } else {
            Err(format!("{} spans so far", s.len()))
        }
    })
    .await?)
}

fn of_trigger<'a>(spans: &'a [RecvSpan], id: &str) -> Vec<&'a RecvSpan> {
    spans
        .iter()
        .filter(|s| s.attrs.get("phasegate.trigger_id").map(String::as_str) == Some(id))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_trace_per_rollout_across_processes_and_restarts() -> anyhow::Result<()> {
    let otlp = OtlpReceiver::start().await?;
    let endpoint = otlp.endpoint();
    let envs = [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
        ("OTEL_BSP_SCHEDULE_DELAY", "50"),
    ];
    let mut env = CoordEnv::start_with("127.0.0.1:0", &envs).await?;
    let url = env.nats.url();
    let _dev = AgentProc::start_env(&url, "dev-1", "dev", &[], &envs).await?;
    env.client
        .pipeline_put(
            serde_json::from_value(json!({"name": "p", "phases": [
                {"id": "dev", "segments": ["dev"], "wait_ms": 100},
                {"id": "prod", "segments": ["prod"], "approval": {"required": true}}
            ]}))?,
            Actor::new("alice")?,
        )
        .await?;
    // The change comes from the CLI, whose span is the root of the trace.
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("g.toml");
    std::fs::write(&file, "name = \"traced\"\npipeline = \"p\"\n")?;
    let out = Command::new(phasegate_binary()?)
        .args(["gate", "put", "-f", file.to_str().unwrap(), "-o", "json"])
        .env("PHASEGATE_NATS_URL", &url)
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint)
        .output()?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let put: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    let id = TriggerId::new(put["trigger"]["id"].as_str().unwrap())?;
    wait_trigger(&env.client, &id, "awaiting approval of prod", |t| {
        t.phase_state == Some(PhaseState::AwaitingApproval)
    })
    .await?;

    let spans = until_spans(&otlp, "coordinator and agent spans of the trigger", |s| {
        let mine = of_trigger(s, id.as_str());
        mine.iter().any(|s| s.service == "phasegate-agent")
            && mine.iter().any(|s| s.name == "phase_applied")
    })
    .await?;
    let mine = of_trigger(&spans, id.as_str());
    let trace: BTreeSet<&str> = mine.iter().map(|s| s.trace_id.as_str()).collect();
    assert_eq!(trace.len(), 1, "one trace for the trigger: {trace:?}");
    let trace_id = *trace.iter().next().unwrap();
    // The CLI span is the root; the coordinator's command span its child.
    let cli = spans
        .iter()
        .find(|s| s.service == "phasegate-cli" && s.trace_id == trace_id)
        .expect("the CLI span");
    assert!(cli.parent_span_id.is_empty(), "the CLI span is the root");
    let command = spans
        .iter()
        .find(|s| {
            s.service == "phasegate-coordinator" && s.name == "gate.put" && s.trace_id == trace_id
        })
        .expect("the coordinator's command span");
    assert_eq!(command.parent_span_id, cli.span_id);
    let started = mine
        .iter()
        .find(|s| s.name == "trigger started")
        .expect("trigger span");
    assert_eq!(started.parent_span_id, command.span_id);
    assert_eq!(started.attrs["phasegate.entity"], "gate.traced");
    assert_eq!(
        started.attrs["phasegate.actor"],
        std::env::var("USER").unwrap_or_else(|_| "operator".into())
    );
    // Phase steps and publishes hang under the trigger's span.
    let publish = mine
        .iter()
        .filter(|s| s.name == "publish desired state")
        .collect::<Vec<_>>();
    assert!(!publish.is_empty());
    assert!(publish.iter().all(|p| p.parent_span_id == started.span_id));
    let applied = mine.iter().find(|s| s.name == "phase_applied").unwrap();
    assert_eq!(applied.attrs["phasegate.phase_id"], "dev");
    // The agent's apply is a child of a publish.
    let apply = mine
        .iter()
        .find(|s| s.service == "phasegate-agent")
        .unwrap();
    assert_eq!(apply.name, "apply");
    assert!(
        publish.iter().any(|p| p.span_id == apply.parent_span_id),
        "apply's parent is a publish span"
    );
    assert_eq!(apply.attrs["phasegate.segment"], "dev");
    assert_eq!(apply.attrs["phasegate.agent_id"], "dev-1");
    assert_eq!(apply.attrs["phasegate.phase_id"], "dev");

    // kill -9, restart: the trigger keeps its trace.
    env.coord.kill()?;
    env.coord.restart()?;
    env.wait_ready().await?;
    let t = env.client.trigger_get(id.clone()).await?;
    env.client
        .act(
            TriggerAction::Approve,
            id.clone(),
            t.current_phase_id.clone(),
            Actor::new("bob")?,
            None,
        )
        .await?;
    wait_trigger(&env.client, &id, "completed", |t| {
        t.status == TriggerStatus::Completed
    })
    .await?;
    let spans = until_spans(&otlp, "spans after the restart", |s| {
        of_trigger(s, id.as_str())
            .iter()
            .any(|s| s.name == "completed")
    })
    .await?;
    let mine = of_trigger(&spans, id.as_str());
    let action = mine
        .iter()
        .find(|s| s.name == "action approve")
        .expect("the action span");
    assert_eq!(action.trace_id, trace_id, "same trace after a restart");
    assert_eq!(action.attrs["phasegate.action"], "approve");
    assert_eq!(action.attrs["phasegate.actor"], "bob");
    let completed = mine.iter().find(|s| s.name == "completed").unwrap();
    assert_eq!(completed.trace_id, trace_id);
    assert_eq!(completed.parent_span_id, started.span_id);
    Ok(())
}

fn sample(text: &str, name_and_labels: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(name_and_labels) && l[name_and_labels.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_move_as_the_rollout_does() -> anyhow::Result<()> {
    let port = free_port()?;
    let listen = format!("127.0.0.1:{port}");
    let env = CoordEnv::start_with(&listen, &[]).await?;
    let dev = AgentProc::start(&env.nats.url(), "dev-1", "dev", &[]).await?;
    let addr: std::net::SocketAddr = listen.parse()?;
    let text = raw_get(addr, "/metrics").await?;
    assert!(
        text.contains("# TYPE phasegate_commands_total counter")
            || text.is_empty()
            || text.contains("phasegate_"),
        "{text}"
    );
    env.client
        .pipeline_put(
            serde_json::from_value(json!({"name": "p", "phases": [{"id": "dev", "segments": ["dev"], "wait_ms": 60000}]}))?,
            Actor::new("alice")?,
        )
        .await?;
    let r = env
        .client
        .entity_put(
            EntityKind::Gate,
            serde_json::from_value(json!({"name": "m", "pipeline": "p"}))?,
            Actor::new("carol")?,
            None,
            None,
        )
        .await?;
    let id = r.trigger.unwrap().id;
    wait_trigger(&env.client, &id, "baking", |t| {
        t.phase_state == Some(PhaseState::Baking)
    })
    .await?;
    let text = wait_for("the agent counted live", PATIENCE, || async {
        let t = raw_get(addr, "/metrics").await.map_err(|e| e.to_string())?;
        if sample(&t, "phasegate_agents_live{segment=\"dev\"}") == Some(1.0) {
            Ok(t)
        } else {
            Err(t)
        }
    })
    .await?;
    assert_eq!(
        sample(
            &text,
            "phasegate_triggers_active{phase_state=\"baking\",paused=\"false\"}"
        ),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            "phasegate_phase_transitions_total{type=\"phase_applied\"}"
        ),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        sample(&text, "phasegate_apply_latency_seconds_count"),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            "phasegate_commands_total{command=\"gate.put\",code=\"ok\"}"
        ),
        Some(1.0),
        "{text}"
    );
    env.client
        .act(
            TriggerAction::Pause,
            id.clone(),
            None,
            Actor::new("op")?,
            None,
        )
        .await?;
    let _ = env
        .client
        .act(
            TriggerAction::Pause,
            id.clone(),
            None,
            Actor::new("op")?,
            None,
        )
        .await;
    let text = raw_get(addr, "/metrics").await?;
    assert_eq!(
        sample(
            &text,
            "phasegate_triggers_active{phase_state=\"baking\",paused=\"true\"}"
        ),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            "phasegate_actions_total{action=\"pause\",result=\"ok\"}"
        ),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            "phasegate_actions_total{action=\"pause\",result=\"conflict\"}"
        ),
        Some(1.0),
        "{text}"
    );
    env.client
        .act(
            TriggerAction::Abort,
            id.clone(),
            None,
            Actor::new("op")?,
            None,
        )
        .await?;
    let text = raw_get(addr, "/metrics").await?;
    assert!(
        sample(
            &text,
            "phasegate_triggers_active{phase_state=\"baking\",paused=\"true\"}"
        )
        .is_none(),
        "{text}"
    );
    assert_eq!(
        sample(&text, "phasegate_phase_transitions_total{type=\"aborted\"}"),
        Some(1.0)
    );

    // The agent counts its evaluations and exposes its sync state.
    wait_for("the abort applied at dev", PATIENCE, || async {
        let v = dev
            .check_gate("m", json!({"user_id": "u"}))
            .await
            .map_err(|e| e.to_string())?;
        if v["reason"] == "unknown" {
            Ok(())
        } else {
            Err(v.to_string())
        }
    })
    .await?;
    let key = "phasegate_agent_evaluations_total{segment=\"dev\",kind=\"gate\",reason=\"unknown\",source=\"base\"}";
    let before = sample(&raw_get(dev.addr, "/metrics").await?, key).unwrap_or(0.0);
    for _ in 0..3 {
        dev.check_gate("m", json!({"user_id": "u"})).await?;
    }
    let text = raw_get(dev.addr, "/metrics").await?;
    assert_eq!(sample(&text, key), Some(before + 3.0), "{text}");
    assert_eq!(
        sample(
            &text,
            "phasegate_agent_stale{segment=\"dev\",agent_id=\"dev-1\"}"
        ),
        Some(0.0),
        "{text}"
    );
    assert!(
        sample(
            &text,
            "phasegate_agent_applied_revision{segment=\"dev\",agent_id=\"dev-1\"}"
        )
        .unwrap_or(0.0)
            >= 2.0
    );
    Ok(())
}

/// GET returning the raw body text.
async fn raw_get(addr: std::net::SocketAddr, path: &str) -> anyhow::Result<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await?;
    s.write_all(format!("GET {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n").as_bytes())
        .await?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await?;
    let text = String::from_utf8(buf)?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    anyhow::ensure!(text.starts_with("HTTP/1.1 200"), "GET {path}: {text}");
    Ok(body)
}
