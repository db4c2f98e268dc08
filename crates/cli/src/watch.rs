//! `phasegate trigger watch ID`: a live view of a rollout until it ends.
//!
//! On a terminal the view is redrawn in place: phases with their state, a
//! bar for the bake timer, per-segment agent counts, approvals pending,
//! and the history as it happens. Without a terminal it prints plain lines,
//! one per change. Exit code: 0 completed, 20 aborted.

use std::io::IsTerminal;
use std::time::Duration;

use phasegate_client::PhasegateClient;
use phasegate_proto::{TriggerId, TriggerStatus};

use crate::Global;
use crate::output::say;
use crate::render::{history_line, trigger_state, watch_screen};

/// Exit code of a watch that saw the trigger aborted.
pub(crate) const EXIT_ABORTED: u8 = 20;

use phasegate_proto::now_ms;

/// Polls `id` every `interval_ms` and shows each change: the screen on a
/// terminal, new history lines otherwise, a JSON document per change with
/// `-o json`. Returns the exit code once the trigger has finished.
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
                print!("\x1b[2J\x1b[H{}", watch_screen(&t, now_ms()));
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
                say!("rollout {} {}", t.id, trigger_state(&t));
            }
            return Ok(match t.status {
                TriggerStatus::Aborted => EXIT_ABORTED,
                _ => 0,
            });
        }
        tokio::time::sleep(Duration::from_millis(interval_ms.max(50))).await;
    }
}
