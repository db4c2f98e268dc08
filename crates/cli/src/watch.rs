//! `phasegate trigger watch ID`: a live view of a rollout until it ends.
//!
//! On a terminal the view is redrawn in place: phases with their state, a
//! bar for the bake timer, per-segment agent counts, approvals pending,
//! and the history as it happens. Without a terminal it prints plain lines,
//! one per change. Exit code: 0 completed, 20 aborted.

use std::io::IsTerminal;
use std::time::Duration;

use phasegate_client::PhasegateClient;
use phasegate_proto::{PhaseState, Trigger, TriggerId, TriggerStatus};

use crate::Global;
use crate::ops::{history_line, state_of};
use crate::output::{Table, bar, dur, sanitize, say};

/// Exit code of a watch that saw the trigger aborted.
pub(crate) const EXIT_ABORTED: u8 = 20;

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(0))
}

/// The screen of a trigger, as text.
pub(crate) fn render(t: &Trigger, now: u64) -> String {
    let head = format!(
        "rollout {}  {} {}  v{} → v{}  pipeline {}",
        t.id, t.entity.kind, t.entity.name, t.from_version, t.to_version, t.pipeline,
    );
    let mut out = format!("{}\nstatus: {}\n\n", sanitize(&head), state_of(t));
    let mut table = Table::new(&["PHASE", "STATE", "SEGMENTS", "PROGRESS"]);
    for (i, ph) in t.pipeline_snapshot.phases.iter().enumerate() {
        let i = u32::try_from(i).unwrap_or(u32::MAX);
        let done = t.status == TriggerStatus::Completed || i < t.current_phase;
        let current = t.status == TriggerStatus::InProgress && i == t.current_phase;
        let state = if done {
            "done".to_owned()
        } else if current {
            state_of(t)
        } else if t.status == TriggerStatus::Aborted && i == t.current_phase {
            "aborted".to_owned()
        } else {
            "pending".to_owned()
        };
        let progress = if current {
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
                Some(PhaseState::AwaitingApproval) => {
                    let have: Vec<&str> = t.approvals.iter().map(|a| a.actor.as_str()).collect();
                    let from: Vec<&str> =
                        ph.approval.approvers.iter().map(|a| a.as_str()).collect();
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
        } else {
            String::new()
        };
        let segs: Vec<&str> = ph.segments.iter().map(|s| s.as_str()).collect();
        table.row(vec![ph.id.to_string(), state, segs.join(","), progress]);
    }
    out.push_str(&table.render());
    out.push_str("\n\n");
    let mut segs = Table::new(&["SEGMENT", "NEW VERSION", "APPLIED/LIVE", "HEALTHY/LIVE"]);
    for (name, s) in &t.segments {
        segs.row(vec![
            name.clone(),
            if s.version_active {
                "active".into()
            } else {
                "-".into()
            },
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

pub(crate) async fn watch(
    g: &Global,
    c: &PhasegateClient,
    id: TriggerId,
    interval_ms: u64,
) -> anyhow::Result<u8> {
    let tty = std::io::stdout().is_terminal() && g.output == crate::Format::Table;
    let mut seen_history = 0usize;
    let mut last_state = String::new();
    let mut analyses = crate::analysis::Seen::new();
    loop {
        let t = c.trigger_get(id.clone()).await?;
        match g.output {
            crate::Format::Json => {
                // One JSON document per change.
                let state = crate::output::json(&t, false)?;
                if state != last_state {
                    println!("{state}");
                    last_state = state;
                }
            }
            crate::Format::Table if tty => {
                print!("\x1b[2J\x1b[H{}", render(&t, now_ms()));
            }
            crate::Format::Table => {
                for h in t.history.iter().skip(seen_history) {
                    println!("{}", history_line(h));
                }
                seen_history = t.history.len();
                for line in crate::analysis::changes(&t, &mut analyses) {
                    println!("{line}");
                }
            }
        }
        if t.status.is_finished() {
            if !tty && g.output == crate::Format::Table {
                say!("rollout {} {}", t.id, state_of(&t));
            }
            return Ok(match t.status {
                TriggerStatus::Aborted => EXIT_ABORTED,
                _ => 0,
            });
        }
        tokio::time::sleep(Duration::from_millis(interval_ms.max(50))).await;
    }
}
