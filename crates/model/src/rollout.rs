//! The trigger state machine of SPEC.md §4.
//!
//! Every function here is pure: the caller passes the time (`now_ms`) and
//! what it knows of the fleet, and carries out the consequences (persist the
//! record, publish desired state, arm the next deadline). Deadlines are
//! absolute instants stored in the record, so a restarted coordinator picks
//! up exactly where it was.

use std::collections::BTreeMap;

pub use crate::fleet::{FleetView, SegmentFleet};
use phasegate_proto::{
    ActionRequest, Actor, ApiError, ApprovalRecord, EntityRef, EntitySpec, HistoryEntry,
    HistoryType, PausedReason, Phase, PhaseState, Pipeline, SegmentProgress, Trigger,
    TriggerAction, TriggerId, TriggerRecord, TriggerStatus,
};

/// The longest comment an action or put may carry: history is kept in the
/// trigger's record, which must stay well below a message's size.
pub const MAX_COMMENT_BYTES: usize = 1024;

/// True when `phase` names `segment`, literally or by glob.
pub fn phase_covers(phase: &Phase, segment: &str) -> bool {
    phase.segments.iter().any(|p| p.matches(segment))
}

/// Everything needed to start a trigger.
#[derive(Debug, Clone)]
pub struct StartParams {
    /// A fresh, unique id.
    pub id: TriggerId,
    /// The new version, normalised, with its version number.
    pub snapshot: EntitySpec,
    /// The version before (`None` = absent).
    pub base: Option<EntitySpec>,
    /// The pipeline, frozen into the trigger.
    pub pipeline: Pipeline,
    /// Who made the change.
    pub actor: Actor,
    /// The put's comment, recorded on `started`.
    pub comment: Option<String>,
    /// When the trigger starts: its `created_at_ms` and the time of its
    /// `started` and first `phase_started` entries.
    pub now_ms: u64,
}

/// Creates a trigger at its first phase (`awaiting_approval` or
/// `applying`). Call [`observe`] with the fleet right after.
pub fn start(p: StartParams) -> TriggerRecord {
    let StartParams {
        id,
        snapshot,
        base,
        pipeline,
        actor,
        comment,
        now_ms,
    } = p;
    let segments = pipeline
        .phases
        .iter()
        .flat_map(|ph| ph.segments.iter())
        .filter(|s| s.is_literal())
        .map(|s| (s.as_str().to_owned(), SegmentProgress::default()))
        .collect();
    let trigger = Trigger {
        id,
        entity: EntityRef {
            kind: snapshot.kind,
            name: snapshot.name.clone(),
        },
        pipeline: pipeline.name.clone(),
        from_version: base.as_ref().map_or(0, |b| b.version),
        to_version: snapshot.version,
        status: TriggerStatus::InProgress,
        current_phase: 0,
        current_phase_id: pipeline.phases.first().map(|ph| ph.id.clone()),
        phase_state: None,
        paused: false,
        paused_reason: None,
        phase_ends_at_ms: None,
        remaining_wait_ms: None,
        approvals: Vec::new(),
        segments,
        created_by: actor.clone(),
        created_at_ms: now_ms,
        updated_at_ms: now_ms,
        history: Vec::new(),
        pipeline_snapshot: pipeline,
        analysis: BTreeMap::new(),
    };
    let mut rec = TriggerRecord {
        trigger,
        snapshot,
        base,
        published: 0,
        apply_deadline_ms: None,
        health_ok: true,
        trace_parent: None,
        degraded_by: Vec::new(),
    };
    record(
        &mut rec.trigger,
        HistoryType::Started,
        actor,
        now_ms,
        comment,
    );
    // No step beyond entering the first phase: progress needs the fleet,
    // which the caller passes to [`observe`] next.
    begin_phase(&mut rec, now_ms);
    refresh_active(&mut rec);
    rec
}

/// Applies an operator action, or explains with the contract's error code
/// why it is refused. On error the record is unchanged.
pub fn act(
    rec: &mut TriggerRecord,
    action: TriggerAction,
    req: &ActionRequest,
    now_ms: u64,
) -> Result<(), ApiError> {
    check_action(rec, action, req)?;
    let actor = req.actor.clone();
    let comment = req.comment.clone();
    let t = &mut rec.trigger;
    match action {
        TriggerAction::Approve => {
            t.approvals.push(ApprovalRecord {
                actor: actor.clone(),
                at_ms: now_ms,
                comment: comment.clone(),
            });
            record(t, HistoryType::Approved, actor, now_ms, comment);
        }
        TriggerAction::Pause => {
            record(t, HistoryType::Paused, actor, now_ms, comment);
            pause(rec, PausedReason::Manual, now_ms);
        }
        TriggerAction::Resume => {
            record(t, HistoryType::Resumed, actor, now_ms, comment);
            resume(rec, now_ms);
        }
        TriggerAction::Skip => {
            record(t, HistoryType::Skipped, actor, now_ms, comment);
            t.paused = false;
            t.paused_reason = None;
            t.remaining_wait_ms = None;
            // A phase not yet published is published, without waiting for acks.
            rec.published = rec.published.max(t.current_phase + 1);
            end_phase(rec, now_ms);
        }
        TriggerAction::Rollout => {
            record(t, HistoryType::Rollout, actor.clone(), now_ms, comment);
            complete(rec, actor, now_ms);
        }
        TriggerAction::Abort => {
            abort(rec, actor, comment, now_ms);
        }
    }
    advance(rec, now_ms, By::Action);
    refresh_active(rec);
    rec.trigger.updated_at_ms = now_ms;
    Ok(())
}

/// The kill switch: aborts the trigger on behalf of `actor`.
pub fn kill(rec: &mut TriggerRecord, actor: Actor, now_ms: u64) {
    if rec.trigger.status.is_finished() {
        return;
    }
    abort(rec, actor, Some("kill switch".to_owned()), now_ms);
    refresh_active(rec);
    rec.trigger.updated_at_ms = now_ms;
}

fn check_action(
    rec: &TriggerRecord,
    action: TriggerAction,
    req: &ActionRequest,
) -> Result<(), ApiError> {
    let t = &rec.trigger;
    let verb = action.as_str();
    // invalid first, then conflict, then forbidden (SPEC.md §6).
    if req
        .comment
        .as_ref()
        .is_some_and(|c| c.len() > MAX_COMMENT_BYTES)
    {
        return Err(ApiError::invalid(format!(
            "comment: at most {MAX_COMMENT_BYTES} bytes"
        )));
    }
    if action.needs_phase_id() && req.phase_id.is_none() {
        return Err(ApiError::invalid(format!(
            "phase_id is required for {verb}: name the phase you act on"
        )));
    }
    if t.status.is_finished() {
        return Err(ApiError::conflict(format!(
            "trigger {} is {}; it no longer accepts actions",
            t.id, t.status
        )));
    }
    if let Some(p) = &req.phase_id
        && Some(p) != t.current_phase_id.as_ref()
    {
        return Err(ApiError::conflict(format!(
            "phase_id {p} is not the current phase ({})",
            t.current_phase_id.as_ref().map_or("none", |id| id.as_str())
        )));
    }
    let phases = &t.pipeline_snapshot.phases;
    let current = phases.get(t.current_phase as usize);
    match action {
        TriggerAction::Approve => {
            if t.phase_state != Some(PhaseState::AwaitingApproval) {
                return Err(ApiError::conflict(
                    "the current phase is not awaiting approval",
                ));
            }
            if t.approvals.iter().any(|a| a.actor == req.actor) {
                return Err(ApiError::conflict(format!(
                    "{} has already approved this phase",
                    req.actor
                )));
            }
            if let Some(ph) = current
                && !ph.approval.allows(&req.actor)
            {
                return Err(ApiError::forbidden(format!(
                    "{} is not an approver of phase {}",
                    req.actor, ph.id
                )));
            }
        }
        TriggerAction::Pause if t.paused => {
            return Err(ApiError::conflict("the trigger is already paused"));
        }
        TriggerAction::Resume if !t.paused => {
            return Err(ApiError::conflict("the trigger is not paused"));
        }
        TriggerAction::Skip | TriggerAction::Rollout => {
            let past: &[Phase] = match action {
                TriggerAction::Skip => current.map(std::slice::from_ref).unwrap_or_default(),
                _ => phases.get(t.current_phase as usize..).unwrap_or_default(),
            };
            if let Some(ph) = past
                .iter()
                .find(|ph| ph.approval.required && !ph.approval.allows(&req.actor))
            {
                return Err(ApiError::forbidden(format!(
                    "{} may not {verb} past phase {}, which requires approval by {}",
                    req.actor,
                    ph.id,
                    ph.approval
                        .approvers
                        .iter()
                        .map(Actor::as_str)
                        .collect::<Vec<_>>()
                        .join(", ")
                )));
            }
        }
        _ => {}
    }
    Ok(())
}

/// Takes in the fleet: agent counts per segment, acks and health. Moves an
/// `applying` phase to `baking` once every known agent of its segments
/// applied it, and applies the phase's health policy. While a segment the
/// pipeline names is not settled (agents restored after a coordinator
/// restart not heard from yet), only the counts are updated: no decision is
/// taken on a fleet the coordinator has not heard.
pub fn observe(rec: &mut TriggerRecord, fleet: &FleetView, now_ms: u64) {
    if rec.trigger.status.is_finished() {
        return;
    }
    let before = Fingerprint::of(rec);
    let settled = fleet_settled(rec, fleet);
    let segments = progress(rec, fleet);
    let mut changed = segments != rec.trigger.segments;
    rec.trigger.segments = segments;
    if settled {
        check_health(rec, now_ms);
        advance(rec, now_ms, By::Fleet);
        refresh_active(rec);
    }
    changed |= Fingerprint::of(rec) != before;
    if changed {
        rec.trigger.updated_at_ms = now_ms;
    }
}

/// What a step changes besides progress counts: compared before and after
/// a step, it tells whether the step did anything, without copying the
/// record (its history may be large). A history entry always changes the
/// last entry, even when the budget keeps the length.
#[derive(PartialEq)]
struct Fingerprint {
    status: TriggerStatus,
    phase: u32,
    state: Option<PhaseState>,
    paused: bool,
    reason: Option<PausedReason>,
    ends: Option<u64>,
    remaining: Option<u64>,
    approvals: usize,
    published: u32,
    apply_deadline: Option<u64>,
    health_ok: bool,
    history: usize,
    last: Option<(HistoryType, u64)>,
}

impl Fingerprint {
    fn of(rec: &TriggerRecord) -> Self {
        let t = &rec.trigger;
        Self {
            status: t.status,
            phase: t.current_phase,
            state: t.phase_state,
            paused: t.paused,
            reason: t.paused_reason,
            ends: t.phase_ends_at_ms,
            remaining: t.remaining_wait_ms,
            approvals: t.approvals.len(),
            published: rec.published,
            apply_deadline: rec.apply_deadline_ms,
            health_ok: rec.health_ok,
            history: t.history.len(),
            last: t.history.last().map(|h| (h.kind, h.at_ms)),
        }
    }
}

/// The progress per segment a fleet view gives the trigger: every segment
/// its pipeline names literally, and every segment of the view (those its
/// globs match that have known agents), with `version_active` as the
/// trigger stands.
pub fn progress(rec: &TriggerRecord, fleet: &FleetView) -> BTreeMap<String, SegmentProgress> {
    let phases = &rec.trigger.pipeline_snapshot.phases;
    let literal = phases
        .iter()
        .flat_map(|ph| ph.segments.iter())
        .filter(|s| s.is_literal())
        .map(|s| s.as_str().to_owned());
    let mut segments: BTreeMap<String, SegmentProgress> = BTreeMap::new();
    for name in literal.chain(fleet.keys().cloned()) {
        let f = fleet.get(&name).copied().unwrap_or_default();
        let live = f.live.min(f.known);
        segments.insert(
            name,
            SegmentProgress {
                version_active: false,
                agents_known: f.known,
                agents_live: live,
                // Acks from an unsettled segment are not trusted yet: a
                // later tick or action must not take them as applied.
                agents_applied: if f.settled || f.known == 0 {
                    f.applied.min(live)
                } else {
                    0
                },
                agents_healthy: f.healthy.min(live),
            },
        );
    }
    let (status, published) = (rec.trigger.status, rec.published as usize);
    for (name, s) in &mut segments {
        s.version_active = active_in(status, phases, published, name);
    }
    segments
}

/// True when every segment the trigger's pipeline names is settled (SPEC.md
/// §4 *Fleet*): decisions may be taken on `fleet`.
pub fn fleet_settled(rec: &TriggerRecord, fleet: &FleetView) -> bool {
    let phases = &rec.trigger.pipeline_snapshot.phases;
    fleet
        .iter()
        .filter(|(name, _)| phases.iter().any(|ph| phase_covers(ph, name)))
        .all(|(_, f)| f.settled || f.known == 0)
}

/// Fires the deadlines that have passed: bake end, apply timeout.
pub fn tick(rec: &mut TriggerRecord, now_ms: u64) {
    let before = Fingerprint::of(rec);
    advance(rec, now_ms, By::Time);
    refresh_active(rec);
    if Fingerprint::of(rec) != before {
        rec.trigger.updated_at_ms = now_ms;
    }
}

/// The next instant at which [`tick`] has something to do, if any.
pub fn next_deadline_ms(rec: &TriggerRecord) -> Option<u64> {
    let t = &rec.trigger;
    if t.status.is_finished() || t.paused {
        return None;
    }
    match t.phase_state? {
        PhaseState::AwaitingApproval => None,
        PhaseState::Applying => rec.apply_deadline_ms,
        PhaseState::Baking => t.phase_ends_at_ms,
    }
}

/// The health ratio over the segments where the new version is active:
/// live healthy agents ÷ known agents (an unreachable agent counts as
/// unhealthy), 1 when none is known.
pub fn health_ratio(t: &Trigger) -> f64 {
    let (mut known, mut healthy) = (0u64, 0u64);
    for s in t.segments.values().filter(|s| s.version_active) {
        known += u64::from(s.agents_known.max(s.agents_live));
        healthy += u64::from(s.agents_healthy);
    }
    if known == 0 {
        1.0
    } else {
        #[allow(clippy::cast_precision_loss)] // agent counts are far below 2^52
        let r = healthy as f64 / known as f64;
        r
    }
}

fn check_health(rec: &mut TriggerRecord, now_ms: u64) {
    let t = &rec.trigger;
    let Some(phase) = t.pipeline_snapshot.phases.get(t.current_phase as usize) else {
        return;
    };
    let policy = phase.health.clone();
    let ok = health_ratio(t) >= policy.min_healthy_ratio;
    let system = Actor::system();
    if !ok && rec.health_ok {
        rec.health_ok = false;
        let (degraded_by, analyses) = crate::analysis::failing(&rec.trigger);
        let mut comment = format!(
            "healthy ratio {:.3} below {}",
            health_ratio(&rec.trigger),
            policy.min_healthy_ratio
        );
        if !analyses.is_empty() {
            comment = format!("{comment}; {analyses}");
        }
        rec.degraded_by = degraded_by;
        let comment = Some(comment);
        record(
            &mut rec.trigger,
            HistoryType::HealthDegraded,
            system.clone(),
            now_ms,
            comment,
        );
        match policy.on_unhealthy {
            phasegate_proto::OnUnhealthy::Pause => {
                if !rec.trigger.paused {
                    record(
                        &mut rec.trigger,
                        HistoryType::Paused,
                        system,
                        now_ms,
                        Some("health".to_owned()),
                    );
                    pause(rec, PausedReason::Health, now_ms);
                }
            }
            phasegate_proto::OnUnhealthy::Abort => {
                abort(rec, system, Some("health".to_owned()), now_ms);
            }
            phasegate_proto::OnUnhealthy::Ignore => {}
        }
    } else if ok && !rec.health_ok {
        rec.health_ok = true;
        let comment = crate::analysis::recovered_comment(rec);
        rec.degraded_by.clear();
        record(
            &mut rec.trigger,
            HistoryType::HealthRecovered,
            system.clone(),
            now_ms,
            comment,
        );
        // Only a pause that health itself made is lifted; a pause by anyone
        // since then changed the reason and stays.
        if rec.trigger.paused && rec.trigger.paused_reason == Some(PausedReason::Health) {
            record(
                &mut rec.trigger,
                HistoryType::Resumed,
                system,
                now_ms,
                Some("health recovered".to_owned()),
            );
            resume(rec, now_ms);
        }
    }
}

/// The most bytes a trigger's history takes encoded (MessagePack maps, as
/// stored; counted by [`entry_bytes`], an upper bound). Well below the
/// NATS message limit (1 MiB by default), so the stored record — the
/// history plus a bounded rest — can always be written. Beyond it (a
/// health probe flapping for hours) the oldest entries after `started`
/// make room; `started` and the latest entries stay.
pub const HISTORY_BUDGET_BYTES: usize = 256 * 1024;

/// Of [`HISTORY_BUDGET_BYTES`], what only the entries that end a trigger
/// (`rollout`, `aborted`, `completed`) may use: room for two of the
/// largest entries, so ending never has to drop what led up to it.
pub const HISTORY_RESERVE_BYTES: usize = 2 * MAX_ENTRY_BYTES;

/// The largest entry [`entry_bytes`] counts for a comment of
/// [`MAX_COMMENT_BYTES`] and an actor of 128 bytes, with margin.
const MAX_ENTRY_BYTES: usize = 2 * 1024;

/// Key names and fixed parts of an encoded entry: the map header, the five
/// keys with their headers, the largest integer, and a type word of up to
/// 31 bytes with its header.
const ENTRY_FIXED_BYTES: usize = 1 + (5 + 9 + 6 + 6 + 8) + 9 + 32;

/// An upper bound of the MessagePack size of `e`, from lengths only: the
/// history's byte count is summed without encoding anything.
pub fn entry_bytes(e: &HistoryEntry) -> usize {
    // A string's header is 1 to 5 bytes; counting 5 keeps this a bound.
    let text = |len: usize| len + 5;
    ENTRY_FIXED_BYTES
        + e.phase_id.as_ref().map_or(1, |p| text(p.as_str().len()))
        + text(e.actor.as_str().len())
        + e.comment.as_ref().map_or(1, |c| text(c.len()))
}

fn record(t: &mut Trigger, kind: HistoryType, actor: Actor, at_ms: u64, comment: Option<String>) {
    let entry = HistoryEntry {
        kind,
        phase_id: t.current_phase_id.clone(),
        actor,
        at_ms,
        comment,
    };
    let ends = matches!(
        kind,
        HistoryType::Rollout | HistoryType::Aborted | HistoryType::Completed
    );
    let budget = if ends {
        HISTORY_BUDGET_BYTES
    } else {
        HISTORY_BUDGET_BYTES - HISTORY_RESERVE_BYTES
    };
    // Lengths only: a sum over the entries, no encoding.
    let mut total: usize = t.history.iter().map(entry_bytes).sum::<usize>() + entry_bytes(&entry);
    // `started` stays; the oldest after it make room.
    let keep = usize::from(
        t.history
            .first()
            .is_some_and(|h| h.kind == HistoryType::Started),
    );
    let mut drop_to = keep;
    while total > budget && drop_to < t.history.len() {
        total -= entry_bytes(&t.history[drop_to]);
        drop_to += 1;
    }
    t.history.drain(keep..drop_to);
    t.history.push(entry);
}

fn current_phase(rec: &TriggerRecord) -> Option<&Phase> {
    rec.trigger
        .pipeline_snapshot
        .phases
        .get(rec.trigger.current_phase as usize)
}

/// Enters the current phase: `awaiting_approval` when it requires approval,
/// else `applying`.
fn begin_phase(rec: &mut TriggerRecord, now_ms: u64) {
    let Some(phase) = current_phase(rec) else {
        return;
    };
    let needs_approval = phase.approval.required;
    let id = phase.id.clone();
    // Health is judged afresh under each phase's own policy: a drop that an
    // earlier phase ignored counts again now.
    rec.health_ok = true;
    let t = &mut rec.trigger;
    t.current_phase_id = Some(id);
    t.approvals.clear();
    t.phase_ends_at_ms = None;
    t.remaining_wait_ms = None;
    record(t, HistoryType::PhaseStarted, Actor::system(), now_ms, None);
    if needs_approval {
        t.phase_state = Some(PhaseState::AwaitingApproval);
        rec.apply_deadline_ms = None;
    } else {
        begin_applying(rec, now_ms);
    }
}

/// Publishes the current phase and waits for acks.
fn begin_applying(rec: &mut TriggerRecord, now_ms: u64) {
    let timeout = current_phase(rec).map_or(0, |ph| ph.apply_timeout_ms);
    let covered: Vec<String> = match current_phase(rec) {
        Some(ph) => rec
            .trigger
            .segments
            .keys()
            .filter(|s| phase_covers(ph, s))
            .cloned()
            .collect(),
        None => Vec::new(),
    };
    let t = &mut rec.trigger;
    t.phase_state = Some(PhaseState::Applying);
    rec.published = rec.published.max(t.current_phase + 1);
    rec.apply_deadline_ms = Some(now_ms.saturating_add(timeout));
    // Acks count against the revision just published: none has arrived yet.
    for s in covered {
        if let Some(p) = t.segments.get_mut(&s) {
            p.agents_applied = 0;
        }
    }
}

/// What moved the trigger: time alone never calls a phase applied (only a
/// fleet view or an action that found it so), so a paused trigger never
/// advances by time.
#[derive(Clone, Copy, PartialEq, Eq)]
enum By {
    Action,
    Fleet,
    Time,
}

/// Moves through every step that is due now, until nothing changes.
fn advance(rec: &mut TriggerRecord, now_ms: u64, by: By) {
    // Each pass either changes phase state or returns; the bound only
    // guards against a bug turning into a hang.
    for _ in 0..(4 * rec.trigger.pipeline_snapshot.phases.len() + 8) {
        let t = &rec.trigger;
        if t.status.is_finished() {
            return;
        }
        let Some(phase) = current_phase(rec) else {
            return;
        };
        let (min_approvals, wait_ms) = (phase.approval.min_approvals, phase.wait_ms);
        match t.phase_state {
            Some(PhaseState::AwaitingApproval) => {
                if t.paused || (t.approvals.len() as u64) < u64::from(min_approvals) {
                    return;
                }
                begin_applying(rec, now_ms);
            }
            Some(PhaseState::Applying) => {
                if by != By::Time && all_applied(rec) {
                    let t = &mut rec.trigger;
                    t.phase_state = Some(PhaseState::Baking);
                    rec.apply_deadline_ms = None;
                    record(t, HistoryType::PhaseApplied, Actor::system(), now_ms, None);
                    if t.paused {
                        // Applied while paused: the whole bake waits for resume.
                        t.remaining_wait_ms = Some(wait_ms);
                        t.phase_ends_at_ms = None;
                        return;
                    }
                    t.phase_ends_at_ms = Some(now_ms.saturating_add(wait_ms));
                } else if !t.paused && rec.apply_deadline_ms.is_some_and(|d| now_ms >= d) {
                    record(
                        &mut rec.trigger,
                        HistoryType::Paused,
                        Actor::system(),
                        now_ms,
                        Some("apply_timeout".to_owned()),
                    );
                    pause(rec, PausedReason::ApplyTimeout, now_ms);
                    return;
                } else {
                    return;
                }
            }
            Some(PhaseState::Baking) => {
                if t.paused || t.phase_ends_at_ms.is_none_or(|end| now_ms < end) {
                    return;
                }
                end_phase(rec, now_ms);
            }
            None => return,
        }
    }
}

fn all_applied(rec: &TriggerRecord) -> bool {
    let Some(phase) = current_phase(rec) else {
        return true;
    };
    rec.trigger
        .segments
        .iter()
        .filter(|(name, _)| phase_covers(phase, name))
        .all(|(_, s)| s.agents_applied >= s.agents_known.max(s.agents_live))
}

/// Ends the current phase: the next one begins, or the trigger completes.
fn end_phase(rec: &mut TriggerRecord, now_ms: u64) {
    let next = rec.trigger.current_phase + 1;
    if (next as usize) < rec.trigger.pipeline_snapshot.phases.len() {
        rec.trigger.current_phase = next;
        begin_phase(rec, now_ms);
    } else {
        complete(rec, Actor::system(), now_ms);
    }
}

fn pause(rec: &mut TriggerRecord, reason: PausedReason, now_ms: u64) {
    let t = &mut rec.trigger;
    t.paused = true;
    t.paused_reason = Some(reason);
    if t.phase_state == Some(PhaseState::Baking) {
        t.remaining_wait_ms = Some(t.phase_ends_at_ms.map_or(0, |e| e.saturating_sub(now_ms)));
        t.phase_ends_at_ms = None;
    }
}

fn resume(rec: &mut TriggerRecord, now_ms: u64) {
    let timeout = current_phase(rec).map_or(0, |ph| ph.apply_timeout_ms);
    let t = &mut rec.trigger;
    t.paused = false;
    t.paused_reason = None;
    match t.phase_state {
        Some(PhaseState::Baking) => {
            let left = t.remaining_wait_ms.take().unwrap_or(0);
            t.phase_ends_at_ms = Some(now_ms.saturating_add(left));
        }
        // The apply window starts again: "resume waits again".
        Some(PhaseState::Applying) => rec.apply_deadline_ms = Some(now_ms.saturating_add(timeout)),
        _ => {}
    }
}

fn finish(rec: &mut TriggerRecord, status: TriggerStatus) {
    let t = &mut rec.trigger;
    t.status = status;
    t.phase_state = None;
    t.paused = false;
    t.paused_reason = None;
    t.phase_ends_at_ms = None;
    t.remaining_wait_ms = None;
    rec.apply_deadline_ms = None;
}

fn complete(rec: &mut TriggerRecord, actor: Actor, now_ms: u64) {
    rec.published = u32::try_from(rec.trigger.pipeline_snapshot.phases.len()).unwrap_or(u32::MAX);
    finish(rec, TriggerStatus::Completed);
    record(
        &mut rec.trigger,
        HistoryType::Completed,
        actor,
        now_ms,
        None,
    );
}

fn abort(rec: &mut TriggerRecord, actor: Actor, comment: Option<String>, now_ms: u64) {
    finish(rec, TriggerStatus::Aborted);
    record(
        &mut rec.trigger,
        HistoryType::Aborted,
        actor,
        now_ms,
        comment,
    );
}

/// Recomputes `version_active` of every segment.
fn refresh_active(rec: &mut TriggerRecord) {
    let status = rec.trigger.status;
    let published = rec.published as usize;
    let phases = &rec.trigger.pipeline_snapshot.phases;
    for (name, s) in &mut rec.trigger.segments {
        s.version_active = active_in(status, phases, published, name);
    }
}

/// Whether the new version is active in `segment`.
fn active_in(status: TriggerStatus, phases: &[Phase], published: usize, segment: &str) -> bool {
    match status {
        TriggerStatus::Completed => true,
        TriggerStatus::Aborted => false,
        TriggerStatus::InProgress => phases
            .iter()
            .take(published)
            .any(|ph| phase_covers(ph, segment)),
    }
}
