//! Properties that must hold for any input: bucket range, percentage
//! bounds, number formatting round trips, version order, and evaluation of
//! arbitrary user JSON without panics and with complementary ops agreeing.

// A failed unwrap in a test is a failed test, which is what we want.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use phasegate_eval::{
    AgentContext, CompiledCondition, CompiledEntity, CompiledRollout, EvalError, Value, bucket,
    compare_versions, format_number, parse_number, passes,
};
use phasegate_proto::{Condition, ConditionValue, EntitySpec, Field, Op, RolloutView, User};
use proptest::prelude::*;
use serde_json::{Value as Json, json};

/// Strings that hit the interesting shapes: numbers, versions, mixed case,
/// non-ASCII letters, empty.
fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        "-?[0-9]{1,4}(\\.[0-9]{1,3})?",
        "[0-9]{1,3}(\\.[0-9]{1,3}){0,3}",
        "[a-zA-Z0-9 .@_\\-ÄäßẞÜë]{0,12}",
        any::<String>(),
    ]
}

/// Any JSON value, nested a little.
fn json_value() -> impl Strategy<Value = Json> {
    let leaf = prop_oneof![
        Just(Json::Null),
        any::<bool>().prop_map(Json::Bool),
        any::<i64>().prop_map(Json::from),
        any::<u64>().prop_map(Json::from),
        any::<f64>()
            .prop_filter("JSON numbers are finite", |x| x.is_finite())
            .prop_map(Json::from),
        text().prop_map(Json::String),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Json::Array),
            prop::collection::btree_map(
                prop_oneof![Just("x".to_owned()), Just("a.b".to_owned()), "[a-z]{1,2}"],
                inner,
                0..4
            )
            .prop_map(|m| Json::Object(m.into_iter().collect())),
        ]
    })
}

fn user() -> impl Strategy<Value = User> {
    (
        json_value(),
        json_value(),
        json_value(),
        json_value(),
        json_value(),
    )
        .prop_map(|(user_id, email, country, app_version, custom)| User {
            user_id,
            email,
            country,
            app_version,
            custom,
        })
}

fn operand() -> impl Strategy<Value = ConditionValue> {
    prop_oneof![
        text().prop_map(ConditionValue::Str),
        any::<i32>().prop_map(|n| ConditionValue::Num(f64::from(n))),
        any::<f64>()
            .prop_filter("finite", |x| x.is_finite())
            .prop_map(ConditionValue::Num),
    ]
}

const FIELDS: [&str; 8] = [
    "user_id",
    "email",
    "country",
    "app_version",
    "custom.x",
    "custom.a.b",
    "segment",
    "tier",
];

const OPS: [Op; 13] = [
    Op::Any,
    Op::None,
    Op::Eq,
    Op::Neq,
    Op::Gt,
    Op::Gte,
    Op::Lt,
    Op::Lte,
    Op::StrContainsAny,
    Op::StrStartsWithAny,
    Op::StrMatches,
    Op::VersionGte,
    Op::VersionLt,
];

fn agent() -> impl Strategy<Value = AgentContext> {
    ("[a-z]{1,8}", proptest::option::of("[a-zA-Z]{0,8}")).prop_map(|(s, t)| AgentContext::new(s, t))
}

fn cond(field: &str, op: Op, values: Vec<ConditionValue>) -> Condition {
    Condition {
        field: Field::parse(field).unwrap(),
        op,
        values,
    }
}

proptest! {
    #[test]
    fn buckets_are_below_10000(salt in any::<String>(), unit in any::<String>()) {
        prop_assert!(bucket(&salt, &unit) < 10_000);
    }

    #[test]
    fn percentages_0_and_100_are_none_and_all(b in 0u32..10_000, p in 0.0f64..=100.0, q in 0.0f64..=100.0) {
        prop_assert!(passes(100.0, b));
        prop_assert!(!passes(0.0, b));
        // Widening a percentage never drops a unit.
        let (lo, hi) = if p <= q { (p, q) } else { (q, p) };
        prop_assert!(!passes(lo, b) || passes(hi, b));
    }

    #[test]
    fn numbers_format_positionally_and_read_back(x in any::<f64>().prop_filter("finite", |x| x.is_finite())) {
        let s = format_number(x);
        prop_assert!(!s.contains(['e', 'E']), "{s}");
        let back: f64 = s.parse().unwrap();
        prop_assert_eq!(back, x);
        // The string form of a number is itself a number in the contract's sense.
        prop_assert_eq!(parse_number(&s), Some(x));
    }

    #[test]
    fn versions_order_consistently(
        a in prop::collection::vec(0u64..20, 1..5),
        b in prop::collection::vec(0u64..20, 1..5),
    ) {
        let join = |v: &[u64]| v.iter().map(u64::to_string).collect::<Vec<_>>().join(".");
        let (sa, sb) = (join(&a), join(&b));
        let ab = compare_versions(&sa, &sb).unwrap();
        prop_assert_eq!(Some(ab.reverse()), compare_versions(&sb, &sa));
        // Missing parts are 0: padding with zeros changes nothing.
        let trim = |v: &[u64]| {
            let mut v = v.to_vec();
            while v.last() == Some(&0) && v.len() > 1 {
                v.pop();
            }
            v
        };
        let (ta, tb) = (trim(&a), trim(&b));
        let n = ta.len().max(tb.len());
        let pad = |mut v: Vec<u64>| { v.resize(n, 0); v };
        prop_assert_eq!(ab, pad(ta).cmp(&pad(tb)));
    }

    #[test]
    fn compiling_arbitrary_conditions_never_panics(
        field in prop::sample::select(FIELDS.to_vec()),
        op in prop::sample::select(OPS.to_vec()),
        values in prop::collection::vec(operand(), 0..3),
    ) {
        let c = cond(field, op, values.clone());
        match CompiledCondition::new(&c) {
            Ok(_) => prop_assert!(!values.is_empty()),
            Err(EvalError::EmptyValues { .. }) => prop_assert!(values.is_empty()),
            Err(EvalError::BadRegex { .. }) => prop_assert_eq!(op, Op::StrMatches),
            Err(EvalError::NotAVersion { .. }) => prop_assert!(matches!(op, Op::VersionGte | Op::VersionLt)),
            Err(e) => prop_assert!(false, "unexpected error {e}"),
        }
    }

    #[test]
    fn complementary_ops_disagree_on_any_user(
        user in user(),
        agent in agent(),
        field in prop::sample::select(FIELDS.to_vec()),
        values in prop::collection::vec(operand(), 1..3),
    ) {
        // `None` when the operands do not compile for `op` (a bad regex or
        // version); every other op always compiles with non-empty values.
        let holds = |op: Op| CompiledCondition::new(&cond(field, op, values.clone())).ok().map(|c| c.holds(&user, &agent));
        prop_assert_ne!(holds(Op::Any).unwrap(), holds(Op::None).unwrap());
        prop_assert_ne!(holds(Op::Eq).unwrap(), holds(Op::Neq).unwrap());
        // Order ops never hold without two numbers, so only one direction.
        prop_assert!(!(holds(Op::Gt).unwrap() && holds(Op::Lte).unwrap()));
        prop_assert!(!(holds(Op::Lt).unwrap() && holds(Op::Gte).unwrap()));
        if let (Some(gte), Some(lt)) = (holds(Op::VersionGte), holds(Op::VersionLt)) {
            prop_assert!(!(gte && lt));
        }
        for op in OPS {
            // Every op, on every shape of value, answers without panicking.
            let _ = holds(op);
        }
    }

    #[test]
    fn evaluating_any_user_never_panics(user in user(), agent in agent()) {
        let spec: EntitySpec = serde_json::from_value(json!({
            "kind": "config", "name": "e", "version": 1, "default_value": {"d": true},
            "rules": [
                {"id": "r1", "pass_percentage": 50, "value": {"r": 1}, "conditions": [
                    {"field": "email", "op": "str_matches", "values": ["^[a-c].*@corp\\.io$"]},
                    {"field": "custom.x", "op": "gte", "values": [3]},
                ]},
                {"id": "r2", "pass_percentage": 12.5, "conditions": [
                    {"field": "app_version", "op": "version_lt", "values": ["2.10"]},
                    {"field": "country", "op": "any", "values": ["us", "DE"]},
                ]},
                {"id": "r3", "pass_percentage": 100, "value": {"r": 3}, "conditions": [
                    {"field": "custom.a.b", "op": "neq", "values": ["x"]},
                    {"field": "tier", "op": "none", "values": ["production"]},
                ]},
            ]
        })).unwrap();
        let entity = CompiledEntity::new(&spec).unwrap();
        let out = entity.evaluate(&user, &agent);
        prop_assert!(matches!(out.value, Value::Config(_)));

        let view = RolloutView {
            trigger_id: "t-1".to_owned().try_into().unwrap(),
            phase_id: "p1".to_owned().try_into().unwrap(),
            snapshot: spec,
            rules: vec![
                phasegate_proto::PhaseRule { conditions: vec![], pass_percentage: 100.0 },
            ],
        };
        prop_assert!(CompiledRollout::new(&view).unwrap().applies(&user, &agent));
    }
}
