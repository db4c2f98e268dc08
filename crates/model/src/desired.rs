//! The desired state of a segment under a trigger (SPEC.md §5).

use phasegate_proto::{EntityState, PhaseRule, RolloutView, TriggerRecord, TriggerStatus};

use crate::rollout::phase_covers;

/// The rollout view `segment` serves while `rec` is in progress: one rule per
/// published phase that names the segment, so a unit that got the new
/// version keeps it as later phases widen. `None` when no published phase
/// names the segment, or the trigger is finished.
pub fn phase_rollout(rec: &TriggerRecord, segment: &str) -> Option<RolloutView> {
    if rec.trigger.status != TriggerStatus::InProgress {
        return None;
    }
    let covering: Vec<_> = rec
        .trigger
        .pipeline_snapshot
        .phases
        .iter()
        .take(rec.published as usize)
        .filter(|ph| phase_covers(ph, segment))
        .collect();
    let last = covering.last()?;
    Some(RolloutView {
        trigger_id: rec.trigger.id.clone(),
        phase_id: last.id.clone(),
        snapshot: rec.snapshot.clone(),
        rules: covering
            .iter()
            .map(|ph| PhaseRule {
                conditions: ph.conditions.clone(),
                pass_percentage: ph.pass_percentage,
            })
            .collect(),
    })
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
