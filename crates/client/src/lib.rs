//! A typed client of the phasegate command API (SPEC.md §6), for the CLI,
//! the tests and any Rust program that drives rollouts.
//!
//! Every method is one request/reply; errors keep the contract's code
//! (`BusError::code`). It holds no state beyond the connection and never
//! interprets what the coordinator answers.

use std::time::Duration;

use phasegate_bus::{BusError, Client, ConnectOptions};
use phasegate_proto::{
    ActionRequest, Actor, AgentId, AgentInfo, AgentListRequest, AgentListResult, Command, Empty,
    Encoding, EntityDeleteRequest, EntityGetRequest, EntityKind, EntityListResult, EntityName,
    EntityPutRequest, EntityResult, EntitySpec, PhaseId, Pipeline, PipelineDeleteRequest,
    PipelineGetRequest, PipelineListResult, PipelineName, PipelinePutRequest, PipelineResult,
    Segment, Subjects, Trigger, TriggerGetRequest, TriggerId, TriggerListRequest,
    TriggerListResult, TriggerResult, TriggerSummary,
};

pub use phasegate_bus::BusError as ClientError;

/// The operator actions on a trigger.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TriggerAction {
    /// `trigger.approve`
    Approve,
    /// `trigger.pause`
    Pause,
    /// `trigger.resume`
    Resume,
    /// `trigger.skip`
    Skip,
    /// `trigger.rollout`
    Rollout,
    /// `trigger.abort`
    Abort,
}

impl TriggerAction {
    /// The command it is sent as.
    pub fn command(self) -> Command {
        match self {
            Self::Approve => Command::TriggerApprove,
            Self::Pause => Command::TriggerPause,
            Self::Resume => Command::TriggerResume,
            Self::Skip => Command::TriggerSkip,
            Self::Rollout => Command::TriggerRollout,
            Self::Abort => Command::TriggerAbort,
        }
    }

    /// Whether the contract requires `phase_id` (actions that move forward).
    pub fn needs_phase(self) -> bool {
        matches!(self, Self::Approve | Self::Skip | Self::Rollout)
    }
}

/// A connection to a phasegate coordinator.
#[derive(Debug, Clone)]
pub struct PhasegateClient {
    bus: Client,
    encoding: Encoding,
}

impl PhasegateClient {
    /// Connects to NATS at `url`, for commands under `prefix`.
    ///
    /// # Errors
    ///
    /// When the URL or prefix is unusable.
    pub async fn connect(url: &str, prefix: &str, timeout: Duration) -> Result<Self, BusError> {
        let subjects = Subjects::new(prefix)
            .map_err(|e| BusError::Api(phasegate_proto::ApiError::invalid(e.to_string())))?;
        let bus = phasegate_bus::connect(
            ConnectOptions::new(url, "phasegate-client")
                .with_subjects(subjects)
                .with_request_timeout(timeout),
        )
        .await?;
        Ok(Self {
            bus,
            encoding: Encoding::MsgPack,
        })
    }

    /// A client on an existing connection.
    pub fn from_bus(bus: Client) -> Self {
        Self {
            bus,
            encoding: Encoding::MsgPack,
        }
    }

    /// The same client speaking `encoding` (MessagePack by default).
    #[must_use]
    pub fn with_encoding(mut self, encoding: Encoding) -> Self {
        self.encoding = encoding;
        self
    }

    /// The underlying connection.
    pub fn bus(&self) -> &Client {
        &self.bus
    }

    async fn call<Req: serde::Serialize, Res: serde::de::DeserializeOwned>(
        &self,
        command: Command,
        req: &Req,
    ) -> Result<Res, BusError> {
        self.bus.request(command, req, self.encoding).await
    }

    /// `pipeline.put`.
    ///
    /// # Errors
    ///
    /// The coordinator's refusal, or a transport failure.
    pub async fn pipeline_put(
        &self,
        pipeline: Pipeline,
        actor: Actor,
    ) -> Result<Pipeline, BusError> {
        let r: PipelineResult = self
            .call(
                Command::PipelinePut,
                &PipelinePutRequest { pipeline, actor },
            )
            .await?;
        Ok(r.pipeline)
    }

    /// `pipeline.get`.
    ///
    /// # Errors
    ///
    /// `not_found`, or a transport failure.
    pub async fn pipeline_get(&self, name: PipelineName) -> Result<Pipeline, BusError> {
        let r: PipelineResult = self
            .call(Command::PipelineGet, &PipelineGetRequest { name })
            .await?;
        Ok(r.pipeline)
    }

    /// `pipeline.list`.
    ///
    /// # Errors
    ///
    /// A transport failure.
    pub async fn pipeline_list(&self) -> Result<Vec<Pipeline>, BusError> {
        let r: PipelineListResult = self.call(Command::PipelineList, &Empty {}).await?;
        Ok(r.pipelines)
    }

    /// `pipeline.delete`.
    ///
    /// # Errors
    ///
    /// `not_found`, `conflict`, or a transport failure.
    pub async fn pipeline_delete(&self, name: PipelineName, actor: Actor) -> Result<(), BusError> {
        let _: Empty = self
            .call(
                Command::PipelineDelete,
                &PipelineDeleteRequest { name, actor },
            )
            .await?;
        Ok(())
    }

    /// `gate.put` / `config.put`.
    ///
    /// # Errors
    ///
    /// `invalid`, `not_found`, `conflict`, or a transport failure.
    pub async fn entity_put(
        &self,
        kind: EntityKind,
        spec: EntitySpec,
        actor: Actor,
        comment: Option<String>,
        expected_version: Option<u64>,
    ) -> Result<EntityResult, BusError> {
        let command = match kind {
            EntityKind::Gate => Command::GatePut,
            EntityKind::Config => Command::ConfigPut,
        };
        self.call(
            command,
            &EntityPutRequest {
                spec,
                actor,
                comment,
                expected_version,
            },
        )
        .await
    }

    /// `gate.get` / `config.get`.
    ///
    /// # Errors
    ///
    /// `not_found`, or a transport failure.
    pub async fn entity_get(
        &self,
        kind: EntityKind,
        name: EntityName,
    ) -> Result<EntityResult, BusError> {
        let command = match kind {
            EntityKind::Gate => Command::GateGet,
            EntityKind::Config => Command::ConfigGet,
        };
        self.call(command, &EntityGetRequest { name }).await
    }

    /// `gate.list` / `config.list`.
    ///
    /// # Errors
    ///
    /// A transport failure.
    pub async fn entity_list(&self, kind: EntityKind) -> Result<Vec<EntitySpec>, BusError> {
        let command = match kind {
            EntityKind::Gate => Command::GateList,
            EntityKind::Config => Command::ConfigList,
        };
        let r: EntityListResult = self.call(command, &Empty {}).await?;
        Ok(r.specs)
    }

    /// `gate.delete` / `config.delete`.
    ///
    /// # Errors
    ///
    /// `not_found`, `conflict`, or a transport failure.
    pub async fn entity_delete(
        &self,
        kind: EntityKind,
        name: EntityName,
        actor: Actor,
    ) -> Result<(), BusError> {
        let command = match kind {
            EntityKind::Gate => Command::GateDelete,
            EntityKind::Config => Command::ConfigDelete,
        };
        let _: Empty = self
            .call(command, &EntityDeleteRequest { name, actor })
            .await?;
        Ok(())
    }

    /// `trigger.get`.
    ///
    /// # Errors
    ///
    /// `not_found`, or a transport failure.
    pub async fn trigger_get(&self, id: TriggerId) -> Result<Trigger, BusError> {
        let r: TriggerResult = self
            .call(Command::TriggerGet, &TriggerGetRequest { id })
            .await?;
        Ok(r.trigger)
    }

    /// `trigger.list`.
    ///
    /// # Errors
    ///
    /// A transport failure.
    pub async fn trigger_list(
        &self,
        filter: TriggerListRequest,
    ) -> Result<Vec<TriggerSummary>, BusError> {
        let r: TriggerListResult = self.call(Command::TriggerList, &filter).await?;
        Ok(r.triggers)
    }

    /// One of the trigger actions.
    ///
    /// # Errors
    ///
    /// `invalid`, `not_found`, `conflict`, `forbidden`, or a transport failure.
    pub async fn act(
        &self,
        action: TriggerAction,
        id: TriggerId,
        phase_id: Option<PhaseId>,
        actor: Actor,
        comment: Option<String>,
    ) -> Result<Trigger, BusError> {
        let r: TriggerResult = self
            .call(
                action.command(),
                &ActionRequest {
                    id,
                    phase_id,
                    actor,
                    comment,
                },
            )
            .await?;
        Ok(r.trigger)
    }

    /// `agent.list`.
    ///
    /// # Errors
    ///
    /// A transport failure.
    pub async fn agents(&self, segment: Option<Segment>) -> Result<Vec<AgentInfo>, BusError> {
        let r: AgentListResult = self
            .call(
                Command::AgentList,
                &AgentListRequest {
                    segment,
                    ..AgentListRequest::default()
                },
            )
            .await?;
        Ok(r.agents)
    }

    /// `agent.forget`: the agent is no longer known (until it reports again).
    ///
    /// # Errors
    ///
    /// `not_found` when it is not known, or a transport failure.
    pub async fn agent_forget(&self, agent_id: AgentId, actor: Actor) -> Result<(), BusError> {
        let _: Empty = self
            .call(
                Command::AgentForget,
                &phasegate_proto::AgentForgetRequest { agent_id, actor },
            )
            .await?;
        Ok(())
    }
}
