//! Runs the metric analyses of the phases active in the agent's segment
//! (SPEC.md §3 `Analysis`): each on its own `every_ms`, against
//! `--prometheus-url`, with a timeout. What a result means is decided by
//! the pure engine of `phasegate_model::analysis` (`judge`, `Streak`);
//! this actor only schedules queries and carries the verdicts out: into
//! the [`Board`] that reports, `/healthz` and `/metrics` read, and an
//! immediate report when the agent starts or stops failing an analysis.
//!
//! The set of analyses comes from the sync actor after every applied
//! change ([`AnalysisMsg::Active`]): an analysis starts once its phase's
//! rollout is served here and stops when the trigger finishes (its rollout
//! leaves the desired state).

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use arc_swap::ArcSwap;
use phasegate_model::analysis::{ActiveAnalysis, AnalysisKey, Sample, Streak, Turn, judge};
use phasegate_proto::{AnalysisResult, AnalysisStatus, now_ms};
use ractor::{Actor, ActorProcessingErr, ActorRef};

use crate::prometheus::Prometheus;
use crate::report::ReportMsg;

use crate::state::{DiskState, FileChange};

/// The longest one query may take; a shorter `every_ms` bounds it instead.
pub(crate) const MAX_QUERY_TIMEOUT: Duration = Duration::from_secs(10);

/// What the rest of the agent reads of the analyses: the latest status of
/// each one running, and counters for `/metrics`; and where the sync actor
/// announces which analyses its segment runs.
#[derive(Default)]
pub(crate) struct Board {
    statuses: ArcSwap<Vec<AnalysisStatus>>,
    /// Results by (analysis name, result), since the agent started.
    counts: Mutex<BTreeMap<(String, AnalysisResult), u64>>,
    /// The analysis actor, once started.
    actor: OnceLock<ActorRef<AnalysisMsg>>,
    /// The analyses of each entity key that has some, as last announced.
    by_key: Mutex<BTreeMap<String, Vec<ActiveAnalysis>>>,
}

/// Which keys' analyses may have changed.
pub(crate) enum Changed<'a> {
    /// A whole new state: every key.
    All,
    /// The keys a batch wrote.
    Keys(&'a [FileChange]),
}

impl Board {
    /// Tells the analysis actor which analyses `segment` runs given what
    /// is on disk (so served), when that changed. Only the `changed` keys
    /// are looked at, so a batch costs O(its keys), not O(entities).
    pub(crate) fn announce(&self, segment: &str, disk: &DiskState, changed: Changed<'_>) {
        let of = |key: &str| {
            disk.entities.get(key).map_or_else(Vec::new, |sd| {
                phasegate_model::analysis::active(segment, std::iter::once(&sd.desired))
            })
        };
        let Ok(mut by_key) = self.by_key.lock() else {
            return;
        };
        let moved = match changed {
            Changed::All => {
                let all: BTreeMap<String, Vec<ActiveAnalysis>> = disk
                    .entities
                    .keys()
                    .map(|k| (k.clone(), of(k)))
                    .filter(|(_, a)| !a.is_empty())
                    .collect();
                let moved = *by_key != all;
                *by_key = all;
                moved
            }
            Changed::Keys(files) => {
                let mut moved = false;
                for key in files.iter().map(FileChange::key) {
                    let now = of(key);
                    if by_key
                        .get(key)
                        .map_or(now.is_empty(), |before| *before == now)
                    {
                        continue;
                    }
                    moved = true;
                    if now.is_empty() {
                        by_key.remove(key);
                    } else {
                        by_key.insert(key.to_owned(), now);
                    }
                }
                moved
            }
        };
        if !moved {
            return;
        }
        let mut active: Vec<ActiveAnalysis> = by_key.values().flatten().cloned().collect();
        active.sort_by_key(ActiveAnalysis::key);
        if let Some(actor) = self.actor.get() {
            let _ = actor.cast(AnalysisMsg::Active(active));
        }
    }

    /// The latest status of every analysis running, in a stable order.
    pub(crate) fn statuses(&self) -> Vec<AnalysisStatus> {
        self.statuses.load().as_ref().clone()
    }

    /// The agent fails some analysis: it is unhealthy for the health ratio.
    pub(crate) fn failing(&self) -> bool {
        self.statuses.load().iter().any(|s| s.failing)
    }

    fn count(&self, name: &str, result: AnalysisResult) {
        if let Ok(mut c) = self.counts.lock() {
            *c.entry((name.to_owned(), result)).or_default() += 1;
        }
    }

    /// Writes `phasegate_analysis_results_total{analysis,result}` and
    /// `phasegate_analysis_value{analysis,...}` (the last value of each
    /// analysis running) in the Prometheus text format.
    pub(crate) fn write_metrics(&self, out: &mut String, segment: &str) {
        use phasegate_telemetry::metrics::write_sample;
        let labels = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect()
        };
        let _ = writeln!(
            out,
            "# HELP phasegate_analysis_results_total analysis results, by analysis and result\n# TYPE phasegate_analysis_results_total counter"
        );
        let counts = self.counts.lock().map(|c| c.clone()).unwrap_or_default();
        for ((name, result), n) in counts {
            #[allow(clippy::cast_precision_loss)] // a counter read as f64 for the text format
            let v = n as f64;
            write_sample(
                out,
                "phasegate_analysis_results_total",
                &labels(&[
                    ("segment", segment),
                    ("analysis", &name),
                    ("result", result.as_str()),
                ]),
                v,
            );
        }
        let _ = writeln!(
            out,
            "# HELP phasegate_analysis_value the last sample of each analysis running\n# TYPE phasegate_analysis_value gauge"
        );
        for s in self.statuses.load().iter() {
            if let Some(v) = s.value {
                write_sample(
                    out,
                    "phasegate_analysis_value",
                    &labels(&[
                        ("segment", segment),
                        ("analysis", s.name.as_str()),
                        ("phase_id", s.phase_id.as_str()),
                        ("trigger_id", s.trigger_id.as_str()),
                    ]),
                    v,
                );
            }
        }
    }
}

/// Messages of the analysis actor.
pub(crate) enum AnalysisMsg {
    /// The analyses the segment runs now (from the sync actor).
    Active(Vec<ActiveAnalysis>),
    /// Time to run one analysis (of the given generation: a stale timer of
    /// an analysis removed and added again is ignored).
    Run(AnalysisKey, u64),
    /// A query's outcome.
    Done {
        key: AnalysisKey,
        generation: u64,
        sample: Sample,
        at_ms: u64,
        started: tokio::time::Instant,
    },
}

/// What the analysis actor starts from.
pub(crate) struct AnalysisArgs {
    pub(crate) shared: Arc<crate::served::Shared>,
    /// `None`: every result is inconclusive (SPEC.md §3).
    pub(crate) prometheus_url: Option<String>,
    pub(crate) reporter: ActorRef<ReportMsg>,
}

struct Running {
    active: ActiveAnalysis,
    generation: u64,
    streak: Streak,
    status: Option<AnalysisStatus>,
}

pub(crate) struct AnalysisState {
    shared: Arc<crate::served::Shared>,
    prometheus: Option<Prometheus>,
    reporter: ActorRef<ReportMsg>,
    running: HashMap<AnalysisKey, Running>,
    next_generation: u64,
}

/// The actor running the analyses.
pub(crate) struct AnalysisActor;

impl Actor for AnalysisActor {
    type Msg = AnalysisMsg;
    type State = AnalysisState;
    type Arguments = AnalysisArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<AnalysisMsg>,
        args: AnalysisArgs,
    ) -> Result<AnalysisState, ActorProcessingErr> {
        // Started before the sync actor, whose first announcement (from
        // what is on disk) must find it.
        let _ = args.shared.analysis.actor.set(myself);
        Ok(AnalysisState {
            shared: args.shared,
            prometheus: args.prometheus_url.as_deref().map(Prometheus::new),
            reporter: args.reporter,
            running: HashMap::new(),
            next_generation: 0,
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<AnalysisMsg>,
        msg: AnalysisMsg,
        state: &mut AnalysisState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            AnalysisMsg::Active(list) => state.set_active(&myself, list),
            AnalysisMsg::Run(key, generation) => state.run(&myself, key, generation),
            AnalysisMsg::Done {
                key,
                generation,
                sample,
                at_ms,
                started,
            } => state.done(&myself, key, generation, sample, at_ms, started),
        }
        Ok(())
    }
}

impl AnalysisState {
    /// Starts the analyses new to the set (their first run at once) and
    /// stops those no longer in it.
    fn set_active(&mut self, myself: &ActorRef<AnalysisMsg>, list: Vec<ActiveAnalysis>) {
        let wanted: HashMap<AnalysisKey, ActiveAnalysis> =
            list.into_iter().map(|a| (a.key(), a)).collect();
        let before = self.running.len();
        self.running.retain(|k, _| wanted.contains_key(k));
        let stopped = before - self.running.len();
        for (key, active) in wanted {
            if self.running.contains_key(&key) {
                continue;
            }
            tracing::info!(trigger_id = %key.trigger_id, phase_id = %key.phase_id, analysis = %key.name, "analysis started");
            self.next_generation += 1;
            let generation = self.next_generation;
            self.running.insert(
                key.clone(),
                Running {
                    active,
                    generation,
                    streak: Streak::default(),
                    status: None,
                },
            );
            let _ = myself.cast(AnalysisMsg::Run(key, generation));
        }
        if stopped > 0 {
            tracing::info!(stopped, running = self.running.len(), "analyses stopped");
            self.publish();
            // The coordinator hears at once that they no longer run (and
            // that the agent no longer fails them).
            let _ = self.reporter.cast(ReportMsg::Applied);
        }
    }

    /// Sends one query off the actor; its outcome comes back as `Done`.
    fn run(&self, myself: &ActorRef<AnalysisMsg>, key: AnalysisKey, generation: u64) {
        let Some(r) = self
            .running
            .get(&key)
            .filter(|r| r.generation == generation)
        else {
            return;
        };
        let every = Duration::from_millis(r.active.analysis.every_ms);
        let timeout = every.min(MAX_QUERY_TIMEOUT);
        let query = r.active.analysis.query.clone();
        let prometheus = self.prometheus.clone();
        let myself = myself.clone();
        let started = tokio::time::Instant::now();
        // One task per query, bounded by the timeout: a slow Prometheus
        // delays no other analysis, and the next run is armed only when
        // this one is done, so queries never pile up.
        tokio::spawn(async move {
            let sample = match prometheus {
                Some(p) => p.query(&query, timeout).await,
                None => Sample::Missing("no --prometheus-url is configured".to_owned()),
            };
            let _ = myself.cast(AnalysisMsg::Done {
                key,
                generation,
                sample,
                at_ms: now_ms(),
                started,
            });
        });
    }

    /// Judges an outcome, records it, and arms the next run.
    fn done(
        &mut self,
        myself: &ActorRef<AnalysisMsg>,
        key: AnalysisKey,
        generation: u64,
        sample: Sample,
        at_ms: u64,
        started: tokio::time::Instant,
    ) {
        let Some(r) = self
            .running
            .get_mut(&key)
            .filter(|r| r.generation == generation)
        else {
            return;
        };
        let a = &r.active.analysis;
        let judged = judge(a, sample);
        self.shared.analysis.count(a.name.as_str(), judged.result);
        let turn = r.streak.record(judged.result, a);
        match turn {
            Some(Turn::Failed) => tracing::warn!(
                trigger_id = %key.trigger_id, analysis = %key.name, result = %judged.result,
                value = ?judged.value, detail = ?judged.detail,
                "analysis failing: this agent reports itself unhealthy"
            ),
            Some(Turn::Recovered) => tracing::info!(
                trigger_id = %key.trigger_id, analysis = %key.name, value = ?judged.value,
                "analysis succeeds again"
            ),
            None => tracing::debug!(
                analysis = %key.name, result = %judged.result, value = ?judged.value, detail = ?judged.detail,
                "analysis result"
            ),
        }
        r.status = Some(AnalysisStatus {
            trigger_id: r.active.trigger_id.clone(),
            phase_id: r.active.phase_id.clone(),
            name: a.name.clone(),
            result: judged.result,
            value: judged.value,
            at_ms,
            consecutive: r.streak.consecutive(judged.result),
            failing: r.streak.failing,
            detail: judged.detail,
        });
        let wait = Duration::from_millis(a.every_ms).saturating_sub(started.elapsed());
        myself.send_after(wait, move || AnalysisMsg::Run(key, generation));
        self.publish();
        if turn.is_some() {
            // Health moved: the coordinator hears it now, not at the next
            // heartbeat.
            let _ = self.reporter.cast(ReportMsg::Applied);
        }
    }

    /// Makes the latest statuses visible.
    fn publish(&self) {
        let mut statuses: Vec<AnalysisStatus> = self
            .running
            .values()
            .filter_map(|r| r.status.clone())
            .collect();
        statuses.sort_by(|a, b| {
            (&a.trigger_id, &a.phase_id, &a.name).cmp(&(&b.trigger_id, &b.phase_id, &b.name))
        });
        self.shared.analysis.statuses.store(Arc::new(statuses));
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // tests

    use phasegate_proto::{AnalysisName, PhaseId, TriggerId};

    use super::*;

    fn status(
        name: &str,
        result: AnalysisResult,
        value: Option<f64>,
        failing: bool,
    ) -> AnalysisStatus {
        AnalysisStatus {
            trigger_id: TriggerId::new("t-1").unwrap(),
            phase_id: PhaseId::new("eu").unwrap(),
            name: AnalysisName::new(name).unwrap(),
            result,
            value,
            at_ms: 1,
            consecutive: 1,
            failing,
            detail: None,
        }
    }

    #[test]
    fn the_board_says_failing_while_any_analysis_fails_and_renders_metrics() {
        let b = Board::default();
        assert!(!b.failing());
        b.statuses.store(Arc::new(vec![
            status("error-rate", AnalysisResult::Failure, Some(0.5), true),
            status("latency", AnalysisResult::Inconclusive, None, false),
        ]));
        assert!(b.failing());
        b.count("error-rate", AnalysisResult::Failure);
        b.count("error-rate", AnalysisResult::Failure);
        b.count("latency", AnalysisResult::Inconclusive);
        let mut out = String::new();
        b.write_metrics(&mut out, "prod-eu");
        assert!(out.contains("phasegate_analysis_results_total{segment=\"prod-eu\",analysis=\"error-rate\",result=\"failure\"} 2"), "{out}");
        assert!(
            out.contains("analysis=\"latency\",result=\"inconclusive\"} 1"),
            "{out}"
        );
        assert!(out.contains("phasegate_analysis_value{segment=\"prod-eu\",analysis=\"error-rate\",phase_id=\"eu\",trigger_id=\"t-1\"} 0.5"), "{out}");
        assert!(
            !out.contains("phasegate_analysis_value{segment=\"prod-eu\",analysis=\"latency\""),
            "no sample, no value: {out}"
        );
    }
}
