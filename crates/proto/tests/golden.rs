//! Golden fixtures: the exact bytes of representative messages are checked
//! in, so a change that breaks the wire format fails here. Regenerate with
//! `PHASEGATE_BLESS=1 cargo test -p phasegate-proto --test golden` only when
//! a change is meant to alter the format (and is backward compatible).
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests

use std::collections::BTreeMap;
use std::path::PathBuf;

use phasegate_proto::*;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::json;

fn fixture_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn check<T: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug>(name: &str, value: &T) {
    for (enc, ext) in [(Encoding::MsgPack, "msgpack"), (Encoding::Json, "json")] {
        let bytes = encode(enc, value).unwrap();
        let path = fixture_dir().join(format!("{name}.{ext}"));
        if std::env::var_os("PHASEGATE_BLESS").is_some() {
            std::fs::write(&path, &bytes).unwrap();
        }
        let golden = std::fs::read(&path)
            .unwrap_or_else(|e| panic!("missing fixture {}: {e}", path.display()));
        assert!(
            bytes == golden,
            "{name}.{ext}: encoding changed; if intended, re-bless (see module docs)"
        );
        let back: T = decode(enc, &golden).unwrap();
        assert_eq!(
            &back, value,
            "{name}.{ext} does not decode to the same value"
        );
    }
}

fn spec() -> EntitySpec {
    serde_json::from_value(json!({
        "kind": "config",
        "name": "checkout.limits",
        "version": 3,
        "enabled": true,
        "salt": "limits",
        "rules": [
            {"id": "eu-staff", "pass_percentage": 25.5, "salt": "s1",
             "conditions": [
                {"field": "email", "op": "str_contains_any", "values": ["@corp.io"]},
                {"field": "segment", "op": "any", "values": ["prod-eu", 7]},
                {"field": "custom.plan", "op": "neq", "values": ["free"]},
                {"field": "app_version", "op": "version_gte", "values": ["2.10"]}
             ],
             "value": {"limit": 50, "tags": ["a", 1.5]}}
        ],
        "default_value": {"limit": 10},
        "pipeline": "standard",
        "description": "checkout limits"
    }))
    .unwrap()
}

fn pipeline() -> Pipeline {
    serde_json::from_value(json!({
        "name": "standard",
        "description": "dev to prod",
        "phases": [
            {"id": "dev", "segments": ["dev"], "wait_ms": 60000},
            {"id": "prod-us", "segments": ["prod-us-*"], "pass_percentage": 10,
             "conditions": [{"field": "country", "op": "any", "values": ["US"]}],
             "approval": {"required": true, "approvers": ["alice", "bob"], "min_approvals": 2},
             "health": {"on_unhealthy": "abort", "min_healthy_ratio": 0.9},
             "apply_timeout_ms": 120000}
        ]
    }))
    .unwrap()
}

fn trigger() -> Trigger {
    let mut segments = BTreeMap::new();
    segments.insert(
        "dev".to_owned(),
        SegmentProgress {
            version_active: true,
            agents_known: 3,
            agents_live: 2,
            agents_applied: 2,
            agents_healthy: 1,
        },
    );
    Trigger {
        id: TriggerId::new("t-01").unwrap(),
        entity: EntityRef {
            kind: EntityKind::Config,
            name: EntityName::new("checkout.limits").unwrap(),
        },
        pipeline: PipelineName::new("standard").unwrap(),
        pipeline_snapshot: pipeline(),
        from_version: 2,
        to_version: 3,
        status: TriggerStatus::InProgress,
        current_phase: 1,
        current_phase_id: Some(PhaseId::new("prod-us").unwrap()),
        phase_state: Some(PhaseState::Baking),
        paused: true,
        paused_reason: Some(PausedReason::Health),
        phase_ends_at_ms: None,
        remaining_wait_ms: Some(1234),
        approvals: vec![ApprovalRecord {
            actor: Actor::new("alice").unwrap(),
            at_ms: 1_700_000_000_000,
            comment: Some("lgtm".into()),
        }],
        segments,
        created_by: Actor::new("carol").unwrap(),
        created_at_ms: 1_700_000_000_000,
        updated_at_ms: 1_700_000_001_000,
        history: vec![HistoryEntry {
            kind: HistoryType::HealthDegraded,
            phase_id: Some(PhaseId::new("prod-us").unwrap()),
            actor: Actor::system(),
            at_ms: 1_700_000_001_000,
            comment: None,
        }],
        analysis: BTreeMap::new(),
    }
}

#[test]
fn entity_spec() {
    check("entity_spec", &spec());
}

#[test]
fn pipeline_put() {
    check(
        "pipeline_put",
        &PipelinePutRequest {
            pipeline: pipeline(),
            actor: Actor::new("alice").unwrap(),
        },
    );
}

#[test]
fn trigger_reply() {
    check(
        "trigger_reply",
        &Reply::ok(TriggerResult { trigger: trigger() }),
    );
}

#[test]
fn error_reply() {
    check(
        "error_reply",
        &Reply::<Empty>::err(ApiError::conflict("the trigger is already paused")),
    );
}

#[test]
fn action_request() {
    check(
        "action_request",
        &ActionRequest {
            id: TriggerId::new("t-01").unwrap(),
            phase_id: Some(PhaseId::new("dev").unwrap()),
            actor: Actor::new("alice").unwrap(),
            comment: None,
        },
    );
}

#[test]
fn agent_list() {
    check(
        "agent_list",
        &Reply::ok(AgentListResult {
            agents: vec![AgentInfo {
                agent_id: AgentId::new("dev-1").unwrap(),
                segment: Segment::new("dev").unwrap(),
                tier: Some("development".into()),
                live: true,
                healthy: false,
                last_seen_ms: 1_700_000_000_000,
                stale: false,
                applied_revision: 42,
                blocked: vec![BlockedEntity {
                    key: "gate.broken".into(),
                    revision: 41,
                    error: "unknown operator".into(),
                }],
            }],
            next_cursor: Some("c1".into()),
        }),
    );
}

#[test]
fn entity_state() {
    check(
        "entity_state",
        &EntityState {
            base: Some(spec()),
            rollout: Some(RolloutView {
                trigger_id: TriggerId::new("t-01").unwrap(),
                phase_id: PhaseId::new("dev").unwrap(),
                snapshot: spec(),
                rules: vec![PhaseRule {
                    conditions: vec![],
                    pass_percentage: 100.0,
                }],
            }),
        },
    );
}

#[test]
fn json_replies_match_the_contract() {
    let v: serde_json::Value =
        serde_json::from_slice(&encode(Encoding::Json, &Reply::ok(Empty {})).unwrap()).unwrap();
    assert_eq!(v, json!({"ok": true, "result": {}}));
    let v: serde_json::Value = serde_json::from_slice(
        &encode(
            Encoding::Json,
            &Reply::<Empty>::err(ApiError::not_found("x")),
        )
        .unwrap(),
    )
    .unwrap();
    assert_eq!(
        v,
        json!({"ok": false, "error": {"code": "not_found", "message": "x"}})
    );
    let h = serde_json::to_value(&trigger().history[0]).unwrap();
    assert_eq!(h["type"], "health_degraded");
}

#[test]
fn defaults_and_unknown_keys() {
    let p: Phase =
        serde_json::from_value(json!({"id": "a", "segments": ["dev"], "future": 1})).unwrap();
    assert_eq!(p.pass_percentage, 100.0);
    assert_eq!(p.apply_timeout_ms, 60_000);
    assert_eq!(p.approval, ApprovalPolicy::default());
    assert_eq!(p.health.on_unhealthy, OnUnhealthy::Pause);
    assert_eq!(p.health.min_healthy_ratio, 1.0);
    let s: EntitySpec = serde_json::from_value(json!({"name": "g"})).unwrap();
    assert!(s.enabled);
    assert_eq!(s.effective_salt(), "g");
    // Unknown enum values and wrong types are errors, not defaults.
    assert!(
        serde_json::from_value::<Phase>(
            json!({"id": "a", "segments": ["dev"], "health": {"on_unhealthy": "panic"}})
        )
        .is_err()
    );
    assert!(serde_json::from_value::<Rule>(json!({"id": "r", "pass_percentage": "50"})).is_err());
    assert!(
        serde_json::from_value::<Condition>(
            json!({"field": "email", "op": "like", "values": ["x"]})
        )
        .is_err()
    );
    assert!(
        serde_json::from_value::<Condition>(json!({"field": "mood", "op": "any", "values": ["x"]}))
            .is_err()
    );
    assert!(
        serde_json::from_value::<Condition>(
            json!({"field": "email", "op": "any", "values": [true]})
        )
        .is_err()
    );
    assert!(
        serde_json::from_value::<Condition>(
            json!({"field": "email", "op": "any", "values": [{"a": 1}]})
        )
        .is_err()
    );
    let c: Condition =
        serde_json::from_value(json!({"field": "custom.a.b", "op": "any", "values": [1]})).unwrap();
    assert_eq!(c.field, Field::Custom("a.b".into()));
}

#[test]
fn msgpack_numbers_decode_as_numbers() {
    // A client that sends 100 as an integer, or a float, both work.
    #[derive(Serialize)]
    struct R {
        id: &'static str,
        pass_percentage: u8,
    }
    let bytes = rmp_serde::to_vec_named(&R {
        id: "r",
        pass_percentage: 100,
    })
    .unwrap();
    let r: Rule = decode(Encoding::MsgPack, &bytes).unwrap();
    assert_eq!(r.pass_percentage, 100.0);
}
