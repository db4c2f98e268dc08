//! The phasegate coordinator: owns pipelines, gates and configs, drives
//! every active trigger, and answers the command API over NATS
//! (SPEC.md §4, §6).
//!
//! Built from ractor actors: a [`catalog`] of definitions, one
//! [`trigger`] actor per active trigger running the pure state machine of
//! `phasegate-model`, and a [`directory`] of agents fed by their reports.
//! Everything an `ok` reply stands on is written to JetStream first. It
//! never evaluates gates for users and never talks to NATS except through
//! `phasegate-bus`.

mod catalog;
mod clock;
pub mod config;
mod directory;
mod error;
mod service;
mod store;
mod trigger;

use futures_util::StreamExt;
use phasegate_bus::{Client, ConnectOptions};
use phasegate_proto::{AgentReport, Encoding, Subjects, decode};
use ractor::{Actor, ActorRef};

pub use config::CoordinatorConfig;
pub use error::CoordinatorError;

use crate::catalog::{Catalog, CatalogArgs, CatalogMsg};
use crate::directory::{Directory, DirectoryArgs, DirectoryMsg};

/// A running coordinator.
pub struct Coordinator {
    service: phasegate_bus::async_nats::service::Service,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    catalog: ActorRef<CatalogMsg>,
    directory: ActorRef<DirectoryMsg>,
    client: Client,
}

impl Coordinator {
    /// Connects to NATS at `nats_url`, recovers the stored state, resumes
    /// every active trigger and starts answering commands.
    ///
    /// # Errors
    ///
    /// When NATS or JetStream cannot be used, or an actor cannot start.
    pub async fn start(
        nats_url: &str,
        config: CoordinatorConfig,
    ) -> Result<Self, CoordinatorError> {
        config.check("configuration")?;
        let subjects = Subjects::new(config.subject_prefix.clone())
            .map_err(|e| CoordinatorError::Config(e.to_string()))?;
        let client = phasegate_bus::connect(
            ConnectOptions::new(nats_url, "phasegate-coordinator").with_subjects(subjects.clone()),
        )
        .await?;
        let store = store::Store::open(&client, &subjects).await?;
        let (directory, _) = Actor::spawn(
            None,
            Directory,
            DirectoryArgs {
                agents_kv: store.agents.clone(),
                sweep_ms: config.sweep_ms,
                forget_after_ms: config.forget_agents_after_ms,
            },
        )
        .await
        .map_err(|e| CoordinatorError::Actor(e.to_string()))?;
        let (catalog, _) = Actor::spawn(
            None,
            Catalog,
            CatalogArgs {
                store,
                directory: directory.clone(),
            },
        )
        .await
        .map_err(|e| CoordinatorError::Actor(e.to_string()))?;

        // Agent reports: core NATS, fire and forget; a lost one is made up
        // by the next heartbeat.
        let mut reports = client
            .nats()
            .subscribe(subjects.all_agent_reports())
            .await
            .map_err(|e| {
                CoordinatorError::Actor(format!("cannot subscribe to agent reports: {e}"))
            })?;
        let dir = directory.clone();
        let mut tasks = vec![tokio::spawn(async move {
            while let Some(msg) = reports.next().await {
                match decode::<AgentReport>(Encoding::MsgPack, &msg.payload) {
                    Ok(report) => {
                        if dir.cast(DirectoryMsg::Report(report)).is_err() {
                            break;
                        }
                    }
                    Err(e) => {
                        tracing::warn!(subject = %msg.subject, error = %e, "malformed agent report ignored")
                    }
                }
            }
        })];
        let (service, endpoint_tasks) = service::start(
            &client,
            service::Handlers {
                catalog: catalog.clone(),
                directory: directory.clone(),
            },
        )
        .await?;
        tasks.extend(endpoint_tasks);
        // Everything above is subscribed; make sure the server has seen it
        // before anyone is told we are ready.
        client.ping().await?;
        tracing::info!(prefix = subjects.prefix(), "coordinator ready");
        Ok(Self {
            service,
            tasks,
            catalog,
            directory,
            client,
        })
    }

    /// Stops answering, stops the actors and flushes the connection.
    pub async fn stop(self) {
        let _ = self.service.stop().await;
        for t in &self.tasks {
            t.abort();
        }
        self.catalog.stop(None);
        self.directory.stop(None);
        let _ = self.client.nats().flush().await;
        tracing::info!("coordinator stopped");
    }
}
