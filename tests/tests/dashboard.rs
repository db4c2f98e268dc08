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

use anyhow::Context as _;
use phasegate_client::{PhasegateClient, Security};
use phasegate_proto::{HistoryType, PhaseState, Trigger, TriggerStatus};
use phasegate_tests::browser::{Browser, DashboardProc};
use phasegate_tests::faults::install::signal;
use phasegate_tests::rollout::{put_gate, put_pipeline, wait_trigger};
use phasegate_tests::secured::AuthDir;
use phasegate_tests::{
    AgentProc, ChildProcess, CoordEnv, NatsServer, PATIENCE, free_port, wait_for, workspace_root,
};
use serde_json::json;

/// The consoles poll the coordinator this often: fast enough that each
/// live step shows within a fraction of the browser's patience.
const POLL_MS: u64 = 200;

/// The bake of the first phase: long enough for the browser to see it.
const BAKE_MS: u64 = 2_500;

/// How long the browser may take to reach its next step (it waits for
/// each of its own expectations up to 10 s).
const STEP_PATIENCE: Duration = Duration::from_secs(40);

/// A secured installation with one agent in `dev` and one in `staging`,
/// and a console for alice (admin, the approver) and carol (editor).
struct Installation {
    _auth: AuthDir,
    _nats: NatsServer,
    _coord: ChildProcess,
    dev: AgentProc,
    staging: AgentProc,
    alice: PhasegateClient,
    alice_console: DashboardProc,
    carol_console: DashboardProc,
}

impl Installation {
    async fn start() -> anyhow::Result<Self> {
        let auth = AuthDir::init(&["dev", "staging"], &["alice:admin", "carol:editor"])?;
        let nats = auth.serve().await?;
        let url = nats.url();
        let coord = auth.coordinator(&url)?;
        let agent = |segment: &'static str| {
            let creds = auth.file(&format!("agent-{segment}.creds"));
            let url = url.clone();
            async move {
                let creds = creds.display().to_string();
                let id = format!("{segment}-1");
                AgentProc::start(&url, &id, segment, &["--nats-creds", &creds]).await
            }
        };
        let dev = agent("dev").await?;
        let staging = agent("staging").await?;
        let alice_creds = auth.file("operator-alice.creds");
        let security = Security {
            creds: Some(alice_creds.clone()),
            ..Security::default()
        };
        let alice =
            PhasegateClient::connect_secured(&url, security, "phasegate", Duration::from_secs(5))
                .await?;
        wait_for("the coordinator", PATIENCE, || async {
            alice.pipeline_list().await
        })
        .await?;
        phasegate_tests::wait_live_agents(&alice, 2).await?;
        let alice_console =
            DashboardProc::start("dashboard-alice", &url, Some(&alice_creds), POLL_MS).await?;
        let carol_creds = auth.file("operator-carol.creds");
        let carol_console =
            DashboardProc::start("dashboard-carol", &url, Some(&carol_creds), POLL_MS).await?;
        Ok(Self {
            _auth: auth,
            _nats: nats,
            _coord: coord,
            dev,
            staging,
            alice,
            alice_console,
            carol_console,
        })
    }

    /// Puts gate `checkout` with one rule at `percentage`: a rollout.
    async fn put_checkout(&self, percentage: u32) -> anyhow::Result<Trigger> {
        let r = put_gate(
            &self.alice,
            json!({"name": "checkout", "pipeline": "standard", "description": "new checkout flow",
                   "rules": [{"id": "all", "pass_percentage": percentage}]}),
        )
        .await?;
        r.trigger.context("a rollout")
    }
}

/// dev bakes (health ignored: its agent is stopped on purpose), then
/// staging waits for alice's approval.
fn pipeline() -> serde_json::Value {
    json!({"name": "standard", "description": "dev, then staging once reviewed", "phases": [
        {"id": "dev", "segments": ["dev"], "wait_ms": BAKE_MS,
         "health": {"on_unhealthy": "ignore", "min_healthy_ratio": 1.0},
         // The agents have no Prometheus: the analysis is reported
         // inconclusive (never failed: the limit is out of reach), and the
         // console shows its latest result.
         "analysis": [{"name": "error-rate", "query": "rate(errors{segment=\"{{segment}}\"}[1m])",
                       "every_ms": 1000, "success": {"op": "<", "threshold": 0.01},
                       "inconclusive_limit": 1000}]},
        {"id": "staging", "segments": ["staging"],
         "approval": {"required": true, "approvers": ["alice"], "min_approvals": 1}}]})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_shows_rollouts_live_and_acts_as_its_user() -> anyhow::Result<()> {
    let browser = Browser::find()?;
    let i = Installation::start().await?;
    put_pipeline(&i.alice, pipeline()).await?;
    // The dev agent is stopped: the first phase stays `applying` until the
    // browser has seen it so.
    signal(i.dev.proc.pid(), "STOP");
    let first = i.put_checkout(100).await?;
    let shots = workspace_root().join("target/dashboard-screenshots");
    let mut script = browser.run(
        &workspace_root().join("tests/browser/dashboard.py"),
        &[
            "--alice".into(),
            i.alice_console.url(),
            "--carol".into(),
            i.carol_console.url(),
            "--trigger".into(),
            first.id.to_string(),
            "--shots".into(),
            shots.display().to_string(),
        ],
    )?;

    script.step("applying", STEP_PATIENCE).await?;
    signal(i.dev.proc.pid(), "CONT");
    script.go(None).await?;

    script.step("approved", STEP_PATIENCE).await?;
    approved_by_alice_only(&i, &first).await?;
    // A second change, to be aborted in the browser: it bakes in dev.
    let second = i.put_checkout(0).await?;
    wait_trigger(&i.alice, &second.id, "the second rollout baking", |t| {
        t.is_at("dev", PhaseState::Baking)
    })
    .await?;
    let served = i
        .dev
        .check_gate("checkout", json!({"user_id": "u1"}))
        .await?;
    assert_eq!(served["version"], json!(2), "dev serves v2: {served}");
    script
        .go(Some(json!({"trigger": second.id, "from_version": 1})))
        .await?;

    script.step("aborted", STEP_PATIENCE).await?;
    rolled_back_by_alice(&i, &second).await?;
    // The agents view shows it unreachable.
    signal(i.staging.proc.pid(), "STOP");
    script.go(None).await?;
    script.finish(STEP_PATIENCE).await?;
    assert!(
        shots.join("rollouts.png").exists(),
        "screenshots in {}",
        shots.display()
    );
    Ok(())
}

/// The first rollout completed, with alice's approval and no other.
async fn approved_by_alice_only(i: &Installation, first: &Trigger) -> anyhow::Result<()> {
    let done = wait_trigger(&i.alice, &first.id, "the first rollout completed", |t| {
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
    Ok(())
}

/// The second rollout is aborted by alice with her comment, and every
/// agent serves version 1 again, outside any rollout.
async fn rolled_back_by_alice(i: &Installation, second: &Trigger) -> anyhow::Result<()> {
    let aborted = i.alice.trigger_get(second.id.clone()).await?;
    assert_eq!(aborted.status, TriggerStatus::Aborted);
    let entry = aborted
        .history
        .iter()
        .find(|h| h.kind == HistoryType::Aborted)
        .context("an aborted entry")?;
    assert_eq!(entry.actor.as_str(), "alice");
    assert_eq!(entry.comment.as_deref(), Some("wrong rules, rolling back"));
    for agent in [&i.dev, &i.staging] {
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
    Ok(())
}

/// Sends `request` as it is and answers the status code and the body.
async fn raw(addr: std::net::SocketAddr, request: &str) -> anyhow::Result<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await?;
    s.write_all(request.as_bytes()).await?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await?;
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text
        .get(9..12)
        .and_then(|c| c.parse().ok())
        .unwrap_or_default();
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_owned());
    Ok((status, body.unwrap_or_default()))
}

/// An action as a cross-site page could send it, with `headers`.
fn post_action(headers: &str) -> String {
    format!(
        "POST /api/triggers/t-1/abort HTTP/1.1\r\nhost: 127.0.0.1\r\nconnection: close\r\n{headers}content-length: 2\r\n\r\n{{}}"
    )
}

/// The console's own API refuses what another site's page could send (a
/// form, a text/plain POST, another origin, a name rebound to loopback),
/// and answers errors with the command API's codes.
#[tokio::test]
async fn actions_come_only_from_the_console_itself() -> anyhow::Result<()> {
    let env = CoordEnv::start().await?;
    let console = DashboardProc::start("dashboard", &env.nats.url(), None, POLL_MS).await?;
    // A form or text/plain POST needs no preflight: refused.
    let (status, body) = raw(console.addr, &post_action("content-type: text/plain\r\n")).await?;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("\"invalid\""), "{body}");
    // JSON from another origin: refused.
    let (status, body) = raw(
        console.addr,
        &post_action("content-type: application/json\r\norigin: http://elsewhere.example\r\n"),
    )
    .await?;
    assert_eq!(status, 403, "{body}");
    // From the console's own origin, the coordinator answers.
    let (status, body) = raw(
        console.addr,
        &post_action("content-type: application/json\r\norigin: http://127.0.0.1\r\n"),
    )
    .await?;
    assert_eq!(status, 404, "{body}");
    assert!(body.contains("\"not_found\""), "{body}");
    // The page may load nothing from elsewhere.
    let (status, page) = raw(
        console.addr,
        "GET / HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n",
    )
    .await?;
    assert_eq!(status, 200);
    assert!(page.contains("<script src=\"/app.js\""), "{page}");
    // On loopback, a name rebound to 127.0.0.1 by another site is refused.
    let (status, body) = raw(
        console.addr,
        "GET /api/rollouts HTTP/1.1\r\nhost: evil.example:3100\r\nconnection: close\r\n\r\n",
    )
    .await?;
    assert_eq!(status, 403, "{body}");
    Ok(())
}

/// Twenty tabs open the event stream; the coordinator still sees one
/// poller: `trigger.list` arrives at most once per poll period. SIGTERM
/// then stops the console cleanly, streams open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_tabs_cost_the_coordinator_one_poller() -> anyhow::Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let metrics: std::net::SocketAddr = format!("127.0.0.1:{}", free_port()?).parse()?;
    let env = CoordEnv::start_with(&metrics.to_string(), &[]).await?;
    let mut console = DashboardProc::start("dashboard", &env.nats.url(), None, POLL_MS).await?;
    let mut tabs = Vec::new();
    for _ in 0..20 {
        let mut s = tokio::net::TcpStream::connect(console.addr).await?;
        s.write_all(b"GET /api/events HTTP/1.1\r\nhost: 127.0.0.1\r\n\r\n")
            .await?;
        // Connected once the first event (the clock) has arrived.
        let mut seen = Vec::new();
        while !String::from_utf8_lossy(&seen).contains("event: rollouts") {
            let mut buf = [0u8; 4096];
            let n = tokio::time::timeout(PATIENCE, s.read(&mut buf)).await??;
            anyhow::ensure!(n > 0, "the event stream closed");
            seen.extend_from_slice(&buf[..n]);
        }
        tabs.push(s);
    }
    let http = phasegate_tests::http::Http::default();
    let lists = || async {
        let (_, text) = http.get_text(metrics, "/metrics").await?;
        let n: f64 = text
            .lines()
            .filter(|l| l.starts_with("phasegate_commands_total{command=\"trigger.list\""))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum();
        anyhow::Ok(n)
    };
    let before = lists().await?;
    let start = std::time::Instant::now();
    let polls = 10.0;
    wait_for("ten more trigger.list commands", PATIENCE, || async {
        let n = lists().await.map_err(|e| e.to_string())?;
        if n >= before + polls {
            Ok(())
        } else {
            Err(format!("{} so far", n - before))
        }
    })
    .await?;
    let elapsed = start.elapsed();
    // Twenty pollers would send ten in half a period; one needs nine
    // periods at least (the first may come at once).
    assert!(
        elapsed >= Duration::from_millis(POLL_MS * 9),
        "ten trigger.list commands in {elapsed:?} with {} tabs open: more than one poller",
        tabs.len()
    );
    // SIGTERM with every stream open: the streams end, the console exits.
    let status = console.proc.terminate(PATIENCE).await?;
    assert!(status.success(), "the console exited with {status}");
    Ok(())
}
