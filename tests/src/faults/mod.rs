//! Seeded, repeatable fault injection against a real installation.
//!
//! One [`install::Installation`] (nats-server, two coordinators, one agent
//! per segment) serves many **episodes**, one per seed. In an episode the
//! test rolls gates out through generated pipelines and acts as operators
//! ([`plan`]) while it kills, restarts and freezes processes; then it
//! brings everything back, drives or ends every rollout, and checks that
//! the agents converge. Throughout, a sampler reads every agent's HTTP API
//! between two reads of each trigger and checks the answers against the
//! phases ([`oracle`]); every command and its answer is recorded
//! ([`ledger`]); at the end the coordinators' logs are checked for two
//! coordinators acting at once ([`logs`]).
//!
//! Violations do not stop the run: each is kept with its seed, and the
//! test fails at the end listing them all, with how to replay a seed.

pub mod install;
pub mod ledger;
pub mod logs;
pub mod oracle;
pub mod plan;
pub mod rng;

mod episode;

use std::collections::BTreeMap;
use std::time::Duration;

use install::Installation;

/// `PHASEGATE_FAULTS_SEED=S`: run only seed `S` (replay).
pub const SEED_ENV: &str = "PHASEGATE_FAULTS_SEED";
/// `PHASEGATE_SOAK_SEEDS=N`: soak mode, seeds `1..=N`.
pub const SOAK_ENV: &str = "PHASEGATE_SOAK_SEEDS";
/// `PHASEGATE_FAULTS_SEGMENTS=a,b,c,d,e`: other segments (five).
pub const SEGMENTS_ENV: &str = "PHASEGATE_FAULTS_SEGMENTS";

/// Seeds the default run checks.
pub const DEFAULT_SEEDS: u64 = 20;

/// The five segments: the seed pipeline's, the last one with a dot (the
/// contract allows dots in segment names, §1).
pub const DEFAULT_SEGMENTS: [&str; 5] =
    ["dev", "staging", "prod-us-west", "prod-us-east", "prod.eu"];

/// What to run.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The seeds, in order.
    pub seeds: Vec<u64>,
    /// The segments, one agent each.
    pub segments: Vec<String>,
    /// Whether this is the soak mode (figures are printed either way).
    pub soak: bool,
}

impl Settings {
    /// From the environment: one seed, the soak, or the default 20.
    pub fn from_env() -> anyhow::Result<Self> {
        let segments = match std::env::var(SEGMENTS_ENV) {
            Ok(s) => s.split(',').map(|x| x.trim().to_owned()).collect(),
            Err(_) => DEFAULT_SEGMENTS.map(String::from).to_vec(),
        };
        anyhow::ensure!(
            segments.len() == 5,
            "{SEGMENTS_ENV} must name five segments"
        );
        if let Ok(s) = std::env::var(SEED_ENV) {
            return Ok(Self {
                seeds: vec![s.parse()?],
                segments,
                soak: false,
            });
        }
        if let Ok(n) = std::env::var(SOAK_ENV) {
            let n: u64 = n.parse()?;
            return Ok(Self {
                seeds: (1..=n).collect(),
                segments,
                soak: true,
            });
        }
        Ok(Self {
            seeds: (1..=DEFAULT_SEEDS).collect(),
            segments,
            soak: false,
        })
    }
}

/// What a run saw.
#[derive(Debug, Default)]
pub struct Report {
    /// Seeds run.
    pub seeds: u64,
    /// Faults injected, by kind.
    pub faults: BTreeMap<&'static str, u64>,
    /// Invariant checks made, by invariant.
    pub checks: BTreeMap<&'static str, u64>,
    /// Commands sent, by answer.
    pub commands: BTreeMap<String, u64>,
    /// Violations by seed.
    pub violations: BTreeMap<u64, Vec<String>>,
    /// Coordinators that exited on their own (not killed by the test).
    pub coordinator_self_exits: u64,
    /// Installations started (a broken one is replaced).
    pub installations: u64,
    /// Slowest convergence after the faults, ms.
    pub slowest_convergence_ms: u64,
    /// Action log lines read, and how many carried no instance id.
    pub log_actions: (u64, u64),
    /// Every command sent, for the last look at `unavailable` ones.
    pub records: Vec<ledger::Record>,
    /// Wall time.
    pub wall: Duration,
}

impl Report {
    /// The figures, printed at the end of every run.
    pub fn figures(&self) -> String {
        let mut s = format!(
            "fault injection: {} seeds in {:.1}s ({} installation(s))\n",
            self.seeds,
            self.wall.as_secs_f64(),
            self.installations
        );
        s += &format!(
            "  faults injected: {} {:?}\n",
            self.faults.values().sum::<u64>(),
            self.faults
        );
        s += &format!(
            "  invariant checks: {} {:?}\n",
            self.checks.values().sum::<u64>(),
            self.checks
        );
        s += &format!(
            "  commands sent: {} {:?}\n",
            self.commands.values().sum::<u64>(),
            self.commands
        );
        s += &format!(
            "  coordinators that exited on their own: {}; slowest convergence after healing: {} ms\n",
            self.coordinator_self_exits, self.slowest_convergence_ms
        );
        s += &format!(
            "  coordinator action log lines: {}, without an instance id: {}{}\n",
            self.log_actions.0,
            self.log_actions.1,
            if self.log_actions.1 > 0 {
                " (tolerated: the instance is known from the log file)"
            } else {
                ""
            }
        );
        s += &format!(
            "  seeds with violations: {} of {}",
            self.violations.len(),
            self.seeds
        );
        s
    }

    /// The violations with how to replay each seed; empty when none.
    pub fn failures(&self) -> String {
        let mut s = String::new();
        for (seed, vs) in &self.violations {
            s += &format!(
                "seed {seed} ({} violation(s)); replay: {SEED_ENV}={seed} cargo test -p phasegate-tests --test faults -- --nocapture\n",
                vs.len()
            );
            for v in vs.iter().take(8) {
                s += &format!("  - {v}\n");
            }
            if vs.len() > 8 {
                s += &format!("  … and {} more\n", vs.len() - 8);
            }
        }
        s
    }
}

/// Runs every seed of `settings`; returns what it saw.
///
/// # Errors
///
/// Only when no installation can be started at all.
pub async fn run(settings: &Settings) -> anyhow::Result<Report> {
    let started = std::time::Instant::now();
    let mut report = Report::default();
    let mut inst: Option<Installation> = None;
    let mut windows: Vec<(u64, u64, u64)> = Vec::new(); // seed, from ms, to ms
    let mut entities = episode::Entities::default();
    for &seed in &settings.seeds {
        if inst.is_none() {
            inst = Some(Installation::start(&settings.segments).await?);
            report.installations += 1;
            entities = episode::Entities::default();
        }
        let Some(i) = inst.as_mut() else { continue };
        let from = episode::now_ms();
        let outcome = episode::run(i, seed, &settings.segments, &mut entities, &mut report).await;
        windows.push((seed, from, episode::now_ms()));
        report.seeds += 1;
        if let Err(e) = outcome {
            report
                .violations
                .entry(seed)
                .or_default()
                .push(format!("[installation broken, replaced] {e:#}"));
            if let Some(broken) = inst.take() {
                // What the coordinators said last, to see why.
                for c in &broken.coords {
                    eprintln!(
                        "--- seed {seed}: last lines of coordinator {}:\n{}",
                        c.instance,
                        c.proc.log_tail(25)
                    );
                }
                check_logs(&broken, &windows, &mut report);
            }
        }
        eprintln!(
            "seed {seed}: {}",
            report
                .violations
                .get(&seed)
                .map_or("ok".to_owned(), |v| format!("{} violation(s)", v.len()))
        );
    }
    if let Some(i) = inst.take() {
        episode::final_ledger_check(&i, &mut report).await;
        check_logs(&i, &windows, &mut report);
    }
    report.wall = started.elapsed();
    Ok(report)
}

/// Reads both coordinators' logs and files each violation under the seed
/// whose episode it happened in.
fn check_logs(inst: &Installation, windows: &[(u64, u64, u64)], report: &mut Report) {
    let mut check = logs::LogCheck::default();
    let mut lines = Vec::new();
    for c in &inst.coords {
        let text = std::fs::read_to_string(c.proc.log_path()).unwrap_or_default();
        lines.extend(logs::parse(&c.instance, &text, &mut check));
    }
    logs::check(&lines, &mut check);
    *report
        .checks
        .entry("one coordinator acts at a time (logs)")
        .or_default() += check.actions;
    report.log_actions.0 += check.actions;
    report.log_actions.1 += check.without_instance;
    for (at, v) in check.violations {
        let seed = windows
            .iter()
            .find(|(_, f, t)| (*f..=*t).contains(&at))
            .map_or(0, |(s, _, _)| *s);
        report.violations.entry(seed).or_default().push(v);
    }
}
