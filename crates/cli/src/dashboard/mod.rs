//! `phasegate dashboard`: a web console over the command API (SPEC.md §7).
//!
//! One process serves the embedded front end (`assets/dashboard/`: plain
//! HTML, CSS and JavaScript, no framework, nothing fetched from elsewhere,
//! so it works in an air-gapped region), a small JSON API over the command
//! API (`api.rs`), and live updates as server-sent events fed by **one**
//! poller of the coordinator (`live.rs`) that every open tab shares: twenty
//! tabs cost the coordinator what one does.
//!
//! It talks to the coordinator with the credentials of whoever runs it
//! (the global `--nats-creds`, `--tls-*` flags), so the roles and
//! identities of a secured installation (§8) apply unchanged: an action the
//! identity may not take comes back `forbidden` and is shown as refused.
//! Its own HTTP API is internal to the console, not part of the contract.
//!
//! It listens on loopback by default and has no login of its own: whoever
//! reaches its port acts with its credentials. Expose it only as you would
//! hand out those credentials.

mod api;
mod assets;
mod diff;
mod live;
mod query;
mod specs;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use tokio::sync::{Notify, watch};

use crate::Global;

/// Flags of `phasegate dashboard`.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct DashboardArgs {
    /// Where the console listens (host:port).
    #[arg(long, default_value = "127.0.0.1:3100")]
    listen: SocketAddr,
    /// How often the one shared poller asks the coordinator for the
    /// active rollouts and the agents, in ms.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(100..))]
    poll_ms: u64,
}

/// What the handlers share: the client, the live view, the versions seen.
#[derive(Clone)]
pub(crate) struct Console {
    client: phasegate_client::PhasegateClient,
    actor: phasegate_proto::Actor,
    /// The credentials file's name when there is one: shown, never read.
    credentials: Option<String>,
    live: watch::Receiver<live::Snapshot>,
    /// Wakes the poller at once (after an action), so every tab sees its
    /// effect without waiting for the next period.
    poke: Arc<Notify>,
    specs: Arc<Mutex<specs::SpecCache>>,
    /// Ends the event streams when the server stops: a graceful shutdown
    /// waits for every open connection, and an event stream never ends.
    stopping: watch::Receiver<bool>,
    /// Listening on loopback only: then only a loopback `Host` is served
    /// (a page elsewhere whose name rebinds to 127.0.0.1 is no way in).
    loopback: bool,
}

/// Runs the console until SIGINT or SIGTERM.
pub(crate) async fn run(g: &Global, args: DashboardArgs) -> anyhow::Result<()> {
    let client = g.client().await?;
    let actor = g.actor()?;
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let addr = listener.local_addr()?;

    let specs = Arc::new(Mutex::new(specs::SpecCache::default()));
    let poke = Arc::new(Notify::new());
    let (stop_tx, stopping) = watch::channel(false);
    let poller = live::Poller::new(
        client.clone(),
        Duration::from_millis(args.poll_ms),
        Arc::clone(&specs),
        Arc::clone(&poke),
    );
    let live_rx = poller.subscribe();
    let polling = tokio::spawn(poller.run(stopping.clone()));

    let console = Console {
        client,
        actor,
        credentials: g
            .nats_creds
            .as_ref()
            .and_then(|p| p.file_name())
            .map(|n| n.to_string_lossy().into_owned()),
        live: live_rx,
        poke,
        specs,
        stopping: stopping.clone(),
        loopback: addr.ip().is_loopback(),
    };
    tracing::info!(%addr, "dashboard listening");
    // People read this line to know where to point the browser.
    eprintln!("phasegate dashboard on http://{addr}/");
    let app = api::router(console);
    let served = axum::serve(listener, app).with_graceful_shutdown(async move {
        crate::servers::shutdown_signal().await;
        let _ = stop_tx.send(true);
    });
    let result = served.await.context("the dashboard's server failed");
    polling.abort();
    tracing::info!("dashboard stopped");
    result
}
