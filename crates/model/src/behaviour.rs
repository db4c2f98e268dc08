//! Normalisation of specs and comparison of their behaviour (SPEC.md §4):
//! defaults filled in, numbers compared as f64.

use phasegate_proto::{EntityKind, EntitySpec, Rule, ValueMap};
use serde_json::Value;

/// Fills in defaults so that equal behaviour means equal fields: the entity
/// and rule salts, a config rule's missing `value` (`{}`), and drops what a
/// gate does not use (rule values, `default_value`).
pub fn normalize(mut spec: EntitySpec) -> EntitySpec {
    let salt = spec.effective_salt().to_owned();
    spec.salt = Some(salt);
    for rule in &mut spec.rules {
        let salt = rule.effective_salt().to_owned();
        rule.salt = Some(salt);
        match spec.kind {
            EntityKind::Gate => rule.value = None,
            EntityKind::Config => {
                if rule.value.is_none() {
                    rule.value = Some(ValueMap::new());
                }
            }
        }
    }
    if spec.kind == EntityKind::Gate {
        spec.default_value = ValueMap::new();
    }
    spec
}

/// True when two normalised specs behave the same: same `enabled`, `salt`,
/// `rules` and `default_value`, numbers compared as f64.
pub fn same_behaviour(a: &EntitySpec, b: &EntitySpec) -> bool {
    a.enabled == b.enabled
        && a.salt == b.salt
        && maps_equal(&a.default_value, &b.default_value)
        && a.rules.len() == b.rules.len()
        && a.rules.iter().zip(&b.rules).all(|(x, y)| rules_equal(x, y))
}

/// True when `b` differs from `a` only by `enabled` going from true to false:
/// the kill switch.
pub fn is_kill_switch(a: &EntitySpec, b: &EntitySpec) -> bool {
    a.enabled && !b.enabled && {
        let mut b_on = b.clone();
        b_on.enabled = true;
        same_behaviour(a, &b_on)
    }
}

fn rules_equal(a: &Rule, b: &Rule) -> bool {
    a.id == b.id
        && a.conditions == b.conditions
        && a.pass_percentage == b.pass_percentage
        && a.salt == b.salt
        && match (&a.value, &b.value) {
            (Some(x), Some(y)) => maps_equal(x, y),
            (None, None) => true,
            _ => false,
        }
}

fn maps_equal(a: &ValueMap, b: &ValueMap) -> bool {
    a.len() == b.len()
        && a.iter()
            .all(|(k, v)| b.get(k).is_some_and(|w| values_equal(v, w)))
}

/// JSON equality with every number compared as f64 (`1` = `1.0`).
pub fn values_equal(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(v, w)| values_equal(v, w))
        }
        (Value::Object(x), Value::Object(y)) => maps_equal(x, y),
        _ => a == b,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // tests

    use super::*;
    use phasegate_proto::EntityName;
    use serde_json::json;

    fn spec(v: Value) -> EntitySpec {
        normalize(serde_json::from_value(v).unwrap())
    }

    #[test]
    fn defaults_are_filled_before_comparing() {
        let a = spec(
            json!({"kind": "gate", "name": "g", "rules": [{"id": "r", "pass_percentage": 50}]}),
        );
        let b = spec(
            json!({"kind": "gate", "name": "g", "salt": "g", "rules": [{"id": "r", "pass_percentage": 50.0, "salt": ""}]}),
        );
        assert!(same_behaviour(&a, &b));
        assert_eq!(a.salt.as_deref(), Some("g"));
        assert_eq!(a.rules[0].salt.as_deref(), Some("r"));
    }

    #[test]
    fn numbers_compare_as_f64() {
        let a = spec(json!({"kind": "config", "name": "c", "default_value": {"n": 1, "l": [2]}}));
        let b =
            spec(json!({"kind": "config", "name": "c", "default_value": {"n": 1.0, "l": [2.0]}}));
        let c = spec(json!({"kind": "config", "name": "c", "default_value": {"n": 2}}));
        assert!(same_behaviour(&a, &b));
        assert!(!same_behaviour(&a, &c));
    }

    #[test]
    fn description_and_pipeline_are_not_behaviour() {
        let a = spec(json!({"name": "g", "description": "x"}));
        let b = spec(json!({"name": "g", "description": "y", "pipeline": "p"}));
        assert!(same_behaviour(&a, &b));
    }

    #[test]
    fn kill_switch_is_only_enabled_going_off() {
        let on = normalize(EntitySpec::new(
            EntityKind::Gate,
            EntityName::new("g").unwrap(),
        ));
        let mut off = on.clone();
        off.enabled = false;
        assert!(is_kill_switch(&on, &off));
        assert!(!is_kill_switch(&off, &on));
        let mut off_and_salt = off.clone();
        off_and_salt.salt = Some("other".into());
        assert!(!is_kill_switch(&on, &off_and_salt));
    }

    #[test]
    fn config_rule_without_value_is_empty_map() {
        let a = spec(
            json!({"kind": "config", "name": "c", "rules": [{"id": "r", "pass_percentage": 1}]}),
        );
        let b = spec(
            json!({"kind": "config", "name": "c", "rules": [{"id": "r", "pass_percentage": 1, "value": {}}]}),
        );
        assert!(same_behaviour(&a, &b));
    }
}
