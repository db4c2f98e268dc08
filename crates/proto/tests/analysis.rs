//! The wire form of phase analyses (SPEC.md §3 `Analysis`): defaults,
//! operator words, and a golden fixture of a phase that has them (the
//! fixtures of `golden.rs` pin that phases without analyses keep their
//! bytes).
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests

use std::path::PathBuf;

use phasegate_proto::*;
use serde_json::json;

fn analysed() -> Pipeline {
    serde_json::from_value(json!({
        "name": "metric-gated",
        "phases": [{
            "id": "eu", "segments": ["prod-eu"],
            "analysis": [
                {"name": "error-rate",
                 "query": "sum(rate(errors{segment=\"{{segment}}\"}[1m]))",
                 "success": {"op": "<", "threshold": 0.05}},
                {"name": "p99", "query": "p99_latency", "every_ms": 5000,
                 "success": {"op": "<=", "threshold": 250},
                 "failure_limit": 3, "inconclusive_limit": 5}
            ]
        }]
    }))
    .unwrap()
}

#[test]
fn defaults_are_filled_in() {
    let p = analysed();
    let a = &p.phases[0].analysis;
    assert_eq!(a[0].every_ms, DEFAULT_ANALYSIS_EVERY_MS);
    assert_eq!(a[0].failure_limit, 1);
    assert_eq!(a[0].inconclusive_limit, 3);
    assert_eq!(a[0].success.op, CompareOp::Lt);
    assert_eq!(
        (a[1].every_ms, a[1].failure_limit, a[1].inconclusive_limit),
        (5000, 3, 5)
    );
}

#[test]
fn every_operator_word_round_trips_and_others_are_refused() {
    for (word, op) in [
        ("<", CompareOp::Lt),
        ("<=", CompareOp::Le),
        (">", CompareOp::Gt),
        (">=", CompareOp::Ge),
    ] {
        let c: SuccessCondition =
            serde_json::from_value(json!({"op": word, "threshold": 1})).unwrap();
        assert_eq!(c.op, op);
        assert_eq!(op.as_str(), word);
        assert_eq!(serde_json::to_value(c).unwrap()["op"], word);
    }
    for bad in ["==", "lt", "!="] {
        assert!(
            serde_json::from_value::<SuccessCondition>(json!({"op": bad, "threshold": 1})).is_err(),
            "{bad} accepted"
        );
    }
    let bad_name =
        json!({"name": "Error Rate", "query": "up", "success": {"op": "<", "threshold": 1}});
    let e = serde_json::from_value::<Analysis>(bad_name).unwrap_err();
    assert!(e.to_string().contains("invalid analysis name"), "{e}");
}

#[test]
fn a_phase_with_analyses_has_golden_bytes() {
    let value = PipelinePutRequest {
        pipeline: analysed(),
        actor: Actor::new("alice").unwrap(),
    };
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    for (enc, ext) in [(Encoding::MsgPack, "msgpack"), (Encoding::Json, "json")] {
        let bytes = encode(enc, &value).unwrap();
        let path = dir.join(format!("pipeline_analysis.{ext}"));
        if std::env::var_os("PHASEGATE_BLESS").is_some() {
            std::fs::write(&path, &bytes).unwrap();
        }
        let golden = std::fs::read(&path).unwrap();
        assert!(bytes == golden, "pipeline_analysis.{ext}: encoding changed");
        let back: PipelinePutRequest = decode(enc, &golden).unwrap();
        assert_eq!(back, value);
    }
}

#[test]
fn reports_without_analyses_keep_their_shape() {
    let report = AgentReport {
        agent_id: AgentId::new("a1").unwrap(),
        segment: Segment::new("dev").unwrap(),
        tier: None,
        healthy: true,
        applied_revision: 7,
        stale: false,
        heartbeat_ms: 1000,
        sent_at_ms: 1,
        blocked: vec![],
        leaving: false,
        analyses: vec![],
    };
    let v = serde_json::to_value(&report).unwrap();
    assert!(v.get("analyses").is_none());
    let with = AgentReport {
        analyses: vec![AnalysisStatus {
            trigger_id: TriggerId::new("t-1").unwrap(),
            phase_id: PhaseId::new("eu").unwrap(),
            name: AnalysisName::new("error-rate").unwrap(),
            result: AnalysisResult::Failure,
            value: Some(0.2),
            at_ms: 5,
            consecutive: 1,
            failing: true,
            detail: None,
        }],
        ..report
    };
    let bytes = encode(Encoding::MsgPack, &with).unwrap();
    assert_eq!(
        decode::<AgentReport>(Encoding::MsgPack, &bytes).unwrap(),
        with
    );
}
