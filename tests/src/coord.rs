//! A coordinator process on its own nats-server, with a typed client.

use std::time::Duration;

use phasegate_client::PhasegateClient;

use crate::{ChildProcess, NatsServer, PATIENCE, spawn_phasegate_env, wait_for};

/// A nats-server and a `phasegate coordinator` process on it.
pub struct CoordEnv {
    /// The server.
    pub nats: NatsServer,
    /// The coordinator process.
    pub coord: ChildProcess,
    /// A client of its command API.
    pub client: PhasegateClient,
}

impl CoordEnv {
    /// Starts both and waits until the coordinator answers.
    pub async fn start() -> anyhow::Result<Self> {
        // An ephemeral metrics port: tests run coordinators side by side.
        Self::start_with("127.0.0.1:0", &[]).await
    }

    /// Like [`CoordEnv::start`], with a metrics address and extra
    /// environment variables for the coordinator.
    pub async fn start_with(metrics_listen: &str, envs: &[(&str, &str)]) -> anyhow::Result<Self> {
        let nats = NatsServer::start().await?;
        let url = nats.url();
        let coord = spawn_phasegate_env(
            "coordinator",
            &[
                "coordinator",
                "--nats-url",
                &url,
                "--metrics-listen",
                metrics_listen,
            ],
            envs,
        )?;
        let client = PhasegateClient::connect(&url, "phasegate", Duration::from_secs(5)).await?;
        let env = Self {
            nats,
            coord,
            client,
        };
        env.wait_ready().await?;
        Ok(env)
    }

    /// Waits until the coordinator answers a command.
    pub async fn wait_ready(&self) -> anyhow::Result<()> {
        wait_for(
            "the coordinator to answer pipeline.list",
            PATIENCE,
            || async { self.client.pipeline_list().await },
        )
        .await?;
        Ok(())
    }

    /// Waits until the coordinator counts `n` live agents: a phase only
    /// waits for the acks of agents it knows.
    pub async fn wait_live_agents(&self, n: usize) -> anyhow::Result<()> {
        wait_live_agents(&self.client, n).await
    }

    /// `kill -9` of the coordinator, then a fresh start; waits until ready.
    pub async fn crash_and_restart(&mut self) -> anyhow::Result<()> {
        self.coord.kill()?;
        self.coord.restart()?;
        self.wait_ready().await
    }
}

/// Waits until the coordinator `c` talks to counts `n` live agents.
pub async fn wait_live_agents(c: &PhasegateClient, n: usize) -> anyhow::Result<()> {
    wait_live_agents_within(c, n, PATIENCE).await
}

/// Like [`wait_live_agents`], for at most `patience` (a thousand agents
/// take longer to start than a test's few).
pub async fn wait_live_agents_within(
    c: &PhasegateClient,
    n: usize,
    patience: Duration,
) -> anyhow::Result<()> {
    Ok(wait_for(&format!("{n} live agents"), patience, || async {
        let live = c
            .agents(None)
            .await
            .map_err(|e| e.to_string())?
            .iter()
            .filter(|a| a.live)
            .count();
        if live == n {
            Ok(())
        } else {
            Err(format!("{live} live agents"))
        }
    })
    .await?)
}
