//! The coordinator's configuration file (`--config FILE`, TOML).

use std::path::Path;

use serde::Deserialize;

fn default_prefix() -> String {
    phasegate_proto::subjects::DEFAULT_PREFIX.to_owned()
}

fn default_sweep_ms() -> u64 {
    100
}

fn default_forget_agents_after_ms() -> u64 {
    2 * 60 * 60 * 1000
}

/// Settings of `phasegate coordinator`. Every field has a default; flags
/// given on the command line win over the file.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CoordinatorConfig {
    /// NATS server URL(s), comma-separated. Default: `$PHASEGATE_NATS_URL`,
    /// else `nats://127.0.0.1:4222`.
    #[serde(default)]
    pub nats_url: Option<String>,
    /// NATS credentials file (`--nats-creds`), e.g. the `coordinator.creds`
    /// that `phasegate auth init` writes; relative to the working directory.
    #[serde(default)]
    pub nats_creds: Option<std::path::PathBuf>,
    /// CA of the NATS server's certificate (`--tls-ca`).
    #[serde(default)]
    pub tls_ca: Option<std::path::PathBuf>,
    /// The coordinator's client certificate (`--tls-cert`, with `tls_key`).
    #[serde(default)]
    pub tls_cert: Option<std::path::PathBuf>,
    /// The coordinator's client key (`--tls-key`, with `tls_cert`).
    #[serde(default)]
    pub tls_key: Option<std::path::PathBuf>,
    /// Subject prefix of the command API (`<prefix>.v1.…`) and of bucket
    /// names. Default `phasegate`.
    #[serde(default = "default_prefix")]
    pub subject_prefix: String,
    /// How often agent liveness is checked and pending fleet views are sent
    /// to triggers, in ms. Default 100.
    #[serde(default = "default_sweep_ms")]
    pub sweep_ms: u64,
    /// How long an agent not heard from stays listed, in ms. Default two
    /// hours (the contract asks for at least one).
    #[serde(default = "default_forget_agents_after_ms")]
    pub forget_agents_after_ms: u64,
    /// Where Prometheus scrapes `GET /metrics`. Default `127.0.0.1:9464`;
    /// `"off"` disables it.
    #[serde(default = "default_metrics_listen")]
    pub metrics_listen: String,
    /// This coordinator's identity in the leadership lease. Default: the
    /// host name. Give each coordinator of an installation its own.
    #[serde(default)]
    pub instance_id: Option<String>,
    /// How long the leadership lease lasts without renewal, in ms: a
    /// standby takes over at most this long after the leader died.
    /// Default 10000.
    #[serde(default = "default_leader_lease_ms")]
    pub leader_lease_ms: u64,
    /// How long finished triggers stay readable (`trigger.get`,
    /// `trigger.list`), in days: the `max_age` of the `<prefix>_triggers`
    /// bucket, applied at start when it changed. Default 365.
    #[serde(default = "default_trigger_retention_days")]
    pub trigger_retention_days: u64,
    /// Copies of every bucket a JetStream cluster keeps (1 to 5): 3 in
    /// production on a cluster of three servers, so that losing one loses
    /// nothing. Applied at start to existing buckets too (a cluster moves
    /// them in place). Default 1 (a single server).
    #[serde(default = "default_bucket_replicas")]
    pub bucket_replicas: usize,
    /// The most agents the coordinator tracks; reports of further unknown
    /// agents are ignored, so a flood of invented ids cannot grow its
    /// memory or its writes. Default 10000.
    #[serde(default = "default_max_agents")]
    pub max_agents: usize,
    /// The most agents it tracks in one segment. Default 2000.
    #[serde(default = "default_max_agents_per_segment")]
    pub max_agents_per_segment: usize,
    /// The most segments it tracks agents in. Default 1000.
    #[serde(default = "default_max_segments")]
    pub max_segments: usize,
    /// Authentication and roles (SPEC.md §8). Absent: the installation runs
    /// open (anyone who reaches NATS may do anything, actors are declared).
    #[serde(default)]
    pub auth: Option<crate::auth::AuthConfig>,
}

fn default_bucket_replicas() -> usize {
    1
}

fn default_max_agents() -> usize {
    10_000
}

fn default_max_agents_per_segment() -> usize {
    2_000
}

fn default_max_segments() -> usize {
    1_000
}

fn default_trigger_retention_days() -> u64 {
    365
}

/// The longest retention accepted, in days (about a century).
const MAX_RETENTION_DAYS: u64 = 36_500;

fn default_leader_lease_ms() -> u64 {
    10_000
}

fn default_metrics_listen() -> String {
    "127.0.0.1:9464".to_owned()
}

impl Default for CoordinatorConfig {
    fn default() -> Self {
        Self {
            nats_url: None,
            nats_creds: None,
            tls_ca: None,
            tls_cert: None,
            tls_key: None,
            subject_prefix: default_prefix(),
            sweep_ms: default_sweep_ms(),
            forget_agents_after_ms: default_forget_agents_after_ms(),
            metrics_listen: default_metrics_listen(),
            instance_id: None,
            leader_lease_ms: default_leader_lease_ms(),
            trigger_retention_days: default_trigger_retention_days(),
            bucket_replicas: default_bucket_replicas(),
            max_agents: default_max_agents(),
            max_agents_per_segment: default_max_agents_per_segment(),
            max_segments: default_max_segments(),
            auth: None,
        }
    }
}

impl CoordinatorConfig {
    /// Reads and checks `path`; errors name the file, the key and the fix.
    pub fn load(path: &Path) -> Result<Self, crate::CoordinatorError> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            crate::CoordinatorError::Config(format!("cannot read {}: {e}", path.display()))
        })?;
        Self::parse(&text, &path.display().to_string())
    }

    /// Parses and checks a TOML text; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Self, crate::CoordinatorError> {
        let cfg: Self = toml::from_str(text)
            .map_err(|e| crate::CoordinatorError::Config(format!("{origin}: {e}")))?;
        cfg.check(origin)?;
        Ok(cfg)
    }

    /// The credentials and TLS settings for NATS.
    pub fn security(&self) -> phasegate_bus::Security {
        phasegate_bus::Security::from_files(
            &self.nats_creds,
            &self.tls_ca,
            &self.tls_cert,
            &self.tls_key,
        )
    }

    /// How long finished triggers are kept.
    pub fn trigger_retention(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.trigger_retention_days.saturating_mul(24 * 60 * 60))
    }

    /// Checks values that parse but cannot work.
    pub fn check(&self, origin: &str) -> Result<(), crate::CoordinatorError> {
        if let Some(auth) = &self.auth {
            auth.check(origin)
                .map_err(crate::CoordinatorError::Config)?;
        }
        if self.max_agents == 0 || self.max_agents_per_segment == 0 || self.max_segments == 0 {
            return Err(crate::CoordinatorError::Config(format!(
                "{origin}: max_agents, max_agents_per_segment and max_segments must be at least 1"
            )));
        }
        phasegate_proto::Subjects::new(self.subject_prefix.clone()).map_err(|e| {
            crate::CoordinatorError::Config(format!("{origin}: subject_prefix: {e}"))
        })?;
        if !(1..=60_000).contains(&self.sweep_ms) {
            return Err(crate::CoordinatorError::Config(format!(
                "{origin}: sweep_ms: must be from 1 to 60000, got {}",
                self.sweep_ms
            )));
        }
        if self.metrics_listen != "off"
            && self.metrics_listen.parse::<std::net::SocketAddr>().is_err()
        {
            return Err(crate::CoordinatorError::Config(format!(
                "{origin}: metrics_listen: {:?} is not an address (host:port) or \"off\"",
                self.metrics_listen
            )));
        }
        if !(1_000..=600_000).contains(&self.leader_lease_ms) {
            return Err(crate::CoordinatorError::Config(format!(
                "{origin}: leader_lease_ms: must be from 1000 to 600000, got {}",
                self.leader_lease_ms
            )));
        }
        if let Some(id) = &self.instance_id
            && (id.is_empty() || id.len() > 128)
        {
            return Err(crate::CoordinatorError::Config(format!(
                "{origin}: instance_id: must be 1 to 128 bytes"
            )));
        }
        if !(1..=MAX_RETENTION_DAYS).contains(&self.trigger_retention_days) {
            return Err(crate::CoordinatorError::Config(format!(
                "{origin}: trigger_retention_days: must be from 1 to {MAX_RETENTION_DAYS}, got {}",
                self.trigger_retention_days
            )));
        }
        if !(1..=5).contains(&self.bucket_replicas) {
            return Err(crate::CoordinatorError::Config(format!(
                "{origin}: bucket_replicas: must be from 1 to 5 (NATS keeps at most 5 copies), got {}",
                self.bucket_replicas
            )));
        }
        if self.forget_agents_after_ms < 3_600_000 {
            return Err(crate::CoordinatorError::Config(format!(
                "{origin}: forget_agents_after_ms: must be at least 3600000 (one hour), got {}",
                self.forget_agents_after_ms
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // tests: a panic is the failure report

    use super::*;

    #[test]
    fn bucket_replicas_default_to_one_and_stay_within_what_nats_keeps() {
        assert_eq!(CoordinatorConfig::default().bucket_replicas, 1);
        let cfg = CoordinatorConfig::parse("bucket_replicas = 3", "c.toml").unwrap();
        assert_eq!(cfg.bucket_replicas, 3);
        for bad in [0, 6] {
            let err = CoordinatorConfig::parse(&format!("bucket_replicas = {bad}"), "c.toml")
                .unwrap_err()
                .to_string();
            assert!(
                err.contains("c.toml") && err.contains("bucket_replicas") && err.contains("1 to 5"),
                "{err}"
            );
        }
    }

    #[test]
    fn server_lists_are_kept_as_written() {
        let cfg =
            CoordinatorConfig::parse("nats_url = \"nats://a:1,nats://b:2\"", "c.toml").unwrap();
        assert_eq!(cfg.nats_url.as_deref(), Some("nats://a:1,nats://b:2"));
    }
}
