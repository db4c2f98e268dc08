//! The invariants, as pure functions of what the test saw from outside:
//! triggers read from the command API before and after an agent answered
//! (`t1`, `t2`), and that answer. Whatever happened between the two reads,
//! the set of applied phases lies between what `t1` proves applied and
//! what `t2` shows published, so each check below is exact, not a guess
//! about timing.

use std::collections::BTreeMap;

use phasegate_proto::{HistoryType, PhaseState, Trigger, TriggerId, TriggerStatus};
use serde_json::Value;

use super::plan::RolloutPlan;

/// The units the test asks about: with country-only conditions and shares
/// of 0 or 100, what each must get is decidable.
pub const UNITS: [(&str, &str); 2] = [("u-fr", "fr"), ("u-us", "us")];

/// A rollout whose trigger the test knows.
#[derive(Debug, Clone)]
pub struct Known {
    /// Its plan.
    pub plan: RolloutPlan,
    /// Its trigger.
    pub id: TriggerId,
    /// Version before.
    pub from: u64,
    /// Version rolled out.
    pub to: u64,
    /// What `from` answers (false when absent).
    pub old_value: bool,
    /// What `to` answers.
    pub new_value: bool,
}

/// Phases whose `phase_applied` is in `t`'s history: every known agent of
/// their segments had acked them.
fn applied_phases<'a>(k: &'a Known, t: &Trigger) -> Vec<&'a super::plan::PhasePlan> {
    k.plan
        .phases
        .iter()
        .filter(|p| {
            t.history.iter().any(|h| {
                h.kind == HistoryType::PhaseApplied
                    && h.phase_id.as_ref().map(|x| x.as_str()) == Some(p.id.as_str())
            })
        })
        .collect()
}

/// Phases `t` may have published: every phase before the current one and
/// the current one unless it still awaits approval.
fn published_phases<'a>(k: &'a Known, t: &Trigger) -> Vec<&'a super::plan::PhasePlan> {
    let cur = usize::try_from(t.current_phase).unwrap_or(usize::MAX);
    k.plan
        .phases
        .iter()
        .enumerate()
        .filter(|(i, _)| {
            *i < cur
                || (*i == cur
                    && matches!(
                        t.phase_state,
                        Some(PhaseState::Applying | PhaseState::Baking)
                    ))
        })
        .map(|(_, p)| p)
        .collect()
}

/// Checks one agent answer for a unit of `country` in `segment`, given the
/// trigger read just before (`t1`) and just after (`t2`) it.
pub fn check_answer(
    k: &Known,
    t1: &Trigger,
    t2: &Trigger,
    segment: &str,
    country: &str,
    ans: &Value,
) -> Result<(), String> {
    let version = ans["version"].as_u64().ok_or("no version")?;
    let value = ans["value"].as_bool().ok_or("no bool value")?;
    let served_trigger = ans["trigger_id"].as_str();
    let what = format!(
        "{} v{}→v{} (trigger {}), segment {segment}, country {country}: agent answered {ans}",
        k.plan.entity, k.from, k.to, k.id
    );
    if version != k.from && version != k.to {
        return Err(format!("[version outside from/to] {what}"));
    }
    let expected_value = if version == k.to {
        k.new_value
    } else {
        k.old_value
    };
    if value != expected_value {
        return Err(format!("[value does not match version] {what}"));
    }
    if let Some(id) = served_trigger
        && (id != k.id.as_str() || version != k.to)
    {
        return Err(format!("[foreign rollout served] {what}"));
    }
    // Lower bound: phases `t1` shows acked stay applied unless aborted.
    if t2.status != TriggerStatus::Aborted
        && t1.status != TriggerStatus::Aborted
        && applied_phases(k, t1)
            .iter()
            .any(|p| p.gives(segment, country))
        && version != k.to
    {
        return Err(format!(
            "[applied phase not served: acked or baking before this agent applied it] {what}; \
             before: {}",
            brief(t1)
        ));
    }
    // Upper bound: nothing `t2` has not published may be served.
    if t2.status == TriggerStatus::InProgress
        && !published_phases(k, t2)
            .iter()
            .any(|p| p.gives(segment, country))
        && version == k.to
    {
        return Err(format!(
            "[new version outside the applied phases' rules] {what}; after: {}",
            brief(t2)
        ));
    }
    Ok(())
}

/// The history rules that hold whoever leads: one `phase_started` and at
/// most one `phase_applied` per phase, applied after started, at most one
/// end, and nothing after it.
pub fn check_history(t: &Trigger) -> Result<(), String> {
    let mut started: BTreeMap<&str, usize> = BTreeMap::new();
    let mut applied: BTreeMap<&str, usize> = BTreeMap::new();
    let mut ends = 0;
    for (i, h) in t.history.iter().enumerate() {
        let phase = h.phase_id.as_ref().map_or("", |p| p.as_str());
        if ends > 0 {
            return Err(format!(
                "[history after the end] trigger {}: {:?} at {} after the trigger ended",
                t.id, h.kind, h.at_ms
            ));
        }
        match h.kind {
            HistoryType::PhaseStarted => *started.entry(phase).or_default() += 1,
            HistoryType::PhaseApplied => {
                if !started.contains_key(phase) {
                    return Err(format!(
                        "[phase applied before started] trigger {} phase {phase} (entry {i})",
                        t.id
                    ));
                }
                *applied.entry(phase).or_default() += 1;
            }
            HistoryType::Completed | HistoryType::Aborted => ends += 1,
            _ => {}
        }
    }
    for (what, counts) in [("phase_started", &started), ("phase_applied", &applied)] {
        if let Some((phase, n)) = counts.iter().find(|(_, n)| **n > 1) {
            return Err(format!(
                "[duplicate {what}: two coordinators acted?] trigger {} phase {phase}: {n} times; history: {}",
                t.id,
                history_line(t)
            ));
        }
    }
    Ok(())
}

/// Every segment of the installation that the pipeline names must be in
/// `segments` with its agent known: agents are never forgotten here (no
/// clean stop, forgetting after an hour).
pub fn check_segments_known(t: &Trigger, segments: &[String]) -> Result<(), String> {
    for s in segments {
        match t.segments.get(s) {
            Some(p) if p.agents_known >= 1 => {}
            other => {
                return Err(format!(
                    "[agent's segment invisible to the trigger] trigger {}: segment {s} shows {other:?}; \
                     its agent has been reporting all along",
                    t.id
                ));
            }
        }
    }
    Ok(())
}

/// A one-line picture of a trigger.
pub fn brief(t: &Trigger) -> String {
    format!(
        "{:?} phase {} {:?} paused {:?}",
        t.status,
        t.current_phase_id.as_ref().map_or("-", |p| p.as_str()),
        t.phase_state,
        t.paused_reason
    )
}

/// The history in one line.
pub fn history_line(t: &Trigger) -> String {
    t.history
        .iter()
        .map(|h| {
            format!(
                "{:?}/{}/{}@{}",
                h.kind,
                h.phase_id.as_ref().map_or("-", |p| p.as_str()),
                h.actor.as_str(),
                h.at_ms % 100_000
            )
        })
        .collect::<Vec<_>>()
        .join(" ")
}
