//! Changes to entities (SPEC.md §4): what a put does — nothing, a change
//! everywhere at once, the kill switch, or a new trigger — and how a finished
//! trigger settles into its entity.

use phasegate_proto::{
    Actor, ApiError, EntityKind, EntityPutRequest, EntityRecord, EntitySpec, EntityState, Pipeline,
    PipelineName, TriggerId, TriggerRecord, TriggerStatus,
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

/// What a put decided, with what the caller carries out: write `record`
/// (every variant but [`PutOutcome::NoOp`]), answer with `spec`, start
/// `created`, archive `aborted`.
#[derive(Debug, Clone)]
pub enum PutOutcome {
    /// Same behaviour, description and pipeline: nothing to write.
    NoOp {
        /// The latest version, unchanged, to answer with.
        spec: EntitySpec,
    },
    /// A new version everywhere at once: no pipeline governs the change, or
    /// only the description or the pipeline changed.
    Immediate {
        /// The entity afterwards, with the new version as its base.
        record: EntityRecord,
        /// The new version, numbered.
        spec: EntitySpec,
    },
    /// `enabled` went off: everywhere at once, whatever the pipeline.
    KillSwitch {
        /// The entity afterwards, with the disabled version as its base and
        /// no active trigger.
        record: EntityRecord,
        /// The disabled version, numbered.
        spec: EntitySpec,
        /// The trigger that was active, now aborted; `None` when none was.
        aborted: Option<TriggerRecord>,
    },
    /// A behaviour change under a pipeline: a new version and the trigger
    /// that rolls it out.
    Triggered {
        /// The entity afterwards: the new version is its latest, the base
        /// stays until the trigger completes.
        record: EntityRecord,
        /// The new version, numbered.
        spec: EntitySpec,
        /// The new trigger, at its first phase.
        created: TriggerRecord,
    },
}

impl PutOutcome {
    /// The spec the put is answered with.
    pub fn spec(&self) -> &EntitySpec {
        match self {
            Self::NoOp { spec }
            | Self::Immediate { spec, .. }
            | Self::KillSwitch { spec, .. }
            | Self::Triggered { spec, .. } => spec,
        }
    }

    /// The entity record to write; `None` for a no-op.
    pub fn record(&self) -> Option<&EntityRecord> {
        match self {
            Self::NoOp { .. } => None,
            Self::Immediate { record, .. }
            | Self::KillSwitch { record, .. }
            | Self::Triggered { record, .. } => Some(record),
        }
    }

    /// What the put did, as a word for logs.
    pub fn change(&self) -> &'static str {
        match self {
            Self::NoOp { .. } => "no_op",
            Self::Immediate { .. } => "immediate",
            Self::KillSwitch { .. } => "kill_switch",
            Self::Triggered { .. } => "triggered",
        }
    }
}

/// Decides a put, pure. The spec's `kind` is taken from `current` and its
/// `version` is assigned; the actor creates the trigger (or aborts the
/// active one with the kill switch) and the comment is recorded on its
/// `started` entry. `pipelines` looks up a pipeline by name; `active` is
/// the entity's active trigger, if any; `new_id` names a trigger if one is
/// created. Errors follow the contract's precedence: `invalid`, then
/// `not_found`, then `conflict`.
pub fn put(
    current: &EntityRecord,
    active: Option<&TriggerRecord>,
    req: EntityPutRequest,
    pipelines: &dyn Fn(&PipelineName) -> Option<Pipeline>,
    new_id: TriggerId,
    now_ms: u64,
) -> Result<PutOutcome, ApiError> {
    let EntityPutRequest {
        mut spec,
        actor,
        comment,
        expected_version,
    } = req;
    spec.kind = current.kind;
    let named = check_put(
        current,
        &spec,
        comment.as_deref(),
        expected_version,
        pipelines,
    )?;
    let spec = normalize(spec);
    if let Some(decided) = against_latest(current, active, &spec, &actor, now_ms)? {
        return Ok(decided);
    }
    // A behaviour change.
    let Some(pipeline) = governing_pipeline(named, current.latest.as_ref(), pipelines)? else {
        let (record, spec) = everywhere_at_once(current, spec);
        return Ok(PutOutcome::Immediate { record, spec });
    };
    let (mut record, spec) = numbered(current, spec);
    let created = rollout::start(StartParams {
        id: new_id.clone(),
        snapshot: spec.clone(),
        base: current.base.clone(),
        pipeline,
        actor,
        comment,
        now_ms,
    });
    record.active_trigger = Some(new_id);
    Ok(PutOutcome::Triggered {
        record,
        spec,
        created,
    })
}

/// Checks a put before anything is decided, in the contract's order:
/// `invalid` (name, spec, comment), then `not_found` (the pipeline the spec
/// names), then `conflict` (`expected_version`). Returns that pipeline.
fn check_put(
    current: &EntityRecord,
    spec: &EntitySpec,
    comment: Option<&str>,
    expected_version: Option<u64>,
    pipelines: &dyn Fn(&PipelineName) -> Option<Pipeline>,
) -> Result<Option<Pipeline>, ApiError> {
    if spec.name != current.name {
        return Err(ApiError::invalid(format!(
            "spec.name {} does not match the entity {}",
            spec.name, current.name
        )));
    }
    validate_spec(spec).map_err(|e| ApiError::invalid(e.to_string()))?;
    if comment.is_some_and(|c| c.len() > crate::rollout::MAX_COMMENT_BYTES) {
        return Err(ApiError::invalid(format!(
            "comment: at most {} bytes",
            crate::rollout::MAX_COMMENT_BYTES
        )));
    }
    let named = match &spec.pipeline {
        Some(name) => Some(pipelines(name).ok_or_else(|| {
            ApiError::not_found(format!("pipeline {name} does not exist; create it first"))
        })?),
        None => None,
    };
    let latest_version = current.latest.as_ref().map_or(0, |l| l.version);
    if let Some(expected) = expected_version
        && expected != latest_version
    {
        return Err(ApiError::conflict(format!(
            "expected_version {expected} but the latest version is {latest_version}"
        )));
    }
    Ok(named)
}

/// The puts decided by comparing `spec` with the latest version: a no-op,
/// the kill switch, a refusal while a trigger runs, or a change of the
/// description or pipeline only. `None` for a behaviour change, which a
/// pipeline may govern.
fn against_latest(
    current: &EntityRecord,
    active: Option<&TriggerRecord>,
    spec: &EntitySpec,
    actor: &Actor,
    now_ms: u64,
) -> Result<Option<PutOutcome>, ApiError> {
    let Some(latest) = &current.latest else {
        return match current.active_trigger {
            Some(_) => Err(ApiError::conflict(format!(
                "{} {} has an active trigger",
                current.kind, current.name
            ))),
            None => Ok(None),
        };
    };
    let same = same_behaviour(latest, spec);
    if same && latest.description == spec.description && latest.pipeline == spec.pipeline {
        return Ok(Some(PutOutcome::NoOp {
            spec: latest.clone(),
        }));
    }
    if is_kill_switch(latest, spec) {
        let (mut record, spec) = everywhere_at_once(current, spec.clone());
        record.active_trigger = None;
        let aborted = active.map(|a| {
            let mut a = a.clone();
            rollout::kill(&mut a, actor.clone(), now_ms);
            a
        });
        return Ok(Some(PutOutcome::KillSwitch {
            record,
            spec,
            aborted,
        }));
    }
    if current.active_trigger.is_some() {
        return Err(ApiError::conflict(format!(
            "{} {} has an active trigger; act on it (or use the kill switch) first",
            current.kind, current.name
        )));
    }
    if same {
        let (record, spec) = everywhere_at_once(current, spec.clone());
        return Ok(Some(PutOutcome::Immediate { record, spec }));
    }
    Ok(None)
}

/// The pipeline a behaviour change goes through: the one the new spec
/// names, else the latest version's. Detaching is no way around the
/// pipeline.
fn governing_pipeline(
    named: Option<Pipeline>,
    latest: Option<&EntitySpec>,
    pipelines: &dyn Fn(&PipelineName) -> Option<Pipeline>,
) -> Result<Option<Pipeline>, ApiError> {
    if named.is_some() {
        return Ok(named);
    }
    match latest.and_then(|l| l.pipeline.as_ref()) {
        Some(name) => pipelines(name).map(Some).ok_or_else(|| {
            ApiError::not_found(format!(
                "pipeline {name} attached to the latest version no longer exists"
            ))
        }),
        None => Ok(None),
    }
}

/// `spec` as the entity's next version: numbered, and its latest.
fn numbered(current: &EntityRecord, mut spec: EntitySpec) -> (EntityRecord, EntitySpec) {
    let next_version = current.last_version + 1;
    spec.version = next_version;
    let mut record = current.clone();
    record.last_version = next_version;
    record.latest = Some(spec.clone());
    (record, spec)
}

/// `spec` as the entity's next version, served everywhere at once: its
/// latest and its base.
fn everywhere_at_once(current: &EntityRecord, spec: EntitySpec) -> (EntityRecord, EntitySpec) {
    let (mut record, spec) = numbered(current, spec);
    record.base = Some(spec.clone());
    (record, spec)
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
