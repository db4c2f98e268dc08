//! Conditions (SPEC.md §2, the op table), compiled once and evaluated many
//! times.

use std::borrow::Cow;
use std::cmp::Ordering;

use phasegate_proto::{Condition, ConditionValue, Field, Op, User};
use regex::Regex;

use crate::value::{
    FieldValue, compare_version, contains_folded, format_number, parse_number, parse_version,
    starts_with_folded,
};
use crate::{AgentContext, EvalError};

/// A condition checked at compile time, with its operands prepared: string
/// forms, number forms, parsed versions and the compiled regex.
#[derive(Debug, Clone)]
pub struct CompiledCondition {
    field: Field,
    test: Test,
}

/// What a condition tests, with what the op needs of its operands.
#[derive(Debug, Clone)]
enum Test {
    Eq(Operand),
    Neq(Operand),
    /// `gt`, `gte`, `lt`, `lte`; the operand is `None` when `values[0]` is
    /// no number, and then the comparison never holds.
    Order(Order, Option<f64>),
    /// The ops that read the field's string form.
    Text(TextTest),
}

/// The numeric comparisons.
#[derive(Debug, Clone, Copy)]
enum Order {
    Gt,
    Gte,
    Lt,
    Lte,
}

/// The ops that read the field's string form.
#[derive(Debug, Clone)]
enum TextTest {
    Any(Vec<String>),
    None(Vec<String>),
    ContainsAny(Vec<String>),
    StartsWithAny(Vec<String>),
    Matches(Regex),
    VersionGte(Vec<u64>),
    VersionLt(Vec<u64>),
}

/// `values[0]` of `eq` / `neq`, in both forms.
#[derive(Debug, Clone)]
struct Operand {
    text: String,
    number: Option<f64>,
}

/// The wire name of an op, for error messages.
fn op_name(op: Op) -> &'static str {
    match op {
        Op::Any => "any",
        Op::None => "none",
        Op::Eq => "eq",
        Op::Neq => "neq",
        Op::Gt => "gt",
        Op::Gte => "gte",
        Op::Lt => "lt",
        Op::Lte => "lte",
        Op::StrContainsAny => "str_contains_any",
        Op::StrStartsWithAny => "str_starts_with_any",
        Op::StrMatches => "str_matches",
        Op::VersionGte => "version_gte",
        Op::VersionLt => "version_lt",
    }
}

fn operand_text(v: &ConditionValue) -> String {
    match v {
        ConditionValue::Str(s) => s.clone(),
        ConditionValue::Num(x) => format_number(*x),
    }
}

fn operand_number(v: &ConditionValue) -> Option<f64> {
    match v {
        ConditionValue::Str(s) => parse_number(s),
        ConditionValue::Num(x) => Some(*x),
    }
}

impl CompiledCondition {
    /// Checks `condition` and prepares it for evaluation.
    ///
    /// Rejects what SPEC.md §2 rejects at write time: empty `values`, a
    /// regular expression that does not compile, a version operand that is
    /// not a version; and a numeric operand that is not finite.
    pub fn new(condition: &Condition) -> Result<Self, EvalError> {
        let op = op_name(condition.op);
        let field = || condition.field.to_string();
        let Some(first) = condition.values.first() else {
            return Err(EvalError::EmptyValues { field: field(), op });
        };
        for v in &condition.values {
            if let ConditionValue::Num(x) = v
                && !x.is_finite()
            {
                return Err(EvalError::NonFiniteOperand {
                    field: field(),
                    op,
                    value: *x,
                });
            }
        }
        let texts = || condition.values.iter().map(operand_text).collect();
        let version = || {
            let text = operand_text(first);
            parse_version(&text).ok_or_else(|| EvalError::NotAVersion {
                field: field(),
                op,
                value: text,
            })
        };
        let operand = || Operand {
            text: operand_text(first),
            number: operand_number(first),
        };
        let test = match condition.op {
            Op::Eq => Test::Eq(operand()),
            Op::Neq => Test::Neq(operand()),
            Op::Gt => Test::Order(Order::Gt, operand_number(first)),
            Op::Gte => Test::Order(Order::Gte, operand_number(first)),
            Op::Lt => Test::Order(Order::Lt, operand_number(first)),
            Op::Lte => Test::Order(Order::Lte, operand_number(first)),
            Op::Any => Test::Text(TextTest::Any(texts())),
            Op::None => Test::Text(TextTest::None(texts())),
            Op::StrContainsAny => Test::Text(TextTest::ContainsAny(texts())),
            Op::StrStartsWithAny => Test::Text(TextTest::StartsWithAny(texts())),
            Op::StrMatches => {
                let pattern = operand_text(first);
                let re = Regex::new(&pattern).map_err(|e| EvalError::BadRegex {
                    field: field(),
                    pattern: pattern.clone(),
                    message: e.to_string(),
                })?;
                Test::Text(TextTest::Matches(re))
            }
            Op::VersionGte => Test::Text(TextTest::VersionGte(version()?)),
            Op::VersionLt => Test::Text(TextTest::VersionLt(version()?)),
        };
        Ok(Self {
            field: condition.field.clone(),
            test,
        })
    }

    /// The field this condition reads.
    pub fn field(&self) -> &Field {
        &self.field
    }

    /// A rough rank of what checking this condition costs, cheapest first:
    /// agent fields before user fields before `custom` lookups, plain
    /// comparisons before substring and version scans before regexes.
    pub(crate) fn cost(&self) -> (u8, u8) {
        let op = match &self.test {
            Test::Eq(_) | Test::Neq(_) | Test::Order(..) => 0,
            Test::Text(TextTest::Any(_) | TextTest::None(_)) => 0,
            Test::Text(
                TextTest::ContainsAny(_)
                | TextTest::StartsWithAny(_)
                | TextTest::VersionGte(_)
                | TextTest::VersionLt(_),
            ) => 1,
            Test::Text(TextTest::Matches(_)) => 2,
        };
        let field = match &self.field {
            Field::Segment | Field::Tier => 0,
            Field::UserId | Field::Email | Field::Country | Field::AppVersion => 1,
            Field::Custom(_) => 2,
        };
        (op, field)
    }

    /// True when the condition holds for `user` evaluated by `agent`.
    pub fn holds(&self, user: &User, agent: &AgentContext) -> bool {
        self.holds_for(FieldValue::read(&self.field, user, agent))
    }

    fn holds_for(&self, v: FieldValue<'_>) -> bool {
        if v == FieldValue::Missing {
            return matches!(self.test, Test::Neq(_) | Test::Text(TextTest::None(_)));
        }
        match &self.test {
            Test::Eq(operand) => equals(v, operand),
            Test::Neq(operand) => !equals(v, operand),
            Test::Order(order, operand) => match (v.number_form(), *operand) {
                (Some(a), Some(b)) => match order {
                    Order::Gt => a > b,
                    Order::Gte => a >= b,
                    Order::Lt => a < b,
                    Order::Lte => a <= b,
                },
                _ => false,
            },
            Test::Text(test) => test.holds(&text(v)),
        }
    }
}

impl TextTest {
    fn holds(&self, s: &str) -> bool {
        match self {
            Self::Any(set) => set.iter().any(|x| x.eq_ignore_ascii_case(s)),
            Self::None(set) => !set.iter().any(|x| x.eq_ignore_ascii_case(s)),
            Self::ContainsAny(set) => set.iter().any(|x| contains_folded(s, x)),
            Self::StartsWithAny(set) => set.iter().any(|x| starts_with_folded(s, x)),
            Self::Matches(re) => re.is_match(s),
            Self::VersionGte(b) => compare_version(s, b).is_some_and(Ordering::is_ge),
            Self::VersionLt(b) => compare_version(s, b).is_some_and(Ordering::is_lt),
        }
    }
}

/// The string form of a present value (a missing one never gets here).
fn text(v: FieldValue<'_>) -> Cow<'_, str> {
    v.string_form().unwrap_or_default()
}

/// `eq`: as numbers when both are numbers, else as exact strings.
fn equals(v: FieldValue<'_>, operand: &Operand) -> bool {
    match (v.number_form(), operand.number) {
        (Some(a), Some(b)) => a == b,
        _ => v.string_form().is_some_and(|s| s == operand.text),
    }
}
