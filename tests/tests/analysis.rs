//! Metric-gated phases end to end (SPEC.md §3 `Analysis`), with real
//! parts only: nats-server, the coordinator and agents as processes, and a
//! **real Prometheus** (Debian's package, installed by
//! `scripts/install-prometheus.sh` through `make tools`) started on a free
//! port with its own data directory, scraping every second a small
//! exporter whose values the test sets.
//!
//! Shown: a passing error-rate analysis lets its phase complete and stops
//! with the trigger; a value over the threshold pauses the rollout and its
//! recovery resumes it; with `abort`, every segment goes back to the old
//! version; inconclusive results (query error, no sample, no
//! `--prometheus-url`, Prometheus down) fail the analysis only at
//! `inconclusive_limit`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failed expectation is a failed test

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use phasegate_client::TriggerAction;
use phasegate_proto::*;
use phasegate_tests::http::Http;
use phasegate_tests::rollout::{actor, put_gate, put_pipeline, wait_trigger};
use phasegate_tests::{
    AgentProc, ChildProcess, CoordEnv, PATIENCE, free_port, phasegate_binary, wait_for, wait_until,
};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The variable naming the Prometheus binary; unset, `prometheus` on the
/// `PATH` (where Debian's package puts it).
const PROMETHEUS_ENV: &str = "PHASEGATE_PROMETHEUS";

/// How long Prometheus may take to start on a loaded 2-core machine.
const PROMETHEUS_START: Duration = Duration::from_secs(30);

// ------------------------------------------------------------ the exporter

/// A `/metrics` endpoint serving `app_error_ratio{segment=…}` with values
/// the test sets, counting the scrapes it answers.
struct Exporter {
    addr: SocketAddr,
    values: Arc<Mutex<BTreeMap<String, f64>>>,
    scrapes: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl Exporter {
    async fn start(values: &[(&str, f64)]) -> anyhow::Result<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let values = Arc::new(Mutex::new(
            values
                .iter()
                .map(|(s, v)| ((*s).to_owned(), *v))
                .collect::<BTreeMap<_, _>>(),
        ));
        let scrapes = Arc::new(AtomicU64::new(0));
        let (vals, count) = (values.clone(), scrapes.clone());
        let task = tokio::spawn(async move {
            while let Ok((mut sock, _)) = listener.accept().await {
                let (vals, count) = (vals.clone(), count.clone());
                tokio::spawn(async move {
                    // The request head; its content does not matter.
                    let mut head = Vec::new();
                    let mut buf = [0u8; 1024];
                    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                        match sock.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => head.extend_from_slice(&buf[..n]),
                        }
                    }
                    let mut body = String::from("# TYPE app_error_ratio gauge\n");
                    for (segment, v) in vals.lock().unwrap().iter() {
                        body.push_str(&format!("app_error_ratio{{segment=\"{segment}\"}} {v}\n"));
                    }
                    let reply = format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: text/plain; version=0.0.4\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    if sock.write_all(reply.as_bytes()).await.is_ok() {
                        count.fetch_add(1, Ordering::SeqCst);
                    }
                    let _ = sock.shutdown().await;
                });
            }
        });
        Ok(Self {
            addr,
            values,
            scrapes,
            task,
        })
    }

    fn set(&self, segment: &str, v: f64) {
        self.values.lock().unwrap().insert(segment.to_owned(), v);
    }

    fn scrapes(&self) -> u64 {
        self.scrapes.load(Ordering::SeqCst)
    }

    /// Waits until Prometheus has scraped `n` more times: a clock that
    /// runs independently of the agents.
    async fn wait_scrapes(&self, n: u64) -> anyhow::Result<()> {
        let target = self.scrapes() + n;
        wait_until(
            &format!("{n} more scrapes of the exporter"),
            PATIENCE,
            || async { self.scrapes() >= target },
        )
        .await?;
        Ok(())
    }
}

impl Drop for Exporter {
    fn drop(&mut self) {
        self.task.abort();
    }
}

// ------------------------------------------------------------ Prometheus

fn prometheus_binary() -> anyhow::Result<PathBuf> {
    if let Some(p) = std::env::var_os(PROMETHEUS_ENV) {
        return Ok(PathBuf::from(p));
    }
    let on_path = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .map(|d| d.join("prometheus"))
        .find(|p| p.is_file());
    on_path.context(
        "prometheus not found: run `make tools` (scripts/install-prometheus.sh installs \
         Debian's prometheus package), or set PHASEGATE_PROMETHEUS to a Prometheus 2.x binary",
    )
}

/// A Prometheus server on a free port with its own data directory,
/// scraping the exporter every second; killed when dropped (its log is
/// printed when a test fails).
struct Prometheus {
    process: ChildProcess,
    addr: SocketAddr,
    /// Its configuration and data.
    _dir: tempfile::TempDir,
    http: Http,
}

impl Prometheus {
    async fn start(exporter: &Exporter) -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("phasegate-prom-")
            .tempdir()?;
        let config = dir.path().join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 900ms\n  evaluation_interval: 1s\n\
                 scrape_configs:\n  - job_name: app\n    static_configs:\n      - targets: ['{}']\n",
                exporter.addr
            ),
        )?;
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port()?).parse()?;
        let mut command = Command::new(prometheus_binary()?);
        command
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .arg("--log.level=warn");
        let p = Self {
            process: ChildProcess::spawn("prometheus", command)?,
            addr,
            _dir: dir,
            http: Http::default(),
        };
        p.wait_ready().await?;
        Ok(p)
    }

    async fn wait_ready(&self) -> anyhow::Result<()> {
        wait_until("prometheus to answer", PROMETHEUS_START, || async {
            matches!(
                self.http.get(self.addr, "/api/v1/status/buildinfo").await,
                Ok((200, _))
            )
        })
        .await
        .with_context(|| self.log_tail())
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn kill(&mut self) -> anyhow::Result<()> {
        Ok(self.process.kill()?)
    }

    /// Started again on the same port and data.
    async fn restart(&mut self) -> anyhow::Result<()> {
        self.process.restart()?;
        self.wait_ready().await
    }

    /// Waits until Prometheus has a sample of `app_error_ratio` for
    /// `segment`: analyses then see what the exporter serves.
    async fn wait_sample(&self, segment: &str) -> anyhow::Result<()> {
        let path = format!("/api/v1/query?query=app_error_ratio%7Bsegment%3D%22{segment}%22%7D");
        wait_for(
            "prometheus to hold a sample of the exporter",
            PROMETHEUS_START,
            || async {
                let (_, v) = self
                    .http
                    .get(self.addr, &path)
                    .await
                    .map_err(|e| e.to_string())?;
                match v["data"]["result"].as_array() {
                    Some(r) if r.len() == 1 => Ok(()),
                    _ => Err(v.to_string()),
                }
            },
        )
        .await
        .with_context(|| self.log_tail())
    }

    fn log_tail(&self) -> String {
        format!("prometheus log:\n{}", self.process.log_tail(20))
    }
}

// ------------------------------------------------------------ the stack

struct Stack {
    env: CoordEnv,
    exporter: Exporter,
    prom: Prometheus,
}

/// nats-server, the coordinator, the exporter (with these values) and a
/// Prometheus that already holds a sample of each segment.
async fn stack(values: &[(&str, f64)]) -> anyhow::Result<Stack> {
    let exporter = Exporter::start(values).await?;
    let (env, prom) = tokio::join!(CoordEnv::start(), Prometheus::start(&exporter));
    let (env, prom) = (env?, prom?);
    for (segment, _) in values {
        prom.wait_sample(segment).await?;
    }
    Ok(Stack {
        env,
        exporter,
        prom,
    })
}

impl Stack {
    async fn agent(&self, id: &str, segment: &str, prometheus: bool) -> anyhow::Result<AgentProc> {
        let url = self.prom.url();
        let extra: Vec<&str> = if prometheus {
            vec!["--prometheus-url", &url]
        } else {
            vec![]
        };
        AgentProc::start(&self.env.nats.url(), id, segment, &extra).await
    }
}

fn error_rate(extra: Value) -> Value {
    let mut a = json!({
        "name": "error-rate",
        "query": "app_error_ratio{segment=\"{{segment}}\"}",
        "every_ms": 1000,
        "success": {"op": "<", "threshold": 0.05}
    });
    if let (Some(a), Some(extra)) = (a.as_object_mut(), extra.as_object()) {
        a.extend(extra.clone());
    }
    a
}

fn history_comment(t: &Trigger, kind: HistoryType) -> Option<String> {
    t.history
        .iter()
        .find(|h| h.kind == kind)
        .and_then(|h| h.comment.clone())
}

fn analysis_in<'t>(t: &'t Trigger, segment: &str, name: &str) -> Option<&'t SegmentAnalysis> {
    t.analysis
        .get(segment)?
        .iter()
        .find(|a| a.name.as_str() == name)
}

/// The status of analysis `name` in the agent's `/healthz`.
async fn agent_analysis(agent: &AgentProc, name: &str) -> anyhow::Result<Option<Value>> {
    let h = agent.healthz().await?;
    Ok(h["analyses"]
        .as_array()
        .and_then(|list| list.iter().find(|a| a["name"] == name).cloned()))
}

/// The sum of `phasegate_analysis_results_total` of analysis `name` on the
/// agent's `/metrics`.
async fn results_total(agent: &AgentProc, name: &str) -> anyhow::Result<f64> {
    let text = metrics_text(agent).await?;
    Ok(text
        .lines()
        .filter(|l| {
            l.starts_with("phasegate_analysis_results_total{")
                && l.contains(&format!("analysis=\"{name}\""))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum())
}

async fn metrics_text(agent: &AgentProc) -> anyhow::Result<String> {
    let stream = tokio::net::TcpStream::connect(agent.addr).await?;
    let (mut r, mut w) = stream.into_split();
    w.write_all(b"GET /metrics HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        .await?;
    let mut out = String::new();
    r.read_to_string(&mut out).await?;
    Ok(out)
}

/// Polls the agent's status of analysis `name` until it is inconclusive
/// `limit` times in a row with `detail` in its reason, checking on the way
/// that it is not failing before the limit, and is failing at it.
async fn inconclusive_until_limit(
    agent: &AgentProc,
    name: &str,
    limit: u64,
    detail: &str,
) -> anyhow::Result<()> {
    let seen: Arc<Mutex<Vec<(u64, bool)>>> = Arc::default();
    let s = seen.clone();
    wait_for(
        &format!("{name}: {limit} inconclusive results in a row ({detail})"),
        PATIENCE,
        || {
            let s = s.clone();
            async move {
                let a = agent_analysis(agent, name)
                    .await
                    .map_err(|e| e.to_string())?
                    .ok_or("no status yet")?;
                let why = a["detail"].as_str().unwrap_or_default();
                if a["result"] != "inconclusive" || !why.contains(detail) {
                    return Err(format!("{a}"));
                }
                let n = a["consecutive"].as_u64().unwrap_or(0);
                let failing = a["failing"] == true;
                s.lock().unwrap().push((n, failing));
                if n >= limit {
                    Ok(())
                } else {
                    Err(format!("{n} inconclusive in a row"))
                }
            }
        },
    )
    .await?;
    let seen = seen.lock().unwrap().clone();
    for &(n, failing) in &seen {
        assert_eq!(
            failing,
            n >= limit,
            "{name}: failing only from {limit} inconclusive results in a row; seen {seen:?}"
        );
    }
    assert!(
        seen.iter().any(|&(n, _)| n == limit - 1) || limit == 1,
        "{name}: the streak below the limit was seen: {seen:?}"
    );
    Ok(())
}

// ------------------------------------------------------------ the tests

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_passing_error_rate_lets_the_phase_complete_and_stops_with_it() -> anyhow::Result<()> {
    let s = stack(&[("prod-eu", 0.01)]).await?;
    let c = &s.env.client;
    // Validation names the field.
    for (analysis, field) in [
        (
            error_rate(json!({"every_ms": 10})),
            "pipeline.phases[0].analysis[0].every_ms",
        ),
        (
            error_rate(json!({"query": "sum(rate(x[1m])"})),
            "pipeline.phases[0].analysis[0].query: PromQL",
        ),
        (
            error_rate(json!({"success": {"op": "<", "threshold": 1}, "failure_limit": 0})),
            "pipeline.phases[0].analysis[0].failure_limit",
        ),
    ] {
        let e = put_pipeline(
            c,
            json!({"name": "bad", "phases": [{"id": "eu", "segments": ["prod-eu"], "analysis": [analysis]}]}),
        )
        .await
        .unwrap_err();
        let e = e.to_string();
        assert!(e.contains("invalid") && e.contains(field), "{field}: {e}");
    }
    let eu = s.agent("eu-1", "prod-eu", true).await?;
    s.env.wait_live_agents(1).await?;
    put_pipeline(
        c,
        json!({"name": "p", "phases": [
            {"id": "eu", "segments": ["prod-eu"], "wait_ms": 2500, "analysis": [error_rate(json!({}))]}
        ]}),
    )
    .await?;
    let r = put_gate(
        c,
        json!({"name": "g", "pipeline": "p", "rules": [{"id": "all", "pass_percentage": 100}]}),
    )
    .await?;
    let id = r.trigger.expect("a trigger").id;
    let t = wait_trigger(c, &id, "the analysis to succeed in prod-eu", |t| {
        !t.status.is_finished()
            && analysis_in(t, "prod-eu", "error-rate")
                .is_some_and(|a| a.result == AnalysisResult::Success && a.value == Some(0.01))
    })
    .await?;
    let a = analysis_in(&t, "prod-eu", "error-rate").unwrap();
    assert_eq!((a.agent_id.as_str(), a.failing), ("eu-1", false));
    let metrics = metrics_text(&eu).await?;
    assert!(
        metrics.contains("phasegate_analysis_results_total{segment=\"prod-eu\",analysis=\"error-rate\",result=\"success\"}"),
        "{metrics}"
    );
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("phasegate_analysis_value{")
                && l.contains("analysis=\"error-rate\"")
                && l.ends_with(" 0.01")),
        "{metrics}"
    );
    let done = wait_trigger(c, &id, "the trigger to complete", |t| {
        t.status == TriggerStatus::Completed
    })
    .await?;
    assert!(
        !done
            .history
            .iter()
            .any(|h| h.kind == HistoryType::HealthDegraded),
        "{:?}",
        done.history
    );
    // Analyses stop with the trigger: the agent no longer lists it, and
    // its results stop counting while Prometheus keeps scraping.
    wait_until("the agent to stop the analysis", PATIENCE, || async {
        matches!(agent_analysis(&eu, "error-rate").await, Ok(None))
    })
    .await?;
    let before = results_total(&eu, "error-rate").await?;
    assert!(before >= 1.0);
    s.exporter.wait_scrapes(3).await?;
    assert_eq!(
        results_total(&eu, "error-rate").await?,
        before,
        "no run after the trigger finished"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_value_over_the_threshold_pauses_and_its_recovery_resumes() -> anyhow::Result<()> {
    let s = stack(&[("prod-eu", 0.01)]).await?;
    let c = &s.env.client;
    let _eu = s.agent("eu-1", "prod-eu", true).await?;
    s.env.wait_live_agents(1).await?;
    put_pipeline(
        c,
        json!({"name": "p", "phases": [
            {"id": "eu", "segments": ["prod-eu"], "wait_ms": 60000,
             "health": {"on_unhealthy": "pause"}, "analysis": [error_rate(json!({}))]}
        ]}),
    )
    .await?;
    let r = put_gate(
        c,
        json!({"name": "g", "pipeline": "p", "rules": [{"id": "all", "pass_percentage": 100}]}),
    )
    .await?;
    let id = r.trigger.expect("a trigger").id;
    wait_trigger(c, &id, "baking with a passing analysis", |t| {
        t.phase_state == Some(PhaseState::Baking)
            && analysis_in(t, "prod-eu", "error-rate")
                .is_some_and(|a| a.result == AnalysisResult::Success)
    })
    .await?;
    s.exporter.set("prod-eu", 0.5);
    let t = wait_trigger(c, &id, "health to pause the trigger", |t| {
        t.paused_reason == Some(PausedReason::Health)
    })
    .await?;
    let degraded = history_comment(&t, HistoryType::HealthDegraded).unwrap_or_default();
    assert_eq!(
        degraded,
        "healthy ratio 0.000 below 1; analysis error-rate failing in prod-eu (failure value 0.5, needs < 0.05)"
    );
    let a = analysis_in(&t, "prod-eu", "error-rate").unwrap();
    assert!(a.failing && a.value == Some(0.5), "{a:?}");
    // The CLI table shows it.
    let out = Command::new(phasegate_binary()?)
        .args([
            "trigger",
            "get",
            id.as_str(),
            "--nats-url",
            &s.env.nats.url(),
        ])
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let row = text
        .lines()
        .find(|l| l.contains("error-rate"))
        .unwrap_or_else(|| panic!("an analysis row in:\n{text}"));
    for cell in ["prod-eu", "eu-1", "failure", "0.5", "< 0.05", "failing"] {
        assert!(row.contains(cell), "{cell} in {row:?}");
    }
    s.exporter.set("prod-eu", 0.01);
    let t = wait_trigger(c, &id, "recovery to resume the trigger", |t| {
        !t.paused
            && t.history
                .iter()
                .any(|h| h.kind == HistoryType::HealthRecovered)
    })
    .await?;
    assert_eq!(
        history_comment(&t, HistoryType::HealthRecovered).as_deref(),
        Some("analysis error-rate in prod-eu recovered (success value 0.01)")
    );
    assert_eq!(t.phase_state, Some(PhaseState::Baking));
    c.act(TriggerAction::Abort, id, None, actor("carol"), None)
        .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_abort_a_failing_analysis_rolls_every_segment_back() -> anyhow::Result<()> {
    let s = stack(&[("prod-eu", 0.5)]).await?;
    let c = &s.env.client;
    let staging = s.agent("st-1", "staging", true).await?;
    let eu = s.agent("eu-1", "prod-eu", true).await?;
    s.env.wait_live_agents(2).await?;
    put_pipeline(
        c,
        json!({"name": "p", "phases": [
            {"id": "staging", "segments": ["staging"]},
            {"id": "eu", "segments": ["prod-eu"], "wait_ms": 60000,
             "health": {"on_unhealthy": "abort"}, "analysis": [error_rate(json!({}))]}
        ]}),
    )
    .await?;
    // v1 everywhere at once (no pipeline yet), then v2 through it.
    put_gate(
        c,
        json!({"name": "g", "rules": [{"id": "all", "pass_percentage": 0}]}),
    )
    .await?;
    let r = put_gate(
        c,
        json!({"name": "g", "pipeline": "p", "rules": [{"id": "all", "pass_percentage": 100}]}),
    )
    .await?;
    let id = r.trigger.expect("a trigger").id;
    let t = wait_trigger(c, &id, "the failing analysis to abort the trigger", |t| {
        t.status == TriggerStatus::Aborted
    })
    .await?;
    let degraded = history_comment(&t, HistoryType::HealthDegraded).unwrap_or_default();
    assert!(
        degraded.contains("analysis error-rate failing in prod-eu (failure value 0.5"),
        "{degraded}"
    );
    let aborted = t.history.last().unwrap();
    assert_eq!(
        (
            aborted.kind,
            aborted.actor.as_str(),
            aborted.comment.as_deref()
        ),
        (HistoryType::Aborted, "phasegate", Some("health"))
    );
    for agent in [&staging, &eu] {
        wait_until("every segment back on v1", PATIENCE, || async {
            agent
                .check_gate("g", json!({"user_id": "u"}))
                .await
                .is_ok_and(|v| v["version"] == 1 && v["value"] == false)
        })
        .await?;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inconclusive_results_fail_an_analysis_only_at_the_limit() -> anyhow::Result<()> {
    let mut s = stack(&[("prod-eu", 0.01)]).await?;
    let c = &s.env.client;
    let eu = s.agent("eu-1", "prod-eu", true).await?;
    // No --prometheus-url: its analyses are inconclusive.
    let staging = s.agent("st-1", "staging", false).await?;
    s.env.wait_live_agents(2).await?;
    put_pipeline(
        c,
        json!({"name": "p", "phases": [
            {"id": "all", "segments": ["prod-eu", "staging"], "wait_ms": 60000,
             "health": {"on_unhealthy": "ignore"},
             "analysis": [
                error_rate(json!({"inconclusive_limit": 2})),
                {"name": "query-error", "query": "app_error_ratio{segment=\"{{segment}}\"} +",
                 "every_ms": 1000, "success": {"op": "<", "threshold": 1}},
                {"name": "no-sample", "query": "app_missing_metric{segment=\"{{segment}}\"}",
                 "every_ms": 1000, "success": {"op": "<", "threshold": 1}}
             ]}
        ]}),
    )
    .await?;
    let r = put_gate(
        c,
        json!({"name": "g", "pipeline": "p", "rules": [{"id": "all", "pass_percentage": 100}]}),
    )
    .await?;
    let id = r.trigger.expect("a trigger").id;
    let (q, n, none) = tokio::join!(
        inconclusive_until_limit(&eu, "query-error", 3, "query error (bad_data)"),
        inconclusive_until_limit(&eu, "no-sample", 3, "empty vector"),
        inconclusive_until_limit(&staging, "error-rate", 2, "no --prometheus-url"),
    );
    q?;
    n?;
    none?;
    let ok = agent_analysis(&eu, "error-rate").await?.unwrap();
    assert_eq!(
        (ok["result"].clone(), ok["failing"].clone()),
        (json!("success"), json!(false))
    );
    let t = wait_trigger(c, &id, "trigger.get to show the failing analyses", |t| {
        analysis_in(t, "prod-eu", "query-error").is_some_and(|a| a.failing)
            && analysis_in(t, "staging", "error-rate").is_some_and(|a| a.failing)
    })
    .await?;
    assert!(!t.paused, "on_unhealthy ignore: {:?}", t.history);
    // Prometheus down: the working analysis turns inconclusive too.
    s.prom.kill()?;
    inconclusive_until_limit(&eu, "error-rate", 2, "prometheus unreachable").await?;
    s.prom.restart().await?;
    wait_until(
        "the analysis to succeed again once prometheus is back",
        PATIENCE,
        || async {
            agent_analysis(&eu, "error-rate")
                .await
                .ok()
                .flatten()
                .is_some_and(|a| a["result"] == "success" && a["failing"] == false)
        },
    )
    .await?;
    let h = eu.healthz().await?;
    assert_eq!(h["healthy"], false, "two analyses still fail: {h}");
    c.act(TriggerAction::Abort, id, None, actor("carol"), None)
        .await?;
    Ok(())
}
