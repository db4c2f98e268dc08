//! What a trigger's steps leave behind besides the record: spans in the
//! trigger's trace (which every step joins, across restarts), log lines
//! and metrics.

use phasegate_proto::{HistoryEntry, HistoryType, PhaseState, Trigger, now_ms};

use super::TriggerState;

impl TriggerState {
    /// A span of this trigger's trace.
    pub(super) fn span(&self, name: &str) -> tracing::Span {
        let phase = self
            .active()
            .and_then(|a| a.trigger.current_phase_id.as_ref())
            .map_or("", |p| p.as_str())
            .to_owned();
        let span = tracing::info_span!(
            "phasegate.rollout",
            otel.name = %name,
            phasegate.trigger_id = %self.id,
            phasegate.entity = %self.key,
            phasegate.phase_id = %phase,
            trace_id = %self.trace_id(),
        );
        phasegate_bus::trace::continue_from_traceparent(&span, self.trace_parent.as_deref());
        span
    }

    /// The trigger's trace id, for logs (empty when traces are off).
    pub(super) fn trace_id(&self) -> &str {
        self.trace_parent
            .as_deref()
            .and_then(phasegate_bus::trace::trace_id_of)
            .unwrap_or("")
    }

    /// Spans, log lines and metrics for the steps a commit recorded in
    /// history: the entries of `t` after the first `seen`.
    pub(super) fn record_steps(
        &mut self,
        t: &Trigger,
        seen: usize,
        state_before: Option<PhaseState>,
    ) {
        let now = now_ms();
        for h in t.history.iter().skip(seen) {
            self.record_step(h);
        }
        if t.phase_state == Some(PhaseState::Applying) && state_before != Some(PhaseState::Applying)
        {
            self.applying_since = Some(now);
        }
    }

    /// One step: its span, its log line, its count, and the apply latency
    /// when it ends an `applying` phase.
    fn record_step(&mut self, h: &HistoryEntry) {
        let kind = h.kind.as_str();
        let phase = h.phase_id.as_ref().map_or("", |p| p.as_str());
        let span = tracing::info_span!(
            "phasegate.step",
            otel.name = %kind,
            phasegate.trigger_id = %self.id,
            phasegate.entity = %self.key,
            phasegate.phase_id = %phase,
            phasegate.actor = %h.actor,
            trace_id = %self.trace_id(),
        );
        phasegate_bus::trace::continue_from_traceparent(&span, self.trace_parent.as_deref());
        span.in_scope(|| {
            tracing::info!(
                instance = self.store.lease.instance(),
                at_ms = h.at_ms,
                comment = h.comment.as_deref().unwrap_or(""),
                "{kind}"
            )
        });
        self.metrics.inc(
            "phasegate_phase_transitions_total",
            "steps recorded in trigger histories, by type",
            &[("type", kind)],
            1.0,
        );
        if h.kind == HistoryType::PhaseApplied
            && let Some(since) = self.applying_since.take()
        {
            #[allow(clippy::cast_precision_loss)] // milliseconds, far below 2^52
            let secs = h.at_ms.saturating_sub(since) as f64 / 1000.0;
            self.metrics.observe(
                "phasegate_apply_latency_seconds",
                "from a phase's publish to every live agent having applied it",
                &[],
                secs,
            );
        }
    }
}
