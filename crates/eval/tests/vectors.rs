//! Every golden vector of `tests/data/eval.json` (a copy of the shared
//! `vectors/eval.json`): buckets, thresholds, evaluations, phase rules and
//! unknown entities. Failures are collected and reported together, each
//! with its section and index.

// A failed unwrap in a test is a failed test, which is what we want.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use phasegate_eval::{
    AgentContext, Answer, CompiledEntity, CompiledRollout, CompiledState, Value, bucket, passes,
    unknown_answer,
};
use phasegate_proto::{
    EntityKind, EntityName, EntitySpec, EntityState, PhaseId, PhaseRule, RolloutView, TriggerId,
    User,
};
use serde_json::Value as Json;

const VECTORS: &str = include_str!("data/eval.json");

/// How many vectors the file holds; checked so the test cannot pass on an
/// empty or truncated file.
const EXPECTED: usize = 50 + 22 + 641 + 30 + 2;

fn field<'a>(v: &'a Json, key: &str) -> &'a Json {
    v.get(key)
        .unwrap_or_else(|| panic!("vector lacks {key:?}: {v}"))
}

fn str_field<'a>(v: &'a Json, key: &str) -> &'a str {
    field(v, key)
        .as_str()
        .unwrap_or_else(|| panic!("{key:?} is not a string: {v}"))
}

fn section<'a>(all: &'a Json, name: &str) -> &'a [Json] {
    field(all, name)
        .as_array()
        .unwrap_or_else(|| panic!("{name:?} is not a list"))
}

fn agent(v: &Json) -> AgentContext {
    let a = field(v, "agent");
    AgentContext::new(
        str_field(a, "segment"),
        a.get("tier").and_then(Json::as_str).map(str::to_owned),
    )
}

fn user(v: &Json) -> User {
    serde_json::from_value(field(v, "user").clone()).unwrap()
}

/// Checks `answer` against a vector's `value` and `reason`.
fn same_answer(answer: (&Value<'_>, String), v: &Json) -> Option<String> {
    let (value, reason) = answer;
    let (want_value, want_reason) = (field(v, "value"), str_field(v, "reason"));
    let got_value = value.to_json();
    (got_value != *want_value || reason != want_reason).then(|| {
        format!(
            "want value {want_value} reason {want_reason}, got value {got_value} reason {reason}"
        )
    })
}

#[test]
fn every_vector_passes() {
    let all: Json = serde_json::from_str(VECTORS).unwrap();
    let mut checked = 0;
    let mut failures = Vec::new();
    let mut fail =
        |section: &str, i: usize, what: String| failures.push(format!("{section}[{i}]: {what}"));

    for (i, v) in section(&all, "buckets").iter().enumerate() {
        let want = field(v, "bucket").as_u64().unwrap();
        let got = bucket(str_field(v, "salt"), str_field(v, "unit"));
        if u64::from(got) != want {
            fail("buckets", i, format!("want bucket {want}, got {got}"));
        }
        checked += 1;
    }

    for (i, v) in section(&all, "thresholds").iter().enumerate() {
        let want_bucket = field(v, "bucket").as_u64().unwrap();
        let p = field(v, "pass_percentage").as_f64().unwrap();
        let want = field(v, "passes").as_bool().unwrap();
        let b = bucket(str_field(v, "salt"), str_field(v, "unit"));
        if u64::from(b) != want_bucket {
            fail(
                "thresholds",
                i,
                format!("want bucket {want_bucket}, got {b}"),
            );
        }
        if passes(p, b) != want {
            fail("thresholds", i, format!("passes({p}, {b}): want {want}"));
        }
        checked += 1;
    }

    for (i, v) in section(&all, "evaluations").iter().enumerate() {
        let spec: EntitySpec = serde_json::from_value(field(v, "spec").clone()).unwrap();
        let (user, agent) = (user(v), agent(v));
        let entity = match CompiledEntity::new(&spec) {
            Ok(entity) => entity,
            Err(e) => {
                fail("evaluations", i, format!("does not compile: {e}"));
                continue;
            }
        };
        let out = entity.evaluate(&user, &agent);
        if let Some(diff) = same_answer((&out.value, out.reason.to_string()), v) {
            fail("evaluations", i, diff);
        }
        // The same spec served as a base, with no rollout, answers the same.
        let state = CompiledState::new(
            spec.kind,
            &EntityState {
                base: Some(spec.clone()),
                rollout: None,
            },
        )
        .unwrap();
        let answer = state.evaluate(&user, &agent);
        if let Some(diff) = same_answer((&answer.value, answer.reason.to_string()), v) {
            fail("evaluations", i, format!("as base: {diff}"));
        }
        if answer.version != spec.version || answer.trigger_id.is_some() {
            fail(
                "evaluations",
                i,
                format!(
                    "as base: version {} trigger {:?}",
                    answer.version, answer.trigger_id
                ),
            );
        }
        checked += 1;
    }

    for (i, v) in section(&all, "phase_rules").iter().enumerate() {
        let rules: Vec<PhaseRule> = serde_json::from_value(field(v, "rules").clone()).unwrap();
        let want = field(v, "snapshot_applies").as_bool().unwrap();
        let (user, agent) = (user(v), agent(v));
        // A snapshot that every unit it applies to sees as `true`, over a
        // base that says `false`: which one answered shows in the answer.
        let mut snapshot = EntitySpec::new(EntityKind::Gate, EntityName::new("snapshot").unwrap());
        snapshot.salt = Some(str_field(v, "snapshot_salt").to_owned());
        snapshot.version = 2;
        let mut base = EntitySpec::new(EntityKind::Gate, EntityName::new("snapshot").unwrap());
        base.version = 1;
        base.enabled = false;
        let view = RolloutView {
            trigger_id: TriggerId::new("t-1").unwrap(),
            phase_id: PhaseId::new("p1").unwrap(),
            snapshot,
            rules,
        };
        let rollout = CompiledRollout::new(&view).unwrap();
        if rollout.applies(&user, &agent) != want {
            fail("phase_rules", i, format!("want snapshot_applies {want}"));
        }
        let state = CompiledState::new(
            EntityKind::Gate,
            &EntityState {
                base: Some(base),
                rollout: Some(view.clone()),
            },
        )
        .unwrap();
        let answer = state.evaluate(&user, &agent);
        let want_answer = if want {
            Answer {
                value: Value::Gate(false),
                version: 2,
                reason: phasegate_eval::Reason::Default,
                trigger_id: Some(&view.trigger_id),
                phase_id: Some(&view.phase_id),
            }
        } else {
            Answer {
                value: Value::Gate(false),
                version: 1,
                reason: phasegate_eval::Reason::Disabled,
                trigger_id: None,
                phase_id: None,
            }
        };
        if answer != want_answer {
            fail(
                "phase_rules",
                i,
                format!("want {want_answer:?}, got {answer:?}"),
            );
        }
        checked += 1;
    }

    for (i, v) in section(&all, "unknown_entity").iter().enumerate() {
        let kind: EntityKind = serde_json::from_value(field(v, "kind").clone()).unwrap();
        let answer = unknown_answer(kind);
        if let Some(diff) = same_answer((&answer.value, answer.reason.to_string()), v) {
            fail("unknown_entity", i, diff);
        }
        if answer.version != 0 || answer.trigger_id.is_some() || answer.phase_id.is_some() {
            fail("unknown_entity", i, format!("{answer:?}"));
        }
        // A state with nothing to serve answers the same.
        let empty = CompiledState::new(kind, &EntityState::default()).unwrap();
        if empty.evaluate(&User::default(), &AgentContext::default()) != answer {
            fail(
                "unknown_entity",
                i,
                "an empty state answers differently".to_owned(),
            );
        }
        checked += 1;
    }

    assert!(
        failures.is_empty(),
        "{} of {checked} vectors failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert_eq!(
        checked, EXPECTED,
        "vector count changed: update EXPECTED after reviewing the new vectors"
    );
}
