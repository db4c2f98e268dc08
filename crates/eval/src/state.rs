//! What an agent serves for one entity (SPEC.md §5): the base spec and,
//! while a phase covering the segment is applied, the rollout's snapshot.

use phasegate_proto::{EntityKind, EntitySpec, EntityState, PhaseId, RolloutView, TriggerId, User};

use crate::bucket::{Salt, passes};
use crate::condition::CompiledCondition;
use crate::entity::{CompiledEntity, Outcome, Reason, Value, check_percentage, compile_conditions};
use crate::value::unit;
use crate::{AgentContext, EvalError};

/// The answer an agent serves for one entity and one user (SPEC.md §5).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Answer<'a> {
    /// What the entity evaluated to.
    pub value: Value<'a>,
    /// The version of the spec that answered; 0 for an unknown entity.
    pub version: u64,
    /// Why.
    pub reason: Reason<'a>,
    /// The trigger, when the rollout's snapshot answered.
    pub trigger_id: Option<&'a TriggerId>,
    /// The phase, when the rollout's snapshot answered.
    pub phase_id: Option<&'a PhaseId>,
}

/// The answer for an entity that does not exist: gate `false` / config `{}`,
/// version 0, reason `unknown`, no trigger.
pub fn unknown_answer(kind: EntityKind) -> Answer<'static> {
    let Outcome { value, reason } = Outcome::unknown(kind);
    Answer {
        value,
        version: 0,
        reason,
        trigger_id: None,
        phase_id: None,
    }
}

/// One applied phase's targeting inside the segment.
#[derive(Debug, Clone)]
struct CompiledPhaseRule {
    conditions: Vec<CompiledCondition>,
    pass_percentage: f64,
}

/// A rollout view checked and prepared: which units get the snapshot, and
/// the compiled snapshot itself.
#[derive(Debug, Clone)]
pub struct CompiledRollout {
    trigger_id: TriggerId,
    phase_id: PhaseId,
    snapshot: CompiledEntity,
    /// The snapshot's effective salt: phase bucketing uses it, not a rule's.
    salt: Salt,
    rules: Vec<CompiledPhaseRule>,
}

impl CompiledRollout {
    /// Checks `view` (the snapshot, and each phase rule's conditions and
    /// percentage) and prepares it.
    pub fn new(view: &RolloutView) -> Result<Self, EvalError> {
        let rules = view
            .rules
            .iter()
            .enumerate()
            .map(|(i, r)| {
                let compiled = compile_conditions(&r.conditions).and_then(|conditions| {
                    Ok(CompiledPhaseRule {
                        conditions,
                        pass_percentage: check_percentage(r.pass_percentage)?,
                    })
                });
                compiled.map_err(|e| e.at(format!("phase rule {i}")))
            })
            .collect::<Result<_, _>>()?;
        Ok(Self {
            trigger_id: view.trigger_id.clone(),
            phase_id: view.phase_id.clone(),
            snapshot: CompiledEntity::new(&view.snapshot).map_err(|e| e.at("snapshot"))?,
            salt: Salt::new(view.snapshot.effective_salt()),
            rules,
        })
    }

    /// The trigger rolling the snapshot out.
    pub fn trigger_id(&self) -> &TriggerId {
        &self.trigger_id
    }

    /// The latest applied phase naming this segment.
    pub fn phase_id(&self) -> &PhaseId {
        &self.phase_id
    }

    /// The new version, compiled.
    pub fn snapshot(&self) -> &CompiledEntity {
        &self.snapshot
    }

    /// True when the snapshot answers for `user`: some phase rule's
    /// conditions all hold and the unit's bucket under the snapshot's salt
    /// passes that rule's percentage.
    pub fn applies(&self, user: &User, agent: &AgentContext) -> bool {
        self.applies_unit(user, agent, &unit(user))
    }

    fn applies_unit(&self, user: &User, agent: &AgentContext, unit: &str) -> bool {
        // Every phase rule buckets with the same salt: hash at most once.
        let mut bucket = None;
        self.rules.iter().any(|rule| {
            rule.conditions.iter().all(|c| c.holds(user, agent))
                && passes(
                    rule.pass_percentage,
                    *bucket.get_or_insert_with(|| self.salt.bucket(unit)),
                )
        })
    }
}

/// Everything a segment's agent serves for one entity, compiled.
#[derive(Debug, Clone)]
pub struct CompiledState {
    kind: EntityKind,
    base: Option<CompiledEntity>,
    rollout: Option<CompiledRollout>,
}

impl CompiledState {
    /// Checks and prepares `state` for an entity of `kind`. A spec that
    /// declares another kind is rejected rather than served as the wrong
    /// type.
    pub fn new(kind: EntityKind, state: &EntityState) -> Result<Self, EvalError> {
        let check_kind = |spec: &EntitySpec| {
            if spec.kind == kind {
                Ok(())
            } else {
                Err(EvalError::KindMismatch {
                    name: spec.name.to_string(),
                    found: spec.kind,
                    expected: kind,
                })
            }
        };
        let base = match &state.base {
            Some(spec) => {
                check_kind(spec)?;
                Some(CompiledEntity::new(spec).map_err(|e| e.at("base"))?)
            }
            None => None,
        };
        let rollout = match &state.rollout {
            Some(view) => {
                check_kind(&view.snapshot)?;
                Some(CompiledRollout::new(view).map_err(|e| e.at("rollout"))?)
            }
            None => None,
        };
        Ok(Self {
            kind,
            base,
            rollout,
        })
    }

    /// Gate or config.
    pub fn kind(&self) -> EntityKind {
        self.kind
    }

    /// The base spec every other unit gets; `None` = absent.
    pub fn base(&self) -> Option<&CompiledEntity> {
        self.base.as_ref()
    }

    /// The rollout, while one covers the segment.
    pub fn rollout(&self) -> Option<&CompiledRollout> {
        self.rollout.as_ref()
    }

    /// Evaluates for `user` as seen by `agent`: against the snapshot when
    /// the rollout applies to the unit, else against the base, else the
    /// unknown-entity answer.
    pub fn evaluate(&self, user: &User, agent: &AgentContext) -> Answer<'_> {
        let unit = unit(user);
        if let Some(rollout) = &self.rollout
            && rollout.applies_unit(user, agent, &unit)
        {
            let Outcome { value, reason } = rollout.snapshot.evaluate_unit(user, agent, &unit);
            return Answer {
                value,
                version: rollout.snapshot.version(),
                reason,
                trigger_id: Some(&rollout.trigger_id),
                phase_id: Some(&rollout.phase_id),
            };
        }
        match &self.base {
            Some(base) => {
                let Outcome { value, reason } = base.evaluate_unit(user, agent, &unit);
                Answer {
                    value,
                    version: base.version(),
                    reason,
                    trigger_id: None,
                    phase_id: None,
                }
            }
            None => unknown_answer(self.kind),
        }
    }
}
