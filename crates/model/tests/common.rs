//! Builders shared by the model's tests.
#![allow(
    dead_code,
    unreachable_pub,
    missing_docs,
    clippy::unwrap_used,
    clippy::expect_used
)] // test helpers, shared by several test binaries

use phasegate_model::{FleetView, SegmentFleet, StartParams};
use phasegate_proto::*;

pub fn actor(s: &str) -> Actor {
    Actor::new(s).unwrap()
}

pub fn phase(id: &str, segments: &[&str], wait_ms: u64) -> Phase {
    Phase {
        id: PhaseId::new(id).unwrap(),
        segments: segments
            .iter()
            .map(|s| SegmentPattern::new(*s).unwrap())
            .collect(),
        conditions: vec![],
        pass_percentage: 100.0,
        wait_ms,
        apply_timeout_ms: 5_000,
        approval: ApprovalPolicy::default(),
        health: HealthPolicy::default(),
        analysis: vec![],
    }
}

pub fn approval(mut ph: Phase, approvers: &[&str], min: u32) -> Phase {
    ph.approval = ApprovalPolicy {
        required: true,
        approvers: approvers.iter().map(|a| actor(a)).collect(),
        min_approvals: min,
    };
    ph
}

pub fn pipeline(phases: Vec<Phase>) -> Pipeline {
    Pipeline {
        name: PipelineName::new("p").unwrap(),
        description: String::new(),
        phases,
    }
}

pub fn seed_pipeline() -> Pipeline {
    pipeline(vec![
        phase("dev", &["dev"], 1_000),
        phase("staging", &["staging"], 1_000),
        approval(
            phase("us-west", &["prod-us-west"], 1_000),
            &["alice", "bob"],
            1,
        ),
        phase("us-east", &["prod-us-east"], 1_000),
        phase("eu", &["prod-eu"], 1_000),
    ])
}

pub fn gate(name: &str, version: u64, enabled: bool) -> EntitySpec {
    let mut s = EntitySpec::new(EntityKind::Gate, EntityName::new(name).unwrap());
    s.version = version;
    s.enabled = enabled;
    phasegate_model::behaviour::normalize(s)
}

pub fn start(p: Pipeline, now_ms: u64) -> TriggerRecord {
    phasegate_model::rollout::start(StartParams {
        id: TriggerId::new("t1").unwrap(),
        snapshot: gate("g", 2, true),
        base: Some(gate("g", 1, false)),
        pipeline: p,
        actor: actor("carol"),
        comment: Some("ship it".into()),
        now_ms,
    })
}

pub fn req(rec: &TriggerRecord, who: &str) -> ActionRequest {
    ActionRequest {
        id: rec.trigger.id.clone(),
        phase_id: rec.trigger.current_phase_id.clone(),
        actor: actor(who),
        comment: None,
    }
}

/// `(segment, live, applied, healthy)` rows.
pub fn fleet(rows: &[(&str, u32, u32, u32)]) -> FleetView {
    rows.iter()
        .map(|&(s, live, applied, healthy)| {
            (
                s.to_owned(),
                SegmentFleet {
                    known: live,
                    live,
                    applied,
                    healthy,
                    settled: true,
                },
            )
        })
        .collect()
}

pub fn history(rec: &TriggerRecord) -> Vec<HistoryType> {
    rec.trigger.history.iter().map(|h| h.kind).collect()
}

/// Acts on `rec` as `who` on its current phase.
pub fn run(
    rec: &mut TriggerRecord,
    action: phasegate_proto::TriggerAction,
    who: &str,
    now_ms: u64,
) -> Result<(), ApiError> {
    let r = req(rec, who);
    phasegate_model::act(rec, action, &r, now_ms)
}
