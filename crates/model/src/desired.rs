//! The desired state the coordinator publishes (one [`DesiredEntity`] per
//! entity) and the view each segment derives from it (SPEC.md §5).

use phasegate_proto::{
    DesiredEntity, DesiredRollout, EntityRecord, EntityState, PhaseRule, PhaseTarget, RolloutView,
    TriggerRecord, TriggerStatus,
};

/// What the coordinator publishes for an entity: its base and, while its
/// active trigger has published phases, those phases and the new version.
pub fn publish(entity: &EntityRecord, active: Option<&TriggerRecord>) -> DesiredEntity {
    let running = active.filter(|rec| {
        entity.active_trigger.as_ref() == Some(&rec.trigger.id)
            && rec.trigger.status == TriggerStatus::InProgress
    });
    match running {
        Some(rec) => DesiredEntity {
            kind: entity.kind,
            name: entity.name.clone(),
            base: rec.base.clone(),
            rollout: rollout_of(rec),
        },
        None => DesiredEntity {
            kind: entity.kind,
            name: entity.name.clone(),
            base: entity.base.clone(),
            rollout: None,
        },
    }
}

fn rollout_of(rec: &TriggerRecord) -> Option<DesiredRollout> {
    let phases: Vec<PhaseTarget> = rec
        .trigger
        .pipeline_snapshot
        .phases
        .iter()
        .take(rec.published as usize)
        .map(|ph| PhaseTarget {
            id: ph.id.clone(),
            segments: ph.segments.clone(),
            conditions: ph.conditions.clone(),
            pass_percentage: ph.pass_percentage,
            analysis: ph.analysis.clone(),
        })
        .collect();
    if phases.is_empty() {
        return None;
    }
    Some(DesiredRollout {
        trigger_id: rec.trigger.id.clone(),
        snapshot: rec.snapshot.clone(),
        phases,
        trace_parent: None,
    })
}

/// What `segment` serves: the base, plus a rollout view with one rule per
/// published phase that names the segment, so a unit that got the new
/// version keeps it as later phases widen.
pub fn view(desired: &DesiredEntity, segment: &str) -> EntityState {
    let rollout = desired.rollout.as_ref().and_then(|r| {
        let covering: Vec<&PhaseTarget> = r
            .phases
            .iter()
            .filter(|ph| ph.segments.iter().any(|p| p.matches(segment)))
            .collect();
        let last = covering.last()?;
        Some(RolloutView {
            trigger_id: r.trigger_id.clone(),
            phase_id: last.id.clone(),
            snapshot: r.snapshot.clone(),
            rules: covering
                .iter()
                .map(|ph| PhaseRule {
                    conditions: ph.conditions.clone(),
                    pass_percentage: ph.pass_percentage,
                })
                .collect(),
        })
    });
    EntityState {
        base: desired.base.clone(),
        rollout,
    }
}

/// The rollout view `segment` serves while `rec` is in progress; `None`
/// when no published phase names the segment, or the trigger is finished.
pub fn phase_rollout(rec: &TriggerRecord, segment: &str) -> Option<RolloutView> {
    if rec.trigger.status != TriggerStatus::InProgress {
        return None;
    }
    let r = rollout_of(rec)?;
    let d = DesiredEntity {
        kind: rec.snapshot.kind,
        name: rec.snapshot.name.clone(),
        base: None,
        rollout: Some(r),
    };
    view(&d, segment).rollout
}

/// What `segment` serves for the trigger's entity according to the trigger
/// alone: the new version once completed, the old one once aborted.
pub fn trigger_state(rec: &TriggerRecord, segment: &str) -> EntityState {
    match rec.trigger.status {
        TriggerStatus::Completed => EntityState {
            base: Some(rec.snapshot.clone()),
            rollout: None,
        },
        TriggerStatus::Aborted => EntityState {
            base: rec.base.clone(),
            rollout: None,
        },
        TriggerStatus::InProgress => EntityState {
            base: rec.base.clone(),
            rollout: phase_rollout(rec, segment),
        },
    }
}
