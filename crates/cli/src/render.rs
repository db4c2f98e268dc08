//! What the operator commands print for people: one renderer per result,
//! so a command says what it asks and this module how the answer looks.
//! JSON needs no renderer here: [`crate::output::show`] prints results as
//! they are.
//!
//! Every table cell and line goes through [`Table`] or [`say!`], which
//! [`sanitize`] what came from the network.

use std::cmp::Ordering;

use phasegate_proto::{
    AgentInfo, Condition, EntityKind, EntityResult, EntitySpec, HistoryEntry, Phase, PhaseState,
    Pipeline, SegmentProgress, Trigger, TriggerStatus, TriggerSummary,
};

use crate::output::{Table, bar, clock, dur, or_dash, sanitize, say};

/// The columns a phase shows wherever it is listed.
const PHASE_HEAD: [&str; 6] = [
    "PHASE",
    "SEGMENTS",
    "SHARE",
    "BAKE",
    "APPROVAL",
    "ON UNHEALTHY",
];

/// A phase under [`PHASE_HEAD`].
fn phase_row(ph: &Phase) -> Vec<String> {
    let segs: Vec<&str> = ph.segments.iter().map(|s| s.as_str()).collect();
    let approval = if ph.approval.required {
        let who: Vec<&str> = ph.approval.approvers.iter().map(|a| a.as_str()).collect();
        format!(
            "{} of {}",
            ph.approval.min_approvals,
            if who.is_empty() {
                "anyone".to_owned()
            } else {
                who.join(",")
            }
        )
    } else {
        "-".to_owned()
    };
    vec![
        ph.id.to_string(),
        segs.join(","),
        format!("{}%", ph.pass_percentage),
        dur(ph.wait_ms),
        approval,
        format!(
            "{} <{}",
            ph.health.on_unhealthy.to_string(),
            ph.health.min_healthy_ratio
        ),
    ]
}

/// `pipeline put`: what was stored.
pub(crate) fn pipeline_stored(p: &Pipeline) {
    say!("pipeline {} stored ({} phases)", p.name, p.phases.len());
}

/// `pipeline get`: the pipeline and its phases.
pub(crate) fn pipeline(p: &Pipeline) {
    say!(
        "pipeline {}{}",
        p.name,
        if p.description.is_empty() {
            String::new()
        } else {
            format!(": {}", p.description)
        }
    );
    let mut t = Table::new(&PHASE_HEAD);
    for ph in &p.phases {
        t.row(phase_row(ph));
    }
    t.print();
    if let Some(analyses) = crate::analysis::pipeline_table(p) {
        println!();
        analyses.print();
    }
}

/// `pipeline list`.
pub(crate) fn pipelines(ps: &[Pipeline]) {
    let mut t = Table::new(&["NAME", "PHASES", "DESCRIPTION"]);
    for p in ps {
        let ids: Vec<&str> = p.phases.iter().map(|ph| ph.id.as_str()).collect();
        t.row(vec![
            p.name.to_string(),
            ids.join(" → "),
            p.description.clone(),
        ]);
    }
    t.print();
}

/// `gate put` / `config put`: the version stored, and how to follow the
/// rollout it started, if any.
pub(crate) fn entity_stored(kind: EntityKind, r: &EntityResult) {
    say!("{kind} {} is at version {}", r.spec.name, r.spec.version);
    if let Some(t) = &r.trigger {
        say!(
            "rollout {} started through pipeline {} (phase {}); follow it with: phasegate trigger watch {}",
            t.id,
            t.pipeline,
            or_dash(t.current_phase_id.as_ref()),
            t.id
        );
    }
}

/// `gate get` / `config get`: the spec, its rules, its active rollout.
pub(crate) fn entity(kind: EntityKind, r: &EntityResult) {
    let s = &r.spec;
    say!(
        "{kind} {} v{} {}",
        s.name,
        s.version,
        if s.enabled { "enabled" } else { "DISABLED" }
    );
    say!("pipeline: {}", or_dash(s.pipeline.as_ref()));
    if !s.description.is_empty() {
        say!("description: {}", s.description);
    }
    let mut t = Table::new(&["RULE", "SHARE", "CONDITIONS"]);
    for rule in &s.rules {
        let conds: Vec<String> = rule.conditions.iter().map(condition).collect();
        t.row(vec![
            rule.id.to_string(),
            format!("{}%", rule.pass_percentage),
            if conds.is_empty() {
                "everyone".into()
            } else {
                conds.join(" and ")
            },
        ]);
    }
    t.print();
    if let Some(tr) = &r.trigger {
        say!(
            "active rollout {}: phase {} {}",
            tr.id,
            or_dash(tr.current_phase_id.as_ref()),
            trigger_state(tr)
        );
    }
}

/// `country any ["DE","FR"]`.
fn condition(c: &Condition) -> String {
    format!(
        "{} {} {}",
        c.field,
        c.op,
        serde_json::to_string(&c.values).unwrap_or_default()
    )
}

/// `gate list` / `config list`.
pub(crate) fn entities(specs: &[EntitySpec]) {
    let mut t = Table::new(&["NAME", "VERSION", "ENABLED", "RULES", "PIPELINE"]);
    for s in specs {
        t.row(vec![
            s.name.to_string(),
            s.version.to_string(),
            s.enabled.to_string(),
            s.rules.len().to_string(),
            or_dash(s.pipeline.as_ref()),
        ]);
    }
    t.print();
}

/// `in_progress: baking`, `paused (health)`, `completed` …
pub(crate) fn trigger_state(t: &Trigger) -> String {
    summary_state(&t.into())
}

/// The state column of a trigger summary.
fn summary_state(t: &TriggerSummary) -> String {
    match t.status {
        TriggerStatus::InProgress => {
            let state = t.phase_state.map(|s| s.to_string()).unwrap_or_default();
            match (t.paused, t.paused_reason) {
                (true, Some(r)) => format!("{state}, paused ({})", r),
                (true, None) => format!("{state}, paused"),
                _ => state,
            }
        }
        s => s.to_string(),
    }
}

/// `trigger list`.
pub(crate) fn triggers(ts: &[TriggerSummary]) {
    let mut t = Table::new(&[
        "ID", "ENTITY", "VERSIONS", "PIPELINE", "PHASE", "STATE", "CREATED",
    ]);
    for tr in ts {
        t.row(vec![
            tr.id.to_string(),
            format!("{} {}", tr.entity.kind, tr.entity.name),
            format!("{}→{}", tr.from_version, tr.to_version),
            tr.pipeline.to_string(),
            or_dash(tr.current_phase_id.as_ref()),
            summary_state(tr),
            clock(tr.created_at_ms),
        ]);
    }
    t.print();
}

/// An action's result: where the trigger stands now.
pub(crate) fn acted(t: &Trigger) {
    say!(
        "trigger {}: phase {} {}",
        t.id,
        or_dash(t.current_phase_id.as_ref()),
        trigger_state(t)
    );
}

/// `trigger get`: the rollout whole, history last.
pub(crate) fn trigger(t: &Trigger) {
    say!(
        "trigger {}  {} {}  v{} → v{}  pipeline {}  by {}",
        t.id,
        t.entity.kind,
        t.entity.name,
        t.from_version,
        t.to_version,
        t.pipeline,
        t.created_by
    );
    say!("status: {}", trigger_state(t));
    trigger_phases(t).print();
    if let Some(end) = t.phase_ends_at_ms {
        say!("bake ends at {} UTC", clock(end));
    }
    if let Some(left) = t.remaining_wait_ms {
        say!("bake left when resumed: {}", dur(left));
    }
    if !t.approvals.is_empty() {
        let who: Vec<String> = t.approvals.iter().map(|a| a.actor.to_string()).collect();
        say!("approved by: {}", who.join(", "));
    }
    let mut segs = Table::new(&["SEGMENT", "NEW VERSION", "LIVE", "APPLIED", "HEALTHY"]);
    for (name, s) in &t.segments {
        segs.row(vec![
            name.clone(),
            new_version(s),
            s.agents_live.to_string(),
            s.agents_applied.to_string(),
            s.agents_healthy.to_string(),
        ]);
    }
    println!();
    segs.print();
    if let Some(analyses) = crate::analysis::table(t) {
        println!();
        analyses.print();
    }
    println!();
    for h in &t.history {
        println!("{}", history_line(h));
    }
}

/// The phases of a trigger, marked `done` or `→` (the current one).
fn trigger_phases(t: &Trigger) -> Table {
    let mut head = vec![""];
    head.extend(PHASE_HEAD);
    let mut table = Table::new(&head);
    for (i, ph) in t.pipeline_snapshot.phases.iter().enumerate() {
        let mark = match (t.status, (i as u32).cmp(&t.current_phase)) {
            (TriggerStatus::Completed, _) | (_, Ordering::Less) => "done",
            (TriggerStatus::InProgress, Ordering::Equal) => "→",
            _ => "",
        };
        let mut row = vec![mark.to_owned()];
        row.extend(phase_row(ph));
        table.row(row);
    }
    table
}

/// The NEW VERSION cell of a segment.
fn new_version(s: &SegmentProgress) -> String {
    if s.version_active {
        "active".into()
    } else {
        "-".into()
    }
}

/// One history entry as a line, [`sanitize`]d: actors and comments are
/// anybody's text.
pub(crate) fn history_line(h: &HistoryEntry) -> String {
    let line = format!(
        "{}  {:<16} {:<14} {}{}",
        clock(h.at_ms),
        h.kind.to_string(),
        or_dash(h.phase_id.as_ref()),
        h.actor,
        h.comment
            .as_ref()
            .map(|c| format!(": {c}"))
            .unwrap_or_default()
    );
    sanitize(&line).into_owned()
}

/// `agents`.
pub(crate) fn agents(list: &[AgentInfo]) {
    let mut t = Table::new(&[
        "AGENT",
        "SEGMENT",
        "TIER",
        "LIVE",
        "HEALTHY",
        "STALE",
        "APPLIED",
        "BLOCKED",
        "LAST SEEN",
    ]);
    for a in list {
        let blocked: Vec<&str> = a.blocked.iter().map(|b| b.key.as_str()).collect();
        t.row(vec![
            a.agent_id.to_string(),
            a.segment.to_string(),
            or_dash(a.tier.as_ref()),
            a.live.to_string(),
            a.healthy.to_string(),
            a.stale.to_string(),
            a.applied_revision.to_string(),
            if blocked.is_empty() {
                "-".to_owned()
            } else {
                blocked.join(",")
            },
            clock(a.last_seen_ms),
        ]);
    }
    t.print();
}

/// The screen of `trigger watch` on a terminal, as text: phases with
/// their state and progress, segments, history.
pub(crate) fn watch_screen(t: &Trigger, now: u64) -> String {
    let head = format!(
        "rollout {}  {} {}  v{} → v{}  pipeline {}",
        t.id, t.entity.kind, t.entity.name, t.from_version, t.to_version, t.pipeline,
    );
    let mut out = format!("{}\nstatus: {}\n\n", sanitize(&head), trigger_state(t));
    let mut table = Table::new(&["PHASE", "STATE", "SEGMENTS", "PROGRESS"]);
    for (i, ph) in t.pipeline_snapshot.phases.iter().enumerate() {
        let i = u32::try_from(i).unwrap_or(u32::MAX);
        let current = t.status == TriggerStatus::InProgress && i == t.current_phase;
        let progress = if current {
            phase_progress(t, ph, now)
        } else {
            String::new()
        };
        let segs: Vec<&str> = ph.segments.iter().map(|s| s.as_str()).collect();
        table.row(vec![
            ph.id.to_string(),
            phase_state(t, i),
            segs.join(","),
            progress,
        ]);
    }
    out.push_str(&table.render());
    out.push_str("\n\n");
    let mut segs = Table::new(&["SEGMENT", "NEW VERSION", "APPLIED/LIVE", "HEALTHY/LIVE"]);
    for (name, s) in &t.segments {
        segs.row(vec![
            name.clone(),
            new_version(s),
            format!("{}/{}", s.agents_applied, s.agents_live),
            format!("{}/{}", s.agents_healthy, s.agents_live),
        ]);
    }
    out.push_str(&segs.render());
    if let Some(analyses) = crate::analysis::table(t) {
        out.push_str("\n\n");
        out.push_str(&analyses.render());
    }
    out.push_str("\n\nhistory:\n");
    for h in &t.history {
        out.push_str(&history_line(h));
        out.push('\n');
    }
    out
}

/// The STATE cell of phase `i` on the watch screen.
fn phase_state(t: &Trigger, i: u32) -> String {
    if t.status == TriggerStatus::Completed || i < t.current_phase {
        "done".to_owned()
    } else if t.status == TriggerStatus::InProgress && i == t.current_phase {
        trigger_state(t)
    } else if t.status == TriggerStatus::Aborted && i == t.current_phase {
        "aborted".to_owned()
    } else {
        "pending".to_owned()
    }
}

/// The PROGRESS cell of the current phase: the bake timer, the
/// approvals, or the agents that applied it.
fn phase_progress(t: &Trigger, ph: &Phase, now: u64) -> String {
    match t.phase_state {
        Some(PhaseState::Baking) => {
            let left = t
                .phase_ends_at_ms
                .map(|e| e.saturating_sub(now))
                .or(t.remaining_wait_ms)
                .unwrap_or(0);
            format!(
                "{} {} left of {}",
                bar(ph.wait_ms.saturating_sub(left), ph.wait_ms, 20),
                dur(left),
                dur(ph.wait_ms)
            )
        }
        Some(PhaseState::AwaitingApproval) => approval_progress(t, ph),
        Some(PhaseState::Applying) => {
            let (live, applied) = t
                .segments
                .iter()
                .filter(|(s, _)| ph.segments.iter().any(|p| p.matches(s)))
                .fold((0, 0), |(l, a), (_, s)| {
                    (l + s.agents_live, a + s.agents_applied)
                });
            format!(
                "{} {applied}/{live} agents applied",
                bar(u64::from(applied), u64::from(live), 20)
            )
        }
        None => String::new(),
    }
}

/// `approvals 1/2 by alice, from alice,bob`.
fn approval_progress(t: &Trigger, ph: &Phase) -> String {
    let have: Vec<&str> = t.approvals.iter().map(|a| a.actor.as_str()).collect();
    let from: Vec<&str> = ph.approval.approvers.iter().map(|a| a.as_str()).collect();
    format!(
        "approvals {}/{}{}{}",
        have.len(),
        ph.approval.min_approvals,
        if have.is_empty() {
            String::new()
        } else {
            format!(" by {}", have.join(","))
        },
        if from.is_empty() {
            ", anyone may approve".to_owned()
        } else {
            format!(", from {}", from.join(","))
        }
    )
}

/// One row of what `apply` would change.
pub(crate) struct Change {
    /// `pipeline`, `gate` or `config`.
    pub(crate) kind: String,
    pub(crate) name: String,
    /// `create`, `unchanged`, `v2 → v3, rollout through pipeline p` …
    pub(crate) change: String,
}

/// What `apply` would change, as a table.
pub(crate) fn changes(rows: &[Change]) {
    let mut t = Table::new(&["KIND", "NAME", "CHANGE"]);
    for r in rows {
        t.row(vec![r.kind.clone(), r.name.clone(), r.change.clone()]);
    }
    t.print();
}

/// What `apply` did to one gate or config.
pub(crate) fn entity_applied(kind: EntityKind, r: &EntityResult) {
    match &r.trigger {
        Some(t) => say!(
            "{kind} {}: v{}, rollout {} started (phasegate trigger watch {})",
            r.spec.name,
            r.spec.version,
            t.id,
            t.id
        ),
        None => say!("{kind} {}: v{}", r.spec.name, r.spec.version),
    }
}
