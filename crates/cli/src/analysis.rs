//! How the CLI shows a trigger's analyses (SPEC.md §3 `Analysis`): one
//! table row per segment and analysis in `trigger get` and `trigger
//! watch`, and one line per change of verdict in a watch without a
//! terminal.

use std::collections::BTreeMap;

use phasegate_proto::{AnalysisResult, SegmentAnalysis, Trigger};

use crate::output::{Table, clock, sanitize};

/// The `success` condition of the analysis as the pipeline snapshot has
/// it (`< 0.05`), or `-`.
fn needs(t: &Trigger, a: &SegmentAnalysis) -> String {
    t.pipeline_snapshot
        .phases
        .iter()
        .filter(|ph| ph.id == a.phase_id)
        .flat_map(|ph| ph.analysis.iter())
        .find(|x| x.name == a.name)
        .map_or_else(|| "-".to_owned(), |x| x.success.to_string())
}

fn value(a: &SegmentAnalysis) -> String {
    a.value.map_or_else(|| "-".to_owned(), |v| v.to_string())
}

fn verdict(a: &SegmentAnalysis) -> &'static str {
    if a.failing { "failing" } else { "passing" }
}

/// The table of the latest result of each analysis per segment; `None`
/// when there is none to show.
pub(crate) fn table(t: &Trigger) -> Option<Table> {
    if t.analysis.is_empty() {
        return None;
    }
    let mut table = Table::new(&[
        "SEGMENT", "ANALYSIS", "PHASE", "AGENT", "RESULT", "VALUE", "NEEDS", "IN A ROW", "VERDICT",
        "AT", "DETAIL",
    ]);
    for (segment, list) in &t.analysis {
        for a in list {
            table.row(vec![
                segment.clone(),
                a.name.to_string(),
                a.phase_id.to_string(),
                a.agent_id.to_string(),
                a.result.to_string(),
                value(a),
                needs(t, a),
                a.consecutive.to_string(),
                verdict(a).to_owned(),
                clock(a.at_ms),
                a.detail.clone().unwrap_or_default(),
            ]);
        }
    }
    Some(table)
}

/// What a line-by-line watch remembers of each analysis: its result and
/// verdict, per (segment, analysis, phase).
pub(crate) type Seen = BTreeMap<(String, String, String), (AnalysisResult, bool)>;

/// Lines for the analyses whose result or verdict changed since `seen`
/// (which is brought up to date), [`sanitize`]d.
pub(crate) fn changes(t: &Trigger, seen: &mut Seen) -> Vec<String> {
    let mut out = Vec::new();
    for (segment, list) in &t.analysis {
        for a in list {
            let key = (segment.clone(), a.name.to_string(), a.phase_id.to_string());
            let now = (a.result, a.failing);
            if seen.insert(key, now) != Some(now) {
                let line = format!(
                    "{}  analysis {} in {segment}: {} {} (needs {}), {}{}",
                    clock(a.at_ms),
                    a.name,
                    a.result,
                    value(a),
                    needs(t, a),
                    verdict(a),
                    a.detail
                        .as_ref()
                        .map(|d| format!(": {d}"))
                        .unwrap_or_default()
                );
                out.push(sanitize(&line).into_owned());
            }
        }
    }
    out
}

/// The analyses of a pipeline's phases, one row each; `None` when it has
/// none.
pub(crate) fn pipeline_table(p: &phasegate_proto::Pipeline) -> Option<Table> {
    let mut table = Table::new(&[
        "PHASE",
        "ANALYSIS",
        "EVERY",
        "NEEDS",
        "FAILS AFTER",
        "QUERY",
    ]);
    let mut any = false;
    for ph in &p.phases {
        for a in &ph.analysis {
            any = true;
            table.row(vec![
                ph.id.to_string(),
                a.name.to_string(),
                crate::output::dur(a.every_ms),
                a.success.to_string(),
                format!(
                    "{} failed / {} inconclusive",
                    a.failure_limit, a.inconclusive_limit
                ),
                a.query.clone(),
            ]);
        }
    }
    any.then_some(table)
}
