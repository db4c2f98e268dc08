//! The root of the coordinator's actors. Restart-or-stop is decided in two
//! places only: a failed trigger actor is restarted from the store by the
//! catalog (`Catalog::handle_supervisor_evt`); a failed catalog or agent
//! directory ends the process here — their state is all in JetStream, and a
//! fresh process (started again by the service manager) rebuilds it
//! exactly, which an in-place restart could not guarantee.

use ractor::{Actor, ActorProcessingErr, ActorRef, SupervisionEvent};
use tokio::sync::watch;

/// The supervisor takes no messages of its own.
pub(crate) enum SupervisorMsg {}

pub(crate) struct Supervisor;

pub(crate) struct SupervisorState {
    failed: std::sync::Arc<watch::Sender<Option<String>>>,
}

impl Actor for Supervisor {
    type Msg = SupervisorMsg;
    type State = SupervisorState;
    type Arguments = std::sync::Arc<watch::Sender<Option<String>>>;

    async fn pre_start(
        &self,
        _myself: ActorRef<SupervisorMsg>,
        failed: std::sync::Arc<watch::Sender<Option<String>>>,
    ) -> Result<SupervisorState, ActorProcessingErr> {
        Ok(SupervisorState { failed })
    }

    async fn handle_supervisor_evt(
        &self,
        _myself: ActorRef<SupervisorMsg>,
        evt: SupervisionEvent,
        state: &mut SupervisorState,
    ) -> Result<(), ActorProcessingErr> {
        let reason = match evt {
            SupervisionEvent::ActorFailed(cell, err) => {
                Some(format!("actor {} failed: {err}", cell.get_id()))
            }
            SupervisionEvent::ActorTerminated(cell, _, reason) => Some(format!(
                "actor {} stopped: {}",
                cell.get_id(),
                reason.unwrap_or_default()
            )),
            _ => None,
        };
        if let Some(r) = reason {
            tracing::error!(reason = %r, "a core actor of the coordinator ended");
            let _ = state.failed.send(Some(r));
        }
        Ok(())
    }
}
