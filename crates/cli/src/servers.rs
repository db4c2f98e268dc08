//! The long-running programs: `phasegate coordinator` and `phasegate agent`.

use std::path::PathBuf;

use anyhow::Context;

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
    /// The segment's Prometheus (http://host:port), which the metric
    /// analyses of active phases query; without it they are inconclusive.
    #[arg(long, env = "PHASEGATE_PROMETHEUS_URL")]
    prometheus_url: Option<String>,
    /// Configuration file (TOML); see config/agents/.
    #[arg(long)]
    config: Option<PathBuf>,
}

pub(crate) fn agent_config(
    a: AgentArgs,
    nats_url: Option<String>,
    security: phasegate_client::Security,
) -> anyhow::Result<phasegate_agent::AgentConfig> {
    let file = match &a.config {
        Some(p) => phasegate_agent::AgentFile::load(p)?,
        None => phasegate_agent::AgentFile::default(),
    };
    let security = security.or(file.security());
    let origin = a
        .config
        .as_ref()
        .map_or_else(|| "flags".to_owned(), |p| p.display().to_string());
    let segment = a
        .segment
        .or(file.segment)
        .context("--segment is required (or `segment` in --config)")?;
    let segment =
        phasegate_proto::Segment::new(segment).map_err(|e| anyhow::anyhow!("--segment: {e}"))?;
    let url = nats_url
        .or(file.nats_url)
        .unwrap_or_else(|| DEFAULT_NATS_URL.to_owned());
    let mut cfg = phasegate_agent::AgentConfig::new(segment, url);
    cfg.security = security;
    cfg.tier = a.tier.or(file.tier);
    if let Some(l) = a.listen.or(file.listen) {
        cfg.listen = l;
    }
    if let Some(d) = a.state_dir.or(file.state_dir) {
        cfg.state_dir = d;
    }
    if let Some(id) = a.agent_id.or(file.agent_id) {
        cfg.agent_id =
            phasegate_proto::AgentId::new(id).map_err(|e| anyhow::anyhow!("--agent-id: {e}"))?;
    }
    cfg.health_urls = if a.health_urls.is_empty() {
        file.health_urls
    } else {
        a.health_urls
    };
    if let Some(h) = a.heartbeat_ms.or(file.heartbeat_ms) {
        cfg.heartbeat_ms = h;
    }
    if let Some(s) = a.stale_after_ms.or(file.stale_after_ms) {
        cfg.stale_after_ms = s;
    }
    if let Some(t) = a.probe_timeout_ms.or(file.probe_timeout_ms) {
        cfg.probe_timeout_ms = t;
    }
    if let Some(n) = a.unhealthy_after.or(file.unhealthy_after) {
        cfg.unhealthy_after = n;
    }
    if let Some(n) = a.healthy_after.or(file.healthy_after) {
        cfg.healthy_after = n;
    }
    cfg.prometheus_url = a.prometheus_url.or(file.prometheus_url);
    if let Some(p) = file.subject_prefix {
        cfg.subject_prefix = p;
    }
    if let Some(m) = file.max_body_bytes {
        cfg.max_body_bytes = m;
    }
    if let Some(t) = file.header_read_timeout_ms {
        cfg.header_read_timeout_ms = t;
    }
    if let Some(t) = file.body_read_timeout_ms {
        cfg.body_read_timeout_ms = t;
    }
    if let Some(n) = file.max_connections {
        cfg.max_connections = n;
    }
    cfg.check(&origin)?;
    Ok(cfg)
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
