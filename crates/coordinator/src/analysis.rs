//! Analysis results on their way from the fleet to a trigger (SPEC.md §3
//! `Analysis`): the directory sends each trigger the latest result of its
//! analyses per segment with every fleet view; the trigger actor shows
//! them at once (like agent counts) and persists them with its next step,
//! whose history comments name the analyses that moved health.

use std::collections::{BTreeMap, BTreeSet};

use phasegate_model::Fleet;
use phasegate_proto::{EntityRef, SegmentAnalysis, StoredEntity, TriggerId};
use ractor::ActorRef;

use crate::msg::CatalogMsg;

/// The latest result of each analysis, per segment.
pub(crate) type SegmentAnalyses = BTreeMap<String, Vec<SegmentAnalysis>>;

/// What trigger `id` is shown of its analyses in `segments` (those with
/// no result are left out).
pub(crate) fn of_segments(
    fleet: &Fleet,
    id: &TriggerId,
    segments: &BTreeSet<String>,
    now: u64,
) -> SegmentAnalyses {
    segments
        .iter()
        .map(|s| (s.clone(), fleet.analyses(s, id, now)))
        .filter(|(_, list)| !list.is_empty())
        .collect()
}

/// Takes in the results of a fleet view: in place in the active record of
/// trigger `id`, and told to the catalog when they moved. A finished
/// trigger keeps the results it finished with.
pub(crate) fn adopt(
    stored: &mut StoredEntity,
    entity: &EntityRef,
    id: &TriggerId,
    analysis: SegmentAnalyses,
    catalog: &ActorRef<CatalogMsg>,
) {
    let Some(rec) = stored
        .active
        .as_mut()
        .filter(|a| &a.trigger.id == id && !a.trigger.status.is_finished())
    else {
        return;
    };
    if rec.trigger.analysis == analysis {
        return;
    }
    rec.trigger.analysis = analysis.clone();
    let _ = catalog.cast(CatalogMsg::TriggerAnalysis {
        entity: entity.clone(),
        id: id.clone(),
        analysis,
    });
}

/// The catalog's copy of trigger `id` (in `stored`, if active there) shows
/// the results a trigger actor sent.
pub(crate) fn show(stored: Option<&mut StoredEntity>, id: &TriggerId, analysis: SegmentAnalyses) {
    if let Some(active) = stored
        .and_then(|s| s.active.as_mut())
        .filter(|a| &a.trigger.id == id)
    {
        active.trigger.analysis = analysis;
    }
}
