//! Write-time validation of pipelines and specs, with messages that name
//! the offending field (`phases[2].approval.min_approvals: …`).

use std::collections::HashSet;

use phasegate_eval::CompiledCondition;
use phasegate_proto::{Condition, EntitySpec, Pipeline};

/// The most phases a pipeline may have.
pub const MAX_PHASES: usize = 50;

/// The longest bake a phase may ask for: 30 days.
pub const MAX_WAIT_MS: u64 = 30 * 24 * 60 * 60 * 1000;

/// The most rules an entity may have.
pub const MAX_RULES: usize = 1000;

/// The largest spec, as JSON: the coordinator keeps up to four versions of
/// an entity in one stored record, which must fit a NATS message.
pub const MAX_SPEC_BYTES: usize = 128 * 1024;

/// The longest description.
pub const MAX_DESCRIPTION_BYTES: usize = 4096;

/// A definition that breaks the contract's rules.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {message}")]
pub struct ValidationError {
    /// Where, as a path into the request (`phases[1].segments`).
    pub path: String,
    /// What is wrong and how to fix it.
    pub message: String,
}

impl ValidationError {
    pub(crate) fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            message: message.into(),
        }
    }
}

fn check_percentage(path: &str, p: f64) -> Result<(), ValidationError> {
    if p.is_finite() && (0.0..=100.0).contains(&p) {
        Ok(())
    } else {
        Err(ValidationError::new(
            path,
            format!("must be a number from 0 to 100, got {p}"),
        ))
    }
}

fn check_conditions(path: &str, conditions: &[Condition]) -> Result<(), ValidationError> {
    for (i, c) in conditions.iter().enumerate() {
        CompiledCondition::new(c)
            .map_err(|e| ValidationError::new(format!("{path}[{i}]"), e.to_string()))?;
    }
    Ok(())
}

/// Checks a pipeline against SPEC.md §3.
pub fn validate_pipeline(p: &Pipeline) -> Result<(), ValidationError> {
    if p.description.len() > MAX_DESCRIPTION_BYTES {
        return Err(ValidationError::new(
            "pipeline.description",
            format!("must be at most {MAX_DESCRIPTION_BYTES} bytes"),
        ));
    }
    if p.phases.is_empty() || p.phases.len() > MAX_PHASES {
        return Err(ValidationError::new(
            "pipeline.phases",
            format!("must have 1 to {MAX_PHASES} phases, got {}", p.phases.len()),
        ));
    }
    let mut ids = HashSet::new();
    for (i, ph) in p.phases.iter().enumerate() {
        let at = format!("pipeline.phases[{i}]");
        if !ids.insert(ph.id.as_str()) {
            return Err(ValidationError::new(
                format!("{at}.id"),
                format!(
                    "phase id {:?} is used twice; ids must be unique",
                    ph.id.as_str()
                ),
            ));
        }
        if ph.segments.is_empty() {
            return Err(ValidationError::new(
                format!("{at}.segments"),
                "must name at least one segment or glob",
            ));
        }
        check_conditions(&format!("{at}.conditions"), &ph.conditions)?;
        check_percentage(&format!("{at}.pass_percentage"), ph.pass_percentage)?;
        if ph.wait_ms > MAX_WAIT_MS {
            return Err(ValidationError::new(
                format!("{at}.wait_ms"),
                format!(
                    "must be at most {MAX_WAIT_MS} (30 days), got {}",
                    ph.wait_ms
                ),
            ));
        }
        let a = &ph.approval;
        if a.min_approvals < 1 {
            return Err(ValidationError::new(
                format!("{at}.approval.min_approvals"),
                "must be at least 1",
            ));
        }
        if !a.approvers.is_empty() && a.min_approvals as usize > a.approvers.len() {
            return Err(ValidationError::new(
                format!("{at}.approval.min_approvals"),
                format!(
                    "is {} but only {} approvers are listed",
                    a.min_approvals,
                    a.approvers.len()
                ),
            ));
        }
        let r = ph.health.min_healthy_ratio;
        if !(r.is_finite() && (0.0..=1.0).contains(&r)) {
            return Err(ValidationError::new(
                format!("{at}.health.min_healthy_ratio"),
                format!("must be a number from 0 to 1, got {r}"),
            ));
        }
        crate::analysis::validate_analyses(&at, &ph.analysis)?;
    }
    Ok(())
}

/// Checks a gate or config spec against SPEC.md §2.
pub fn validate_spec(spec: &EntitySpec) -> Result<(), ValidationError> {
    if spec.description.len() > MAX_DESCRIPTION_BYTES {
        return Err(ValidationError::new(
            "spec.description",
            format!("must be at most {MAX_DESCRIPTION_BYTES} bytes"),
        ));
    }
    let size = serde_json::to_vec(spec).map_or(usize::MAX, |v| v.len());
    if size > MAX_SPEC_BYTES {
        return Err(ValidationError::new(
            "spec",
            format!("is {size} bytes as JSON; at most {MAX_SPEC_BYTES} are accepted"),
        ));
    }
    if spec.rules.len() > MAX_RULES {
        return Err(ValidationError::new(
            "spec.rules",
            format!(
                "must have at most {MAX_RULES} rules, got {}",
                spec.rules.len()
            ),
        ));
    }
    let mut ids = HashSet::new();
    for (i, rule) in spec.rules.iter().enumerate() {
        let at = format!("spec.rules[{i}]");
        if !ids.insert(rule.id.as_str()) {
            return Err(ValidationError::new(
                format!("{at}.id"),
                format!(
                    "rule id {:?} is used twice; ids must be unique",
                    rule.id.as_str()
                ),
            ));
        }
        check_conditions(&format!("{at}.conditions"), &rule.conditions)?;
        check_percentage(&format!("{at}.pass_percentage"), rule.pass_percentage)?;
    }
    Ok(())
}
