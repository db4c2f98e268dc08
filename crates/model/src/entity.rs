//! Changes to entities (SPEC.md §4): what a put does — nothing, a change
//! everywhere at once, the kill switch, or a new trigger — and how a finished
//! trigger settles into its entity.

use phasegate_proto::{
    Actor, ApiError, EntityKind, EntityRecord, EntitySpec, EntityState, Pipeline, PipelineName,
    TriggerId, TriggerRecord, TriggerStatus,
};

use crate::behaviour::{is_kill_switch, normalize, same_behaviour};
use crate::rollout::{self, StartParams};
use crate::validate::validate_spec;

/// A fresh record for an entity that was never written.
pub fn new_record(kind: EntityKind, name: phasegate_proto::EntityName) -> EntityRecord {
    EntityRecord {
        kind,
        name,
        latest: None,
        base: None,
        last_version: 0,
        active_trigger: None,
    }
}

/// A put, as received.
#[derive(Debug, Clone)]
pub struct PutRequest {
    /// The spec; `kind` is overwritten by the subject's kind, `version` ignored.
    pub spec: EntitySpec,
    /// Who asks.
    pub actor: Actor,
    /// Recorded on the trigger's `started` entry.
    pub comment: Option<String>,
    /// Must equal the latest version when given.
    pub expected_version: Option<u64>,
}

/// What a put did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PutKind {
    /// Nothing changed: same version, no trigger.
    NoOp,
    /// A new version everywhere at once.
    Immediate,
    /// `enabled` went off everywhere at once; the active trigger, if any, aborted.
    KillSwitch,
    /// A new version and a trigger to roll it out.
    Triggered,
}

/// The result of a put: the new entity record and the triggers it touched.
#[derive(Debug, Clone)]
pub struct PutOutcome {
    /// What happened.
    pub kind: PutKind,
    /// The entity afterwards.
    pub record: EntityRecord,
    /// The spec to answer with.
    pub spec: EntitySpec,
    /// The trigger created, if any.
    pub created: Option<TriggerRecord>,
    /// The active trigger the kill switch aborted, if any.
    pub aborted: Option<TriggerRecord>,
}

/// Decides and carries out a put, pure. `pipelines` looks up a pipeline by
/// name; `active` is the entity's active trigger, if any; `new_id` names a
/// trigger if one is created. Errors follow the contract's precedence:
/// `invalid`, then `not_found`, then `conflict`.
pub fn put(
    current: &EntityRecord,
    active: Option<&TriggerRecord>,
    req: PutRequest,
    pipelines: &dyn Fn(&PipelineName) -> Option<Pipeline>,
    new_id: TriggerId,
    now_ms: u64,
) -> Result<PutOutcome, ApiError> {
    let mut spec = req.spec;
    spec.kind = current.kind;
    if spec.name != current.name {
        return Err(ApiError::invalid(format!(
            "spec.name {} does not match the entity {}",
            spec.name, current.name
        )));
    }
    validate_spec(&spec).map_err(|e| ApiError::invalid(e.to_string()))?;
    if req
        .comment
        .as_ref()
        .is_some_and(|c| c.len() > crate::rollout::MAX_COMMENT_BYTES)
    {
        return Err(ApiError::invalid(format!(
            "comment: at most {} bytes",
            crate::rollout::MAX_COMMENT_BYTES
        )));
    }
    let new_pipeline = match &spec.pipeline {
        Some(name) => Some(pipelines(name).ok_or_else(|| {
            ApiError::not_found(format!("pipeline {name} does not exist; create it first"))
        })?),
        None => None,
    };
    let latest = current.latest.as_ref();
    let latest_version = latest.map_or(0, |l| l.version);
    if let Some(expected) = req.expected_version
        && expected != latest_version
    {
        return Err(ApiError::conflict(format!(
            "expected_version {expected} but the latest version is {latest_version}"
        )));
    }
    let mut spec = normalize(spec);
    let mut record = current.clone();
    let next_version = current.last_version + 1;

    if let Some(l) = latest {
        let same = same_behaviour(l, &spec);
        if same && l.description == spec.description && l.pipeline == spec.pipeline {
            return Ok(PutOutcome {
                kind: PutKind::NoOp,
                record,
                spec: l.clone(),
                created: None,
                aborted: None,
            });
        }
        if is_kill_switch(l, &spec) {
            spec.version = next_version;
            record.last_version = next_version;
            record.latest = Some(spec.clone());
            record.base = Some(spec.clone());
            record.active_trigger = None;
            let aborted = active.map(|a| {
                let mut a = a.clone();
                rollout::kill(&mut a, req.actor.clone(), now_ms);
                a
            });
            return Ok(PutOutcome {
                kind: PutKind::KillSwitch,
                record,
                spec,
                created: None,
                aborted,
            });
        }
        if current.active_trigger.is_some() {
            return Err(ApiError::conflict(format!(
                "{} {} has an active trigger; act on it (or use the kill switch) first",
                current.kind, current.name
            )));
        }
        if same {
            // Only description or pipeline changed: everywhere at once.
            spec.version = next_version;
            record.last_version = next_version;
            record.latest = Some(spec.clone());
            record.base = Some(spec.clone());
            return Ok(PutOutcome {
                kind: PutKind::Immediate,
                record,
                spec,
                created: None,
                aborted: None,
            });
        }
    } else if current.active_trigger.is_some() {
        return Err(ApiError::conflict(format!(
            "{} {} has an active trigger",
            current.kind, current.name
        )));
    }

    // Behaviour changes. Detaching is no way around the pipeline: the
    // latest version's pipeline governs when the new spec has none.
    let governing = match new_pipeline {
        Some(p) => Some(p),
        None => match latest.and_then(|l| l.pipeline.as_ref()) {
            Some(name) => Some(pipelines(name).ok_or_else(|| {
                ApiError::not_found(format!(
                    "pipeline {name} attached to the latest version no longer exists"
                ))
            })?),
            None => None,
        },
    };
    spec.version = next_version;
    record.last_version = next_version;
    record.latest = Some(spec.clone());
    match governing {
        None => {
            record.base = Some(spec.clone());
            Ok(PutOutcome {
                kind: PutKind::Immediate,
                record,
                spec,
                created: None,
                aborted: None,
            })
        }
        Some(pipeline) => {
            let created = rollout::start(StartParams {
                id: new_id.clone(),
                snapshot: spec.clone(),
                base: current.base.clone(),
                pipeline,
                actor: req.actor,
                comment: req.comment,
                now_ms,
            });
            record.active_trigger = Some(new_id);
            Ok(PutOutcome {
                kind: PutKind::Triggered,
                record,
                spec,
                created: Some(created),
                aborted: None,
            })
        }
    }
}

/// A delete: everywhere at once; `conflict` while a trigger is active,
/// `not_found` when the entity is absent. Version numbers continue.
pub fn delete(current: &EntityRecord) -> Result<EntityRecord, ApiError> {
    if current.latest.is_none() {
        return Err(ApiError::not_found(format!(
            "{} {} does not exist",
            current.kind, current.name
        )));
    }
    if current.active_trigger.is_some() {
        return Err(ApiError::conflict(format!(
            "{} {} has an active trigger; finish or abort it first",
            current.kind, current.name
        )));
    }
    let mut r = current.clone();
    r.latest = None;
    r.base = None;
    Ok(r)
}

/// Folds a finished trigger into its entity: completed → the new version is
/// the base; aborted → the entity reads as the version before. Returns
/// whether anything changed. Does nothing for a trigger still in progress or
/// one that is no longer the entity's active trigger.
pub fn settle(entity: &mut EntityRecord, rec: &TriggerRecord) -> bool {
    if entity.active_trigger.as_ref() != Some(&rec.trigger.id) {
        return false;
    }
    match rec.trigger.status {
        TriggerStatus::InProgress => false,
        TriggerStatus::Completed => {
            entity.base = Some(rec.snapshot.clone());
            entity.latest = Some(rec.snapshot.clone());
            entity.active_trigger = None;
            true
        }
        TriggerStatus::Aborted => {
            entity.base = rec.base.clone();
            entity.latest = rec.base.clone();
            entity.active_trigger = None;
            true
        }
    }
}

/// What `segment` serves for this entity: the base, plus the rollout view
/// while the active trigger has a phase naming the segment applied.
pub fn entity_state(
    entity: &EntityRecord,
    active: Option<&TriggerRecord>,
    segment: &str,
) -> EntityState {
    crate::desired::view(&crate::desired::publish(entity, active), segment)
}
