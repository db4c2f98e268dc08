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

mod analysis;
pub mod auth;
mod catalog;
mod clock;
pub mod config;
mod directory;
mod error;
mod leader;
mod page;
mod registry;
mod reply;
mod service;
mod store;
mod supervisor;
mod trigger;
mod writes;

use std::sync::Arc;

use phasegate_telemetry::metrics::Registry;

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
    lease: leader::Lease,
    supervisor: ActorRef<supervisor::SupervisorMsg>,
    failed: tokio::sync::watch::Receiver<Option<String>>,
    metrics_addr: Option<std::net::SocketAddr>,
    service: phasegate_bus::Service,
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
        if config.auth.is_none() {
            tracing::warn!(
                "no [auth] table: running open, actors are taken as declared and every client may send every command (SPEC.md §8)"
            );
        }
        let subjects = Subjects::new(config.subject_prefix.clone())
            .map_err(|e| CoordinatorError::Config(e.to_string()))?;
        let client = phasegate_bus::connect(
            ConnectOptions::new(nats_url, "phasegate-coordinator")
                .with_subjects(subjects.clone())
                .with_security(config.security()),
        )
        .await?;
        // Nothing is read or served before this instance leads.
        let instance = config.instance_id.clone().unwrap_or_else(host_name);
        let lease = std::time::Duration::from_millis(config.leader_lease_ms);
        let lease = leader::acquire(&client, &subjects, &instance, lease).await?;
        let (failed_tx, failed) = tokio::sync::watch::channel(None);
        let failed_tx = Arc::new(failed_tx);
        let lease_task = leader::keep(lease.clone(), failed_tx.clone());
        let store = store::Store::open(
            &client,
            &subjects,
            lease.clone(),
            config.trigger_retention(),
            config.max_agents,
        )
        .await?;
        let metrics = Arc::new(Registry::default());
        let (supervisor, _) = Actor::spawn(None, supervisor::Supervisor, failed_tx)
            .await
            .map_err(|e| CoordinatorError::Actor(e.to_string()))?;
        let (directory, _) = Actor::spawn_linked(
            None,
            Directory,
            DirectoryArgs {
                agents_kv: store.agents.clone(),
                sweep_ms: config.sweep_ms,
                forget_after_ms: config.forget_agents_after_ms,
                limits: phasegate_model::fleet::Limits {
                    max_agents: config.max_agents,
                    max_agents_per_segment: config.max_agents_per_segment,
                    max_segments: config.max_segments,
                },
                lease: lease.clone(),
            },
            supervisor.get_cell(),
        )
        .await
        .map_err(|e| CoordinatorError::Actor(e.to_string()))?;
        let (catalog, _) = Actor::spawn_linked(
            None,
            Catalog,
            CatalogArgs {
                store,
                directory: directory.clone(),
                metrics: metrics.clone(),
            },
            supervisor.get_cell(),
        )
        .await
        .map_err(|e| CoordinatorError::Actor(e.to_string()))?;

        // Agent reports: core NATS, fire and forget; a lost one is made up
        // by the next heartbeat.
        let mut reports = client
            .subscribe_payloads(subjects.all_agent_reports())
            .await?;
        let dir = directory.clone();
        let report_subjects = subjects.clone();
        let mut tasks = vec![
            lease_task,
            tokio::spawn(async move {
                while let Some((subject, payload)) = reports.next().await {
                    let Some(report) = check_report(&report_subjects, &subject, &payload) else {
                        continue;
                    };
                    if dir.cast(DirectoryMsg::Report(report)).is_err() {
                        break;
                    }
                }
            }),
        ];
        // The subscription is in place once the server answered a ping:
        // restored agents' liveness windows start now, not before recovery.
        client.ping().await?;
        directory
            .cast(DirectoryMsg::Listening)
            .map_err(|e| CoordinatorError::Actor(e.to_string()))?;
        let (service, endpoint_tasks) = service::start(
            &client,
            service::Handlers {
                catalog: catalog.clone(),
                directory: directory.clone(),
                metrics: metrics.clone(),
                lease: lease.clone(),
                in_flight: Arc::new(tokio::sync::Semaphore::new(service::MAX_IN_FLIGHT)),
                auth: config.auth.clone().map(Arc::new),
            },
        )
        .await?;
        tasks.extend(endpoint_tasks);
        let metrics_addr = if config.metrics_listen == "off" {
            None
        } else {
            match serve_metrics(
                &config.metrics_listen,
                metrics,
                catalog.clone(),
                directory.clone(),
            )
            .await
            {
                Ok((addr, task)) => {
                    tasks.push(task);
                    Some(addr)
                }
                Err(e) => {
                    // Rollouts matter more than their dashboard: keep going.
                    tracing::error!(listen = %config.metrics_listen, error = %e, "cannot serve metrics");
                    None
                }
            }
        };
        // Everything above is subscribed; make sure the server has seen it
        // before anyone is told we are ready.
        client.ping().await?;
        tracing::info!(prefix = subjects.prefix(), "coordinator ready");
        Ok(Self {
            lease,
            supervisor,
            failed,
            metrics_addr,
            service,
            tasks,
            catalog,
            directory,
            client,
        })
    }

    /// Where `GET /metrics` is served, if it is.
    pub fn metrics_addr(&self) -> Option<std::net::SocketAddr> {
        self.metrics_addr
    }

    /// Resolves when a core actor has failed: the process should exit (with
    /// an error) and be started again; everything it needs is stored.
    pub async fn failed(&self) -> String {
        let mut rx = self.failed.clone();
        loop {
            if let Some(r) = rx.borrow().clone() {
                return r;
            }
            if rx.changed().await.is_err() {
                // The supervisor is gone without a word: treat as failed.
                return "the coordinator's supervisor ended".to_owned();
            }
        }
    }

    /// Stops answering, stops the actors and flushes the connection.
    pub async fn stop(self) {
        let _ = self.service.stop().await;
        for t in &self.tasks {
            t.abort();
        }
        // The supervisor first, so stopping its children is not a failure.
        self.supervisor.stop(None);
        self.catalog.stop(None);
        self.directory.stop(None);
        // Hand over at once rather than after the lease lapses.
        if let Err(e) = self.lease.release().await {
            tracing::debug!(error = %e, "lease not released; it lapses by itself");
        }
        self.client.flush().await;
        tracing::info!("coordinator stopped");
    }
}

/// Serves Prometheus text on `listen`: counters kept as things happen, and
/// gauges read from the actors at scrape time.
async fn serve_metrics(
    listen: &str,
    metrics: Arc<Registry>,
    catalog: ActorRef<CatalogMsg>,
    directory: ActorRef<DirectoryMsg>,
) -> Result<(std::net::SocketAddr, tokio::task::JoinHandle<()>), std::io::Error> {
    let listener = tokio::net::TcpListener::bind(listen).await?;
    let addr = listener.local_addr()?;
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let (metrics, catalog, directory) =
                (metrics.clone(), catalog.clone(), directory.clone());
            async move { render_metrics(&metrics, &catalog, &directory).await }
        }),
    );
    let task = tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "metrics server failed");
        }
    });
    tracing::info!(%addr, "serving metrics");
    Ok((addr, task))
}

async fn render_metrics(
    metrics: &Registry,
    catalog: &ActorRef<CatalogMsg>,
    directory: &ActorRef<DirectoryMsg>,
) -> ([(axum::http::header::HeaderName, &'static str); 1], String) {
    let timeout = Some(std::time::Duration::from_secs(5));
    if let Ok(ractor::rpc::CallResult::Success(rows)) =
        catalog.call(CatalogMsg::Stats, timeout).await
    {
        let series: Vec<(Vec<(&str, &str)>, f64)> = rows
            .iter()
            .map(|(state, paused, n)| {
                #[allow(clippy::cast_precision_loss)] // counts far below 2^52
                let v = *n as f64;
                (
                    vec![
                        ("phase_state", state.as_str()),
                        ("paused", if *paused { "true" } else { "false" }),
                    ],
                    v,
                )
            })
            .collect();
        metrics.set_all(
            "phasegate_triggers_active",
            "active triggers by phase state",
            series,
        );
    }
    if let Ok(ractor::rpc::CallResult::Success(rows)) =
        directory.call(DirectoryMsg::Stats, timeout).await
    {
        let mut known = Vec::new();
        let mut live = Vec::new();
        let mut healthy = Vec::new();
        for row in &rows {
            let seg = || vec![("segment", row.segment.as_str())];
            known.push((seg(), f64::from(row.known)));
            live.push((seg(), f64::from(row.live)));
            healthy.push((seg(), f64::from(row.healthy)));
        }
        metrics.set_all(
            "phasegate_agents_known",
            "known agents per segment: live or unreachable",
            known,
        );
        metrics.set_all("phasegate_agents_live", "live agents per segment", live);
        metrics.set_all(
            "phasegate_agents_healthy",
            "live and healthy agents per segment",
            healthy,
        );
    }
    let mut out = String::new();
    metrics.render(&mut out);
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        out,
    )
}

/// The host name, for the default instance id.
fn host_name() -> String {
    std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "coordinator".to_owned())
}

/// Decodes a report and checks it against its subject: a report published
/// on another segment's subject is ignored (SPEC.md §8), so permissions on
/// subjects bind agents to segments.
fn check_report(subjects: &Subjects, subject: &str, payload: &[u8]) -> Option<AgentReport> {
    let report = match decode::<AgentReport>(Encoding::MsgPack, payload) {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(%subject, error = %e, "malformed agent report ignored");
            return None;
        }
    };
    if subjects.report_segment(subject) != Some(report.segment.as_str()) {
        tracing::warn!(
            %subject,
            agent_id = %report.agent_id,
            segment = %report.segment,
            "agent report for another segment than its subject's ignored"
        );
        return None;
    }
    Some(report)
}
