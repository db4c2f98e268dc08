//! Analyses through the model: validation of a pipeline, what the desired
//! state carries to agents and which analyses a segment runs, and the
//! history comments of health moved by an analysis.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests

mod common;

use common::*;
use phasegate_model::analysis::active;
use phasegate_model::{desired, observe, validate_pipeline};
use phasegate_proto::{
    AgentId, Analysis, AnalysisName, AnalysisResult, CompareOp, HistoryType as H, PhaseId,
    SegmentAnalysis, SuccessCondition,
};

fn error_rate() -> Analysis {
    Analysis {
        name: AnalysisName::new("error-rate").unwrap(),
        query: "sum(rate(errors{segment=\"{{segment}}\"}[1m]))".into(),
        every_ms: 1000,
        success: SuccessCondition {
            op: CompareOp::Lt,
            threshold: 0.05,
        },
        failure_limit: 1,
        inconclusive_limit: 3,
    }
}

fn analysed_pipeline() -> phasegate_proto::Pipeline {
    let mut dev = phase("dev", &["dev"], 60_000);
    dev.analysis = vec![error_rate()];
    let mut prod = phase("prod", &["prod-*"], 60_000);
    prod.analysis = vec![error_rate()];
    pipeline(vec![dev, prod])
}

#[test]
fn a_pipeline_is_checked_down_to_its_analyses() {
    assert_eq!(validate_pipeline(&analysed_pipeline()), Ok(()));
    let mut p = analysed_pipeline();
    p.phases[1].analysis[0].every_ms = 10;
    let e = validate_pipeline(&p).unwrap_err().to_string();
    assert!(
        e.starts_with("pipeline.phases[1].analysis[0].every_ms: must be from 1000"),
        "{e}"
    );
    let mut p = analysed_pipeline();
    p.phases[0].analysis[0].query = "sum(rate(errors[1m])".into();
    let e = validate_pipeline(&p).unwrap_err().to_string();
    assert!(
        e.starts_with("pipeline.phases[0].analysis[0].query: PromQL: '(' opened at byte 3"),
        "{e}"
    );
}

#[test]
fn agents_run_the_analyses_of_published_phases_naming_their_segment() {
    let mut rec = start(analysed_pipeline(), 0);
    // Applying dev: only dev is published.
    observe(&mut rec, &fleet(&[("dev", 1, 0, 1)]), 1);
    let mut record = phasegate_model::new_record(
        phasegate_proto::EntityKind::Gate,
        phasegate_proto::EntityName::new("g").unwrap(),
    );
    record.active_trigger = Some(rec.trigger.id.clone());
    let d = desired::publish(&record, Some(&rec));
    let dev = active("dev", [&d]);
    assert_eq!(dev.len(), 1);
    assert_eq!(dev[0].phase_id.as_str(), "dev");
    assert_eq!(
        dev[0].analysis.query, "sum(rate(errors{segment=\"dev\"}[1m]))",
        "{{segment}} is replaced"
    );
    assert!(active("prod-eu", [&d]).is_empty(), "prod is not published");
    // A finished trigger publishes no rollout: analyses stop.
    record.active_trigger = None;
    let done = desired::publish(&record, None);
    assert!(active("dev", [&done]).is_empty());
}

fn failing_in(segment: &str, value: f64, failing: bool) -> (String, Vec<SegmentAnalysis>) {
    (
        segment.to_owned(),
        vec![SegmentAnalysis {
            phase_id: PhaseId::new("dev").unwrap(),
            name: AnalysisName::new("error-rate").unwrap(),
            agent_id: AgentId::new("dev-1").unwrap(),
            result: if failing {
                AnalysisResult::Failure
            } else {
                AnalysisResult::Success
            },
            value: Some(value),
            at_ms: 5,
            consecutive: 1,
            failing,
            detail: None,
        }],
    )
}

#[test]
fn health_history_names_the_analysis_the_segment_and_the_value() {
    let mut rec = start(analysed_pipeline(), 0);
    observe(&mut rec, &fleet(&[("dev", 1, 1, 1)]), 1);
    rec.trigger.analysis = [failing_in("dev", 0.2, true)].into();
    observe(&mut rec, &fleet(&[("dev", 1, 1, 0)]), 2);
    let degraded = rec
        .trigger
        .history
        .iter()
        .find(|h| h.kind == H::HealthDegraded)
        .unwrap();
    let c = degraded.comment.clone().unwrap();
    assert_eq!(
        c,
        "healthy ratio 0.000 below 1; analysis error-rate failing in dev (failure value 0.2, needs < 0.05)"
    );
    assert!(rec.trigger.paused);
    rec.trigger.analysis = [failing_in("dev", 0.01, false)].into();
    observe(&mut rec, &fleet(&[("dev", 1, 1, 1)]), 3);
    let recovered = rec
        .trigger
        .history
        .iter()
        .find(|h| h.kind == H::HealthRecovered)
        .unwrap();
    assert_eq!(
        recovered.comment.as_deref(),
        Some("analysis error-rate in dev recovered (success value 0.01)")
    );
    assert!(!rec.trigger.paused, "health paused it: recovery resumes it");
    assert!(rec.degraded_by.is_empty());
}

#[test]
fn health_without_analyses_keeps_its_comments() {
    let mut rec = start(analysed_pipeline(), 0);
    observe(&mut rec, &fleet(&[("dev", 1, 1, 1)]), 1);
    observe(&mut rec, &fleet(&[("dev", 1, 1, 0)]), 2);
    observe(&mut rec, &fleet(&[("dev", 1, 1, 1)]), 3);
    let comments: Vec<_> = rec
        .trigger
        .history
        .iter()
        .filter(|h| matches!(h.kind, H::HealthDegraded | H::HealthRecovered))
        .map(|h| h.comment.clone())
        .collect();
    assert_eq!(
        comments,
        [Some("healthy ratio 0.000 below 1".to_owned()), None]
    );
}
