//! Gates and configs (SPEC.md §2, "Evaluation"): a spec compiled once,
//! evaluated for many users.

use std::fmt;
use std::sync::LazyLock;

use phasegate_proto::{EntityKind, EntityName, EntitySpec, Rule, RuleId, User, ValueMap};

use crate::bucket::{Salt, passes};
use crate::condition::CompiledCondition;
use crate::value::unit;
use crate::{AgentContext, EvalError};

/// The `{}` an unknown config answers; static so that answering costs nothing.
static EMPTY_MAP: LazyLock<ValueMap> = LazyLock::new(ValueMap::new);

/// What an entity evaluates to, borrowed from the compiled spec so that an
/// evaluation never clones a config.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Value<'a> {
    /// A gate's value.
    Gate(bool),
    /// A config's value.
    Config(&'a ValueMap),
}

impl Value<'_> {
    /// The gate's value; `None` for a config.
    pub fn as_gate(&self) -> Option<bool> {
        match self {
            Self::Gate(b) => Some(*b),
            Self::Config(_) => None,
        }
    }

    /// The config's value; `None` for a gate.
    pub fn as_config(&self) -> Option<&ValueMap> {
        match self {
            Self::Gate(_) => None,
            Self::Config(m) => Some(m),
        }
    }

    /// The value as JSON, as the agent's HTTP API returns it.
    pub fn to_json(&self) -> serde_json::Value {
        match self {
            Self::Gate(b) => serde_json::Value::Bool(*b),
            Self::Config(m) => serde_json::Value::Object((*m).clone()),
        }
    }
}

/// Why an entity evaluated to its value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason<'a> {
    /// The entity is disabled: `disabled`.
    Disabled,
    /// The rule with this id decided, pass or not: `rule:<id>`.
    Rule(&'a str),
    /// No rule's conditions held: `default`.
    Default,
    /// The entity does not exist here: `unknown`.
    Unknown,
}

impl fmt::Display for Reason<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Disabled => f.write_str("disabled"),
            Self::Rule(id) => write!(f, "rule:{id}"),
            Self::Default => f.write_str("default"),
            Self::Unknown => f.write_str("unknown"),
        }
    }
}

/// The result of evaluating one entity for one user.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Outcome<'a> {
    /// What the entity evaluated to.
    pub value: Value<'a>,
    /// Why.
    pub reason: Reason<'a>,
}

impl Outcome<'static> {
    /// The answer for an entity that does not exist: gate `false` / config
    /// `{}`, reason `unknown`.
    pub fn unknown(kind: EntityKind) -> Self {
        let value = match kind {
            EntityKind::Gate => Value::Gate(false),
            EntityKind::Config => Value::Config(&EMPTY_MAP),
        };
        Outcome {
            value,
            reason: Reason::Unknown,
        }
    }
}

/// One rule, ready to evaluate.
#[derive(Debug, Clone)]
struct CompiledRule {
    id: RuleId,
    conditions: Vec<CompiledCondition>,
    pass_percentage: f64,
    salt: Salt,
    /// The config value when the rule passes; `{}` when the rule has none.
    value: ValueMap,
}

/// Checks a pass percentage: a finite number in 0–100.
pub(crate) fn check_percentage(p: f64) -> Result<f64, EvalError> {
    if p.is_finite() && (0.0..=100.0).contains(&p) {
        Ok(p)
    } else {
        Err(EvalError::BadPercentage { value: p })
    }
}

/// Compiles a list of conditions, saying which one is wrong.
///
/// The result is ordered cheapest first: conditions are pure and all must
/// hold, so order cannot change the result, but a cheap failing condition
/// then spares an expensive regex.
pub(crate) fn compile_conditions(
    conditions: &[phasegate_proto::Condition],
) -> Result<Vec<CompiledCondition>, EvalError> {
    let mut compiled = conditions
        .iter()
        .enumerate()
        .map(|(i, c)| CompiledCondition::new(c).map_err(|e| e.at(format!("condition {i}"))))
        .collect::<Result<Vec<_>, _>>()?;
    compiled.sort_by_key(CompiledCondition::cost);
    Ok(compiled)
}

impl CompiledRule {
    fn new(rule: &Rule) -> Result<Self, EvalError> {
        let conditions = compile_conditions(&rule.conditions)?;
        let pass_percentage = check_percentage(rule.pass_percentage)?;
        Ok(Self {
            id: rule.id.clone(),
            conditions,
            pass_percentage,
            salt: Salt::new(rule.effective_salt()),
            value: rule.value.clone().unwrap_or_default(),
        })
    }
}

/// A gate or config spec checked and prepared for evaluation.
#[derive(Debug, Clone)]
pub struct CompiledEntity {
    kind: EntityKind,
    name: EntityName,
    version: u64,
    enabled: bool,
    rules: Vec<CompiledRule>,
    default_value: ValueMap,
}

impl CompiledEntity {
    /// Checks `spec` (every condition, every rule's `pass_percentage`) and
    /// prepares it. Errors name the rule and condition at fault.
    pub fn new(spec: &EntitySpec) -> Result<Self, EvalError> {
        let rules = spec
            .rules
            .iter()
            .map(|r| CompiledRule::new(r).map_err(|e| e.at(format!("rule {}", r.id))))
            .collect::<Result<_, _>>()?;
        Ok(Self {
            kind: spec.kind,
            name: spec.name.clone(),
            version: spec.version,
            enabled: spec.enabled,
            rules,
            default_value: spec.default_value.clone(),
        })
    }

    /// Gate or config.
    pub fn kind(&self) -> EntityKind {
        self.kind
    }

    /// The entity's name.
    pub fn name(&self) -> &EntityName {
        &self.name
    }

    /// The version of the spec this was compiled from.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// The pass percentage of the rule `id`, if the spec has it: what
    /// tells a targeting match (100 %) from a split (below) when that
    /// rule decided (OpenFeature reasons, SPEC.md §5).
    pub fn rule_percentage(&self, id: &str) -> Option<f64> {
        self.rules
            .iter()
            .find(|r| r.id.as_str() == id)
            .map(|r| r.pass_percentage)
    }

    /// Evaluates the entity for `user` as seen by `agent` (SPEC.md §2).
    pub fn evaluate(&self, user: &User, agent: &AgentContext) -> Outcome<'_> {
        self.evaluate_unit(user, agent, &unit(user))
    }

    /// [`evaluate`](Self::evaluate) with the unit already computed, so the
    /// rollout path does not compute it twice.
    pub(crate) fn evaluate_unit(
        &self,
        user: &User,
        agent: &AgentContext,
        unit: &str,
    ) -> Outcome<'_> {
        if !self.enabled {
            return self.fallback(Reason::Disabled);
        }
        let Some(rule) = self
            .rules
            .iter()
            .find(|r| r.conditions.iter().all(|c| c.holds(user, agent)))
        else {
            return self.fallback(Reason::Default);
        };
        // The first rule whose conditions hold decides, pass or not.
        let pass = passes(rule.pass_percentage, rule.salt.bucket(unit));
        let value = match self.kind {
            EntityKind::Gate => Value::Gate(pass),
            EntityKind::Config if pass => Value::Config(&rule.value),
            EntityKind::Config => Value::Config(&self.default_value),
        };
        Outcome {
            value,
            reason: Reason::Rule(rule.id.as_str()),
        }
    }

    /// Gate `false` / config `default_value`, for `reason`.
    fn fallback(&self, reason: Reason<'static>) -> Outcome<'_> {
        let value = match self.kind {
            EntityKind::Gate => Value::Gate(false),
            EntityKind::Config => Value::Config(&self.default_value),
        };
        Outcome { value, reason }
    }
}
