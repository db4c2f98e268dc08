//! The fleet benchmark: a real nats-server, a real `phasegate coordinator`
//! process and real agents (the agent library, in this process), measured
//! from outside. It prints figures next to their targets and asserts
//! nothing.
//!
//! Two modes:
//!
//! - **propagation**: for each fleet size N, `put` of a new version of one
//!   gate under a one-phase pipeline without bake, until every agent acked
//!   it, the coordinator recorded `phase_applied`, and `completed`; then the
//!   raw-NATS baseline on the same server: a JetStream KV put watched by N
//!   watchers that each write and fsync a small file and ack on core NATS.
//! - **scale**: 10,000 active triggers (a one-hour bake, 5 agents), put 16
//!   at a time: the put rate and latency per thousand, then `trigger.get`
//!   latency, the coordinator's RSS and its CPU when idle. Bounded by a
//!   wall-time cap.
//!
//! `make bench-fleet` (builds the release `phasegate` binary first). The
//! settings are environment variables, see [`Settings::from_env`].
//!
//! Not run by `cargo test`: a bench target is only built by `cargo bench`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a benchmark: fail loudly

mod baseline;
mod fleet;
mod propagation;
mod scale;

use std::time::Duration;

/// What to run, from `PHASEGATE_FLEET_*` variables.
#[derive(Debug, Clone)]
struct Settings {
    /// `PHASEGATE_FLEET_MODE`: `propagation`, `scale` or `all` (default).
    mode: String,
    /// `PHASEGATE_FLEET_AGENTS`: fleet sizes of the propagation mode,
    /// comma-separated (default `20,100,1000`).
    agents: Vec<usize>,
    /// `PHASEGATE_FLEET_PER_SEGMENT`: agents per segment (default 10).
    per_segment: usize,
    /// `PHASEGATE_FLEET_SAMPLES`: puts measured per fleet size (default 30).
    samples: usize,
    /// `PHASEGATE_FLEET_HEARTBEAT_MS`: the agents' heartbeat (default 1000).
    heartbeat_ms: u64,
    /// `PHASEGATE_FLEET_TRIGGERS`: active triggers of the scale mode
    /// (default 10000).
    triggers: usize,
    /// `PHASEGATE_FLEET_IN_FLIGHT`: puts in flight in the scale mode
    /// (default 16).
    in_flight: usize,
    /// `PHASEGATE_FLEET_CAP_S`: wall-time cap of the scale mode's puts, in
    /// seconds (default 300).
    cap: Duration,
}

impl Settings {
    fn from_env() -> Self {
        fn var<T: std::str::FromStr>(name: &str, default: T) -> T {
            std::env::var(name)
                .ok()
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(default)
        }
        let agents = std::env::var("PHASEGATE_FLEET_AGENTS")
            .unwrap_or_else(|_| "20,100,1000".to_owned())
            .split(',')
            .filter_map(|n| n.trim().parse().ok())
            .filter(|n| *n > 0)
            .collect();
        Self {
            mode: var("PHASEGATE_FLEET_MODE", "all".to_owned()),
            agents,
            per_segment: var("PHASEGATE_FLEET_PER_SEGMENT", 10usize).max(1),
            samples: var("PHASEGATE_FLEET_SAMPLES", 30usize).max(1),
            heartbeat_ms: var("PHASEGATE_FLEET_HEARTBEAT_MS", 1_000u64),
            triggers: var("PHASEGATE_FLEET_TRIGGERS", 10_000usize),
            in_flight: var("PHASEGATE_FLEET_IN_FLIGHT", 16usize).max(1),
            cap: Duration::from_secs(var("PHASEGATE_FLEET_CAP_S", 300u64)),
        }
    }
}

fn main() -> anyhow::Result<()> {
    // `cargo bench` passes `--bench`; any other argument is a filter we do
    // not support, so a run with one (e.g. `cargo bench -- eval`) is a no-op.
    if std::env::args().skip(1).any(|a| !a.starts_with('-')) {
        return Ok(());
    }
    let settings = Settings::from_env();
    // One runtime for everything in this process: agents, watchers, the
    // measuring side. Its workers are the machine's cores.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        println!("fleet benchmark: {settings:?}");
        println!(
            "note: 2 shared cores, figures are noisy; the agents, watchers and measuring side share one process"
        );
        if matches!(settings.mode.as_str(), "all" | "propagation") {
            for &n in &settings.agents {
                propagation::run(&settings, n).await?;
            }
        }
        if matches!(settings.mode.as_str(), "all" | "scale") {
            scale::run(&settings).await?;
        }
        Ok(())
    })
}

/// The `q` quantile (0..=1) of `v` by the nearest-rank method; with 30
/// samples p99 is the largest.
fn quantile(v: &[Duration], q: f64) -> Duration {
    if v.is_empty() {
        return Duration::ZERO;
    }
    let mut s = v.to_vec();
    s.sort_unstable();
    #[allow(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        clippy::cast_precision_loss
    )] // small counts
    let rank = ((q * s.len() as f64).ceil() as usize).clamp(1, s.len());
    s[rank - 1]
}

/// `p50 12.3 ms  p99 45.6 ms`.
fn p50_p99(v: &[Duration]) -> String {
    format!(
        "p50 {:>8}  p99 {:>8}",
        ms(quantile(v, 0.5)),
        ms(quantile(v, 0.99))
    )
}

/// A duration in milliseconds with one decimal.
fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1e3)
}

/// `a / b` as `2.3×`.
fn ratio(a: Duration, b: Duration) -> String {
    if b.is_zero() {
        return "n/a".to_owned();
    }
    format!("{:.2}×", a.as_secs_f64() / b.as_secs_f64())
}
