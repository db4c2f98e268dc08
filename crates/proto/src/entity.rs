//! Gates and dynamic configs (SPEC.md §2).

use std::fmt;

use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::names::{EntityName, PipelineName, RuleId};

/// A JSON-like map: the value of a config or of one of its rules.
pub type ValueMap = serde_json::Map<String, serde_json::Value>;

crate::wire_enum! {
    /// Gates and configs live in separate namespaces; the word is also the
    /// subject group of their commands and the first part of their keys.
    #[derive(
        Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default, Serialize, Deserialize,
    )]
    #[serde(rename_all = "snake_case")]
    pub enum EntityKind as "entity kind" {
        /// A feature gate: evaluates to a boolean.
        #[default]
        Gate => "gate",
        /// A dynamic config: evaluates to a map.
        Config => "config",
    }
}

fn default_true() -> bool {
    true
}

/// A gate or config definition, as stored and served.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EntitySpec {
    /// Set by the subject used; echoed in replies.
    #[serde(default)]
    pub kind: EntityKind,
    /// Name, unique per kind.
    pub name: EntityName,
    /// Assigned by the coordinator: 1 at creation, +1 per accepted change.
    #[serde(default)]
    pub version: u64,
    /// `false` = off for everyone.
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// Salt of phase bucketing; `None` or empty means the name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub salt: Option<String>,
    /// Rules, evaluated in order.
    #[serde(default)]
    pub rules: Vec<Rule>,
    /// Configs only: the value when no rule passes.
    #[serde(default)]
    pub default_value: ValueMap,
    /// The attached release pipeline, if any.
    #[serde(default)]
    pub pipeline: Option<PipelineName>,
    /// For people; a change of it alone is applied everywhere at once.
    #[serde(default)]
    pub description: String,
}

impl EntitySpec {
    /// A new enabled spec with no rules.
    pub fn new(kind: EntityKind, name: EntityName) -> Self {
        Self {
            kind,
            name,
            version: 0,
            enabled: true,
            salt: None,
            rules: Vec::new(),
            default_value: ValueMap::new(),
            pipeline: None,
            description: String::new(),
        }
    }

    /// The salt actually used for phase bucketing.
    pub fn effective_salt(&self) -> &str {
        match self.salt.as_deref() {
            Some(s) if !s.is_empty() => s,
            _ => self.name.as_str(),
        }
    }
}

/// One targeting rule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Rule {
    /// Unique in the entity; reported as `rule:<id>`.
    pub id: RuleId,
    /// All must hold; empty = everyone.
    #[serde(default)]
    pub conditions: Vec<Condition>,
    /// Share of units, 0–100, that pass once the conditions hold.
    pub pass_percentage: f64,
    /// Bucketing salt; absent, null or empty means the rule id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub salt: Option<String>,
    /// Configs only: the value returned when the rule passes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<ValueMap>,
}

impl Rule {
    /// The salt actually used for this rule's bucketing.
    pub fn effective_salt(&self) -> &str {
        match self.salt.as_deref() {
            Some(s) if !s.is_empty() => s,
            _ => self.id.as_str(),
        }
    }
}

/// A predicate on one field of the user or of the evaluating agent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Condition {
    /// The user's (or the agent's) field it reads.
    pub field: Field,
    /// How it is tested.
    pub op: Op,
    /// Operands: strings or numbers.
    pub values: Vec<ConditionValue>,
}

/// The field a condition reads.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Field {
    /// `user_id` of the user.
    UserId,
    /// `email` of the user.
    Email,
    /// `country` of the user.
    Country,
    /// `app_version` of the user.
    AppVersion,
    /// `custom.<key>`: everything after the first `custom.` is the key.
    Custom(String),
    /// The evaluating agent's segment.
    Segment,
    /// The evaluating agent's tier.
    Tier,
}

impl Field {
    /// Parses the wire form; `None` for an unknown field.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "user_id" => Self::UserId,
            "email" => Self::Email,
            "country" => Self::Country,
            "app_version" => Self::AppVersion,
            "segment" => Self::Segment,
            "tier" => Self::Tier,
            _ => match s.strip_prefix("custom.") {
                Some(key) => Self::Custom(key.to_owned()),
                None => return None,
            },
        })
    }
}

impl fmt::Display for Field {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::UserId => f.write_str("user_id"),
            Self::Email => f.write_str("email"),
            Self::Country => f.write_str("country"),
            Self::AppVersion => f.write_str("app_version"),
            Self::Custom(k) => write!(f, "custom.{k}"),
            Self::Segment => f.write_str("segment"),
            Self::Tier => f.write_str("tier"),
        }
    }
}

impl Serialize for Field {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Field {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Field::parse(&s).ok_or_else(|| {
            de::Error::custom(format!(
                "unknown condition field {s:?}: expected user_id, email, country, app_version, custom.<key>, segment or tier"
            ))
        })
    }
}

crate::wire_enum! {
    /// How a condition compares its field with its values (SPEC.md §2).
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
    #[serde(rename_all = "snake_case")]
    pub enum Op as "condition operator" {
        /// Equals one of the values, as strings, case-insensitive.
        Any => "any",
        /// Equals none of the values, as strings, case-insensitive.
        None => "none",
        /// Equal to `values[0]`: numerically when both are numbers, else exact strings.
        Eq => "eq",
        /// Not equal to `values[0]`.
        Neq => "neq",
        /// Greater than `values[0]`, numerically.
        Gt => "gt",
        /// Greater than or equal to `values[0]`, numerically.
        Gte => "gte",
        /// Less than `values[0]`, numerically.
        Lt => "lt",
        /// Less than or equal to `values[0]`, numerically.
        Lte => "lte",
        /// Some value is a case-insensitive substring of the field.
        StrContainsAny => "str_contains_any",
        /// Some value is a case-insensitive prefix of the field.
        StrStartsWithAny => "str_starts_with_any",
        /// Unanchored regular-expression search with `values[0]`.
        StrMatches => "str_matches",
        /// Version greater than or equal to `values[0]`.
        VersionGte => "version_gte",
        /// Version less than `values[0]`.
        VersionLt => "version_lt",
    }
}

/// A condition operand: a string or a number (taken as f64).
#[derive(Debug, Clone, PartialEq)]
pub enum ConditionValue {
    /// A string operand.
    Str(String),
    /// A numeric operand.
    Num(f64),
}

impl Serialize for ConditionValue {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::Str(v) => s.serialize_str(v),
            // Whole numbers travel as integers so JSON clients see `7`, not `7.0`.
            Self::Num(v) if v.fract() == 0.0 && v.abs() < 9_007_199_254_740_992.0 => {
                #[allow(clippy::cast_possible_truncation)] // whole and below 2^53: exact
                s.serialize_i64(*v as i64)
            }
            Self::Num(v) => s.serialize_f64(*v),
        }
    }
}

impl<'de> Deserialize<'de> for ConditionValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = ConditionValue;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string or a number")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(ConditionValue::Str(v.to_owned()))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
                Ok(ConditionValue::Str(v))
            }
            #[allow(clippy::cast_precision_loss)] // the contract takes numbers as f64
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
                Ok(ConditionValue::Num(v as f64))
            }
            #[allow(clippy::cast_precision_loss)] // the contract takes numbers as f64
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
                Ok(ConditionValue::Num(v as f64))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
                Ok(ConditionValue::Num(v))
            }
        }
        d.deserialize_any(V)
    }
}

/// The user an evaluation is for. Every field is optional and may have any
/// JSON shape; SPEC.md §2 says how each shape is read.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct User {
    /// The unit of bucketing.
    #[serde(default)]
    pub user_id: serde_json::Value,
    /// Read by `email` conditions.
    #[serde(default)]
    pub email: serde_json::Value,
    /// Read by `country` conditions.
    #[serde(default)]
    pub country: serde_json::Value,
    /// Read by `app_version` conditions, as a version by the `version_*`
    /// operators.
    #[serde(default)]
    pub app_version: serde_json::Value,
    /// Free attributes, read by `custom.<key>` conditions.
    #[serde(default)]
    pub custom: serde_json::Value,
}
