//! Every command the test sends, with the answer it got: `ok` ones must be
//! reflected in the final state, `unavailable` ones must never take effect.
//! Each command carries an actor used by no other command, so its effects
//! (a history entry, a trigger's `created_by`) name it unambiguously.

use phasegate_bus::BusError;
use phasegate_client::TriggerAction;
use phasegate_proto::{ErrorCode, HistoryType, TriggerId};

/// What a command got back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// `ok: true`.
    Ok,
    /// `ok: false` with this code, from the coordinator.
    Refused(ErrorCode),
    /// Nobody serves the subject (no leader): not carried out.
    NoResponders,
    /// No answer in time: the outcome is unknown, nothing is checked.
    TimedOut,
    /// Any other transport failure: outcome unknown.
    Transport,
}

impl Answer {
    /// The answer of a result.
    pub fn of<T>(r: &Result<T, BusError>) -> Self {
        match r {
            Ok(_) => Self::Ok,
            Err(BusError::Api(e)) => Self::Refused(e.code),
            Err(BusError::NoResponders { .. }) => Self::NoResponders,
            Err(BusError::TimedOut { .. }) => Self::TimedOut,
            Err(_) => Self::Transport,
        }
    }

    /// Whether the contract says the command was not carried out and never
    /// will be (`unavailable`; no responder is the same promise, made by
    /// NATS).
    pub fn never_takes_effect(self) -> bool {
        matches!(
            self,
            Self::Refused(ErrorCode::Unavailable) | Self::NoResponders
        )
    }

    /// A label for the figures.
    pub fn label(self) -> String {
        match self {
            Self::Ok => "ok".to_owned(),
            Self::Refused(c) => c.as_str().to_owned(),
            Self::NoResponders => "unavailable (no responders)".to_owned(),
            Self::TimedOut => "timed out".to_owned(),
            Self::Transport => "transport error".to_owned(),
        }
    }
}

/// What was asked.
#[derive(Debug, Clone)]
pub enum Cmd {
    /// `pipeline.put` of a pipeline of this name (one name per attempt).
    PipelinePut(String),
    /// `gate.put` of this gate.
    Put(&'static str),
    /// A trigger action.
    Act(TriggerAction, TriggerId),
}

/// One command and its answer.
#[derive(Debug, Clone)]
pub struct Record {
    /// The seed of the episode.
    pub seed: u64,
    /// Its actor, unique.
    pub actor: String,
    /// What.
    pub cmd: Cmd,
    /// The answer.
    pub answer: Answer,
}

/// The history entry an action leaves behind.
pub fn history_kind(a: TriggerAction) -> HistoryType {
    match a {
        TriggerAction::Approve => HistoryType::Approved,
        TriggerAction::Pause => HistoryType::Paused,
        TriggerAction::Resume => HistoryType::Resumed,
        TriggerAction::Skip => HistoryType::Skipped,
        TriggerAction::Rollout => HistoryType::Rollout,
        TriggerAction::Abort => HistoryType::Aborted,
    }
}
