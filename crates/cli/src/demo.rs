//! `phasegate demo`: the whole system on one machine, out of the box.
//!
//! Starts nats-server (the project-installed one, or `$PHASEGATE_NATS_SERVER`),
//! the coordinator and five agents (dev, staging, prod-us-west,
//! prod-us-east, prod-eu) as real processes, then walks two rollouts while
//! showing what the agents answer: a gate that bakes, waits for an
//! approval, pauses when one region turns unhealthy and completes once it
//! recovers; and a config that is rolled back when staging fails. Every
//! step is checked; the exit code is 0 only when all of them happened.
//!
//! `phasegate demo --secured` walks the same rollouts in a secured
//! installation (SPEC.md §8) written by `phasegate auth init`: every
//! process connects with its own credentials, an anonymous connection is
//! refused, and an editor who is no approver cannot approve, even when it
//! declares the approver's name. What differs lives in two places:
//! [`Installation`] (how each process connects) and [`Cast`] (who acts).

use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use phasegate_client::{ClientError, PhasegateClient, TriggerAction};
use phasegate_proto::{
    Actor, EntityKind, ErrorCode, HistoryType, PausedReason, PhaseState, Trigger, TriggerId,
    TriggerStatus,
};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::Global;
use crate::auth::{InitArgs, init};
use crate::ops::history_line;

const SEGMENTS: [(&str, &str); 5] = [
    ("dev", "development"),
    ("staging", "staging"),
    ("prod-us-west", "production"),
    ("prod-us-east", "production"),
    ("prod-eu", "production"),
];

/// The operators of the secured demo: `alice` defines pipelines and changes
/// gates and configs, `bob` is the one approver of prod-us-west, `mallory`
/// is an editor who is no approver.
const OPERATORS: [&str; 3] = ["alice:admin", "bob:editor", "mallory:editor"];

/// How long any one step may take before the demo gives up.
const STEP: Duration = Duration::from_secs(20);

fn say(line: impl AsRef<str>) {
    println!("{}", crate::output::sanitize(line.as_ref()));
}

/// Finds nats-server: `$PHASEGATE_NATS_SERVER`, else `.tools/bin/nats-server`
/// in the working directory or above the binary (a cargo build lives in
/// `<repo>/target/<profile>/`).
fn nats_server() -> anyhow::Result<PathBuf> {
    if let Some(p) = std::env::var_os("PHASEGATE_NATS_SERVER") {
        return Ok(PathBuf::from(p));
    }
    let mut roots = vec![std::env::current_dir()?];
    if let Ok(exe) = std::env::current_exe() {
        roots.extend(exe.ancestors().map(Path::to_path_buf));
    }
    for r in roots {
        let p = r.join(".tools/bin/nats-server");
        if p.exists() {
            return Ok(p);
        }
    }
    bail!(
        "nats-server not found: run `make tools` (installs the pinned one into .tools/) or set PHASEGATE_NATS_SERVER"
    )
}

/// A child process that is stopped with SIGTERM (then SIGKILL) on drop.
struct Kid {
    name: String,
    child: Option<Child>,
}

impl Kid {
    fn spawn(name: &str, cmd: &mut Command, log: &Path) -> anyhow::Result<Self> {
        let out = std::fs::File::create(log)?;
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .with_context(|| format!("cannot start {name}"))?;
        Ok(Self {
            name: name.to_owned(),
            child: Some(child),
        })
    }

    /// SIGTERM and wait; true when it exited cleanly in time.
    async fn stop(&mut self) -> bool {
        let Some(mut c) = self.child.take() else {
            return true;
        };
        let _ = Command::new("kill")
            .args(["-TERM", &c.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = c.try_wait() {
                return status.success() || status.code().is_none();
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let _ = c.kill();
        let _ = c.wait();
        eprintln!("{} did not stop in time", self.name);
        false
    }
}

impl Drop for Kid {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// Health endpoints the demo controls: `GET /health/<segment>`.
struct Health {
    addr: SocketAddr,
    failing: Arc<std::sync::Mutex<Vec<String>>>,
}

impl Health {
    async fn start() -> anyhow::Result<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let failing: Arc<std::sync::Mutex<Vec<String>>> = Arc::default();
        let f = failing.clone();
        tokio::spawn(async move {
            while let Ok((mut sock, _)) = listener.accept().await {
                let f = f.clone();
                tokio::spawn(async move {
                    let mut buf = [0u8; 1024];
                    let n = sock.read(&mut buf).await.unwrap_or(0);
                    let req = String::from_utf8_lossy(&buf[..n]);
                    let path = req.split_whitespace().nth(1).unwrap_or("");
                    let segment = path.rsplit('/').next().unwrap_or("");
                    let sick = f
                        .lock()
                        .map(|l| l.iter().any(|s| s == segment))
                        .unwrap_or(false);
                    let status = if sick {
                        "503 Service Unavailable"
                    } else {
                        "200 OK"
                    };
                    let reply = format!(
                        "HTTP/1.1 {status}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                    );
                    let _ = sock.write_all(reply.as_bytes()).await;
                });
            }
        });
        Ok(Self { addr, failing })
    }

    fn url(&self, segment: &str) -> String {
        format!("http://{}/health/{segment}", self.addr)
    }

    fn set_failing(&self, segment: &str, failing: bool) {
        if let Ok(mut l) = self.failing.lock() {
            l.retain(|s| s != segment);
            if failing {
                l.push(segment.to_owned());
            }
        }
    }
}

/// An operator of the walk: the name it acts as, and its connection.
struct Operator {
    name: Actor,
    client: PhasegateClient,
}

/// Who does what in the walk.
struct Cast {
    /// Defines the pipelines and changes the gate and the config.
    release: Operator,
    /// The one approver of prod-us-west.
    approver: Operator,
    /// Secured only: an editor, no approver, who tries to approve first,
    /// declaring the approver's name. In an open installation actors are
    /// declared, so there is nothing to show.
    intruder: Option<Operator>,
}

/// What differs between the open and the secured demo: how each process
/// connects to NATS. Everything else (processes, walk, checks) is shared.
enum Installation {
    /// No authentication: anyone who reaches NATS may do anything, and
    /// actors are declared.
    Open,
    /// Written by `phasegate auth init` into `dir`.
    Secured { dir: PathBuf },
}

impl Installation {
    /// Writes a secured installation into `<work>/auth` through the code
    /// path of `phasegate auth init`, for the demo's segments and
    /// [`OPERATORS`].
    fn secure(work: &Path) -> anyhow::Result<Self> {
        let segments: Vec<&str> = SEGMENTS.iter().map(|(s, _)| *s).collect();
        let written = init(
            &InitArgs::new(work.join("auth"), &segments, &OPERATORS),
            None,
        )?;
        say(format!(
            "  `phasegate auth init` wrote a secured installation in {}:",
            written.dir.display()
        ));
        say(
            "    nats-server.conf (accounts PHASEGATE and OPERATORS, an nkey user per identity, least privilege), coordinator.toml (operator roles)",
        );
        say(format!(
            "    {} credentials files: {}",
            written.created.len(),
            written.created.join(", ")
        ));
        say(format!(
            "    operators: {}",
            OPERATORS.map(|o| o.replacen(':', " (", 1) + ")").join(", ")
        ));
        Ok(Self::Secured { dir: written.dir })
    }

    fn is_secured(&self) -> bool {
        matches!(self, Self::Secured { .. })
    }

    /// `text` in a secured installation, nothing in an open one: what the
    /// secured demo adds to a line of the open one.
    fn when_secured(&self, text: &'static str) -> &'static str {
        if self.is_secured() { text } else { "" }
    }

    fn file(&self, name: &str) -> Option<PathBuf> {
        match self {
            Self::Open => None,
            Self::Secured { dir } => Some(dir.join(name)),
        }
    }

    /// nats-server flags besides address, port and store: JetStream, and
    /// in a secured installation its configuration (accounts, users).
    fn nats_args(&self) -> Vec<OsString> {
        let mut args = Vec::new();
        if let Some(conf) = self.file("nats-server.conf") {
            args.extend(["-c".into(), conf.into()]);
        }
        args.push("-js".into());
        args
    }

    /// `phasegate coordinator` flags besides the URL: its configuration
    /// (credentials and the `[auth]` table of operators and roles).
    fn coordinator_args(&self) -> Vec<OsString> {
        self.file("coordinator.toml")
            .map(|toml| vec!["--config".into(), toml.into()])
            .unwrap_or_default()
    }

    /// `phasegate agent` flags besides the URL: its segment's credentials.
    fn agent_args(&self, segment: &str) -> Vec<OsString> {
        self.file(&format!("agent-{segment}.creds"))
            .map(|creds| vec!["--nats-creds".into(), creds.into()])
            .unwrap_or_default()
    }

    /// A client connected as operator `name` (with its credentials when
    /// secured).
    async fn connect(&self, url: &str, name: &str) -> anyhow::Result<Operator> {
        let security = phasegate_client::Security {
            creds: self.file(&format!("operator-{name}.creds")),
            ..phasegate_client::Security::default()
        };
        let client =
            PhasegateClient::connect_secured(url, security, "phasegate", Duration::from_secs(5))
                .await?;
        Ok(Operator {
            name: Actor::new(name)?,
            client,
        })
    }

    /// The operators of the walk. Secured, they are identities, each with
    /// its own connection, and an anonymous connection is refused first.
    async fn cast(&self, url: &str) -> anyhow::Result<Cast> {
        if !self.is_secured() {
            let release = self.connect(url, "platform-team").await?;
            let approver = Operator {
                name: Actor::new("alice")?,
                client: release.client.clone(),
            };
            return Ok(Cast {
                release,
                approver,
                intruder: None,
            });
        }
        match PhasegateClient::connect(url, "phasegate", Duration::from_secs(5)).await {
            Ok(_) => bail!("nats-server accepted an anonymous connection"),
            Err(e) if e.to_string().to_lowercase().contains("authorization") => {
                say(format!("  an anonymous connection is refused: {e}"));
            }
            Err(e) => bail!("an anonymous connection failed, but not as unauthorised: {e}"),
        }
        let cast = Cast {
            release: self.connect(url, "alice").await?,
            approver: self.connect(url, "bob").await?,
            intruder: Some(self.connect(url, "mallory").await?),
        };
        say("  operators alice, bob and mallory connected, each with its own credentials");
        Ok(cast)
    }
}

struct Demo {
    cast: Cast,
    http: Client<HttpConnector, Full<Bytes>>,
    agents: Vec<(String, SocketAddr)>,
    health: Health,
    printed: usize,
}

impl Demo {
    fn agent(&self, segment: &str) -> anyhow::Result<SocketAddr> {
        self.agents
            .iter()
            .find(|(s, _)| s == segment)
            .map(|(_, a)| *a)
            .context("unknown segment")
    }

    async fn post(&self, segment: &str, path: &str, body: Value) -> anyhow::Result<Value> {
        let addr = self.agent(segment)?;
        let req = hyper::Request::post(format!("http://{addr}{path}"))
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(serde_json::to_vec(&body)?)))?;
        let resp = self.http.request(req).await?;
        let bytes = resp.into_body().collect().await?.to_bytes();
        Ok(serde_json::from_slice(&bytes)?)
    }

    /// Asks an agent and prints its answer.
    async fn show_gate(&self, segment: &str, gate: &str, user: &str) -> anyhow::Result<Value> {
        let v = self
            .post(
                segment,
                "/v1/check_gate",
                json!({"gate": gate, "user": {"user_id": user}}),
            )
            .await?;
        say(format!(
            "    [{segment:<12}] check_gate {gate} for {user}: {} (v{}, {}{})",
            v["value"],
            v["version"],
            v["reason"].as_str().unwrap_or(""),
            v["phase_id"]
                .as_str()
                .map(|p| format!(", rollout phase {p}"))
                .unwrap_or_default()
        ));
        Ok(v)
    }

    async fn show_config(&self, segment: &str, config: &str) -> anyhow::Result<Value> {
        let v = self
            .post(
                segment,
                "/v1/get_config",
                json!({"config": config, "user": {"user_id": "user-7"}}),
            )
            .await?;
        say(format!(
            "    [{segment:<12}] get_config {config}: {} (v{})",
            v["value"], v["version"]
        ));
        Ok(v)
    }

    /// Polls the trigger, printing new history lines, until `cond` holds.
    async fn until(
        &mut self,
        id: &TriggerId,
        what: &str,
        cond: impl Fn(&Trigger) -> bool,
    ) -> anyhow::Result<Trigger> {
        let deadline = Instant::now() + STEP;
        loop {
            let t = self.cast.release.client.trigger_get(id.clone()).await?;
            for h in t.history.iter().skip(self.printed) {
                say(format!("  {}", history_line(h)));
            }
            self.printed = t.history.len();
            if cond(&t) {
                return Ok(t);
            }
            if Instant::now() > deadline {
                bail!("demo step did not happen in {STEP:?}: {what}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Polls an agent until `cond` holds on its answer.
    async fn until_agent(
        &self,
        segment: &str,
        path: &str,
        body: Value,
        what: &str,
        cond: impl Fn(&Value) -> bool,
    ) -> anyhow::Result<()> {
        let deadline = Instant::now() + STEP;
        loop {
            if let Ok(v) = self.post(segment, path, body.clone()).await
                && cond(&v)
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("demo step did not happen in {STEP:?}: {what}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

fn phase_is(t: &Trigger, id: &str, state: PhaseState) -> bool {
    t.current_phase_id.as_ref().map(|p| p.as_str()) == Some(id) && t.phase_state == Some(state)
}

/// `phasegate demo` (`--secured`: as a secured installation).
pub(crate) async fn run(_g: &Global, secured: bool) -> anyhow::Result<u8> {
    let started = Instant::now();
    let dir = tempfile::Builder::new()
        .prefix("phasegate-demo-")
        .tempdir()?;
    let nats_bin = nats_server()?;
    if secured {
        say(
            "phasegate demo --secured: a release pipeline across five segments, on this machine, every connection authenticated",
        );
    } else {
        say("phasegate demo: a release pipeline across five segments, on this machine");
    }
    say(format!(
        "  working directory {} (logs of every process are there)",
        dir.path().display()
    ));
    let install = if secured {
        Installation::secure(dir.path())?
    } else {
        Installation::Open
    };

    // NATS with JetStream on a free port, learnt from its ports file.
    let ports_dir = dir.path().join("ports");
    std::fs::create_dir_all(&ports_dir)?;
    let mut nats = Kid::spawn(
        "nats-server",
        Command::new(&nats_bin)
            .args(install.nats_args())
            .args(["-a", "127.0.0.1", "-p", "-1", "--ports_file_dir"])
            .arg(&ports_dir)
            .arg("-sd")
            .arg(dir.path().join("jetstream")),
        &dir.path().join("nats-server.log"),
    )?;
    let url = {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let found = std::fs::read_dir(&ports_dir)?
                .filter_map(Result::ok)
                .find_map(|e| std::fs::read_to_string(e.path()).ok())
                .and_then(|t| serde_json::from_str::<Value>(&t).ok())
                .and_then(|v| v["nats"][0].as_str().map(str::to_owned));
            if let Some(u) = found {
                break u;
            }
            if Instant::now() > deadline {
                bail!(
                    "nats-server did not start; see {}",
                    dir.path().join("nats-server.log").display()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    say(format!(
        "  nats-server with JetStream at {url}{}",
        install.when_secured(", configured by nats-server.conf: anonymous connections are refused")
    ));

    let exe = std::env::current_exe()?;
    let mut coordinator = Kid::spawn(
        "coordinator",
        Command::new(&exe)
            .args(["coordinator", "--nats-url", &url])
            .args(install.coordinator_args()),
        &dir.path().join("coordinator.log"),
    )?;
    let health = Health::start().await?;
    let mut kids = Vec::new();
    let mut agents = Vec::new();
    for (segment, tier) in SEGMENTS {
        let port = free_port()?;
        let listen = format!("127.0.0.1:{port}");
        let state = dir.path().join(format!("state-{segment}"));
        kids.push(Kid::spawn(
            segment,
            Command::new(&exe)
                .args([
                    "agent",
                    "--segment",
                    segment,
                    "--tier",
                    tier,
                    "--nats-url",
                    &url,
                    "--listen",
                    &listen,
                ])
                .args(install.agent_args(segment))
                .args([
                    "--agent-id",
                    &format!("{segment}-1"),
                    "--heartbeat-ms",
                    "200",
                    "--health-url",
                    &health.url(segment),
                ])
                .arg("--state-dir")
                .arg(&state),
            &dir.path().join(format!("agent-{segment}.log")),
        )?);
        agents.push((segment.to_owned(), listen.parse()?));
    }
    say(format!(
        "  coordinator{} and five agents{} started: dev, staging, prod-us-west, prod-us-east, prod-eu",
        install.when_secured(" (--config coordinator.toml)"),
        install.when_secured(" (--nats-creds agent-<segment>.creds)"),
    ));

    // The demo's own connections close when `walk` returns, before the
    // server stops, so that stopping it is quiet.
    let result = walk(&install, &url, agents, health).await;

    say("");
    say("stopping everything");
    let mut clean = true;
    for k in &mut kids {
        clean &= k.stop().await;
    }
    clean &= coordinator.stop().await;
    clean &= nats.stop().await;
    match result {
        Ok(()) if clean => {
            say(format!(
                "demo finished in {:.1}s: every step above happened",
                started.elapsed().as_secs_f64()
            ));
            Ok(0)
        }
        Ok(()) => bail!(
            "a process did not stop cleanly; logs in {}",
            dir.keep().display()
        ),
        Err(e) => {
            let kept = dir.keep();
            Err(e.context(format!("logs kept in {}", kept.display())))
        }
    }
}

/// Connects the operators and walks the script.
async fn walk(
    install: &Installation,
    url: &str,
    agents: Vec<(String, SocketAddr)>,
    health: Health,
) -> anyhow::Result<()> {
    let mut demo = Demo {
        cast: install.cast(url).await?,
        http: Client::builder(TokioExecutor::new()).build(HttpConnector::new()),
        agents,
        health,
        printed: 0,
    };
    script(&mut demo).await
}

async fn script(d: &mut Demo) -> anyhow::Result<()> {
    let c = d.cast.release.client.clone();
    // Ready: the coordinator answers and every agent has reported.
    let deadline = Instant::now() + STEP;
    loop {
        if let Ok(a) = c.agents(None).await
            && a.iter().filter(|a| a.live).count() == SEGMENTS.len()
        {
            break;
        }
        if Instant::now() > deadline {
            bail!("the coordinator and five live agents did not come up");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let ops = d.cast.release.name.clone();
    let approver = d.cast.approver.name.clone();

    say("");
    say(format!(
        "1. the pipeline: dev → staging → prod-us-west (needs approval by {approver}) → prod-us-east → prod-eu"
    ));
    let pipeline = serde_json::from_value(json!({
        "name": "demo-seed",
        "description": "the seed pipeline with demo-sized bake times",
        "phases": [
            {"id": "dev", "segments": ["dev"], "wait_ms": 1500},
            {"id": "staging", "segments": ["staging"], "wait_ms": 1000},
            {"id": "prod-us-west", "segments": ["prod-us-west"], "wait_ms": 1000,
             "approval": {"required": true, "approvers": [approver.as_str()], "min_approvals": 1}},
            {"id": "prod-us-east", "segments": ["prod-us-east"], "wait_ms": 1000},
            {"id": "prod-eu", "segments": ["prod-eu"], "wait_ms": 2500,
             "health": {"on_unhealthy": "pause", "min_healthy_ratio": 1.0}}
        ]
    }))?;
    c.pipeline_put(pipeline, ops.clone()).await?;

    say("");
    say(
        "2. gate new-checkout exists, off for everyone; the change turns it on through the pipeline",
    );
    c.entity_put(
        EntityKind::Gate,
        serde_json::from_value(
            json!({"name": "new-checkout", "rules": [{"id": "everyone", "pass_percentage": 0}]}),
        )?,
        ops.clone(),
        None,
        None,
    )
    .await?;
    let r = c
        .entity_put(
            EntityKind::Gate,
            serde_json::from_value(json!({"name": "new-checkout", "pipeline": "demo-seed", "rules": [{"id": "everyone", "pass_percentage": 100}]}))?,
            ops.clone(),
            Some("turn on the new checkout".into()),
            None,
        )
        .await?;
    let t = r.trigger.context("the change did not start a rollout")?;
    let id = t.id.clone();
    say(format!(
        "  rollout {id}: v{} → v{}",
        t.from_version, t.to_version
    ));
    d.printed = 0;

    let t = d
        .until(&id, "dev applied and baking", |t| {
            phase_is(t, "dev", PhaseState::Baking)
        })
        .await?;
    say(format!(
        "  dev applied by its agent; the bake timer runs until {} (1.5s)",
        crate::output::clock(t.phase_ends_at_ms.unwrap_or(0))
    ));
    d.show_gate("dev", "new-checkout", "user-1").await?;
    d.show_gate("staging", "new-checkout", "user-1").await?;
    d.until(&id, "prod-us-west awaiting approval", |t| {
        phase_is(t, "prod-us-west", PhaseState::AwaitingApproval)
    })
    .await?;
    approve(d, &id).await?;
    let t = d
        .until(&id, "prod-eu baking", |t| {
            phase_is(t, "prod-eu", PhaseState::Baking)
        })
        .await?;
    let approvals: Vec<&str> = t
        .history
        .iter()
        .filter(|h| h.kind == HistoryType::Approved)
        .map(|h| h.actor.as_str())
        .collect();
    if approvals != [approver.as_str()] {
        bail!("the approvals recorded are {approvals:?}, not one by {approver}");
    }
    if let Some(intruder) = &d.cast.intruder {
        say(format!(
            "  the approval is recorded as {approver}, the identity of {approver}'s credentials; {}'s claim to be {approver} left no trace",
            intruder.name
        ));
    }
    d.show_gate("prod-eu", "new-checkout", "user-1").await?;

    say("");
    say("3. prod-eu turns unhealthy while it bakes: the rollout pauses");
    d.health.set_failing("prod-eu", true);
    let t = d
        .until(&id, "paused by health", |t| {
            t.paused_reason == Some(PausedReason::Health)
        })
        .await?;
    say(format!(
        "  paused with {} of the bake left; what is applied stays applied:",
        crate::output::dur(t.remaining_wait_ms.unwrap_or(0))
    ));
    d.show_gate("prod-eu", "new-checkout", "user-1").await?;
    say("  prod-eu recovers: the rollout resumes by itself and finishes the bake");
    d.health.set_failing("prod-eu", false);
    let t = d
        .until(&id, "completed", |t| t.status == TriggerStatus::Completed)
        .await?;
    if !t
        .history
        .iter()
        .any(|h| h.kind == HistoryType::HealthRecovered)
    {
        bail!("the rollout completed without recording the recovery");
    }
    d.until_agent(
        "prod-eu",
        "/v1/check_gate",
        json!({"gate": "new-checkout", "user": {"user_id": "user-1"}}),
        "v2 is the base at prod-eu",
        |v| v["version"] == 2 && v["trigger_id"].is_null(),
    )
    .await?;
    say("  completed: v2 is the base version in every segment");
    for (s, _) in SEGMENTS {
        d.show_gate(s, "new-checkout", "user-1").await?;
    }

    say("");
    say("4. a config change that staging does not survive: rolled back at once");
    let careful = serde_json::from_value(json!({
        "name": "demo-careful",
        "phases": [
            {"id": "dev", "segments": ["dev"], "wait_ms": 500},
            {"id": "staging", "segments": ["staging"], "wait_ms": 30000,
             "health": {"on_unhealthy": "abort", "min_healthy_ratio": 1.0}},
            {"id": "prod", "segments": ["prod-*"], "wait_ms": 1000}
        ]
    }))?;
    c.pipeline_put(careful, ops.clone()).await?;
    c.entity_put(
        EntityKind::Config,
        serde_json::from_value(
            json!({"name": "checkout-limits", "default_value": {"max_items": 10}}),
        )?,
        ops.clone(),
        None,
        None,
    )
    .await?;
    d.until_agent(
        "staging",
        "/v1/get_config",
        json!({"config": "checkout-limits", "user": {}}),
        "v1 at staging",
        |v| v["version"] == 1,
    )
    .await?;
    let r = c
        .entity_put(
            EntityKind::Config,
            serde_json::from_value(json!({"name": "checkout-limits", "pipeline": "demo-careful", "default_value": {"max_items": 50}}))?,
            ops.clone(),
            Some("raise the limit".into()),
            None,
        )
        .await?;
    let t = r.trigger.context("the change did not start a rollout")?;
    let id = t.id.clone();
    d.printed = 0;
    say(format!(
        "  rollout {id}: v{} → v{}",
        t.from_version, t.to_version
    ));
    d.until(&id, "staging baking", |t| {
        phase_is(t, "staging", PhaseState::Baking)
    })
    .await?;
    d.show_config("staging", "checkout-limits").await?;
    say("  staging turns unhealthy: its policy is abort");
    d.health.set_failing("staging", true);
    d.until(&id, "aborted by health", |t| {
        t.status == TriggerStatus::Aborted
    })
    .await?;
    for s in ["dev", "staging"] {
        d.until_agent(
            s,
            "/v1/get_config",
            json!({"config": "checkout-limits", "user": {}}),
            "v1 again",
            |v| v["version"] == 1,
        )
        .await?;
    }
    say("  aborted: every segment is back on v1");
    d.show_config("dev", "checkout-limits").await?;
    d.show_config("staging", "checkout-limits").await?;
    d.health.set_failing("staging", false);
    Ok(())
}

/// prod-us-west awaits approval: in a secured installation the intruder
/// tries first, declaring the approver's name, and must be refused
/// `forbidden`; then the approver approves.
async fn approve(d: &Demo, id: &TriggerId) -> anyhow::Result<()> {
    let Cast {
        release,
        approver,
        intruder,
    } = &d.cast;
    let phase = release
        .client
        .trigger_get(id.clone())
        .await?
        .current_phase_id;
    if let Some(intruder) = intruder {
        say(format!(
            "  prod-us-west waits for approval by {0}; {1}, an editor but no approver, approves first, declaring actor \"{0}\"",
            approver.name, intruder.name
        ));
        let tried = intruder
            .client
            .act(
                TriggerAction::Approve,
                id.clone(),
                phase.clone(),
                approver.name.clone(),
                Some("looks fine to me".into()),
            )
            .await;
        match tried {
            Err(ClientError::Api(e)) if e.code == ErrorCode::Forbidden => {
                say(format!("  refused: {}: {}", e.code, e.message));
            }
            Err(e) => bail!(
                "{}'s approval failed, but not as forbidden: {e}",
                intruder.name
            ),
            Ok(_) => bail!(
                "{}, no approver, could approve declaring actor {}: it must be refused",
                intruder.name,
                approver.name
            ),
        }
    }
    say(format!(
        "  prod-us-west waits for approval; operator {} approves (done by the demo)",
        approver.name
    ));
    approver
        .client
        .act(
            TriggerAction::Approve,
            id.clone(),
            phase,
            approver.name.clone(),
            Some("metrics look good".into()),
        )
        .await?;
    Ok(())
}
