//! The phasegate agent: one per segment, next to the services that ask it
//! for gates and configs (SPEC.md §5, §7).
//!
//! Actors: [`sync`] ([`sync::SyncActor`]) keeps the segment's desired state in step with the
//! coordinator and on disk; [`health`] probes the `--health-url`s;
//! [`report`] heartbeats and acks. The HTTP API evaluates against an
//! immutable snapshot swapped whole on each applied change. The agent
//! never writes to the coordinator's state and never evaluates anything it
//! has not first written to its state directory.

mod analysis;
pub mod config;
mod flag_metrics;
mod health;
mod http;
mod journal;
mod ofrep;
mod plan;
mod prometheus;
mod report;
mod serve;
mod served;
mod sse;
pub mod state;
mod sync;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use phasegate_bus::ConnectOptions;
use phasegate_proto::Subjects;
use ractor::{Actor, ActorRef};

pub use config::{AgentConfig, AgentFile};

/// What can stop an agent from starting.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// The configuration is unusable.
    #[error("configuration: {0}")]
    Config(String),
    /// The state directory cannot be used.
    #[error("state: {0}")]
    State(String),
    /// NATS failed.
    #[error(transparent)]
    Bus(#[from] phasegate_bus::BusError),
    /// The HTTP listener cannot be opened.
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        /// The address asked for.
        addr: SocketAddr,
        /// The system's reason: the address is taken, not this host's, or
        /// the port needs privileges.
        source: std::io::Error,
    },
    /// An actor could not start.
    #[error("actor system: {0}")]
    Actor(String),
}

/// How often a running watch asks whether the desired-state bucket was
/// created again: every five heartbeats, within 0.5 s to 30 s. One
/// JetStream API request each time, so a thousand agents at the default
/// heartbeat cost the server 200 requests a second.
fn generation_check(heartbeat_ms: u64) -> Duration {
    Duration::from_millis(heartbeat_ms.saturating_mul(5).clamp(500, 30_000))
}

/// The longest a stopping agent spends telling the coordinator it leaves.
pub const LEAVE_TIMEOUT: Duration = Duration::from_secs(3);

/// A running agent.
pub struct Agent {
    addr: SocketAddr,
    http: tokio::task::JoinHandle<()>,
    stop_http: tokio::sync::oneshot::Sender<()>,
    actors: Actors,
    client: phasegate_bus::Client,
    shared: Arc<served::Shared>,
}

/// The agent's actors (see the crate's documentation).
struct Actors {
    sync: ActorRef<sync::SyncMsg>,
    analysis: ActorRef<analysis::AnalysisMsg>,
    health: ActorRef<health::HealthMsg>,
    reporter: ActorRef<report::ReportMsg>,
}

impl Agent {
    /// Starts serving: state from disk at once, then NATS in the background.
    ///
    /// # Errors
    ///
    /// When the configuration is unusable or the listen address is taken.
    pub async fn start(config: AgentConfig) -> Result<Self, AgentError> {
        config.check("configuration")?;
        state::create_dir(&config.state_dir)?;
        let subjects = Subjects::new(config.subject_prefix.clone())
            .map_err(|e| AgentError::Config(e.to_string()))?;
        let shared = Arc::new(served::Shared::new(&config));
        let client = phasegate_bus::connect(
            ConnectOptions::new(
                &config.nats_url,
                format!("phasegate-agent {}", config.agent_id),
            )
            .with_subjects(subjects)
            .with_security(config.security.clone())
            .with_js_domain(config.nats_js_domain.clone()),
        )
        .await?;
        let actors = Actors::spawn(&config, &shared, &client).await?;
        let (listener, addr) = listen(config.listen).await?;
        let app = http::router(http::ApiState {
            shared: shared.clone(),
            max_body_bytes: config.max_body_bytes,
            body_read_timeout: Duration::from_millis(config.body_read_timeout_ms),
        });
        let limits = serve::Limits {
            header_read_timeout: Duration::from_millis(config.header_read_timeout_ms),
            max_connections: config.max_connections,
        };
        let (stop_http, stopped) = tokio::sync::oneshot::channel::<()>();
        let http = tokio::spawn(serve::serve(listener, app, limits, shared.clone(), stopped));
        tracing::info!(%addr, segment = %config.segment, agent_id = %config.agent_id, "agent serving");
        Ok(Self {
            addr,
            http,
            stop_http,
            actors,
            client,
            shared,
        })
    }

    /// The address the HTTP API listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops serving and the actors; what is on disk stays. When
    /// connected, the last report says the agent is leaving, so the
    /// coordinator forgets it at once rather than wait for its silence;
    /// that takes at most [`LEAVE_TIMEOUT`].
    pub async fn stop(self) {
        // Event streams never end by themselves: end them, so the HTTP
        // server's graceful stop does not wait for them.
        self.shared.push.close();
        let _ = self.stop_http.send(());
        let _ = self.http.await;
        let Actors {
            sync,
            analysis,
            health,
            reporter,
        } = self.actors;
        health.stop(None);
        sync.stop(None);
        analysis.stop(None);
        match reporter
            .call(report::ReportMsg::Leave, Some(LEAVE_TIMEOUT))
            .await
        {
            Ok(ractor::rpc::CallResult::Success(())) => {}
            Ok(_) | Err(_) => tracing::warn!("could not say this agent is leaving in time"),
        }
        reporter.stop(None);
        self.client.flush().await;
        tracing::info!("agent stopped");
    }
}

/// Starts one actor, unsupervised (the agent stops them all in `stop`).
async fn spawn<A: Actor>(actor: A, args: A::Arguments) -> Result<ActorRef<A::Msg>, AgentError> {
    Actor::spawn(None, actor, args)
        .await
        .map(|(r, _)| r)
        .map_err(|e| AgentError::Actor(e.to_string()))
}

impl Actors {
    /// The reporter first: the sync actor tells it when to ack.
    async fn spawn(
        config: &AgentConfig,
        shared: &Arc<served::Shared>,
        client: &phasegate_bus::Client,
    ) -> Result<Self, AgentError> {
        let reporter = spawn(
            report::Reporter,
            report::ReportArgs {
                shared: shared.clone(),
                client: client.clone(),
                tier: config.tier.clone(),
                heartbeat_ms: config.heartbeat_ms,
            },
        )
        .await?;
        // Before the sync actor, whose first announcement of the analyses
        // to run (from what is on disk) must find it.
        let analysis = spawn(
            analysis::AnalysisActor,
            analysis::AnalysisArgs {
                shared: shared.clone(),
                prometheus_url: config.prometheus_url.clone(),
                reporter: reporter.clone(),
            },
        )
        .await?;
        let sync = spawn(
            sync::SyncActor,
            sync::SyncArgs {
                shared: shared.clone(),
                client: client.clone(),
                state_dir: config.state_dir.clone(),
                reporter: reporter.clone(),
                generation_check: generation_check(config.heartbeat_ms),
            },
        )
        .await?;
        let health = spawn(
            health::HealthActor,
            health::HealthArgs {
                shared: shared.clone(),
                urls: config.health_urls.clone(),
                interval_ms: config.heartbeat_ms,
                probe_timeout_ms: config.probe_timeout_ms,
                unhealthy_after: config.unhealthy_after,
                healthy_after: config.healthy_after,
            },
        )
        .await?;
        Ok(Self {
            sync,
            analysis,
            health,
            reporter,
        })
    }
}

/// Opens the HTTP listener on `addr`; returns it with the address it got
/// (the port, when `addr` asked for any).
async fn listen(addr: SocketAddr) -> Result<(tokio::net::TcpListener, SocketAddr), AgentError> {
    let failed = |source| AgentError::Listen { addr, source };
    let listener = tokio::net::TcpListener::bind(addr).await.map_err(failed)?;
    let local = listener.local_addr().map_err(failed)?;
    Ok((listener, local))
}
