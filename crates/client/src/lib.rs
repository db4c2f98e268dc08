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
    EntityPutRequest, EntityResult, EntitySpec, ListRequest, PhaseId, Pipeline,
    PipelineDeleteRequest, PipelineGetRequest, PipelineListResult, PipelineName,
    PipelinePutRequest, PipelineResult, Segment, Subjects, Trigger, TriggerGetRequest, TriggerId,
    TriggerListRequest, TriggerListResult, TriggerResult, TriggerSummary,
};

pub use phasegate_bus::BusError as ClientError;
/// Credentials and TLS settings of a connection (SPEC.md §8).
pub use phasegate_bus::Security;
/// The operator actions on a trigger, each sent as its command.
pub use phasegate_proto::TriggerAction;

/// A connection to a phasegate coordinator.
#[derive(Debug, Clone)]
pub struct PhasegateClient {
    bus: Client,
    encoding: Encoding,
}

impl PhasegateClient {
    /// Connects to NATS at `url`, for commands under `prefix`. Fails at
    /// once when NATS cannot be reached (an operator wants to know now);
    /// once connected, a lost connection is re-established.
    ///
    /// # Errors
    ///
    /// When the URL or prefix is unusable, or NATS is out of reach
    /// ([`BusError::Connect`], naming the URL without its credentials).
    pub async fn connect(url: &str, prefix: &str, timeout: Duration) -> Result<Self, BusError> {
        Self::connect_secured(url, Security::default(), prefix, timeout).await
    }

    /// Like [`PhasegateClient::connect`], with a credentials file and TLS
    /// settings (a secured installation, SPEC.md §8).
    ///
    /// # Errors
    ///
    /// As [`PhasegateClient::connect`], and [`BusError::Security`] when the
    /// credentials or TLS files cannot be used.
    pub async fn connect_secured(
        url: &str,
        security: Security,
        prefix: &str,
        timeout: Duration,
    ) -> Result<Self, BusError> {
        let subjects = Subjects::new(prefix)
            .map_err(|e| BusError::Api(phasegate_proto::ApiError::invalid(e.to_string())))?;
        let bus = phasegate_bus::connect(
            ConnectOptions::new(url, "phasegate-client")
                .with_subjects(subjects)
                .with_request_timeout(timeout)
                .with_security(security)
                .fail_fast(),
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

    /// One page of `pipeline.list`.
    ///
    /// # Errors
    ///
    /// `invalid` for a bad limit or cursor, or a transport failure.
    pub async fn pipeline_list_page(
        &self,
        page: ListRequest,
    ) -> Result<PipelineListResult, BusError> {
        self.call(Command::PipelineList, &page).await
    }

    /// Every pipeline: `pipeline.list` page after page, by name.
    ///
    /// # Errors
    ///
    /// A transport failure.
    pub async fn pipeline_list(&self) -> Result<Vec<Pipeline>, BusError> {
        follow(None, |cursor| async move {
            let r = self
                .pipeline_list_page(ListRequest {
                    limit: None,
                    cursor,
                })
                .await?;
            Ok((r.pipelines, r.next_cursor))
        })
        .await
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

    /// One page of `gate.list` / `config.list`.
    ///
    /// # Errors
    ///
    /// `invalid` for a bad limit or cursor, or a transport failure.
    pub async fn entity_list_page(
        &self,
        kind: EntityKind,
        page: ListRequest,
    ) -> Result<EntityListResult, BusError> {
        let command = match kind {
            EntityKind::Gate => Command::GateList,
            EntityKind::Config => Command::ConfigList,
        };
        self.call(command, &page).await
    }

    /// Every gate or config: `gate.list` / `config.list` page after page,
    /// by name.
    ///
    /// # Errors
    ///
    /// A transport failure.
    pub async fn entity_list(&self, kind: EntityKind) -> Result<Vec<EntitySpec>, BusError> {
        follow(None, |cursor| async move {
            let r = self
                .entity_list_page(
                    kind,
                    ListRequest {
                        limit: None,
                        cursor,
                    },
                )
                .await?;
            Ok((r.specs, r.next_cursor))
        })
        .await
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

    /// One page of `trigger.list`.
    ///
    /// # Errors
    ///
    /// `invalid` for a bad limit or cursor, or a transport failure.
    pub async fn trigger_list_page(
        &self,
        req: &TriggerListRequest,
    ) -> Result<TriggerListResult, BusError> {
        self.call(Command::TriggerList, req).await
    }

    /// Every trigger matching `filter`, newest first: `trigger.list` page
    /// after page (of `filter.limit` each), from `filter.cursor` on.
    ///
    /// # Errors
    ///
    /// `invalid` for a bad limit or cursor, or a transport failure.
    pub async fn trigger_list(
        &self,
        filter: TriggerListRequest,
    ) -> Result<Vec<TriggerSummary>, BusError> {
        let first = filter.cursor.clone();
        let filter = &filter;
        follow(first, |cursor| async move {
            let req = TriggerListRequest {
                cursor,
                ..filter.clone()
            };
            let r = self.trigger_list_page(&req).await?;
            Ok((r.triggers, r.next_cursor))
        })
        .await
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

    /// One page of `agent.list`.
    ///
    /// # Errors
    ///
    /// `invalid` for a bad limit or cursor, or a transport failure.
    pub async fn agent_list_page(
        &self,
        req: &AgentListRequest,
    ) -> Result<AgentListResult, BusError> {
        self.call(Command::AgentList, req).await
    }

    /// Every known agent (of `segment`, when given), by segment then id:
    /// `agent.list` page after page.
    ///
    /// # Errors
    ///
    /// A transport failure.
    pub async fn agents(&self, segment: Option<Segment>) -> Result<Vec<AgentInfo>, BusError> {
        let segment = &segment;
        follow(None, |cursor| async move {
            let req = AgentListRequest {
                segment: segment.clone(),
                limit: None,
                cursor,
            };
            let r = self.agent_list_page(&req).await?;
            Ok((r.agents, r.next_cursor))
        })
        .await
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

/// Collects every page: calls `next` with each page's cursor (`first`,
/// then each `next_cursor`) until one answers none. A server that hands
/// back the cursor it was given would loop forever; that ends the walk.
async fn follow<T, F, Fut>(first: Option<String>, mut next: F) -> Result<Vec<T>, BusError>
where
    F: FnMut(Option<String>) -> Fut,
    Fut: std::future::Future<Output = Result<(Vec<T>, Option<String>), BusError>>,
{
    let mut all = Vec::new();
    let mut cursor = first;
    loop {
        let (items, next_cursor) = next(cursor.clone()).await?;
        all.extend(items);
        match next_cursor {
            Some(c) if Some(&c) != cursor.as_ref() => cursor = Some(c),
            _ => return Ok(all),
        }
    }
}
