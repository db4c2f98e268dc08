//! Metric analyses (SPEC.md §3 `Analysis`), the pure parts: write-time
//! validation, which analyses a segment runs, the result engine an agent
//! feeds each query's outcome to, and what the coordinator makes of the
//! results (per-segment summaries, history comments).
//!
//! No IO: the agent queries Prometheus and hands the outcome here; the
//! coordinator hands in reports.

use std::collections::{BTreeMap, HashSet};

use phasegate_proto::{
    AgentId, Analysis, AnalysisResult, AnalysisStatus, DesiredEntity, PhaseId, SEGMENT_PLACEHOLDER,
    SegmentAnalysis, Trigger, TriggerId, TriggerRecord,
};

use crate::validate::ValidationError;

/// The most analyses a phase may have.
pub const MAX_ANALYSES: usize = 10;
/// The shortest `every_ms`.
pub const MIN_EVERY_MS: u64 = 1_000;
/// The longest `every_ms`: one day.
pub const MAX_EVERY_MS: u64 = 24 * 60 * 60 * 1000;
/// The longest query, in bytes.
pub const MAX_QUERY_BYTES: usize = 4096;
/// The highest `failure_limit` / `inconclusive_limit`.
pub const MAX_LIMIT: u32 = 1000;

// ---------------------------------------------------------------- validation

/// Checks the analyses of the phase at `at` (`pipeline.phases[2]`).
pub fn validate_analyses(at: &str, analyses: &[Analysis]) -> Result<(), ValidationError> {
    if analyses.len() > MAX_ANALYSES {
        return Err(ValidationError::new(
            format!("{at}.analysis"),
            format!(
                "must have at most {MAX_ANALYSES} analyses, got {}",
                analyses.len()
            ),
        ));
    }
    let mut names = HashSet::new();
    for (i, a) in analyses.iter().enumerate() {
        let at = format!("{at}.analysis[{i}]");
        if !names.insert(a.name.as_str()) {
            return Err(ValidationError::new(
                format!("{at}.name"),
                format!(
                    "analysis name {:?} is used twice in the phase; names must be unique",
                    a.name.as_str()
                ),
            ));
        }
        check_query(&a.query).map_err(|m| ValidationError::new(format!("{at}.query"), m))?;
        if !(MIN_EVERY_MS..=MAX_EVERY_MS).contains(&a.every_ms) {
            return Err(ValidationError::new(
                format!("{at}.every_ms"),
                format!(
                    "must be from {MIN_EVERY_MS} to {MAX_EVERY_MS} ms, got {}",
                    a.every_ms
                ),
            ));
        }
        if !a.success.threshold.is_finite() {
            return Err(ValidationError::new(
                format!("{at}.success.threshold"),
                format!("must be a finite number, got {}", a.success.threshold),
            ));
        }
        for (key, n) in [
            ("failure_limit", a.failure_limit),
            ("inconclusive_limit", a.inconclusive_limit),
        ] {
            if !(1..=MAX_LIMIT).contains(&n) {
                return Err(ValidationError::new(
                    format!("{at}.{key}"),
                    format!("must be from 1 to {MAX_LIMIT} consecutive results, got {n}"),
                ));
            }
        }
    }
    Ok(())
}

/// A syntax sanity check of a PromQL query, done without a server or a
/// full parser (keeping the dependency tree lean): not empty, not too
/// long, string literals closed, brackets balanced and properly nested,
/// no placeholder other than `{{segment}}`, and something to evaluate.
/// What it lets through, Prometheus answers with an error, which the
/// agents report as inconclusive.
pub fn check_query(query: &str) -> Result<(), String> {
    if query.trim().is_empty() {
        return Err("must not be empty".to_owned());
    }
    if query.len() > MAX_QUERY_BYTES {
        return Err(format!(
            "is {} bytes; at most {MAX_QUERY_BYTES} are accepted",
            query.len()
        ));
    }
    let q = query.replace(SEGMENT_PLACEHOLDER, "segment");
    if let Some(at) = q.find("{{").or_else(|| q.find("}}")) {
        return Err(format!(
            "PromQL: unknown placeholder at byte {at}; only {SEGMENT_PLACEHOLDER} is replaced"
        ));
    }
    let mut open: Vec<(char, usize)> = Vec::new();
    let mut chars = q.char_indices();
    let mut evaluable = false;
    while let Some((i, c)) = chars.next() {
        match c {
            '"' | '\'' | '`' => {
                let mut closed = false;
                while let Some((_, d)) = chars.next() {
                    if d == '\\' && c != '`' {
                        chars.next();
                    } else if d == c {
                        closed = true;
                        break;
                    }
                }
                if !closed {
                    return Err(format!("PromQL: string opened at byte {i} is not closed"));
                }
            }
            '#' => {
                // A comment runs to the end of the line.
                for (_, d) in chars.by_ref() {
                    if d == '\n' {
                        break;
                    }
                }
            }
            '(' | '[' | '{' => open.push((c, i)),
            ')' | ']' | '}' => {
                let want = match c {
                    ')' => '(',
                    ']' => '[',
                    _ => '{',
                };
                match open.pop() {
                    Some((o, _)) if o == want => {}
                    Some((o, at)) => {
                        return Err(format!(
                            "PromQL: {c:?} at byte {i} closes {o:?} opened at byte {at}"
                        ));
                    }
                    None => return Err(format!("PromQL: {c:?} at byte {i} closes nothing")),
                }
            }
            c if c.is_ascii_alphanumeric() || c == '_' || c == ':' => evaluable = true,
            _ => {}
        }
    }
    if let Some((o, at)) = open.pop() {
        return Err(format!("PromQL: {o:?} opened at byte {at} is not closed"));
    }
    if !evaluable {
        return Err("PromQL: no metric, function or number to evaluate".to_owned());
    }
    Ok(())
}

// ------------------------------------------------------------ what runs where

/// One analysis an agent runs: the analysis of a published phase naming
/// its segment, with `{{segment}}` replaced.
#[derive(Debug, Clone, PartialEq)]
pub struct ActiveAnalysis {
    /// The trigger whose pipeline holds it.
    pub trigger_id: TriggerId,
    /// The phase that holds it.
    pub phase_id: PhaseId,
    /// The analysis, its query ready to send.
    pub analysis: Analysis,
}

impl ActiveAnalysis {
    /// What identifies it among the analyses an agent runs.
    pub fn key(&self) -> AnalysisKey {
        AnalysisKey {
            trigger_id: self.trigger_id.clone(),
            phase_id: self.phase_id.clone(),
            name: self.analysis.name.to_string(),
        }
    }
}

/// Trigger, phase and analysis name: one analysis run by one agent.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AnalysisKey {
    /// The trigger.
    pub trigger_id: TriggerId,
    /// The phase.
    pub phase_id: PhaseId,
    /// The analysis.
    pub name: String,
}

/// The analyses `segment` runs given what it serves: those of every
/// published phase of an active rollout that names the segment (its new
/// version is served there), in a stable order. A finished trigger has no
/// rollout in the desired state, so its analyses stop.
pub fn active<'a>(
    segment: &str,
    desired: impl IntoIterator<Item = &'a DesiredEntity>,
) -> Vec<ActiveAnalysis> {
    let mut out = Vec::new();
    for d in desired {
        let Some(r) = &d.rollout else { continue };
        for ph in r
            .phases
            .iter()
            .filter(|ph| ph.segments.iter().any(|p| p.matches(segment)))
        {
            for a in &ph.analysis {
                let mut analysis = a.clone();
                analysis.query = a.query.replace(SEGMENT_PLACEHOLDER, segment);
                out.push(ActiveAnalysis {
                    trigger_id: r.trigger_id.clone(),
                    phase_id: ph.id.clone(),
                    analysis,
                });
            }
        }
    }
    out.sort_by_key(ActiveAnalysis::key);
    out
}

// ------------------------------------------------------------ result engine

/// What one query gave, before judging.
#[derive(Debug, Clone, PartialEq)]
pub enum Sample {
    /// Exactly one sample.
    Value(f64),
    /// No usable sample: why (query error, timeout, not exactly one
    /// sample, no Prometheus configured).
    Missing(String),
}

/// One judged run of an analysis.
#[derive(Debug, Clone, PartialEq)]
pub struct Judged {
    /// Success, failure or inconclusive.
    pub result: AnalysisResult,
    /// The sample, if any.
    pub value: Option<f64>,
    /// Why it is inconclusive.
    pub detail: Option<String>,
}

/// Judges one sample against the analysis's `success`: a sample that
/// satisfies it is a success, one that violates it a failure, no sample
/// (or NaN, which satisfies no comparison and violates none) inconclusive.
pub fn judge(analysis: &Analysis, sample: Sample) -> Judged {
    match sample {
        Sample::Value(v) if v.is_nan() => Judged {
            result: AnalysisResult::Inconclusive,
            value: None,
            detail: Some("the sample is NaN".to_owned()),
        },
        Sample::Value(v) => Judged {
            result: if analysis.success.holds(v) {
                AnalysisResult::Success
            } else {
                AnalysisResult::Failure
            },
            value: Some(v),
            detail: None,
        },
        Sample::Missing(why) => Judged {
            result: AnalysisResult::Inconclusive,
            value: None,
            detail: Some(why),
        },
    }
}

/// How a result changed the agent's verdict on an analysis.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Turn {
    /// The limit was reached: the agent now fails the analysis.
    Failed,
    /// A success after failing: the agent no longer fails it.
    Recovered,
}

/// The consecutive counts of one analysis on one agent, and whether the
/// agent fails it. A success clears both counts and the failing state; a
/// failure extends the failure streak and breaks the inconclusive one, and
/// the other way round; the agent fails the analysis once either streak
/// reaches its limit, and keeps failing it until a success.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Streak {
    /// Consecutive successes.
    pub successes: u32,
    /// Consecutive failures.
    pub failures: u32,
    /// Consecutive inconclusive results.
    pub inconclusive: u32,
    /// The agent fails the analysis.
    pub failing: bool,
}

impl Streak {
    /// Counts one result under the analysis's limits (0 is taken as 1);
    /// returns the turn it caused, if any.
    pub fn record(&mut self, result: AnalysisResult, analysis: &Analysis) -> Option<Turn> {
        match result {
            AnalysisResult::Success => {
                let was = self.failing;
                *self = Self {
                    successes: self.successes.saturating_add(1),
                    ..Self::default()
                };
                was.then_some(Turn::Recovered)
            }
            AnalysisResult::Failure => {
                self.failures = self.failures.saturating_add(1);
                self.successes = 0;
                self.inconclusive = 0;
                self.fail_if(self.failures >= analysis.failure_limit.max(1))
            }
            AnalysisResult::Inconclusive => {
                self.inconclusive = self.inconclusive.saturating_add(1);
                self.successes = 0;
                self.failures = 0;
                self.fail_if(self.inconclusive >= analysis.inconclusive_limit.max(1))
            }
        }
    }

    /// How many results in a row were `result` (0 unless it is the last).
    pub fn consecutive(&self, result: AnalysisResult) -> u32 {
        match result {
            AnalysisResult::Success => self.successes,
            AnalysisResult::Failure => self.failures,
            AnalysisResult::Inconclusive => self.inconclusive,
        }
    }

    fn fail_if(&mut self, reached: bool) -> Option<Turn> {
        if reached && !self.failing {
            self.failing = true;
            Some(Turn::Failed)
        } else {
            None
        }
    }
}

// ------------------------------------------------------------ coordinator side

/// The latest result of each analysis of `trigger` in one segment, from
/// the statuses its agents reported: per analysis, a failing agent's
/// (the newest of them) when one fails, else the newest.
pub fn summarize<'a>(
    trigger: &TriggerId,
    reports: impl IntoIterator<Item = (&'a AgentId, &'a [AnalysisStatus])>,
) -> Vec<SegmentAnalysis> {
    let mut best: BTreeMap<(PhaseId, String), SegmentAnalysis> = BTreeMap::new();
    for (agent, statuses) in reports {
        for s in statuses.iter().filter(|s| &s.trigger_id == trigger) {
            let candidate = SegmentAnalysis {
                phase_id: s.phase_id.clone(),
                name: s.name.clone(),
                agent_id: agent.clone(),
                result: s.result,
                value: s.value,
                at_ms: s.at_ms,
                consecutive: s.consecutive,
                failing: s.failing,
                detail: s.detail.clone(),
            };
            let key = (s.phase_id.clone(), s.name.to_string());
            match best.get(&key) {
                Some(b) if (b.failing, b.at_ms) >= (candidate.failing, candidate.at_ms) => {}
                _ => {
                    best.insert(key, candidate);
                }
            }
        }
    }
    best.into_values().collect()
}

fn value_text(v: Option<f64>) -> String {
    v.map_or_else(|| "no value".to_owned(), |v| format!("value {v}"))
}

/// The failing analyses of the segments where the new version is active,
/// as `"<analysis> in <segment>"`, and the text the `health_degraded`
/// comment adds for them (empty when no analysis fails).
pub fn failing(t: &Trigger) -> (Vec<String>, String) {
    let mut names = Vec::new();
    let mut parts = Vec::new();
    for (segment, list) in &t.analysis {
        if !t.segments.get(segment).is_some_and(|s| s.version_active) {
            continue;
        }
        for a in list.iter().filter(|a| a.failing) {
            let success = t
                .pipeline_snapshot
                .phases
                .iter()
                .filter(|ph| ph.id == a.phase_id)
                .flat_map(|ph| ph.analysis.iter())
                .find(|x| x.name == a.name)
                .map(|x| format!(", needs {}", x.success))
                .unwrap_or_default();
            names.push(format!("{} in {segment}", a.name));
            parts.push(format!(
                "analysis {} failing in {segment} ({} {}{success})",
                a.name,
                a.result,
                value_text(a.value)
            ));
        }
    }
    (names, parts.join("; "))
}

/// The `health_recovered` comment naming the analyses that had degraded
/// health, with their latest result, or `None` when none had.
pub fn recovered_comment(rec: &TriggerRecord) -> Option<String> {
    if rec.degraded_by.is_empty() {
        return None;
    }
    let parts: Vec<String> = rec
        .degraded_by
        .iter()
        .map(|which| {
            let latest = which.split_once(" in ").and_then(|(name, segment)| {
                rec.trigger
                    .analysis
                    .get(segment)?
                    .iter()
                    .find(|a| a.name.as_str() == name)
            });
            match latest {
                Some(a) => format!(
                    "analysis {which} recovered ({} {})",
                    a.result,
                    value_text(a.value)
                ),
                None => format!("analysis {which} recovered"),
            }
        })
        .collect();
    Some(parts.join("; "))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // tests

    use phasegate_proto::{AnalysisName, CompareOp, SuccessCondition};

    use super::*;

    fn analysis(failure_limit: u32, inconclusive_limit: u32) -> Analysis {
        Analysis {
            name: AnalysisName::new("error-rate").unwrap(),
            query: "sum(rate(errors[1m]))".to_owned(),
            every_ms: 1000,
            success: SuccessCondition {
                op: CompareOp::Lt,
                threshold: 0.05,
            },
            failure_limit,
            inconclusive_limit,
        }
    }

    /// Feeds results ('s' success, 'f' failure, 'i' inconclusive) and
    /// writes the verdict after each ('.' passing, 'F' failing).
    fn run(a: &Analysis, results: &str) -> String {
        let mut s = Streak::default();
        results
            .chars()
            .map(|c| {
                let r = match c {
                    's' => AnalysisResult::Success,
                    'f' => AnalysisResult::Failure,
                    _ => AnalysisResult::Inconclusive,
                };
                s.record(r, a);
                if s.failing { 'F' } else { '.' }
            })
            .collect()
    }

    #[test]
    fn fails_after_limits_of_consecutive_results_and_recovers_on_success() {
        let table = [
            // (failure_limit, inconclusive_limit, results, verdicts)
            (1, 3, "f", "F"),
            (1, 3, "sfs", ".F."),
            (2, 3, "fsf", "..."),
            (2, 3, "ff", ".F"),
            (2, 3, "fif", "..."),
            (3, 3, "fffi", "..FF"),
            (1, 3, "ii", ".."),
            (1, 3, "iii", "..F"),
            (1, 3, "iisii", "....."),
            (1, 3, "iiii", "..FF"),
            (2, 2, "ifif", "...."),
            (1, 3, "fiiis", "FFFF."),
            (1, 1, "isf", "F.F"),
        ];
        for (fl, il, results, want) in table {
            assert_eq!(
                run(&analysis(fl, il), results),
                want,
                "failure_limit={fl} inconclusive_limit={il} results={results}"
            );
        }
    }

    #[test]
    fn reports_turns_only() {
        let a = analysis(2, 3);
        let mut s = Streak::default();
        assert_eq!(s.record(AnalysisResult::Failure, &a), None);
        assert_eq!(s.record(AnalysisResult::Failure, &a), Some(Turn::Failed));
        assert_eq!(s.record(AnalysisResult::Failure, &a), None);
        assert_eq!(s.record(AnalysisResult::Inconclusive, &a), None);
        assert_eq!(s.record(AnalysisResult::Success, &a), Some(Turn::Recovered));
        assert_eq!(s.record(AnalysisResult::Success, &a), None);
        assert_eq!(s.consecutive(AnalysisResult::Success), 2);
        assert_eq!(s.consecutive(AnalysisResult::Failure), 0);
        assert!(!s.failing);
    }

    #[test]
    fn zero_limits_mean_one_result() {
        let a = analysis(0, 0);
        assert_eq!(run(&a, "f"), "F");
        assert_eq!(run(&a, "i"), "F");
    }

    #[test]
    fn judges_every_comparison_and_missing_samples() {
        let mut a = analysis(1, 3);
        let cases = [
            (CompareOp::Lt, 0.04, AnalysisResult::Success),
            (CompareOp::Lt, 0.05, AnalysisResult::Failure),
            (CompareOp::Le, 0.05, AnalysisResult::Success),
            (CompareOp::Le, 0.06, AnalysisResult::Failure),
            (CompareOp::Gt, 0.06, AnalysisResult::Success),
            (CompareOp::Gt, 0.05, AnalysisResult::Failure),
            (CompareOp::Ge, 0.05, AnalysisResult::Success),
            (CompareOp::Ge, 0.04, AnalysisResult::Failure),
            (CompareOp::Ge, f64::INFINITY, AnalysisResult::Success),
        ];
        for (op, v, want) in cases {
            a.success.op = op;
            let j = judge(&a, Sample::Value(v));
            assert_eq!(j.result, want, "{v} {op} 0.05");
            assert_eq!(j.value, Some(v));
        }
        let nan = judge(&a, Sample::Value(f64::NAN));
        assert_eq!(nan.result, AnalysisResult::Inconclusive);
        let missing = judge(&a, Sample::Missing("no sample".into()));
        assert_eq!(missing.result, AnalysisResult::Inconclusive);
        assert_eq!(missing.detail.as_deref(), Some("no sample"));
        assert_eq!(missing.value, None);
    }

    #[test]
    fn sanity_checks_queries() {
        for ok in [
            "up",
            "sum(rate(http_requests_total{segment=\"{{segment}}\",code=~\"5..\"}[1m])) / sum(rate(http_requests_total[1m]))",
            "histogram_quantile(0.99, sum by (le) (rate(latency_bucket[5m])))",
            "1",
            "errors{msg=\"a ) b\"} # trailing ( comment",
            "vector(`raw \\`)",
        ] {
            assert_eq!(check_query(ok), Ok(()), "{ok}");
        }
        for (bad, why) in [
            ("", "must not be empty"),
            ("   ", "must not be empty"),
            ("sum(rate(x[1m])", "not closed"),
            ("x)", "closes nothing"),
            ("sum(x[1m)]", "closes '['"),
            ("x{a=\"b}", "string opened"),
            ("x{job=\"{{job}}\"}", "unknown placeholder"),
            ("()", "nothing to evaluate"),
        ] {
            let err = check_query(bad).unwrap_err();
            assert!(
                err.contains(why) || (why == "nothing to evaluate" && err.contains("no metric")),
                "{bad:?}: {err}"
            );
        }
        assert!(check_query(&"x".repeat(MAX_QUERY_BYTES + 1)).is_err());
    }

    #[test]
    fn validates_every_field_with_its_path() {
        let at = "pipeline.phases[0]";
        assert_eq!(validate_analyses(at, &[analysis(1, 3)]), Ok(()));
        type Change = Box<dyn Fn(&mut Vec<Analysis>)>;
        let cases: Vec<(Change, &str)> = vec![
            (
                Box::new(|v| *v = vec![analysis(1, 3); 1]),
                "", // valid
            ),
            (
                Box::new(|v| {
                    *v = (0..11)
                        .map(|i| {
                            let mut a = analysis(1, 3);
                            a.name = AnalysisName::new(format!("a{i}")).unwrap();
                            a
                        })
                        .collect();
                }),
                "pipeline.phases[0].analysis: must have at most 10",
            ),
            (
                Box::new(|v| v.push(analysis(1, 3))),
                "pipeline.phases[0].analysis[1].name: analysis name \"error-rate\" is used twice",
            ),
            (
                Box::new(|v| v[0].query = " ".into()),
                "pipeline.phases[0].analysis[0].query: must not be empty",
            ),
            (
                Box::new(|v| v[0].every_ms = 999),
                "pipeline.phases[0].analysis[0].every_ms: must be from 1000",
            ),
            (
                Box::new(|v| v[0].success.threshold = f64::NAN),
                "pipeline.phases[0].analysis[0].success.threshold: must be a finite number",
            ),
            (
                Box::new(|v| v[0].failure_limit = 0),
                "pipeline.phases[0].analysis[0].failure_limit: must be from 1",
            ),
            (
                Box::new(|v| v[0].inconclusive_limit = 0),
                "pipeline.phases[0].analysis[0].inconclusive_limit: must be from 1",
            ),
        ];
        for (change, want) in cases {
            let mut v = vec![analysis(1, 3)];
            change(&mut v);
            let got = validate_analyses(at, &v);
            if want.is_empty() {
                assert_eq!(got, Ok(()));
            } else {
                let e = got.unwrap_err().to_string();
                assert!(e.starts_with(want), "want {want:?}, got {e:?}");
            }
        }
    }

    #[test]
    fn summarizes_a_failing_agent_first_then_the_newest() {
        let t = TriggerId::new("t-1").unwrap();
        let other = TriggerId::new("t-2").unwrap();
        let status = |trigger: &TriggerId, result, at_ms, failing| AnalysisStatus {
            trigger_id: trigger.clone(),
            phase_id: PhaseId::new("eu").unwrap(),
            name: AnalysisName::new("error-rate").unwrap(),
            result,
            value: Some(0.1),
            at_ms,
            consecutive: 1,
            failing,
            detail: None,
        };
        let a1 = AgentId::new("a1").unwrap();
        let a2 = AgentId::new("a2").unwrap();
        let r1 = vec![status(&t, AnalysisResult::Failure, 10, true)];
        let r2 = vec![
            status(&t, AnalysisResult::Success, 20, false),
            status(&other, AnalysisResult::Failure, 30, true),
        ];
        let s = summarize(&t, [(&a1, r1.as_slice()), (&a2, r2.as_slice())]);
        assert_eq!(s.len(), 1);
        assert_eq!(s[0].agent_id, a1);
        assert!(s[0].failing);
        let healthy = vec![status(&t, AnalysisResult::Success, 5, false)];
        let s = summarize(&t, [(&a1, healthy.as_slice()), (&a2, r2.as_slice())]);
        assert_eq!((s[0].agent_id.clone(), s[0].at_ms), (a2, 20));
    }
}
