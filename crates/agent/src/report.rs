//! Heartbeats and acks to the coordinator: every `--heartbeat-ms`, and at
//! once when a new revision is applied.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use phasegate_bus::Client;
use phasegate_proto::{AgentReport, Encoding, encode};
use ractor::{Actor, ActorProcessingErr, ActorRef};

use crate::served::{Shared, now_ms};

pub(crate) enum ReportMsg {
    /// The heartbeat.
    Tick,
    /// A revision was applied: ack it now.
    Applied,
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
        Ok(ReportState { args, subject })
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
        if let ReportMsg::Tick = msg
            && connected
            && shared.current.load(Ordering::Relaxed)
        {
            // Connected with a caught-up watch on the desired state: what
            // we serve is what the coordinator published.
            shared.last_sync_ms.store(now_ms(), Ordering::Relaxed);
        }
        if !connected {
            return Ok(());
        }
        // The watermark first: `Acquire` pairs with the sync actor's
        // `Release`, so the blocks read next are at least as new.
        let applied_revision = shared.applied_revision.load(Ordering::Acquire);
        let report = AgentReport {
            agent_id: shared.agent_id.clone(),
            segment: shared.segment.clone(),
            tier: state.args.tier.clone(),
            healthy: shared.healthy.load(Ordering::Relaxed),
            applied_revision,
            stale: shared.stale(),
            heartbeat_ms: state.args.heartbeat_ms,
            sent_at_ms: now_ms(),
            blocked: shared.blocked.load().as_ref().clone(),
            leaving: false,
        };
        match encode(Encoding::MsgPack, &report) {
            Ok(body) => {
                if let Err(e) = state
                    .args
                    .client
                    .publish(state.subject.clone(), body.into())
                    .await
                {
                    tracing::debug!(error = %e, "cannot send report");
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot encode report"),
        }
        Ok(())
    }
}
