//! Puts, deletes and settling of entities (SPEC.md §4), and the desired
//! state each segment serves (SPEC.md §5).
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests

mod common;

use common::*;
use phasegate_model::{PutOutcome, delete, entity_state, new_record, observe, put, settle};
use phasegate_proto::*;
use serde_json::json;

struct World {
    entity: EntityRecord,
    active: Option<TriggerRecord>,
    pipelines: Vec<Pipeline>,
    next_id: u32,
}

impl World {
    fn new() -> Self {
        let mut p = seed_pipeline();
        p.name = PipelineName::new("seed").unwrap();
        Self {
            entity: new_record(EntityKind::Gate, EntityName::new("g").unwrap()),
            active: None,
            pipelines: vec![p],
            next_id: 0,
        }
    }

    fn put(&mut self, spec: serde_json::Value) -> Result<PutOutcome, ApiError> {
        self.put_with(spec, None)
    }

    fn put_with(
        &mut self,
        spec: serde_json::Value,
        expected: Option<u64>,
    ) -> Result<PutOutcome, ApiError> {
        self.next_id += 1;
        let pipelines = self.pipelines.clone();
        let out = put(
            &self.entity,
            self.active.as_ref(),
            EntityPutRequest {
                spec: serde_json::from_value(spec).unwrap(),
                actor: actor("carol"),
                comment: None,
                expected_version: expected,
            },
            &|n| pipelines.iter().find(|p| &p.name == n).cloned(),
            TriggerId::new(format!("t{}", self.next_id)).unwrap(),
            1_000,
        )?;
        if let Some(record) = out.record() {
            self.entity = record.clone();
        }
        match &out {
            PutOutcome::Triggered { created, .. } => self.active = Some(created.clone()),
            PutOutcome::KillSwitch {
                aborted: Some(a), ..
            } => self.active = Some(a.clone()),
            _ => {}
        }
        Ok(out)
    }

    fn act(&mut self, action: TriggerAction) {
        let rec = self.active.as_mut().unwrap();
        run(rec, action, "alice", 2_000).unwrap();
        settle(&mut self.entity, rec);
    }

    fn serves(&self, segment: &str) -> EntityState {
        entity_state(&self.entity, self.active.as_ref(), segment)
    }
}

#[test]
fn plain_entities_change_everywhere_at_once() {
    let mut w = World::new();
    let out = w
        .put(json!({"name": "g", "rules": [{"id": "r", "pass_percentage": 10}]}))
        .unwrap();
    assert!(matches!(out, PutOutcome::Immediate { .. }), "{out:?}");
    assert_eq!(out.spec().version, 1);
    assert_eq!(out.spec().salt.as_deref(), Some("g"), "defaults filled in");
    // The same again is a no-op, numbers compared as f64.
    let out = w
        .put(json!({"name": "g", "rules": [{"id": "r", "pass_percentage": 10.0}]}))
        .unwrap();
    assert!(matches!(out, PutOutcome::NoOp { .. }), "{out:?}");
    assert_eq!(out.spec().version, 1);
    assert_eq!(w.serves("anywhere").base.unwrap().version, 1);
    let out = w.put(json!({"name": "g", "description": "x"})).unwrap();
    assert!(matches!(out, PutOutcome::Immediate { .. }), "{out:?}");
    assert_eq!(out.spec().version, 2);
}

#[test]
fn expected_version_and_name_are_checked() {
    let mut w = World::new();
    w.put(json!({"name": "g"})).unwrap();
    let e = w
        .put_with(json!({"name": "g", "enabled": false}), Some(7))
        .unwrap_err();
    assert_eq!(e.code, ErrorCode::Conflict);
    w.put_with(json!({"name": "g", "enabled": false}), Some(1))
        .unwrap();
    let e = w.put(json!({"name": "other"})).unwrap_err();
    assert_eq!(e.code, ErrorCode::Invalid);
}

#[test]
fn validation_then_not_found_then_conflict() {
    let mut w = World::new();
    let e = w
        .put(json!({"name": "g", "pipeline": "nope", "rules": [{"id": "r", "pass_percentage": 101}]}))
        .unwrap_err();
    assert_eq!(e.code, ErrorCode::Invalid);
    assert!(
        e.message.contains("spec.rules[0].pass_percentage"),
        "{}",
        e.message
    );
    let e = w.put(json!({"name": "g", "pipeline": "nope"})).unwrap_err();
    assert_eq!(e.code, ErrorCode::NotFound);
    let e = w
        .put(json!({"name": "g", "rules": [{"id": "r", "pass_percentage": 1, "conditions": [{"field": "email", "op": "str_matches", "values": ["("]}]}]}))
        .unwrap_err();
    assert_eq!(e.code, ErrorCode::Invalid);
    assert!(
        e.message.contains("spec.rules[0].conditions[0]"),
        "{}",
        e.message
    );
}

#[test]
fn creation_through_a_pipeline_starts_from_absent() {
    let mut w = World::new();
    let out = w.put(json!({"name": "g", "pipeline": "seed"})).unwrap();
    let PutOutcome::Triggered { created, .. } = &out else {
        panic!("triggered expected: {out:?}");
    };
    let t = &created.trigger;
    assert_eq!((t.from_version, t.to_version), (0, 1));
    assert_eq!(t.current_phase_id.as_ref().unwrap().as_str(), "dev");
    // Before any phase applies, nobody serves anything.
    let mut rec = w.active.clone().unwrap();
    observe(&mut rec, &fleet(&[("dev", 1, 0, 1)]), 1_000);
    w.active = Some(rec);
    let dev = w.serves("dev");
    assert!(dev.base.is_none());
    let ro = dev.rollout.unwrap();
    assert_eq!(ro.snapshot.version, 1);
    assert_eq!(ro.phase_id.as_str(), "dev");
    assert!(w.serves("prod-eu").rollout.is_none());
    // A put while the trigger runs is a conflict, but a retry of the same put is not.
    let e = w
        .put(json!({"name": "g", "pipeline": "seed", "description": "d"}))
        .unwrap_err();
    assert_eq!(e.code, ErrorCode::Conflict);
    assert!(matches!(
        w.put(json!({"name": "g", "pipeline": "seed"})).unwrap(),
        PutOutcome::NoOp { .. }
    ));
    // Abort: the entity reads as absent again; numbering continues.
    w.act(TriggerAction::Abort);
    assert!(w.entity.latest.is_none());
    assert!(w.serves("dev").base.is_none() && w.serves("dev").rollout.is_none());
    let out = w.put(json!({"name": "g"})).unwrap();
    assert_eq!(out.spec().version, 2, "to_version + 1");
}

#[test]
fn detaching_is_no_way_around_the_pipeline() {
    let mut w = World::new();
    w.put(json!({"name": "g", "pipeline": "seed"})).unwrap();
    w.act(TriggerAction::Rollout);
    assert_eq!(w.entity.base.as_ref().unwrap().version, 1);
    assert_eq!(
        w.serves("prod-eu").base.unwrap().version,
        1,
        "completed: base everywhere"
    );
    let out = w
        .put(json!({"name": "g", "enabled": true, "rules": [{"id": "r", "pass_percentage": 5}]}))
        .unwrap();
    let PutOutcome::Triggered { created, .. } = out else {
        panic!("the latest version's pipeline governs: {out:?}");
    };
    assert_eq!(created.trigger.from_version, 1);
}

#[test]
fn kill_switch_is_immediate_and_aborts_the_trigger() {
    let mut w = World::new();
    w.put(json!({"name": "g", "pipeline": "seed"})).unwrap();
    w.act(TriggerAction::Rollout);
    let out = w
        .put(
            json!({"name": "g", "pipeline": "seed", "rules": [{"id": "r", "pass_percentage": 50}]}),
        )
        .unwrap();
    assert!(matches!(out, PutOutcome::Triggered { .. }), "{out:?}");
    assert_eq!(out.spec().version, 2);
    // Turning off compares against the latest (the trigger's to_version).
    let out = w
        .put(json!({"name": "g", "pipeline": "seed", "enabled": false, "rules": [{"id": "r", "pass_percentage": 50}]}))
        .unwrap();
    assert_eq!(out.spec().version, 3);
    let PutOutcome::KillSwitch {
        aborted: Some(aborted),
        ..
    } = out
    else {
        panic!("kill switch with its aborted trigger expected: {out:?}");
    };
    assert_eq!(aborted.trigger.status, TriggerStatus::Aborted);
    let last = aborted.trigger.history.last().unwrap();
    assert_eq!(last.actor.as_str(), "carol");
    assert_eq!(last.comment.as_deref(), Some("kill switch"));
    assert!(w.entity.active_trigger.is_none());
    let served = w.serves("dev");
    assert_eq!(served.base.unwrap().version, 3);
    assert!(served.rollout.is_none());
    // Turning back on goes through the pipeline.
    let out = w
        .put(
            json!({"name": "g", "pipeline": "seed", "rules": [{"id": "r", "pass_percentage": 50}]}),
        )
        .unwrap();
    assert!(matches!(out, PutOutcome::Triggered { .. }), "{out:?}");
}

#[test]
fn deletes_are_immediate_and_numbers_continue() {
    let mut w = World::new();
    assert_eq!(delete(&w.entity).unwrap_err().code, ErrorCode::NotFound);
    w.put(json!({"name": "g", "pipeline": "seed"})).unwrap();
    assert_eq!(delete(&w.entity).unwrap_err().code, ErrorCode::Conflict);
    w.act(TriggerAction::Rollout);
    w.entity = delete(&w.entity).unwrap();
    assert!(w.serves("dev").base.is_none());
    let out = w.put(json!({"name": "g"})).unwrap();
    assert_eq!(out.spec().version, 2);
}

#[test]
fn phase_rules_accumulate_per_segment() {
    let mut p = pipeline(vec![
        phase("one", &["prod-*"], 0),
        phase("two", &["prod-eu"], 0),
        phase("three", &["prod-us"], 0),
    ]);
    p.phases[0].pass_percentage = 10.0;
    p.phases[1].pass_percentage = 50.0;
    p.phases[1].conditions = vec![Condition {
        field: Field::Country,
        op: Op::Any,
        values: vec![ConditionValue::Str("DE".into())],
    }];
    let mut rec = start(p, 0);
    let f = fleet(&[("prod-eu", 1, 0, 1), ("prod-us", 1, 0, 1)]);
    observe(&mut rec, &f, 0);
    observe(
        &mut rec,
        &fleet(&[("prod-eu", 1, 1, 1), ("prod-us", 1, 1, 1)]),
        1,
    );
    assert_eq!(
        rec.trigger.current_phase_id.as_ref().unwrap().as_str(),
        "two"
    );
    observe(
        &mut rec,
        &fleet(&[("prod-eu", 1, 1, 1), ("prod-us", 1, 0, 1)]),
        2,
    );
    assert_eq!(
        rec.trigger.current_phase_id.as_ref().unwrap().as_str(),
        "three"
    );
    let eu = phasegate_model::desired::phase_rollout(&rec, "prod-eu").unwrap();
    assert_eq!(eu.phase_id.as_str(), "two");
    let pcts: Vec<f64> = eu.rules.iter().map(|r| r.pass_percentage).collect();
    assert_eq!(pcts, [10.0, 50.0]);
    assert_eq!(eu.rules[1].conditions.len(), 1);
    let us = phasegate_model::desired::phase_rollout(&rec, "prod-us").unwrap();
    assert_eq!(
        us.phase_id.as_str(),
        "three",
        "three is applying: published"
    );
    assert_eq!(us.rules.len(), 2);
}
