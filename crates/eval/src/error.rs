//! The one error type of this crate: what makes a spec impossible to compile.

use phasegate_proto::EntityKind;

/// Why a condition, rule, spec or rollout cannot be compiled.
///
/// These are exactly the write-time rejections of SPEC.md §2 that the proto
/// types do not already rule out, so the coordinator can validate a put by
/// compiling it and map any error to `invalid`.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum EvalError {
    /// A condition with an empty `values` list.
    #[error("condition on {field} with op {op} has no values")]
    EmptyValues {
        /// The condition's field, in wire form.
        field: String,
        /// The condition's op, in wire form.
        op: &'static str,
    },
    /// A numeric operand that is NaN or infinite: JSON cannot carry it, so no
    /// two implementations would agree on its string form.
    #[error("condition on {field} with op {op}: operand {value} is not a finite number")]
    NonFiniteOperand {
        /// The condition's field, in wire form.
        field: String,
        /// The condition's op, in wire form.
        op: &'static str,
        /// The rejected operand.
        value: f64,
    },
    /// A `str_matches` operand that is not a valid regular expression.
    #[error("condition on {field}: invalid regular expression {pattern:?}: {message}")]
    BadRegex {
        /// The condition's field, in wire form.
        field: String,
        /// The rejected pattern.
        pattern: String,
        /// What the `regex` crate said about it.
        message: String,
    },
    /// A `version_gte` / `version_lt` operand that is not a version.
    #[error(
        "condition on {field} with op {op}: {value:?} is not a version (digits separated by dots, each part fitting u64)"
    )]
    NotAVersion {
        /// The condition's field, in wire form.
        field: String,
        /// The condition's op, in wire form.
        op: &'static str,
        /// The operand's string form.
        value: String,
    },
    /// A `pass_percentage` that is not a finite number in 0–100.
    #[error("pass_percentage {value} is not a number in 0-100")]
    BadPercentage {
        /// The rejected percentage.
        value: f64,
    },
    /// A spec served as one kind that declares another.
    #[error("spec {name} is a {found}, expected a {expected}")]
    KindMismatch {
        /// The spec's name.
        name: String,
        /// The kind the spec declares.
        found: EntityKind,
        /// The kind it is served as.
        expected: EntityKind,
    },
    /// An error inside a rule, phase rule or condition, with where it is.
    // The inner error is part of the message rather than a `#[source]`, so
    // reporters that print the whole chain do not print it twice.
    #[error("{at}: {inner}")]
    At {
        /// Where, e.g. `rule r1, condition 2` or `rollout phase rule 0`.
        at: String,
        /// What is wrong there.
        inner: Box<EvalError>,
    },
}

impl EvalError {
    /// Wraps `self` with the place it was found.
    pub(crate) fn at(self, at: impl Into<String>) -> Self {
        Self::At {
            at: at.into(),
            inner: Box::new(self),
        }
    }

    /// The innermost error, without the places around it.
    pub fn root(&self) -> &EvalError {
        match self {
            Self::At { inner, .. } => inner.root(),
            other => other,
        }
    }
}
