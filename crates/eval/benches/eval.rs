//! Cost of the hot paths an agent serves: one gate check, one config get,
//! the rollout path, and bucketing alone for reference. Target: well under
//! 1 µs per gate check.

// A benchmark fixture that does not parse is a broken benchmark, and
// `criterion_group!` generates an undocumented `pub fn`.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use phasegate_eval::{AgentContext, CompiledEntity, CompiledState, bucket};
use phasegate_proto::{EntityKind, EntitySpec, EntityState, RolloutView, User};
use serde_json::json;

/// Four rules, nine conditions, one regex; typical users fall through to
/// the third or fourth rule, so most conditions run.
fn gate_spec() -> EntitySpec {
    serde_json::from_value(json!({
        "kind": "gate", "name": "new-checkout", "version": 7, "salt": "new-checkout",
        "rules": [
            {"id": "staff", "pass_percentage": 100, "conditions": [
                {"field": "email", "op": "str_matches", "values": ["^[a-z0-9._-]+@(corp\\.io|staff\\.corp\\.io)$"]},
                {"field": "segment", "op": "any", "values": ["dev", "staging"]},
            ]},
            {"id": "beta", "pass_percentage": 50, "conditions": [
                {"field": "custom.plan", "op": "any", "values": ["beta", "enterprise-beta"]},
                {"field": "app_version", "op": "version_gte", "values": ["4.2"]},
            ]},
            {"id": "eu-big", "pass_percentage": 25, "conditions": [
                {"field": "country", "op": "any", "values": ["DE", "FR", "NL", "IT", "ES"]},
                {"field": "custom.seats", "op": "gte", "values": [100]},
                {"field": "tier", "op": "none", "values": ["development"]},
            ]},
            {"id": "everyone", "pass_percentage": 10, "conditions": [
                {"field": "email", "op": "str_contains_any", "values": ["@example.com", "@gmail.com"]},
                {"field": "app_version", "op": "version_lt", "values": ["9"]},
            ]},
        ]
    }))
    .unwrap()
}

fn config_spec() -> EntitySpec {
    serde_json::from_value(json!({
        "kind": "config", "name": "checkout-limits", "version": 3,
        "default_value": {"max_items": 50, "currency": "EUR", "features": ["a", "b"]},
        "rules": [
            {"id": "enterprise", "pass_percentage": 100,
             "value": {"max_items": 500, "currency": "EUR", "features": ["a", "b", "c"]},
             "conditions": [{"field": "custom.plan", "op": "any", "values": ["enterprise"]}]},
            {"id": "us", "pass_percentage": 50,
             "value": {"max_items": 80, "currency": "USD", "features": ["a"]},
             "conditions": [{"field": "country", "op": "any", "values": ["US", "CA"]}]},
        ]
    }))
    .unwrap()
}

fn user() -> User {
    serde_json::from_value(json!({
        "user_id": "user-4815162342",
        "email": "Ann.Smith@Example.COM",
        "country": "US",
        "app_version": "5.12.3",
        "custom": {"plan": "pro", "seats": 42}
    }))
    .unwrap()
}

fn bench(c: &mut Criterion) {
    let agent = AgentContext::new("prod-us-west", Some("production".to_owned()));
    let user = user();

    let gate = CompiledEntity::new(&gate_spec()).unwrap();
    c.bench_function("gate_check_4_rules", |b| {
        b.iter(|| black_box(gate.evaluate(black_box(&user), black_box(&agent))).value)
    });

    let config = CompiledEntity::new(&config_spec()).unwrap();
    c.bench_function("config_get", |b| {
        b.iter(|| black_box(config.evaluate(black_box(&user), black_box(&agent))).value)
    });

    // Rollout: the unit is checked against the phase rules (one hash with
    // the snapshot's salt), then evaluated against the snapshot.
    let mut snapshot = gate_spec();
    snapshot.version = 8;
    let state = CompiledState::new(
        EntityKind::Gate,
        &EntityState {
            base: Some(gate_spec()),
            rollout: Some(RolloutView {
                trigger_id: "t-0001".to_owned().try_into().unwrap(),
                phase_id: "us-west".to_owned().try_into().unwrap(),
                snapshot,
                rules: serde_json::from_value(json!([
                    {"conditions": [{"field": "segment", "op": "any", "values": ["prod-us-west"]}], "pass_percentage": 100}
                ]))
                .unwrap(),
            }),
        },
    )
    .unwrap();
    assert_eq!(
        state.evaluate(&user, &agent).version,
        8,
        "the benchmark must take the snapshot path"
    );
    c.bench_function("rollout_gate_check", |b| {
        b.iter(|| black_box(state.evaluate(black_box(&user), black_box(&agent))).version)
    });

    c.bench_function("bucket", |b| {
        b.iter(|| bucket(black_box("new-checkout"), black_box("user-4815162342")))
    });
}

criterion_group!(benches, bench);

criterion_main!(benches);
