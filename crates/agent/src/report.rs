//! Heartbeats and acks to the coordinator: every `--heartbeat-ms`, at once
//! when a new revision is applied (or the blocked keys change), and one
//! last report saying the agent is leaving when it stops cleanly.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use phasegate_bus::Client;
use phasegate_proto::{AgentReport, Encoding, encode};
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};

use crate::served::{Shared, now_ms};

pub(crate) enum ReportMsg {
    /// Every `heartbeat_ms`: report, and while the watch is caught up,
    /// note the agent in sync.
    Tick,
    /// A revision was applied: ack it now.
    Applied,
    /// The agent is stopping: send one report with `leaving`, flushed
    /// (bounded), then nothing more; answers once done.
    Leave(RpcReplyPort<()>),
}

pub(crate) struct ReportArgs {
    pub(crate) shared: Arc<Shared>,
    pub(crate) client: Client,
    pub(crate) tier: Option<String>,
    pub(crate) heartbeat_ms: u64,
}

pub(crate) struct ReportState {
    args: ReportArgs,
    subject: String,
    /// The leaving report was sent: heartbeats would contradict it.
    left: bool,
}

pub(crate) struct Reporter;

impl Actor for Reporter {
    type Msg = ReportMsg;
    type State = ReportState;
    type Arguments = ReportArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<ReportMsg>,
        args: ReportArgs,
    ) -> Result<ReportState, ActorProcessingErr> {
        myself.send_interval(Duration::from_millis(args.heartbeat_ms), || ReportMsg::Tick);
        let subject = args.client.subjects().agent_report(&args.shared.segment);
        Ok(ReportState {
            args,
            subject,
            left: false,
        })
    }

    async fn handle(
        &self,
        _myself: ActorRef<ReportMsg>,
        msg: ReportMsg,
        state: &mut ReportState,
    ) -> Result<(), ActorProcessingErr> {
        let shared = &state.args.shared;
        let connected = state.args.client.is_connected();
        shared.connected.store(connected, Ordering::Relaxed);
        match msg {
            ReportMsg::Leave(reply) => {
                if connected && !state.left {
                    state.send(true).await;
                    // Bounded: a stop must not hang on a slow server.
                    state.args.client.flush().await;
                    tracing::info!("told the coordinator this agent is leaving");
                }
                state.left = true;
                let _ = reply.send(());
            }
            ReportMsg::Tick | ReportMsg::Applied if state.left || !connected => {}
            ReportMsg::Tick => {
                if shared.current.load(Ordering::Relaxed) {
                    // Connected with a caught-up watch on the desired
                    // state: what we serve is what the coordinator
                    // published.
                    shared.last_sync_ms.store(now_ms(), Ordering::Relaxed);
                }
                state.send(false).await;
            }
            ReportMsg::Applied => state.send(false).await,
        }
        Ok(())
    }
}

impl ReportState {
    /// Publishes one report (fire and forget; the next heartbeat makes up
    /// for a lost one).
    async fn send(&self, leaving: bool) {
        let shared = &self.args.shared;
        // The watermark first: `Acquire` pairs with the sync actor's
        // `Release`, so the blocks read next are at least as new.
        let applied_revision = shared.applied_revision.load(Ordering::Acquire);
        let report = AgentReport {
            agent_id: shared.agent_id.clone(),
            segment: shared.segment.clone(),
            tier: self.args.tier.clone(),
            // Unhealthy while failing an analysis, so the phase's health
            // policy applies to it (SPEC.md §3).
            healthy: shared.healthy.load(Ordering::Relaxed) && !shared.analysis.failing(),
            applied_revision,
            stale: shared.stale(),
            heartbeat_ms: self.args.heartbeat_ms,
            sent_at_ms: now_ms(),
            blocked: shared.blocked.load().as_ref().clone(),
            leaving,
            analyses: shared.analysis.statuses(),
        };
        match encode(Encoding::MsgPack, &report) {
            Ok(body) => {
                if let Err(e) = self
                    .args
                    .client
                    .publish(self.subject.clone(), body.into())
                    .await
                {
                    tracing::debug!(error = %e, "cannot send report");
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot encode report"),
        }
    }
}
