//! `phasegate demo`: the whole system on one machine, out of the box.
//!
//! Starts nats-server (found as `phasegate_devkit::nats_server_binary`
//! says: `$PHASEGATE_NATS_SERVER`, the project-installed one, or `PATH`),
//! the coordinator and five agents (dev, staging, prod-us-west,
//! prod-us-east, prod-eu) as real processes, then walks two rollouts while
//! showing what the agents answer: a gate that bakes, waits for an
//! approval, pauses when one region turns unhealthy and completes once it
//! recovers; and a config that is rolled back when staging fails. Every
//! step is checked; the exit code is 0 only when all of them happened.
//! The walk is [`script`]: one function per act, named for what it shows.
//!
//! `phasegate demo --secured` walks the same rollouts in a secured
//! installation (SPEC.md §8) written by `phasegate auth init`: every
//! process connects with its own credentials, an anonymous connection is
//! refused, and an editor who is no approver cannot approve, even when it
//! declares the approver's name. What differs lives in two places:
//! [`Installation`] (how each process connects) and [`Cast`] (who acts).

use std::cell::Cell;
use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use phasegate_client::{ClientError, PhasegateClient, TriggerAction};
use phasegate_devkit::{ChildProcess, NatsServer, NatsServerOptions, free_port, wait_for};
use phasegate_proto::{
    Actor, EntityKind, EntityResult, ErrorCode, HistoryType, PausedReason, PhaseState, Trigger,
    TriggerId, TriggerStatus,
};
use serde_json::{Value, json};
use tempfile::TempDir;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::Global;
use crate::auth::{InitArgs, init};
use crate::render::history_line;

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

/// How long a process may take to stop after `SIGTERM`.
const STOP: Duration = Duration::from_secs(10);

fn say(line: impl AsRef<str>) {
    println!("{}", crate::output::sanitize(line.as_ref()));
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

/// The installation's processes, their logs in the demo's working
/// directory.
struct Processes {
    nats: NatsServer,
    coordinator: ChildProcess,
    agents: Vec<ChildProcess>,
}

impl Processes {
    /// Starts nats-server, the coordinator and one agent per segment, the
    /// agents probing `health`; returns them with where each agent serves.
    async fn start(
        install: &Installation,
        work: &Path,
        health: &Health,
    ) -> anyhow::Result<(Self, Vec<(String, SocketAddr)>)> {
        let nats = NatsServer::start_with(install.nats_options(work)).await?;
        say(format!(
            "  nats-server with JetStream at {}{}",
            nats.url(),
            install.when_secured(
                ", configured by nats-server.conf: anonymous connections are refused"
            )
        ));
        let launch = Launch {
            install,
            work,
            exe: std::env::current_exe()?,
            url: nats.url(),
        };
        let coordinator = launch.coordinator()?;
        let mut agents = Vec::new();
        let mut serving = Vec::new();
        for (segment, tier) in SEGMENTS {
            let listen = SocketAddr::from(([127, 0, 0, 1], free_port()?));
            agents.push(launch.agent(segment, tier, listen, health)?);
            serving.push((segment.to_owned(), listen));
        }
        say(format!(
            "  coordinator{} and five agents{} started: dev, staging, prod-us-west, prod-us-east, prod-eu",
            install.when_secured(" (--config coordinator.toml)"),
            install.when_secured(" (--nats-creds agent-<segment>.creds)"),
        ));
        let processes = Self {
            nats,
            coordinator,
            agents,
        };
        Ok((processes, serving))
    }

    /// Stops the agents, the coordinator and the server, in that order;
    /// whether every one stopped cleanly in time.
    async fn stop(mut self) -> bool {
        let mut clean = true;
        for agent in &mut self.agents {
            clean &= stopped_cleanly(agent.terminate(STOP).await);
        }
        clean &= stopped_cleanly(self.coordinator.terminate(STOP).await);
        clean &= stopped_cleanly(self.nats.terminate(STOP).await);
        clean
    }
}

/// Whether a process stopped cleanly in time: it exited with success, or
/// by the signal it was sent.
fn stopped_cleanly(stopped: Result<ExitStatus, phasegate_devkit::Error>) -> bool {
    match stopped {
        Ok(status) => status.success() || status.code().is_none(),
        Err(e) => {
            eprintln!("{e}");
            false
        }
    }
}

/// What the demo's `phasegate` processes are started with.
struct Launch<'a> {
    install: &'a Installation,
    work: &'a Path,
    exe: PathBuf,
    url: String,
}

impl Launch<'_> {
    fn coordinator(&self) -> anyhow::Result<ChildProcess> {
        let mut command = Command::new(&self.exe);
        command
            .args(["coordinator", "--nats-url", &self.url])
            .args(self.install.coordinator_args());
        let log = self.work.join("coordinator.log");
        Ok(ChildProcess::spawn_with_log("coordinator", command, log)?)
    }

    fn agent(
        &self,
        segment: &str,
        tier: &str,
        listen: SocketAddr,
        health: &Health,
    ) -> anyhow::Result<ChildProcess> {
        let mut command = Command::new(&self.exe);
        command
            .args(["agent", "--segment", segment, "--tier", tier])
            .args(["--nats-url", &self.url, "--listen", &listen.to_string()])
            .args(self.install.agent_args(segment))
            .args([
                "--agent-id",
                &format!("{segment}-1"),
                "--heartbeat-ms",
                "200",
            ])
            .args(["--health-url", &health.url(segment)])
            .arg("--state-dir")
            .arg(self.work.join(format!("state-{segment}")));
        let log = self.work.join(format!("agent-{segment}.log"));
        Ok(ChildProcess::spawn_with_log(segment, command, log)?)
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

    /// How nats-server runs: in `work` (its log, ports file and store),
    /// and in a secured installation from its configuration (accounts,
    /// users).
    fn nats_options(&self, work: &Path) -> NatsServerOptions {
        NatsServerOptions {
            config: self.file("nats-server.conf"),
            dir: Some(work.to_path_buf()),
        }
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
    /// History lines of the current rollout printed so far.
    printed: Cell<usize>,
}

impl Demo {
    /// The client of the operator who makes the changes.
    fn client(&self) -> &PhasegateClient {
        &self.cast.release.client
    }

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
        &self,
        id: &TriggerId,
        what: &str,
        cond: impl Fn(&Trigger) -> bool,
    ) -> anyhow::Result<Trigger> {
        Ok(wait_for(what, STEP, || async {
            let t = self
                .client()
                .trigger_get(id.clone())
                .await
                .map_err(|e| e.to_string())?;
            for h in t.history.iter().skip(self.printed.get()) {
                say(format!("  {}", history_line(h)));
            }
            self.printed.set(t.history.len());
            if cond(&t) {
                Ok(t)
            } else {
                Err(format!("{:?} in {:?}", t.status, t.phase_state))
            }
        })
        .await?)
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
        wait_for(what, STEP, || async {
            let v = self
                .post(segment, path, body.clone())
                .await
                .map_err(|e| e.to_string())?;
            if cond(&v) { Ok(()) } else { Err(v.to_string()) }
        })
        .await?;
        Ok(())
    }

    /// Puts `spec` as operator `release`, with `comment`.
    async fn put(
        &self,
        kind: EntityKind,
        spec: Value,
        comment: Option<&str>,
    ) -> anyhow::Result<EntityResult> {
        let name = self.cast.release.name.clone();
        let comment = comment.map(str::to_owned);
        let spec = serde_json::from_value(spec)?;
        Ok(self
            .client()
            .entity_put(kind, spec, name, comment, None)
            .await?)
    }

    /// Puts `spec`, a change through a pipeline, and returns the rollout it
    /// starts; history is printed from its start.
    async fn start_rollout(
        &self,
        kind: EntityKind,
        spec: Value,
        comment: &str,
    ) -> anyhow::Result<TriggerId> {
        let r = self.put(kind, spec, Some(comment)).await?;
        let t = r.trigger.context("the change did not start a rollout")?;
        say(format!(
            "  rollout {}: v{} → v{}",
            t.id, t.from_version, t.to_version
        ));
        self.printed.set(0);
        Ok(t.id)
    }
}

/// `phasegate demo` (`--secured`: as a secured installation).
pub(crate) async fn run(_g: &Global, secured: bool) -> anyhow::Result<u8> {
    let started = Instant::now();
    let dir = tempfile::Builder::new()
        .prefix("phasegate-demo-")
        .tempdir()?;
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
    let outcome = start_and_walk(secured, dir.path()).await;
    conclude(outcome, dir, started)
}

/// Starts the installation, walks the script, stops everything; whether
/// every process stopped cleanly.
async fn start_and_walk(secured: bool, work: &Path) -> anyhow::Result<bool> {
    let install = if secured {
        Installation::secure(work)?
    } else {
        Installation::Open
    };
    let health = Health::start().await?;
    let (processes, agents) = Processes::start(&install, work, &health).await?;
    // The demo's own connections close when `walk` returns, before the
    // server stops, so that stopping it is quiet.
    let walked = walk(&install, &processes.nats.url(), agents, health).await;
    say("");
    say("stopping everything");
    let clean = processes.stop().await;
    walked.map(|()| clean)
}

/// The verdict: 0 when every step happened and every process stopped
/// cleanly; otherwise an error, and the logs are kept.
fn conclude(outcome: anyhow::Result<bool>, dir: TempDir, started: Instant) -> anyhow::Result<u8> {
    match outcome {
        Ok(true) => {
            say(format!(
                "demo finished in {:.1}s: every step above happened",
                started.elapsed().as_secs_f64()
            ));
            Ok(0)
        }
        Ok(false) => bail!(
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
    let demo = Demo {
        cast: install.cast(url).await?,
        http: Client::builder(TokioExecutor::new()).build(HttpConnector::new()),
        agents,
        health,
        printed: Cell::new(0),
    };
    script(&demo).await
}

/// The walk, act by act.
async fn script(d: &Demo) -> anyhow::Result<()> {
    wait_until_the_fleet_is_up(d).await?;
    define_the_seed_pipeline(d).await?;
    let id = roll_out_a_gate_until_it_awaits_approval(d).await?;
    approve(d, &id).await?;
    bake_through_to_prod_eu(d, &id).await?;
    pause_while_prod_eu_is_unhealthy(d, &id).await?;
    put_a_config_behind_a_careful_pipeline(d).await?;
    roll_back_when_staging_fails(d).await
}

/// Ready: the coordinator answers and every agent has reported.
async fn wait_until_the_fleet_is_up(d: &Demo) -> anyhow::Result<()> {
    wait_for("the coordinator and five live agents", STEP, || async {
        let agents = d.client().agents(None).await.map_err(|e| e.to_string())?;
        let live = agents.iter().filter(|a| a.live).count();
        if live == SEGMENTS.len() {
            Ok(())
        } else {
            Err(format!("{live} live agents"))
        }
    })
    .await?;
    Ok(())
}

/// 1. Five segments in a row, prod-us-west behind an approval, prod-eu
///    pausing when unhealthy.
async fn define_the_seed_pipeline(d: &Demo) -> anyhow::Result<()> {
    let approver = &d.cast.approver.name;
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
    d.client()
        .pipeline_put(pipeline, d.cast.release.name.clone())
        .await?;
    Ok(())
}

/// 2. A gate turned on through the pipeline: dev applies and bakes while
///    staging still serves the old version, up to prod-us-west's approval.
async fn roll_out_a_gate_until_it_awaits_approval(d: &Demo) -> anyhow::Result<TriggerId> {
    say("");
    say(
        "2. gate new-checkout exists, off for everyone; the change turns it on through the pipeline",
    );
    let off = json!({"name": "new-checkout", "rules": [{"id": "everyone", "pass_percentage": 0}]});
    d.put(EntityKind::Gate, off, None).await?;
    let on = json!({"name": "new-checkout", "pipeline": "demo-seed", "rules": [{"id": "everyone", "pass_percentage": 100}]});
    let id = d
        .start_rollout(EntityKind::Gate, on, "turn on the new checkout")
        .await?;
    let t = d
        .until(&id, "dev applied and baking", |t| {
            t.is_at("dev", PhaseState::Baking)
        })
        .await?;
    say(format!(
        "  dev applied by its agent; the bake timer runs until {} (1.5s)",
        crate::output::clock(t.phase_ends_at_ms.unwrap_or(0))
    ));
    d.show_gate("dev", "new-checkout", "user-1").await?;
    d.show_gate("staging", "new-checkout", "user-1").await?;
    d.until(&id, "prod-us-west awaiting approval", |t| {
        t.is_at("prod-us-west", PhaseState::AwaitingApproval)
    })
    .await?;
    Ok(id)
}

/// After the approval the rollout goes on to prod-eu, and the one approval
/// recorded is the approver's.
async fn bake_through_to_prod_eu(d: &Demo, id: &TriggerId) -> anyhow::Result<()> {
    let approver = &d.cast.approver.name;
    let t = d
        .until(id, "prod-eu baking", |t| {
            t.is_at("prod-eu", PhaseState::Baking)
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
    Ok(())
}

/// 3. prod-eu turns unhealthy while it bakes: the rollout pauses, keeps
///    what is applied, resumes when prod-eu recovers and completes.
async fn pause_while_prod_eu_is_unhealthy(d: &Demo, id: &TriggerId) -> anyhow::Result<()> {
    say("");
    say("3. prod-eu turns unhealthy while it bakes: the rollout pauses");
    d.health.set_failing("prod-eu", true);
    let t = d
        .until(id, "paused by health", |t| {
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
        .until(id, "completed", |t| t.status == TriggerStatus::Completed)
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
    Ok(())
}

/// 4, first half: a pipeline whose staging phase aborts when unhealthy,
///    and config checkout-limits v1 served at staging.
async fn put_a_config_behind_a_careful_pipeline(d: &Demo) -> anyhow::Result<()> {
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
    d.client()
        .pipeline_put(careful, d.cast.release.name.clone())
        .await?;
    let v1 = json!({"name": "checkout-limits", "default_value": {"max_items": 10}});
    d.put(EntityKind::Config, v1, None).await?;
    d.until_agent(
        "staging",
        "/v1/get_config",
        json!({"config": "checkout-limits", "user": {}}),
        "v1 at staging",
        |v| v["version"] == 1,
    )
    .await
}

/// 4, second half: v2 reaches staging, staging turns unhealthy, and the
///    rollout aborts: every segment is back on v1.
async fn roll_back_when_staging_fails(d: &Demo) -> anyhow::Result<()> {
    let v2 = json!({"name": "checkout-limits", "pipeline": "demo-careful", "default_value": {"max_items": 50}});
    let id = d
        .start_rollout(EntityKind::Config, v2, "raise the limit")
        .await?;
    d.until(&id, "staging baking", |t| {
        t.is_at("staging", PhaseState::Baking)
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
