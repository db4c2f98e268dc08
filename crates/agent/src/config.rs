//! The agent's settings: flags, or the same keys in a TOML file
//! (`--config FILE`; see `config/agents/`).

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};

use phasegate_proto::{AgentId, Segment};
use serde::Deserialize;

use crate::AgentError;

/// Where the HTTP API listens unless told: loopback, for the services on
/// the same host.
const DEFAULT_LISTEN: SocketAddr = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 7420));
const DEFAULT_HEARTBEAT_MS: u64 = 1_000;
const DEFAULT_STALE_AFTER_MS: u64 = 30_000;
const DEFAULT_PROBE_TIMEOUT_MS: u64 = 2_000;
const DEFAULT_UNHEALTHY_AFTER: u32 = 3;
const DEFAULT_HEALTHY_AFTER: u32 = 2;

/// The largest HTTP request body accepted, in bytes.
pub const DEFAULT_MAX_BODY_BYTES: usize = 64 * 1024;

/// How long a client may take to send a whole request head (and how long
/// an idle keep-alive connection is kept), in ms.
pub const DEFAULT_HEADER_READ_TIMEOUT_MS: u64 = 5_000;
/// How long a client may take to send a request body, in ms.
pub const DEFAULT_BODY_READ_TIMEOUT_MS: u64 = 10_000;
/// The most HTTP connections open at once; more are closed at accept.
pub const DEFAULT_MAX_CONNECTIONS: usize = 1_024;
/// The most OFREP event streams open at once; more are answered 503.
pub const DEFAULT_MAX_EVENT_STREAMS: usize = 256;
/// How often an OFREP event stream sends a keep-alive comment, in ms.
pub const DEFAULT_EVENT_STREAM_KEEP_ALIVE_MS: u64 = 15_000;

/// The keys of an agent configuration file. Every key matches a flag of
/// `phasegate agent`; flags given on the command line win.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentFile {
    /// The segment served (required here or as `--segment`).
    #[serde(default)]
    pub segment: Option<String>,
    /// Free label of the segment's environment.
    #[serde(default)]
    pub tier: Option<String>,
    /// NATS server URL(s).
    #[serde(default)]
    pub nats_url: Option<String>,
    /// JetStream domain of the coordinator's buckets, for an agent on a
    /// leaf node (`--nats-js-domain`). Default: none (the JetStream of the
    /// server connected to).
    #[serde(default)]
    pub nats_js_domain: Option<String>,
    /// NATS credentials file (`--nats-creds`); relative to the working
    /// directory.
    #[serde(default)]
    pub nats_creds: Option<PathBuf>,
    /// CA of the NATS server's certificate (`--tls-ca`).
    #[serde(default)]
    pub tls_ca: Option<PathBuf>,
    /// This agent's client certificate (`--tls-cert`, with `tls_key`).
    #[serde(default)]
    pub tls_cert: Option<PathBuf>,
    /// This agent's client key (`--tls-key`, with `tls_cert`).
    #[serde(default)]
    pub tls_key: Option<PathBuf>,
    /// HTTP listen address. Default `127.0.0.1:7420`.
    #[serde(default)]
    pub listen: Option<SocketAddr>,
    /// Where served state is kept. Default `./phasegate-agent-<segment>`.
    #[serde(default)]
    pub state_dir: Option<PathBuf>,
    /// This agent's id. Default `<segment>-<host>`.
    #[serde(default)]
    pub agent_id: Option<String>,
    /// Health URLs: healthy while every one answers GET with 2xx.
    #[serde(default)]
    pub health_urls: Vec<String>,
    /// Heartbeat and probe interval in ms. Default 1000.
    #[serde(default)]
    pub heartbeat_ms: Option<u64>,
    /// How long one health probe may take, in ms, before it counts as
    /// failed. Default 2000.
    #[serde(default)]
    pub probe_timeout_ms: Option<u64>,
    /// Consecutive failed probe rounds before the agent turns unhealthy.
    /// Default 3.
    #[serde(default)]
    pub unhealthy_after: Option<u32>,
    /// Consecutive passing probe rounds before it turns healthy again.
    /// Default 2.
    #[serde(default)]
    pub healthy_after: Option<u32>,
    /// Staleness bound in ms. Default 30000.
    #[serde(default)]
    pub stale_after_ms: Option<u64>,
    /// Subject prefix. Default `phasegate`.
    #[serde(default)]
    pub subject_prefix: Option<String>,
    /// The segment's Prometheus (`http://host:port`), which the analyses of
    /// active phases query. Without it, every analysis is inconclusive.
    #[serde(default)]
    pub prometheus_url: Option<String>,
    /// Largest HTTP request body, in bytes. Default 65536.
    #[serde(default)]
    pub max_body_bytes: Option<usize>,
    /// Longest time a client may take to send a request head, in ms; also
    /// how long an idle keep-alive connection is kept. Default 5000.
    #[serde(default)]
    pub header_read_timeout_ms: Option<u64>,
    /// Longest time a client may take to send a request body, in ms.
    /// Default 10000.
    #[serde(default)]
    pub body_read_timeout_ms: Option<u64>,
    /// Most HTTP connections open at once; one more is closed at once.
    /// Default 1024 (keep it below the process's file descriptor limit).
    #[serde(default)]
    pub max_connections: Option<usize>,
    /// The most OFREP event streams (server-sent events) open at once;
    /// more are answered 503. Default 256; each is also a connection, so
    /// keep it below `max_connections` to leave room for evaluations.
    #[serde(default)]
    pub max_event_streams: Option<usize>,
    /// How often an OFREP event stream sends a keep-alive comment, in ms.
    /// Default 15000.
    #[serde(default)]
    pub event_stream_keep_alive_ms: Option<u64>,
}

impl AgentFile {
    /// The credentials and TLS keys of the file.
    pub fn security(&self) -> phasegate_bus::Security {
        phasegate_bus::Security::from_files(
            &self.nats_creds,
            &self.tls_ca,
            &self.tls_cert,
            &self.tls_key,
        )
    }

    /// Reads `path`; errors name the file and the key.
    pub fn load(path: &Path) -> Result<Self, AgentError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| AgentError::Config(format!("cannot read {}: {e}", path.display())))?;
        toml::from_str(&text).map_err(|e| AgentError::Config(format!("{}: {e}", path.display())))
    }
}

/// The agent's effective settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentConfig {
    /// The segment served.
    pub segment: Segment,
    /// Free label of the segment's environment, sent in reports; rule
    /// conditions on the `tier` field read it.
    pub tier: Option<String>,
    /// NATS server URL(s), comma-separated, credentials allowed.
    pub nats_url: String,
    /// Credentials and TLS for NATS.
    pub security: phasegate_bus::Security,
    /// JetStream domain of the coordinator's buckets when the agent
    /// connects to a leaf node of the hub that holds them (the hub's
    /// `jetstream { domain: … }`); `None`: the JetStream of the server
    /// (or cluster) connected to.
    pub nats_js_domain: Option<String>,
    /// Where the HTTP API listens.
    pub listen: SocketAddr,
    /// Where served state is kept; created (private) when missing.
    pub state_dir: PathBuf,
    /// Names this agent in its reports.
    pub agent_id: AgentId,
    /// Healthy while every one answers GET with 2xx (http:// only).
    pub health_urls: Vec<String>,
    /// Heartbeat and probe-round interval, in ms.
    pub heartbeat_ms: u64,
    /// How long one probe may take before it counts as failed, in ms.
    pub probe_timeout_ms: u64,
    /// Consecutive failed probe rounds before the agent turns unhealthy.
    pub unhealthy_after: u32,
    /// Consecutive passing probe rounds before it turns healthy again.
    pub healthy_after: u32,
    /// Answers say `stale` once the agent has not known itself in sync
    /// for this long, in ms.
    pub stale_after_ms: u64,
    /// Prefix of the subjects and buckets; the coordinator's must match.
    pub subject_prefix: String,
    /// Largest HTTP request body, in bytes; more is answered 413.
    pub max_body_bytes: usize,
    /// Longest wait for a request head, in ms; also the keep-alive idle
    /// time.
    pub header_read_timeout_ms: u64,
    /// Longest wait for a request body, in ms; longer is answered 408.
    pub body_read_timeout_ms: u64,
    /// Most HTTP connections open at once; one more is closed at accept.
    pub max_connections: usize,
    /// Most OFREP event streams open at once.
    pub max_event_streams: usize,
    /// Keep-alive interval of an OFREP event stream.
    pub event_stream_keep_alive_ms: u64,
    /// The segment's Prometheus, for analyses.
    pub prometheus_url: Option<String>,
}

impl AgentConfig {
    /// Settings for `segment` with every default.
    pub fn new(segment: Segment, nats_url: impl Into<String>) -> Self {
        let agent_id = default_agent_id(&segment);
        Self {
            state_dir: PathBuf::from(format!("phasegate-agent-{segment}")),
            segment,
            tier: None,
            nats_url: nats_url.into(),
            security: phasegate_bus::Security::default(),
            nats_js_domain: None,
            listen: DEFAULT_LISTEN,
            agent_id,
            health_urls: Vec::new(),
            heartbeat_ms: DEFAULT_HEARTBEAT_MS,
            probe_timeout_ms: DEFAULT_PROBE_TIMEOUT_MS,
            unhealthy_after: DEFAULT_UNHEALTHY_AFTER,
            healthy_after: DEFAULT_HEALTHY_AFTER,
            stale_after_ms: DEFAULT_STALE_AFTER_MS,
            subject_prefix: phasegate_proto::subjects::DEFAULT_PREFIX.to_owned(),
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            header_read_timeout_ms: DEFAULT_HEADER_READ_TIMEOUT_MS,
            body_read_timeout_ms: DEFAULT_BODY_READ_TIMEOUT_MS,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_event_streams: DEFAULT_MAX_EVENT_STREAMS,
            event_stream_keep_alive_ms: DEFAULT_EVENT_STREAM_KEEP_ALIVE_MS,
            prometheus_url: None,
        }
    }

    /// Checks values that parse but cannot work; `origin` names where they
    /// came from.
    pub fn check(&self, origin: &str) -> Result<(), AgentError> {
        self.first_problem()
            .map_err(|problem| AgentError::Config(format!("{origin}: {problem}")))
    }

    /// The first setting that cannot work, as `key: why`.
    fn first_problem(&self) -> Result<(), String> {
        in_range("heartbeat_ms", self.heartbeat_ms, 10..=3_600_000, "")?;
        if self.stale_after_ms < self.heartbeat_ms {
            return Err(format!(
                "stale_after_ms: must be at least heartbeat_ms ({}), got {}",
                self.heartbeat_ms, self.stale_after_ms
            ));
        }
        in_range("probe_timeout_ms", self.probe_timeout_ms, 10..=60_000, "")?;
        for (key, n) in [
            ("unhealthy_after", self.unhealthy_after),
            ("healthy_after", self.healthy_after),
        ] {
            in_range(key, n.into(), 1..=1_000, " probe rounds")?;
        }
        if let Some(url) = self.health_urls.iter().find(|u| !u.starts_with("http://")) {
            return Err(format!(
                "health url {url:?}: only http:// URLs are supported (probes are local)"
            ));
        }
        if let Some(url) = &self.prometheus_url
            && (!url.starts_with("http://") || url.parse::<hyper::Uri>().is_err())
        {
            return Err(format!(
                "prometheus_url {url:?}: must be an http:// URL (the segment's own Prometheus)"
            ));
        }
        phasegate_proto::Subjects::new(self.subject_prefix.clone())
            .map_err(|e| format!("subject_prefix: {e}"))?;
        if let Some(domain) = &self.nats_js_domain
            && (domain.is_empty()
                || domain.len() > 64
                || !domain
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'))
        {
            return Err(format!(
                "nats_js_domain: {domain:?} is not a JetStream domain (1 to 64 letters, digits, '-' or '_')"
            ));
        }
        if self.max_body_bytes < 1024 {
            return Err(format!(
                "max_body_bytes: must be at least 1024, got {}",
                self.max_body_bytes
            ));
        }
        for (key, ms) in [
            ("header_read_timeout_ms", self.header_read_timeout_ms),
            ("body_read_timeout_ms", self.body_read_timeout_ms),
        ] {
            in_range(key, ms, 100..=600_000, " ms")?;
        }
        let connections = u64::try_from(self.max_connections).unwrap_or(u64::MAX);
        in_range("max_connections", connections, 1..=1_000_000, "")?;
        // Above max_connections it changes nothing (each stream is a
        // connection), so it is not refused: a small max_connections
        // alone stays a valid configuration.
        let streams = u64::try_from(self.max_event_streams).unwrap_or(u64::MAX);
        in_range("max_event_streams", streams, 1..=1_000_000, "")?;
        in_range(
            "event_stream_keep_alive_ms",
            self.event_stream_keep_alive_ms,
            100..=600_000,
            " ms",
        )
    }
}

/// `Ok` when `value` of `key` lies in `range`; else why, in `unit`.
fn in_range(key: &str, value: u64, range: RangeInclusive<u64>, unit: &str) -> Result<(), String> {
    if range.contains(&value) {
        return Ok(());
    }
    Err(format!(
        "{key}: must be from {} to {}{unit}, got {value}",
        range.start(),
        range.end()
    ))
}

/// `<segment>-<host>`, with characters an id may not hold replaced.
fn default_agent_id(segment: &Segment) -> AgentId {
    let host = std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| format!("pid{}", std::process::id()));
    let clean: String = host
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '-'
            }
        })
        .take(60)
        .collect();
    AgentId::new(format!("{segment}-{clean}"))
        .or_else(|_| AgentId::new(segment.as_str().to_owned()))
        .unwrap_or_else(|_| AgentId::generated_fallback())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // tests: a panic is the failure report

    use super::*;

    #[test]
    fn js_domains_are_one_subject_token() {
        let segment = Segment::new("eu").unwrap();
        let mut cfg = AgentConfig::new(segment, "nats://leaf:4222");
        assert_eq!(cfg.nats_js_domain, None);
        cfg.nats_js_domain = Some("hub".into());
        cfg.check("flags").unwrap();
        for bad in ["", "hub.eu", "h*", "a b"] {
            cfg.nats_js_domain = Some(bad.into());
            let err = cfg.check("flags").unwrap_err().to_string();
            assert!(err.contains("nats_js_domain"), "{err}");
        }
        let file: AgentFile = toml::from_str("nats_js_domain = \"hub\"").unwrap();
        assert_eq!(file.nats_js_domain.as_deref(), Some("hub"));
    }

    #[test]
    fn a_prometheus_url_comes_from_the_file_and_must_be_plain_http() {
        let file: AgentFile = toml::from_str("prometheus_url = \"http://127.0.0.1:9090\"").unwrap();
        assert_eq!(
            file.prometheus_url.as_deref(),
            Some("http://127.0.0.1:9090")
        );
        let mut cfg = AgentConfig::new(Segment::new("dev").unwrap(), "nats://x");
        cfg.prometheus_url = file.prometheus_url;
        assert!(cfg.check("f").is_ok());
        cfg.prometheus_url = Some("https://prom:9090".into());
        let e = cfg.check("f").unwrap_err().to_string();
        assert!(
            e.contains("f: prometheus_url") && e.contains("http://"),
            "{e}"
        );
    }
}
