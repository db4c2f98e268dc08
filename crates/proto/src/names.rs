//! Validated names (SPEC.md §1).
//!
//! Every name that crosses the wire is a newtype checked at construction, so
//! code past the codec never sees an invalid one.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A name that failed validation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {what} {value:?}: {rule}")]
pub struct NameError {
    /// What kind of name was rejected (`segment`, `gate name`, …).
    pub what: &'static str,
    /// The rejected text (truncated to 80 characters).
    pub value: String,
    /// The rule it breaks.
    pub rule: &'static str,
}

impl NameError {
    fn new(what: &'static str, value: &str, rule: &'static str) -> Self {
        let value: String = value.chars().take(80).collect();
        Self { what, value, rule }
    }
}

/// Checks `[a-z0-9][a-z0-9._-]{0,max-1}`, with `*` allowed in the tail when
/// `glob` is set.
fn check_slug(s: &str, max: usize, glob: bool) -> bool {
    let b = s.as_bytes();
    if b.is_empty() || b.len() > max {
        return false;
    }
    let first_ok = b[0].is_ascii_lowercase() || b[0].is_ascii_digit() || (glob && b[0] == b'*');
    first_ok
        && b[1..].iter().all(|&c| {
            c.is_ascii_lowercase()
                || c.is_ascii_digit()
                || matches!(c, b'.' | b'_' | b'-')
                || (glob && c == b'*')
        })
}

macro_rules! slug_name {
    ($(#[$m:meta])* $name:ident, $what:literal, $max:literal, $rule:literal) => {
        $(#[$m])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            /// The rule a valid name follows.
            pub const RULE: &'static str = $rule;

            /// Validates and wraps `s`.
            pub fn new(s: impl Into<String>) -> Result<Self, NameError> {
                let s = s.into();
                if check_slug(&s, $max, false) {
                    Ok(Self(s))
                } else {
                    Err(NameError::new($what, &s, $rule))
                }
            }

            /// The name as text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = NameError;
            fn try_from(s: String) -> Result<Self, NameError> {
                Self::new(s)
            }
        }

        impl From<$name> for String {
            fn from(n: $name) -> String {
                n.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl std::borrow::Borrow<str> for $name {
            fn borrow(&self) -> &str {
                &self.0
            }
        }
    };
}

slug_name!(
    /// A segment served by agents: a region, environment or cluster.
    Segment, "segment", 64, "must match [a-z0-9][a-z0-9._-]{0,63}"
);
slug_name!(
    /// The name of a gate or of a dynamic config.
    EntityName, "entity name", 128, "must match [a-z0-9][a-z0-9._-]{0,127}"
);
slug_name!(
    /// The name of a release pipeline.
    PipelineName, "pipeline name", 64, "must match [a-z0-9][a-z0-9._-]{0,63}"
);
slug_name!(
    /// The id of a phase, unique in its pipeline.
    PhaseId, "phase id", 64, "must match [a-z0-9][a-z0-9._-]{0,63}"
);
slug_name!(
    /// The id of a rule, unique in its entity.
    RuleId, "rule id", 64, "must match [a-z0-9][a-z0-9._-]{0,63}"
);
slug_name!(
    /// The name of a phase's metric analysis, unique in its phase.
    AnalysisName, "analysis name", 64, "must match [a-z0-9][a-z0-9._-]{0,63}"
);

/// A segment name or a glob over segment names (`prod-us-*`); only `*` is special.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct SegmentPattern(String);

impl SegmentPattern {
    /// Validates and wraps `s`.
    pub fn new(s: impl Into<String>) -> Result<Self, NameError> {
        let s = s.into();
        if check_slug(&s, 64, true) {
            Ok(Self(s))
        } else {
            Err(NameError::new(
                "segment pattern",
                &s,
                "must be a segment name, optionally with * wildcards",
            ))
        }
    }

    /// The pattern as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// True when the pattern names one segment literally (no `*`).
    pub fn is_literal(&self) -> bool {
        !self.0.contains('*')
    }

    /// True when `segment` matches the pattern; `*` matches any run of characters.
    pub fn matches(&self, segment: &str) -> bool {
        glob_match(self.0.as_bytes(), segment.as_bytes())
    }
}

/// Iterative glob matcher with backtracking on the last `*`: linear in
/// practice and never recursive, so hostile patterns cannot blow the stack.
fn glob_match(p: &[u8], s: &[u8]) -> bool {
    let (mut pi, mut si) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    while si < s.len() {
        if pi < p.len() && p[pi] == b'*' {
            star = Some((pi, si));
            pi += 1;
        } else if pi < p.len() && p[pi] == s[si] {
            pi += 1;
            si += 1;
        } else if let Some((sp, ss)) = star {
            pi = sp + 1;
            si = ss + 1;
            star = Some((sp, ss + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == b'*')
}

impl TryFrom<String> for SegmentPattern {
    type Error = NameError;
    fn try_from(s: String) -> Result<Self, NameError> {
        Self::new(s)
    }
}

impl From<SegmentPattern> for String {
    fn from(n: SegmentPattern) -> String {
        n.0
    }
}

impl fmt::Display for SegmentPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

macro_rules! text_name {
    ($(#[$m:meta])* $name:ident, $what:literal, $check:expr, $rule:literal) => {
        $(#[$m])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            /// Validates and wraps `s`.
            pub fn new(s: impl Into<String>) -> Result<Self, NameError> {
                let s = s.into();
                let check: fn(&str) -> bool = $check;
                if check(&s) {
                    Ok(Self(s))
                } else {
                    Err(NameError::new($what, &s, $rule))
                }
            }

            /// The value as text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = NameError;
            fn try_from(s: String) -> Result<Self, NameError> {
                Self::new(s)
            }
        }

        impl From<$name> for String {
            fn from(n: $name) -> String {
                n.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl std::borrow::Borrow<str> for $name {
            fn borrow(&self) -> &str {
                &self.0
            }
        }
    };
}

text_name!(
    /// Who issued a command: declared by the caller in v1.
    Actor,
    "actor",
    |s| !s.is_empty() && s.len() <= 128,
    "must be a non-empty string of at most 128 bytes"
);
text_name!(
    /// The id of a trigger: opaque, made by the coordinator, unique forever.
    TriggerId,
    "trigger id",
    |s| !s.is_empty() && s.len() <= 128 && s.bytes().all(|c| c.is_ascii_graphic()),
    "must be 1 to 128 printable ASCII characters"
);
text_name!(
    /// The id of an agent process (defaults to segment and host).
    AgentId,
    "agent id",
    |s| {
        let b = s.as_bytes();
        !b.is_empty()
            && b.len() <= 128
            && b[0].is_ascii_alphanumeric()
            && b.iter().all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'-'))
    },
    "must match [A-Za-z0-9][A-Za-z0-9._-]{0,127}"
);

impl TriggerId {
    /// A fresh id from a creation time and random bits,
    /// `t-<ms hex>-<random hex>`: always valid, and a valid key of the
    /// key-value store.
    pub fn generate(now_ms: u64, random: u64) -> Self {
        Self(format!("t-{now_ms:x}-{random:016x}"))
    }
}

impl AgentId {
    /// An id for an agent that could derive none from its host: `agent-<pid>`.
    pub fn generated_fallback() -> Self {
        Self(format!("agent-{}", std::process::id()))
    }
}

impl Actor {
    /// The actor recorded for automatic steps.
    pub fn system() -> Self {
        Self("phasegate".to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slugs_follow_the_rule() {
        assert!(Segment::new("prod-us-west").is_ok());
        assert!(Segment::new("a").is_ok());
        assert!(Segment::new("0.x_y-z").is_ok());
        assert!(Segment::new("").is_err());
        assert!(Segment::new("-a").is_err());
        assert!(Segment::new(".a").is_err());
        assert!(Segment::new("Prod").is_err());
        assert!(Segment::new("a b").is_err());
        assert!(Segment::new("a*").is_err());
        assert!(Segment::new("a".repeat(64)).is_ok());
        assert!(Segment::new("a".repeat(65)).is_err());
        assert!(EntityName::new("a".repeat(128)).is_ok());
        assert!(EntityName::new("a".repeat(129)).is_err());
        assert!(PhaseId::new("é").is_err());
    }

    #[test]
    fn actors_are_bounded() {
        assert!(Actor::new("alice@example.com").is_ok());
        assert!(Actor::new("").is_err());
        assert!(Actor::new("x".repeat(128)).is_ok());
        assert!(Actor::new("x".repeat(129)).is_err());
    }

    #[test]
    fn globs_match_only_star() {
        let p = SegmentPattern::new("prod-us-*").unwrap();
        assert!(p.matches("prod-us-west"));
        assert!(p.matches("prod-us-"));
        assert!(!p.matches("prod-eu"));
        assert!(!p.is_literal());
        let p = SegmentPattern::new("*-eu").unwrap();
        assert!(p.matches("prod-eu"));
        assert!(!p.matches("prod-eu-1"));
        let p = SegmentPattern::new("p*d*u").unwrap();
        assert!(p.matches("prod-eu"));
        assert!(p.matches("pdu"));
        assert!(!p.matches("pd"));
        let lit = SegmentPattern::new("dev").unwrap();
        assert!(lit.is_literal() && lit.matches("dev") && !lit.matches("dev2"));
        assert!(SegmentPattern::new("prod-?").is_err());
    }

    #[test]
    fn names_deserialize_with_validation() {
        let ok: Result<Segment, _> = serde_json::from_str("\"dev\"");
        assert!(ok.is_ok());
        let bad: Result<Segment, _> = serde_json::from_str("\"DEV\"");
        let msg = bad.unwrap_err().to_string();
        assert!(msg.contains("invalid segment"), "{msg}");
    }
}
