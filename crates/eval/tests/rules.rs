//! Table tests of the op table, compile-time rejections, entity evaluation
//! and rollouts, through the public API.

// A failed unwrap in a test is a failed test, which is what we want.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use phasegate_eval::{
    AgentContext, CompiledCondition, CompiledEntity, CompiledState, EvalError, Reason, Value,
    bucket, passes, unknown_answer,
};
use phasegate_proto::{Condition, EntityKind, EntitySpec, EntityState, RolloutView, User};
use serde_json::{Value as Json, json};

fn condition(field: &str, op: &str, values: Json) -> Condition {
    serde_json::from_value(json!({"field": field, "op": op, "values": values})).unwrap()
}

fn agent() -> AgentContext {
    AgentContext::new("prod-eu", Some("production".to_owned()))
}

/// Whether `op values` holds for `custom.x = x` (absent when `x` is `None`).
fn holds(x: Option<Json>, op: &str, values: Json) -> bool {
    let custom = match x {
        Some(x) => json!({"x": x}),
        None => json!({}),
    };
    let user = User {
        custom,
        ..User::default()
    };
    CompiledCondition::new(&condition("custom.x", op, values))
        .unwrap()
        .holds(&user, &agent())
}

/// Runs a table of `(field value, op, values, expected)`.
fn table(rows: &[(Option<Json>, &str, Json, bool)]) {
    for (x, op, values, want) in rows {
        assert_eq!(
            holds(x.clone(), op, values.clone()),
            *want,
            "custom.x = {x:?}, {op} {values}"
        );
    }
}

#[test]
fn missing_fields_fail_every_op_but_none_and_neq() {
    let ops: &[(&str, Json, bool)] = &[
        ("any", json!(["a"]), false),
        ("none", json!(["a"]), true),
        ("eq", json!(["a"]), false),
        ("neq", json!(["a"]), true),
        ("gt", json!([1]), false),
        ("gte", json!([1]), false),
        ("lt", json!([1]), false),
        ("lte", json!([1]), false),
        ("str_contains_any", json!([""]), false),
        ("str_starts_with_any", json!([""]), false),
        ("str_matches", json!([""]), false),
        ("version_gte", json!(["0"]), false),
        ("version_lt", json!(["99"]), false),
    ];
    // Absent, null, objects and arrays are all missing.
    for missing in [
        None,
        Some(json!(null)),
        Some(json!({"a": 1})),
        Some(json!([1, 2])),
        Some(json!([])),
    ] {
        for (op, values, want) in ops {
            assert_eq!(
                holds(missing.clone(), op, values.clone()),
                *want,
                "{missing:?} {op}"
            );
        }
    }
}

#[test]
fn any_and_none_compare_string_forms_ascii_case_insensitively() {
    table(&[
        (Some(json!("US")), "any", json!(["de", "us"]), true),
        (Some(json!("US")), "none", json!(["de", "us"]), false),
        (Some(json!("FR")), "none", json!(["de", "us"]), true),
        (Some(json!("FR")), "any", json!(["de", "us"]), false),
        (Some(json!(7.0)), "any", json!(["7"]), true),
        (Some(json!(7.5)), "any", json!([7.5]), true),
        (Some(json!(7)), "any", json!(["7.0"]), false),
        (Some(json!(true)), "any", json!(["TRUE"]), true),
        (Some(json!(false)), "any", json!(["true"]), false),
        (Some(json!("Ü")), "any", json!(["ü"]), false),
        (Some(json!("")), "any", json!([""]), true),
    ]);
}

#[test]
fn eq_and_neq_are_numeric_when_both_are_numbers_else_exact_strings() {
    table(&[
        (Some(json!("42")), "eq", json!([42]), true),
        (Some(json!("42.0")), "eq", json!([42]), true),
        (Some(json!(7)), "eq", json!(["7.0"]), true),
        (Some(json!(" 7")), "eq", json!([7]), false),
        (Some(json!("1e3")), "eq", json!([1000]), false),
        (Some(json!("1e3")), "eq", json!(["1e3"]), true),
        (Some(json!("abc")), "eq", json!(["ABC"]), false),
        (Some(json!("abc")), "eq", json!(["abc"]), true),
        (Some(json!(true)), "eq", json!(["true"]), true),
        (Some(json!(true)), "eq", json!(["True"]), false),
        (
            Some(json!(9_007_199_254_740_993_u64)),
            "eq",
            json!(["9007199254740992"]),
            true,
        ),
        // Only values[0] counts.
        (Some(json!(2)), "eq", json!([1, 2, 3]), false),
        (Some(json!(1)), "eq", json!([1, 2, 3]), true),
        (Some(json!("a")), "neq", json!(["a"]), false),
        (Some(json!("a")), "neq", json!(["b"]), true),
        (Some(json!(7)), "neq", json!(["7.0"]), false),
        (Some(json!(2)), "neq", json!([1, 2]), true),
    ]);
}

#[test]
fn order_ops_need_two_numbers() {
    table(&[
        (Some(json!(10)), "gt", json!([5]), true),
        (Some(json!("10")), "gt", json!([5]), true),
        (Some(json!(10)), "gt", json!(["5"]), true),
        (Some(json!(5)), "gt", json!([5]), false),
        (Some(json!(5)), "gte", json!([5]), true),
        (Some(json!(4.99)), "gte", json!([5]), false),
        (Some(json!(-1)), "lt", json!([0]), true),
        (Some(json!(0)), "lt", json!([0]), false),
        (Some(json!(0)), "lte", json!([0]), true),
        (Some(json!("-0.5")), "lt", json!([0]), true),
        (Some(json!("-.5")), "lt", json!([5]), false),
        (Some(json!("1e3")), "gt", json!([5]), false),
        (Some(json!("abc")), "gt", json!([5]), false),
        (Some(json!(10)), "gt", json!(["abc"]), false),
        (Some(json!(true)), "gte", json!([0]), false),
        (Some(json!(10)), "gt", json!([5, 100]), true),
    ]);
}

#[test]
fn contains_and_starts_with_fold_ascii_only() {
    table(&[
        (
            Some(json!("ann@Example.COM")),
            "str_contains_any",
            json!(["@corp.io", "example.com"]),
            true,
        ),
        (
            Some(json!("ann@corp.io")),
            "str_contains_any",
            json!(["example.com"]),
            false,
        ),
        (Some(json!(12345)), "str_contains_any", json!(["234"]), true),
        (
            Some(json!(18_446_744_073_709_551_616.0)),
            "str_starts_with_any",
            json!(["18446744073709552"]),
            true,
        ),
        (
            Some(json!("ÄRGER")),
            "str_contains_any",
            json!(["Är"]),
            true,
        ),
        (
            Some(json!("äRGER")),
            "str_contains_any",
            json!(["ÄR"]),
            false,
        ),
        (
            Some(json!("STRASSENBAHN")),
            "str_starts_with_any",
            json!(["straSSe"]),
            true,
        ),
        (
            Some(json!("Straße")),
            "str_starts_with_any",
            json!(["STRASSE"]),
            false,
        ),
        (
            Some(json!("corp")),
            "str_starts_with_any",
            json!(["corporate"]),
            false,
        ),
        (Some(json!("x")), "str_starts_with_any", json!([""]), true),
    ]);
}

#[test]
fn str_matches_is_an_unanchored_case_sensitive_search() {
    table(&[
        (Some(json!("abc")), "str_matches", json!(["^a"]), true),
        (Some(json!("ABC")), "str_matches", json!(["^a"]), false),
        (Some(json!("xabc")), "str_matches", json!(["b"]), true),
        (Some(json!("xabc")), "str_matches", json!(["^b"]), false),
        (Some(json!(7.5)), "str_matches", json!(["^7\\.5$"]), true),
        (Some(json!(7.0)), "str_matches", json!(["^7$"]), true),
        (Some(json!(true)), "str_matches", json!(["^t"]), true),
        (Some(json!("zoë")), "str_matches", json!(["^\\w+$"]), true),
        // Only values[0] counts.
        (Some(json!("b")), "str_matches", json!(["^a", "^b"]), false),
    ]);
}

#[test]
fn versions_compare_part_by_part() {
    table(&[
        (Some(json!("1.10")), "version_gte", json!(["1.9.9"]), true),
        (Some(json!("1.9.9")), "version_gte", json!(["1.10"]), false),
        (Some(json!("1.9.9")), "version_lt", json!(["1.10"]), true),
        (Some(json!("7")), "version_gte", json!(["7.0"]), true),
        (Some(json!("7")), "version_lt", json!(["7.0"]), false),
        (Some(json!("7.0.1")), "version_lt", json!([7]), false),
        (Some(json!(7)), "version_gte", json!(["7"]), true),
        (Some(json!(7.5)), "version_gte", json!(["7.4.9"]), true),
        (Some(json!("v7")), "version_gte", json!(["1"]), false),
        (Some(json!("v7")), "version_lt", json!(["1"]), false),
        (Some(json!("")), "version_lt", json!(["1"]), false),
        (Some(json!("1.2.")), "version_lt", json!(["9"]), false),
        (
            Some(json!("99999999999999999999")),
            "version_gte",
            json!(["1"]),
            false,
        ),
        (Some(json!(true)), "version_gte", json!(["0"]), false),
        (Some(json!("2")), "version_gte", json!(["1", "3"]), true),
    ]);
}

#[test]
fn agent_and_user_fields_are_read() {
    let user: User = serde_json::from_value(json!({
        "user_id": 42, "email": "Ann@Corp.io", "country": "us", "app_version": "3.1",
        "custom": {"a.b": "dotted", "a": {"b": "nested"}}
    }))
    .unwrap();
    let rows: &[(&str, &str, Json, bool)] = &[
        ("user_id", "eq", json!(["42"]), true),
        ("email", "str_contains_any", json!(["@corp.io"]), true),
        ("country", "any", json!(["US"]), true),
        ("app_version", "version_gte", json!(["3.0.9"]), true),
        ("custom.a.b", "eq", json!(["dotted"]), true),
        ("segment", "any", json!(["PROD-EU"]), true),
        ("segment", "eq", json!(["prod-us"]), false),
        ("tier", "eq", json!(["production"]), true),
    ];
    for (field, op, values, want) in rows {
        let c = CompiledCondition::new(&condition(field, op, values.clone())).unwrap();
        assert_eq!(c.holds(&user, &agent()), *want, "{field} {op} {values}");
    }
    // Without a tier, `tier` is missing.
    let no_tier = AgentContext::new("prod-eu", None);
    let tier_eq = CompiledCondition::new(&condition("tier", "eq", json!(["production"]))).unwrap();
    let tier_neq =
        CompiledCondition::new(&condition("tier", "neq", json!(["production"]))).unwrap();
    assert!(!tier_eq.holds(&user, &no_tier));
    assert!(tier_neq.holds(&user, &no_tier));
    // `custom` that is not an object makes every key missing.
    let odd = User {
        custom: json!("plan"),
        ..User::default()
    };
    let plan_none =
        CompiledCondition::new(&condition("custom.plan", "none", json!(["x"]))).unwrap();
    let plan_any =
        CompiledCondition::new(&condition("custom.plan", "any", json!(["plan"]))).unwrap();
    assert!(plan_none.holds(&odd, &agent()));
    assert!(!plan_any.holds(&odd, &agent()));
}

#[test]
fn write_time_rejections() {
    let bad = |field: &str, op: &str, values: Json| {
        CompiledCondition::new(&condition(field, op, values)).err()
    };
    assert!(matches!(
        bad("email", "any", json!([])),
        Some(EvalError::EmptyValues { op: "any", .. })
    ));
    assert!(matches!(
        bad("email", "str_matches", json!(["("])),
        Some(EvalError::BadRegex { .. })
    ));
    assert!(matches!(
        bad("email", "str_matches", json!(["(?=a)"])),
        Some(EvalError::BadRegex { .. })
    ));
    for v in [
        json!(["v1"]),
        json!(["-1"]),
        json!(["1..2"]),
        json!([1.5e21]),
        json!(["18446744073709551616"]),
    ] {
        assert!(
            matches!(
                bad("app_version", "version_gte", v.clone()),
                Some(EvalError::NotAVersion { .. })
            ),
            "{v}"
        );
    }
    assert!(bad("app_version", "version_lt", json!([7])).is_none());
    // Operands the contract does not reject: a non-numeric `gt` never holds.
    assert!(bad("custom.n", "gt", json!(["abc"])).is_none());
    let nan = Condition {
        values: vec![phasegate_proto::ConditionValue::Num(f64::NAN)],
        ..condition("custom.n", "eq", json!([1]))
    };
    assert!(matches!(
        CompiledCondition::new(&nan),
        Err(EvalError::NonFiniteOperand { .. })
    ));

    let with_pct = |p: f64| {
        let mut spec = gate(json!([]));
        spec.rules =
            vec![serde_json::from_value(json!({"id": "r1", "pass_percentage": 1})).unwrap()];
        spec.rules[0].pass_percentage = p;
        CompiledEntity::new(&spec)
    };
    for p in [0.0, 0.005, 50.0, 100.0] {
        assert!(with_pct(p).is_ok(), "{p}");
    }
    for p in [-0.01, 100.01, f64::NAN, f64::INFINITY] {
        let err = with_pct(p).unwrap_err();
        assert!(matches!(err.root(), EvalError::BadPercentage { .. }), "{p}");
        assert!(
            err.to_string().starts_with("rule r1: pass_percentage"),
            "{err}"
        );
    }

    let spec = gate(json!([{"id": "r1", "pass_percentage": 100, "conditions": [
        {"field": "email", "op": "any", "values": ["a"]},
        {"field": "email", "op": "str_matches", "values": ["["]},
    ]}]));
    let err = CompiledEntity::new(&spec).unwrap_err();
    assert!(
        err.to_string()
            .starts_with("rule r1: condition 1: condition on email: invalid regular expression"),
        "{err}"
    );
}

fn spec(kind: &str, rules: Json) -> EntitySpec {
    serde_json::from_value(json!({
        "kind": kind, "name": "e", "version": 3, "rules": rules,
        "default_value": {"d": 1}
    }))
    .unwrap()
}

fn gate(rules: Json) -> EntitySpec {
    spec("gate", rules)
}

fn user(id: &str) -> User {
    User {
        user_id: json!(id),
        email: json!("ann@corp.io"),
        ..User::default()
    }
}

#[test]
fn first_holding_rule_decides_pass_or_not() {
    let g = CompiledEntity::new(&gate(json!([
        {"id": "never", "pass_percentage": 100, "conditions": [{"field": "email", "op": "any", "values": ["x"]}]},
        {"id": "closed", "pass_percentage": 0},
        {"id": "open", "pass_percentage": 100},
    ])))
    .unwrap();
    let out = g.evaluate(&user("u1"), &agent());
    assert_eq!(out.value, Value::Gate(false));
    assert_eq!(out.reason, Reason::Rule("closed"));
    assert_eq!(out.reason.to_string(), "rule:closed");

    let none_hold = CompiledEntity::new(&gate(json!([
        {"id": "never", "pass_percentage": 100, "conditions": [{"field": "email", "op": "any", "values": ["x"]}]},
    ])))
    .unwrap();
    let out = none_hold.evaluate(&user("u1"), &agent());
    assert_eq!(
        (out.value, out.reason.to_string()),
        (Value::Gate(false), "default".to_owned())
    );
}

#[test]
fn rules_bucket_with_their_own_salt() {
    let g = CompiledEntity::new(&gate(json!([{"id": "half", "pass_percentage": 50}]))).unwrap();
    let salted = CompiledEntity::new(&gate(
        json!([{"id": "half", "pass_percentage": 50, "salt": "s"}]),
    ))
    .unwrap();
    let empty_salt = CompiledEntity::new(&gate(
        json!([{"id": "half", "pass_percentage": 50, "salt": ""}]),
    ))
    .unwrap();
    for i in 0..200 {
        let id = format!("u{i}");
        let u = user(&id);
        assert_eq!(
            g.evaluate(&u, &agent()).value,
            Value::Gate(passes(50.0, bucket("half", &id)))
        );
        assert_eq!(
            salted.evaluate(&u, &agent()).value,
            Value::Gate(passes(50.0, bucket("s", &id)))
        );
        assert_eq!(
            empty_salt.evaluate(&u, &agent()).value,
            Value::Gate(passes(50.0, bucket("half", &id)))
        );
    }
    // A missing user_id is the empty unit; a numeric one is its string form.
    let anon = User::default();
    assert_eq!(
        g.evaluate(&anon, &agent()).value,
        Value::Gate(passes(50.0, bucket("half", "")))
    );
    let numeric = User {
        user_id: json!(7.0),
        ..User::default()
    };
    assert_eq!(
        g.evaluate(&numeric, &agent()).value,
        Value::Gate(passes(50.0, bucket("half", "7")))
    );
}

#[test]
fn configs_return_rule_values_defaults_and_empty_maps() {
    let c = CompiledEntity::new(&spec(
        "config",
        json!([
            {"id": "valued", "pass_percentage": 100, "value": {"v": 1},
             "conditions": [{"field": "email", "op": "any", "values": ["ann@corp.io"]}]},
            {"id": "bare", "pass_percentage": 100, "conditions": [{"field": "email", "op": "any", "values": ["bob@corp.io"]}]},
            {"id": "closed", "pass_percentage": 0, "value": {"v": 2}},
        ]),
    ))
    .unwrap();
    let out = c.evaluate(&user("u1"), &agent());
    assert_eq!(out.value.to_json(), json!({"v": 1}));
    assert_eq!(out.reason, Reason::Rule("valued"));
    let bob = User {
        email: json!("bob@corp.io"),
        ..user("u1")
    };
    assert_eq!(c.evaluate(&bob, &agent()).value.to_json(), json!({}));
    let other = User::default();
    let out = c.evaluate(&other, &agent());
    assert_eq!(
        (out.value.to_json(), out.reason),
        (json!({"d": 1}), Reason::Rule("closed"))
    );
    assert_eq!(out.value.as_config().map(|m| m.len()), Some(1));
    assert_eq!(out.value.as_gate(), None);
}

#[test]
fn disabled_entities_serve_their_off_value() {
    let mut g = gate(json!([{"id": "open", "pass_percentage": 100}]));
    g.enabled = false;
    let g = CompiledEntity::new(&g).unwrap();
    let out = g.evaluate(&user("u1"), &agent());
    assert_eq!(
        (out.value, out.reason.to_string()),
        (Value::Gate(false), "disabled".to_owned())
    );
    let mut c = spec(
        "config",
        json!([{"id": "open", "pass_percentage": 100, "value": {"v": 1}}]),
    );
    c.enabled = false;
    let c = CompiledEntity::new(&c).unwrap();
    let out = c.evaluate(&user("u1"), &agent());
    assert_eq!(
        (out.value.to_json(), out.reason),
        (json!({"d": 1}), Reason::Disabled)
    );
}

#[test]
fn unknown_entities_answer_false_or_empty() {
    let g = unknown_answer(EntityKind::Gate);
    assert_eq!(
        (g.value, g.version, g.reason.to_string()),
        (Value::Gate(false), 0, "unknown".to_owned())
    );
    let c = unknown_answer(EntityKind::Config);
    assert_eq!(
        (c.value.to_json(), c.version, c.trigger_id),
        (json!({}), 0, None)
    );
}

fn rollout(snapshot: EntitySpec, rules: Json) -> RolloutView {
    serde_json::from_value(json!({
        "trigger_id": "t-1", "phase_id": "p2", "snapshot": snapshot, "rules": rules
    }))
    .unwrap()
}

#[test]
fn rollouts_send_matching_units_to_the_snapshot() {
    let mut new = gate(json!([{"id": "open", "pass_percentage": 100}]));
    new.version = 4;
    new.salt = Some("snap".to_owned());
    let old = gate(json!([]));
    let view = rollout(
        new.clone(),
        json!([
            {"conditions": [{"field": "segment", "op": "any", "values": ["dev"]}], "pass_percentage": 100},
            {"conditions": [], "pass_percentage": 30},
        ]),
    );
    let state = CompiledState::new(
        EntityKind::Gate,
        &EntityState {
            base: Some(old),
            rollout: Some(view),
        },
    )
    .unwrap();
    let mut got_new = 0;
    for i in 0..1000 {
        let id = format!("u{i}");
        let a = state.evaluate(&user(&id), &agent());
        // Not in `dev`, so only the 30 % rule applies, bucketed with the
        // snapshot's salt.
        if passes(30.0, bucket("snap", &id)) {
            got_new += 1;
            assert_eq!(
                (a.value, a.version, a.reason),
                (Value::Gate(true), 4, Reason::Rule("open"))
            );
            assert_eq!(a.trigger_id.map(|t| t.as_str()), Some("t-1"));
            assert_eq!(a.phase_id.map(|p| p.as_str()), Some("p2"));
        } else {
            assert_eq!(
                (a.value, a.version, a.reason),
                (Value::Gate(false), 3, Reason::Default)
            );
            assert_eq!((a.trigger_id, a.phase_id), (None, None));
        }
        // In `dev`, the first rule takes everyone.
        let dev = AgentContext::new("dev", None);
        assert_eq!(state.evaluate(&user(&id), &dev).version, 4);
    }
    assert!(
        (200..400).contains(&got_new),
        "{got_new} of 1000 units got the snapshot"
    );
}

#[test]
fn a_rollout_over_an_absent_base_answers_unknown_outside_it() {
    let new = spec(
        "config",
        json!([{"id": "open", "pass_percentage": 100, "value": {"v": 1}}]),
    );
    let state = CompiledState::new(
        EntityKind::Config,
        &EntityState {
            base: None,
            rollout: Some(rollout(
                new,
                json!([{"conditions": [], "pass_percentage": 0}]),
            )),
        },
    )
    .unwrap();
    assert_eq!(
        state.evaluate(&user("u1"), &agent()),
        unknown_answer(EntityKind::Config)
    );
}

#[test]
fn states_reject_specs_of_the_wrong_kind_and_bad_rollouts() {
    let err = CompiledState::new(
        EntityKind::Config,
        &EntityState {
            base: Some(gate(json!([]))),
            rollout: None,
        },
    )
    .unwrap_err();
    assert!(matches!(err, EvalError::KindMismatch { .. }), "{err}");
    assert_eq!(err.to_string(), "spec e is a gate, expected a config");

    let err = CompiledState::new(
        EntityKind::Gate,
        &EntityState {
            base: None,
            rollout: Some(rollout(
                gate(json!([])),
                json!([{"conditions": [], "pass_percentage": 101}]),
            )),
        },
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "rollout: phase rule 0: pass_percentage 101 is not a number in 0-100"
    );
}
