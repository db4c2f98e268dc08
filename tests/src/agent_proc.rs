//! A `phasegate agent` process on a free port with its own state directory.

use std::net::SocketAddr;
use std::path::PathBuf;

use crate::http::Http;
use crate::{ChildProcess, PATIENCE, free_port, spawn_phasegate_env, wait_for};

/// An agent process.
pub struct AgentProc {
    /// The process.
    pub proc: ChildProcess,
    /// Where its HTTP API listens.
    pub addr: SocketAddr,
    /// Its state directory.
    pub state_dir: PathBuf,
    /// An HTTP client.
    pub http: Http,
    /// Removes the state directory when the agent handle goes.
    _state_guard: Option<tempfile::TempDir>,
}

impl AgentProc {
    /// Starts `phasegate agent` for `segment` with `extra` flags, and waits
    /// until its HTTP API answers.
    pub async fn start(
        nats_url: &str,
        id: &str,
        segment: &str,
        extra: &[&str],
    ) -> anyhow::Result<Self> {
        Self::start_env(nats_url, id, segment, extra, &[]).await
    }

    /// Like [`AgentProc::start`], with extra environment variables.
    pub async fn start_env(
        nats_url: &str,
        id: &str,
        segment: &str,
        extra: &[&str],
        envs: &[(&str, &str)],
    ) -> anyhow::Result<Self> {
        let guard = tempfile::Builder::new()
            .prefix("phasegate-state-")
            .tempdir()?;
        let dir = guard.path().to_path_buf();
        let mut a = Self::start_in(nats_url, id, segment, extra, dir, envs).await?;
        a._state_guard = Some(guard);
        Ok(a)
    }

    /// Like [`AgentProc::start`] with a given state directory.
    pub async fn start_in(
        nats_url: &str,
        id: &str,
        segment: &str,
        extra: &[&str],
        state_dir: PathBuf,
        envs: &[(&str, &str)],
    ) -> anyhow::Result<Self> {
        let port = free_port()?;
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse()?;
        let listen = addr.to_string();
        let state = state_dir.display().to_string();
        let mut args = vec![
            "agent",
            "--segment",
            segment,
            "--agent-id",
            id,
            "--nats-url",
            nats_url,
            "--listen",
            &listen,
            "--state-dir",
            &state,
            "--heartbeat-ms",
            "100",
        ];
        args.extend_from_slice(extra);
        let proc = spawn_phasegate_env(&format!("agent-{id}"), &args, envs)?;
        let a = Self {
            proc,
            addr,
            state_dir,
            http: Http::default(),
            _state_guard: None,
        };
        a.wait_serving().await?;
        Ok(a)
    }

    /// Waits until `/healthz` answers.
    pub async fn wait_serving(&self) -> anyhow::Result<()> {
        wait_for("the agent's HTTP API to answer", PATIENCE, || async {
            self.http.get(self.addr, "/healthz").await
        })
        .await?;
        Ok(())
    }

    /// `POST /v1/check_gate` for `gate` and `user`.
    pub async fn check_gate(
        &self,
        gate: &str,
        user: serde_json::Value,
    ) -> anyhow::Result<serde_json::Value> {
        self.evaluate(
            "/v1/check_gate",
            serde_json::json!({"gate": gate, "user": user}),
        )
        .await
    }

    /// `POST /v1/get_config` for `config` and `user`.
    pub async fn get_config(
        &self,
        config: &str,
        user: serde_json::Value,
    ) -> anyhow::Result<serde_json::Value> {
        self.evaluate(
            "/v1/get_config",
            serde_json::json!({"config": config, "user": user}),
        )
        .await
    }

    async fn evaluate(
        &self,
        path: &str,
        body: serde_json::Value,
    ) -> anyhow::Result<serde_json::Value> {
        let (status, answer) = self.http.post(self.addr, path, &body).await?;
        anyhow::ensure!(status == 200, "{path} answered {status}: {answer}");
        Ok(answer)
    }

    /// `GET /healthz`.
    pub async fn healthz(&self) -> anyhow::Result<serde_json::Value> {
        Ok(self.http.get(self.addr, "/healthz").await?.1)
    }
}
