//! The installation under measurement: a `phasegate coordinator` process
//! (so its RSS and CPU are its own) and agents started in this process
//! through the agent library, each with its own NATS connection and state
//! directory.

use std::time::Duration;

use anyhow::Context as _;
use phasegate_agent::{Agent, AgentConfig};
use phasegate_client::PhasegateClient;
use phasegate_devkit::{ChildProcess, NatsServer, wait_for};
use phasegate_proto::{AgentId, Segment};
use phasegate_tests::spawn_phasegate_env;
use tempfile::TempDir;

/// How long a fleet may take to start and be counted live: a thousand
/// connections on two busy cores.
const START_PATIENCE: Duration = Duration::from_secs(180);

/// Agents started at once.
const STARTING_AT_ONCE: usize = 32;

/// A coordinator process on `nats` with a client of its command API.
pub(crate) struct Coord {
    pub(crate) proc: ChildProcess,
    pub(crate) client: PhasegateClient,
}

impl Coord {
    /// Starts `phasegate coordinator` (warnings only in its log: logging
    /// ten thousand triggers would measure the logger) and waits until it
    /// answers.
    pub(crate) async fn start(nats: &NatsServer) -> anyhow::Result<Self> {
        let url = nats.url();
        let proc = spawn_phasegate_env(
            "coordinator",
            &["coordinator", "--nats-url", &url, "--metrics-listen", "off"],
            &[("RUST_LOG", "warn")],
        )?;
        let client = PhasegateClient::connect(&url, "phasegate", Duration::from_secs(60)).await?;
        wait_for(
            "the coordinator to answer pipeline.list",
            Duration::from_secs(30),
            || async { client.pipeline_list().await },
        )
        .await?;
        Ok(Self { proc, client })
    }

    /// Its process id.
    pub(crate) fn pid(&self) -> anyhow::Result<u32> {
        self.proc.pid().context("the coordinator is not running")
    }

    /// Waits until it counts `n` live agents.
    pub(crate) async fn wait_live(&self, n: usize) -> anyhow::Result<()> {
        phasegate_tests::wait_live_agents_within(&self.client, n, START_PATIENCE).await
    }
}

/// Agents running in this process; their state directories go with it.
pub(crate) struct Fleet {
    agents: Vec<Agent>,
    _dir: TempDir,
}

impl Fleet {
    /// Starts `n` agents, `per_segment` to a segment named
    /// `<prefix>-NNN`, ids `<prefix>-NNNN`, HTTP on ephemeral ports.
    pub(crate) async fn start(
        url: &str,
        prefix: &str,
        n: usize,
        per_segment: usize,
        heartbeat_ms: u64,
    ) -> anyhow::Result<Self> {
        use futures_util::StreamExt as _;
        let dir = tempfile::Builder::new()
            .prefix("phasegate-fleet-")
            .tempdir()?;
        let configs = (0..n)
            .map(|i| {
                let mut c = AgentConfig::new(
                    Segment::new(format!("{prefix}-{:03}", i / per_segment))?,
                    url,
                );
                c.agent_id = AgentId::new(format!("{prefix}-{i:04}"))?;
                c.state_dir = dir.path().join(format!("agent-{i}"));
                c.listen = ([127, 0, 0, 1], 0).into();
                c.heartbeat_ms = heartbeat_ms;
                Ok(c)
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        let agents = futures_util::stream::iter(configs)
            .map(Agent::start)
            .buffer_unordered(STARTING_AT_ONCE)
            .collect::<Vec<_>>()
            .await
            .into_iter()
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self { agents, _dir: dir })
    }

    /// Stops every agent (each says it leaves).
    pub(crate) async fn stop(self) {
        use futures_util::StreamExt as _;
        futures_util::stream::iter(self.agents)
            .map(Agent::stop)
            .buffer_unordered(64)
            .collect::<Vec<()>>()
            .await;
    }
}

/// Resident and peak resident memory of process `pid`, in bytes
/// (`VmRSS`, `VmHWM` of /proc/PID/status).
pub(crate) fn rss(pid: u32) -> anyhow::Result<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .map(|kb| kb * 1024)
            .with_context(|| format!("no {name} in /proc/{pid}/status"))
    };
    Ok((field("VmRSS:")?, field("VmHWM:")?))
}

/// CPU time process `pid` has used so far (user + system).
pub(crate) fn cpu_time(pid: u32) -> anyhow::Result<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // The command name is in parentheses and may hold spaces: count fields
    // after its closing one. utime and stime are fields 14 and 15.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .context("malformed /proc/PID/stat")?;
    let mut fields = rest.split_whitespace().skip(11);
    let mut next = || -> anyhow::Result<u64> {
        Ok(fields
            .next()
            .context("short /proc/PID/stat")?
            .parse::<u64>()?)
    };
    let ticks = next()? + next()?;
    #[allow(clippy::cast_precision_loss)] // ticks of a benchmark run
    Ok(Duration::from_secs_f64(ticks as f64 / clock_ticks() as f64))
}

/// `getconf CLK_TCK`, 100 when it cannot be asked.
fn clock_ticks() -> u64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .filter(|t| *t > 0)
        .unwrap_or(100)
}
