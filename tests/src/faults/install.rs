//! One installation for many episodes: nats-server with JetStream, two
//! coordinators (a leader and a standby, `--instance-id c0` / `c1`), and one
//! real agent per segment; every process can be killed, frozen and brought
//! back by the fault injector.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use phasegate_client::PhasegateClient;
use tempfile::TempDir;

use crate::{AgentProc, ChildProcess, NatsServer, spawn_phasegate, wait_for};

/// The coordinators' lease: short, so that a standby takes over within an
/// episode.
pub const LEADER_LEASE_MS: u64 = 1_200;

/// The agents' staleness bound (`--stale-after-ms`).
pub const STALE_AFTER_MS: u64 = 1_000;

/// How long a request of the test may take before it counts as timed out.
pub const REQUEST_TIMEOUT: Duration = Duration::from_millis(1_500);

/// A coordinator process and what the injector did to it.
pub struct Coordinator {
    /// The process (log in JSON lines).
    pub proc: ChildProcess,
    /// Its `--instance-id`.
    pub instance: String,
    /// Killed by the test and not restarted yet.
    pub down: bool,
    /// Stopped by the test and not continued yet.
    pub frozen: bool,
    /// Continued after a freeze since its last start: it may rightly stop
    /// by itself, having lost its lease while frozen.
    pub woken: bool,
}

/// An agent process and what the injector did to it.
pub struct Agent {
    /// The process.
    pub proc: AgentProc,
    /// Its segment.
    pub segment: String,
    /// Its agent id.
    pub id: String,
    /// Killed by the test and not restarted yet.
    pub down: bool,
    /// Stopped by the test and not continued yet.
    pub frozen: bool,
}

/// The processes of one installation.
pub struct Installation {
    /// The server.
    pub nats: NatsServer,
    /// Killed by the test and not restarted yet.
    pub nats_down: bool,
    /// Stopped by the test and not continued yet.
    pub nats_frozen: bool,
    /// Two coordinators.
    pub coords: Vec<Coordinator>,
    /// One agent per segment.
    pub agents: Vec<Agent>,
    /// A client of the command API.
    pub client: PhasegateClient,
    _conf_dir: TempDir,
}

impl Installation {
    /// Starts everything and waits until the command API answers and the
    /// agents serve.
    pub async fn start(segments: &[String]) -> anyhow::Result<Self> {
        let nats = NatsServer::start().await?;
        let url = nats.url();
        let conf_dir = tempfile::Builder::new()
            .prefix("phasegate-faults-")
            .tempdir()?;
        let conf: PathBuf = conf_dir.path().join("coordinator.toml");
        std::fs::write(
            &conf,
            format!(
                "leader_lease_ms = {LEADER_LEASE_MS}\nsweep_ms = 50\nmetrics_listen = \"off\"\n"
            ),
        )?;
        let conf = conf.display().to_string();
        let mut coords = Vec::new();
        for i in 0..2 {
            let instance = format!("c{i}");
            let proc = spawn_phasegate(
                &format!("coordinator-{instance}"),
                &[
                    "--log-format",
                    "json",
                    "coordinator",
                    "--nats-url",
                    &url,
                    "--config",
                    &conf,
                    "--instance-id",
                    &instance,
                ],
            )?;
            coords.push(Coordinator {
                proc,
                instance,
                down: false,
                frozen: false,
                woken: false,
            });
        }
        let client = PhasegateClient::connect(&url, "phasegate", REQUEST_TIMEOUT).await?;
        let mut agents = Vec::new();
        for (i, segment) in segments.iter().enumerate() {
            let id = format!("a{i}");
            let stale = STALE_AFTER_MS.to_string();
            let proc = AgentProc::start(&url, &id, segment, &["--stale-after-ms", &stale]).await?;
            agents.push(Agent {
                proc,
                segment: segment.clone(),
                id,
                down: false,
                frozen: false,
            });
        }
        let inst = Self {
            nats,
            nats_down: false,
            nats_frozen: false,
            coords,
            agents,
            client,
            _conf_dir: conf_dir,
        };
        inst.wait_ready(Duration::from_secs(20)).await?;
        // Every agent must be known before the first rollout, or a phase
        // rightly does not wait for it. One that never shows up is left to
        // the episodes' "every agent known" check to report.
        let missing = inst.wait_agents_live(Duration::from_secs(10)).await;
        if !missing.is_empty() {
            eprintln!("agents not listed as live 10s after start: {missing:?}");
        }
        Ok(inst)
    }

    /// Waits until some coordinator answers the command API.
    pub async fn wait_ready(&self, timeout: Duration) -> anyhow::Result<()> {
        wait_for("a coordinator to answer pipeline.list", timeout, || async {
            self.client.pipeline_list().await
        })
        .await?;
        Ok(())
    }

    /// Brings every process back: continues the frozen ones and restarts
    /// the killed ones (and coordinators that stopped by themselves, as a
    /// service manager would). Returns the instances restarted after they
    /// had exited on their own.
    pub async fn heal(&mut self) -> anyhow::Result<Vec<String>> {
        if self.nats_frozen {
            signal(self.nats.pid(), "CONT");
            self.nats_frozen = false;
        }
        if self.nats_down || self.nats.pid().is_none() {
            self.nats.restart().await?;
            self.nats_down = false;
        }
        let mut self_exited = Vec::new();
        for c in &mut self.coords {
            if c.frozen {
                signal(c.proc.pid(), "CONT");
                c.frozen = false;
                c.woken = true;
            }
            if !c.proc.is_running() {
                if !c.down {
                    self_exited.push(c.instance.clone());
                }
                c.proc.restart()?;
                c.down = false;
                c.woken = false;
            }
        }
        for a in &mut self.agents {
            if a.frozen {
                signal(a.proc.proc.pid(), "CONT");
                a.frozen = false;
            }
            if a.down || !a.proc.proc.is_running() {
                a.proc.proc.restart()?;
                a.down = false;
            }
        }
        for a in &self.agents {
            a.proc.wait_serving().await?;
        }
        Ok(self_exited)
    }

    /// Waits until the coordinator lists every agent as live (bounded; the
    /// caller decides what a missing agent means).
    pub async fn wait_agents_live(&self, timeout: Duration) -> Vec<String> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut missing: Vec<String> = self.agents.iter().map(|a| a.id.clone()).collect();
        loop {
            if let Ok(list) = self.client.agents(None).await {
                missing = self
                    .agents
                    .iter()
                    .filter(|w| !list.iter().any(|a| a.agent_id.as_str() == w.id && a.live))
                    .map(|w| w.id.clone())
                    .collect();
            }
            if missing.is_empty() || tokio::time::Instant::now() >= deadline {
                return missing;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Sends `SIGSTOP` / `SIGCONT` (by name, `STOP` / `CONT`) to `pid`.
pub fn signal(pid: Option<u32>, sig: &str) {
    if let Some(pid) = pid {
        // A process that is gone cannot be signalled: nothing to do.
        let _ = Command::new("kill")
            .args([&format!("-{sig}"), &pid.to_string()])
            .status();
    }
}
