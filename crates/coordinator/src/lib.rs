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
mod msg;
mod page;
mod registry;
mod reply;
mod service;
mod store;
mod supervisor;
mod trigger;
mod writes;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use phasegate_bus::{Client, ConnectOptions};
use phasegate_proto::{AgentReport, Encoding, Subjects, decode};
use phasegate_telemetry::metrics::Registry;
use ractor::{Actor, ActorRef};
use tokio::task::JoinHandle;

pub use config::CoordinatorConfig;
pub use error::CoordinatorError;

use crate::catalog::{Catalog, CatalogArgs};
use crate::directory::{Directory, DirectoryArgs};
use crate::msg::{CatalogMsg, DirectoryMsg};
use crate::supervisor::{Supervisor, SupervisorMsg};

/// A running coordinator: it holds the leadership lease, answers the
/// command API and drives every active trigger until [`Coordinator::stop`],
/// or until a core actor fails ([`Coordinator::failed`]).
pub struct Coordinator {
    lease: leader::Lease,
    actors: Actors,
    failed: tokio::sync::watch::Receiver<Option<String>>,
    metrics_addr: Option<SocketAddr>,
    service: phasegate_bus::Service,
    tasks: Vec<JoinHandle<()>>,
    client: Client,
}

/// The core actors: the supervisor and the two it watches.
struct Actors {
    supervisor: ActorRef<SupervisorMsg>,
    directory: ActorRef<DirectoryMsg>,
    catalog: ActorRef<CatalogMsg>,
}

/// Where a failed core actor is reported (see `supervisor`).
type Failed = Arc<tokio::sync::watch::Sender<Option<String>>>;

/// Waits until this instance leads, answering `503 standing by` on the
/// metrics address meanwhile (bound before the lease is sought, so probes
/// such as Kubernetes' see both instances up); returns the lease and the
/// metrics listener the leader serves on. Nothing is read or served
/// before this.
async fn lead(
    client: &Client,
    subjects: &Subjects,
    config: &CoordinatorConfig,
) -> Result<(leader::Lease, Option<tokio::net::TcpListener>), CoordinatorError> {
    let standby = bind_metrics(&config.metrics_listen).await.map(stand_by);
    let instance = config.instance_id.clone().unwrap_or_else(host_name);
    let lease = Duration::from_millis(config.leader_lease_ms);
    let lease = leader::acquire(client, subjects, &instance, lease, config.bucket_replicas).await?;
    let metrics_listener = match standby {
        Some((stop, task)) => {
            let _ = stop.send(());
            task.await.ok()
        }
        None => None,
    };
    Ok((lease, metrics_listener))
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
        let (lease, metrics_listener) = lead(&client, &subjects, &config).await?;
        let (failed_tx, failed) = tokio::sync::watch::channel(None);
        let failed_tx = Arc::new(failed_tx);
        let mut tasks = vec![leader::keep(lease.clone(), failed_tx.clone())];
        let metrics = Arc::new(Registry::default());
        let actors =
            Actors::spawn(&client, &config, lease.clone(), metrics.clone(), failed_tx).await?;
        tasks.push(listen_to_reports(&client, &actors.directory).await?);
        let (service, endpoint_tasks) = service::start(
            &client,
            service::Handlers {
                catalog: actors.catalog.clone(),
                directory: actors.directory.clone(),
                metrics: metrics.clone(),
                lease: lease.clone(),
                in_flight: Arc::new(tokio::sync::Semaphore::new(service::MAX_IN_FLIGHT)),
                auth: config.auth.clone().map(Arc::new),
            },
        )
        .await?;
        tasks.extend(endpoint_tasks);
        let metrics_addr = start_metrics(metrics_listener, metrics, &actors, &mut tasks).await;
        // Everything above is subscribed; make sure the server has seen it
        // before anyone is told we are ready.
        client.ping().await?;
        tracing::info!(prefix = subjects.prefix(), "coordinator ready");
        Ok(Self {
            lease,
            actors,
            failed,
            metrics_addr,
            service,
            tasks,
            client,
        })
    }

    /// Where `GET /metrics` is served, if it is.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
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
        self.actors.supervisor.stop(None);
        self.actors.catalog.stop(None);
        self.actors.directory.stop(None);
        // Hand over at once rather than after the lease lapses.
        if let Err(e) = self.lease.release().await {
            tracing::debug!(error = %e, "lease not released; it lapses by itself");
        }
        self.client.flush().await;
        tracing::info!("coordinator stopped");
    }
}

impl Actors {
    /// Opens the store and spawns the supervisor, then the directory and
    /// the catalog under it (the catalog recovers the stored state before
    /// it answers anything).
    async fn spawn(
        client: &Client,
        config: &CoordinatorConfig,
        lease: leader::Lease,
        metrics: Arc<Registry>,
        failed: Failed,
    ) -> Result<Self, CoordinatorError> {
        let actor_err = |e: ractor::SpawnErr| CoordinatorError::Actor(e.to_string());
        let store = store::Store::open(
            client,
            client.subjects(),
            lease.clone(),
            config.trigger_retention(),
            config.max_agents,
            config.bucket_replicas,
        )
        .await?;
        let (supervisor, _) = Actor::spawn(None, Supervisor, failed)
            .await
            .map_err(actor_err)?;
        let directory = DirectoryArgs {
            agents_kv: store.agents.clone(),
            sweep_ms: config.sweep_ms,
            forget_after_ms: config.forget_agents_after_ms,
            limits: phasegate_model::fleet::Limits {
                max_agents: config.max_agents,
                max_agents_per_segment: config.max_agents_per_segment,
                max_segments: config.max_segments,
            },
            lease,
        };
        let (directory, _) = Actor::spawn_linked(None, Directory, directory, supervisor.get_cell())
            .await
            .map_err(actor_err)?;
        let catalog = CatalogArgs {
            store,
            directory: directory.clone(),
            metrics,
        };
        let (catalog, _) = Actor::spawn_linked(None, Catalog, catalog, supervisor.get_cell())
            .await
            .map_err(actor_err)?;
        Ok(Self {
            supervisor,
            directory,
            catalog,
        })
    }
}

/// Feeds agent reports to the directory (core NATS, fire and forget: a
/// lost one is made up by the next heartbeat). Once the server has seen
/// the subscription, the directory is told it listens: restored agents'
/// liveness windows start then, not before recovery.
async fn listen_to_reports(
    client: &Client,
    directory: &ActorRef<DirectoryMsg>,
) -> Result<JoinHandle<()>, CoordinatorError> {
    let subjects = client.subjects().clone();
    let mut reports = client
        .subscribe_payloads(subjects.all_agent_reports())
        .await?;
    let dir = directory.clone();
    let task = tokio::spawn(async move {
        while let Some((subject, payload)) = reports.next().await {
            let Some(report) = check_report(&subjects, &subject, &payload) else {
                continue;
            };
            if dir.cast(DirectoryMsg::Report(report)).is_err() {
                break;
            }
        }
    });
    client.ping().await?;
    directory
        .cast(DirectoryMsg::Listening)
        .map_err(|e| CoordinatorError::Actor(e.to_string()))?;
    Ok(task)
}

/// Serves metrics on `listen` unless it is `off`; where, if it does.
/// Rollouts matter more than their dashboard: a metrics server that cannot
/// start is logged, and the coordinator goes on without it.
/// The metrics listener on `listen`, unless it is `"off"` or cannot be
/// bound (logged: metrics are not worth failing the coordinator for).
async fn bind_metrics(listen: &str) -> Option<tokio::net::TcpListener> {
    if listen == "off" {
        return None;
    }
    match tokio::net::TcpListener::bind(listen).await {
        Ok(listener) => Some(listener),
        Err(e) => {
            tracing::error!(listen = %listen, error = %e, "cannot serve metrics");
            None
        }
    }
}

/// Answers every connection to the metrics port with `503 standing by`
/// while this instance waits for the lease; hands the listener back when
/// `stop` is sent.
fn stand_by(
    listener: tokio::net::TcpListener,
) -> (
    tokio::sync::oneshot::Sender<()>,
    JoinHandle<tokio::net::TcpListener>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    const BODY: &str = "standing by: another coordinator leads\n";
    let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = &mut stopped => return listener,
                accepted = listener.accept() => {
                    let Ok((mut conn, _)) = accepted else { continue };
                    tokio::spawn(async move {
                        // The request is read first: closing on unread bytes
                        // would reset the connection before the answer.
                        let mut buf = [0_u8; 1024];
                        let _ = tokio::time::timeout(Duration::from_secs(1), conn.read(&mut buf)).await;
                        let answer = format!(
                            "HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{BODY}",
                            BODY.len()
                        );
                        let _ = conn.write_all(answer.as_bytes()).await;
                        let _ = conn.shutdown().await;
                    });
                }
            }
        }
    });
    (stop, task)
}

async fn start_metrics(
    listener: Option<tokio::net::TcpListener>,
    metrics: Arc<Registry>,
    actors: &Actors,
    tasks: &mut Vec<JoinHandle<()>>,
) -> Option<SocketAddr> {
    let listener = listener?;
    let catalog = actors.catalog.clone();
    let directory = actors.directory.clone();
    match serve_metrics(listener, metrics, catalog, directory).await {
        Ok((addr, task)) => {
            tasks.push(task);
            Some(addr)
        }
        Err(e) => {
            tracing::error!(error = %e, "cannot serve metrics");
            None
        }
    }
}

/// Serves Prometheus text on `listener`: counters kept as things happen, and
/// gauges read from the actors at scrape time.
async fn serve_metrics(
    listener: tokio::net::TcpListener,
    metrics: Arc<Registry>,
    catalog: ActorRef<CatalogMsg>,
    directory: ActorRef<DirectoryMsg>,
) -> Result<(SocketAddr, JoinHandle<()>), std::io::Error> {
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

/// How long a scrape waits for an actor's gauges before leaving them as
/// they were.
const SCRAPE_TIMEOUT: Duration = Duration::from_secs(5);

async fn render_metrics(
    metrics: &Registry,
    catalog: &ActorRef<CatalogMsg>,
    directory: &ActorRef<DirectoryMsg>,
) -> ([(axum::http::header::HeaderName, &'static str); 1], String) {
    gauge_triggers(metrics, catalog).await;
    gauge_agents(metrics, directory).await;
    let mut out = String::new();
    metrics.render(&mut out);
    phasegate_telemetry::metrics::write_build_info(&mut out, "coordinator");
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        out,
    )
}

/// `phasegate_triggers_active`, from the catalog.
async fn gauge_triggers(metrics: &Registry, catalog: &ActorRef<CatalogMsg>) {
    let Ok(ractor::rpc::CallResult::Success(rows)) =
        catalog.call(CatalogMsg::Stats, Some(SCRAPE_TIMEOUT)).await
    else {
        return;
    };
    let series: Vec<(Vec<(&str, &str)>, f64)> = rows
        .iter()
        .map(|row| {
            #[allow(clippy::cast_precision_loss)] // counts far below 2^52
            let v = row.triggers as f64;
            let paused = if row.paused { "true" } else { "false" };
            let labels = vec![("phase_state", row.phase_state), ("paused", paused)];
            (labels, v)
        })
        .collect();
    metrics.set_all(
        "phasegate_triggers_active",
        "active triggers by phase state",
        series,
    );
}

/// `phasegate_agents_{known,live,healthy}` per segment, from the directory.
async fn gauge_agents(metrics: &Registry, directory: &ActorRef<DirectoryMsg>) {
    let Ok(ractor::rpc::CallResult::Success(rows)) = directory
        .call(DirectoryMsg::Stats, Some(SCRAPE_TIMEOUT))
        .await
    else {
        return;
    };
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
