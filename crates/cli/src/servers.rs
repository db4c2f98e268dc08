//! The long-running programs: `phasegate coordinator` and `phasegate agent`.

use std::path::PathBuf;

use anyhow::Context;
use phasegate_agent::{AgentConfig, AgentFile};

use crate::DEFAULT_NATS_URL;

/// Flags of `phasegate agent`; each overrides the same key of `--config`.
#[derive(Debug, clap::Args)]
pub(crate) struct AgentArgs {
    /// The segment served.
    #[arg(long)]
    segment: Option<String>,
    /// Free label of the segment's environment.
    #[arg(long)]
    tier: Option<String>,
    /// HTTP listen address [default 127.0.0.1:7420].
    #[arg(long)]
    listen: Option<std::net::SocketAddr>,
    /// Where served state is kept [default ./phasegate-agent-<segment>].
    #[arg(long)]
    state_dir: Option<PathBuf>,
    /// This agent's id [default <segment>-<host>].
    #[arg(long)]
    agent_id: Option<String>,
    /// A health URL; repeat for several. Healthy while all answer 2xx.
    #[arg(long = "health-url")]
    health_urls: Vec<String>,
    /// Heartbeat and probe interval [default 1000].
    #[arg(long)]
    heartbeat_ms: Option<u64>,
    /// Staleness bound [default 30000].
    #[arg(long)]
    stale_after_ms: Option<u64>,
    /// How long one health probe may take before it counts as failed
    /// [default 2000].
    #[arg(long)]
    probe_timeout_ms: Option<u64>,
    /// Consecutive failed probe rounds before the agent turns unhealthy
    /// [default 3].
    #[arg(long)]
    unhealthy_after: Option<u32>,
    /// Consecutive passing probe rounds before it turns healthy again
    /// [default 2].
    #[arg(long)]
    healthy_after: Option<u32>,
    /// JetStream domain of the coordinator's buckets, for an agent on a
    /// region's leaf node (the hub's `jetstream { domain }`) [default:
    /// none, the JetStream of the server connected to].
    #[arg(long, env = "PHASEGATE_NATS_JS_DOMAIN")]
    nats_js_domain: Option<String>,
    /// The segment's Prometheus (http://host:port), which the metric
    /// analyses of active phases query; without it they are inconclusive.
    #[arg(long, env = "PHASEGATE_PROMETHEUS_URL")]
    prometheus_url: Option<String>,
    /// Configuration file (TOML); see config/agents/.
    #[arg(long)]
    config: Option<PathBuf>,
}

/// The agent's settings: each flag over the same key of `--config`, over
/// the default.
pub(crate) fn agent_config(
    a: AgentArgs,
    nats_url: Option<String>,
    security: phasegate_client::Security,
) -> anyhow::Result<AgentConfig> {
    let file = match &a.config {
        Some(p) => AgentFile::load(p)?,
        None => AgentFile::default(),
    };
    let security = security.or(file.security());
    let origin = a
        .config
        .as_ref()
        .map_or_else(|| "flags".to_owned(), |p| p.display().to_string());
    let cfg = settings(a.over(file), nats_url, security)?;
    cfg.check(&origin)?;
    Ok(cfg)
}

impl AgentArgs {
    /// `file` with each flag given in place of its key.
    fn over(self, file: AgentFile) -> AgentFile {
        AgentFile {
            segment: self.segment.or(file.segment),
            tier: self.tier.or(file.tier),
            listen: self.listen.or(file.listen),
            state_dir: self.state_dir.or(file.state_dir),
            agent_id: self.agent_id.or(file.agent_id),
            health_urls: if self.health_urls.is_empty() {
                file.health_urls
            } else {
                self.health_urls
            },
            heartbeat_ms: self.heartbeat_ms.or(file.heartbeat_ms),
            stale_after_ms: self.stale_after_ms.or(file.stale_after_ms),
            probe_timeout_ms: self.probe_timeout_ms.or(file.probe_timeout_ms),
            unhealthy_after: self.unhealthy_after.or(file.unhealthy_after),
            healthy_after: self.healthy_after.or(file.healthy_after),
            nats_js_domain: self.nats_js_domain.or(file.nats_js_domain),
            prometheus_url: self.prometheus_url.or(file.prometheus_url),
            ..file
        }
    }
}

/// The settings `keys` give, the defaults for those they leave out.
fn settings(
    keys: AgentFile,
    nats_url: Option<String>,
    security: phasegate_client::Security,
) -> anyhow::Result<AgentConfig> {
    let segment = keys
        .segment
        .context("--segment is required (or `segment` in --config)")?;
    let segment =
        phasegate_proto::Segment::new(segment).map_err(|e| anyhow::anyhow!("--segment: {e}"))?;
    let url = nats_url
        .or(keys.nats_url)
        .unwrap_or_else(|| DEFAULT_NATS_URL.to_owned());
    let mut cfg = AgentConfig::new(segment, url);
    cfg.security = security;
    cfg.nats_js_domain = keys.nats_js_domain;
    cfg.tier = keys.tier;
    if let Some(id) = keys.agent_id {
        cfg.agent_id =
            phasegate_proto::AgentId::new(id).map_err(|e| anyhow::anyhow!("--agent-id: {e}"))?;
    }
    cfg.health_urls = keys.health_urls;
    set(&mut cfg.listen, keys.listen);
    set(&mut cfg.state_dir, keys.state_dir);
    set(&mut cfg.heartbeat_ms, keys.heartbeat_ms);
    set(&mut cfg.stale_after_ms, keys.stale_after_ms);
    set(&mut cfg.probe_timeout_ms, keys.probe_timeout_ms);
    set(&mut cfg.unhealthy_after, keys.unhealthy_after);
    set(&mut cfg.healthy_after, keys.healthy_after);
    set(&mut cfg.subject_prefix, keys.subject_prefix);
    set(&mut cfg.max_body_bytes, keys.max_body_bytes);
    set(&mut cfg.header_read_timeout_ms, keys.header_read_timeout_ms);
    set(&mut cfg.body_read_timeout_ms, keys.body_read_timeout_ms);
    set(&mut cfg.max_connections, keys.max_connections);
    set(&mut cfg.max_event_streams, keys.max_event_streams);
    set(
        &mut cfg.event_stream_keep_alive_ms,
        keys.event_stream_keep_alive_ms,
    );
    cfg.prometheus_url = keys.prometheus_url;
    Ok(cfg)
}

/// `value` in place of the default, when given.
fn set<T>(default: &mut T, value: Option<T>) {
    if let Some(v) = value {
        *default = v;
    }
}

/// Resolves when SIGINT or SIGTERM arrives.
pub(crate) async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}

/// `phasegate coordinator`.
pub(crate) async fn coordinator(
    g: &crate::Global,
    config: Option<PathBuf>,
    metrics_listen: Option<String>,
    instance_id: Option<String>,
) -> anyhow::Result<()> {
    let mut cfg = match &config {
        Some(path) => phasegate_coordinator::CoordinatorConfig::load(path)?,
        None => phasegate_coordinator::CoordinatorConfig::default(),
    };
    if let Some(m) = metrics_listen {
        cfg.metrics_listen = m;
    }
    if let Some(p) = g.prefix.clone() {
        cfg.subject_prefix = p;
    }
    let security = g.security().or(cfg.security());
    cfg.nats_creds = security.creds;
    cfg.tls_ca = security.tls_ca;
    cfg.tls_cert = security.tls_cert;
    cfg.tls_key = security.tls_key;
    if instance_id.is_some() {
        cfg.instance_id = instance_id;
    }
    // The flag (or variable) wins over the file, the file over the default.
    let url = g
        .nats_url
        .clone()
        .or_else(|| cfg.nats_url.clone())
        .unwrap_or_else(|| DEFAULT_NATS_URL.to_owned());
    let coordinator = phasegate_coordinator::Coordinator::start(&url, cfg)
        .await
        .context("cannot start the coordinator")?;
    let failure = tokio::select! {
        () = shutdown_signal() => None,
        reason = coordinator.failed() => Some(reason),
    };
    coordinator.stop().await;
    match failure {
        // Everything is stored: the service manager starts a fresh process.
        Some(reason) => anyhow::bail!("the coordinator stopped on a failure: {reason}"),
        None => Ok(()),
    }
}

/// `phasegate agent`.
pub(crate) async fn agent(args: AgentArgs, g: &crate::Global) -> anyhow::Result<()> {
    let mut cfg = agent_config(args, g.nats_url.clone(), g.security())?;
    if let Some(p) = g.prefix.clone() {
        cfg.subject_prefix = p;
        cfg.check("--prefix")?;
    }
    let agent = phasegate_agent::Agent::start(cfg)
        .await
        .context("cannot start the agent")?;
    shutdown_signal().await;
    agent.stop().await;
    Ok(())
}
