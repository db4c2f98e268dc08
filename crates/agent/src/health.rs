//! Health probes: the agent is healthy while every `--health-url` answers
//! GET with 2xx within the probe timeout. The result is only read at each
//! heartbeat, so a flapping probe costs at most one report per interval.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Empty;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use ractor::{Actor, ActorProcessingErr, ActorRef};

use crate::served::Shared;

pub(crate) enum HealthMsg {
    Probe,
}

pub(crate) struct HealthArgs {
    pub(crate) shared: Arc<Shared>,
    pub(crate) urls: Vec<String>,
    pub(crate) interval_ms: u64,
}

pub(crate) struct HealthState {
    shared: Arc<Shared>,
    urls: Vec<hyper::Uri>,
    client: Client<HttpConnector, Empty<Bytes>>,
    timeout: Duration,
    interval: Duration,
    last: Option<bool>,
}

pub(crate) struct Health;

impl Actor for Health {
    type Msg = HealthMsg;
    type State = HealthState;
    type Arguments = HealthArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<HealthMsg>,
        args: HealthArgs,
    ) -> Result<HealthState, ActorProcessingErr> {
        let mut urls = Vec::new();
        for u in &args.urls {
            urls.push(
                u.parse::<hyper::Uri>()
                    .map_err(|e| format!("health url {u:?}: {e}"))?,
            );
        }
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(Duration::from_millis(args.interval_ms.min(2_000))));
        let client = Client::builder(TokioExecutor::new()).build(connector);
        if !urls.is_empty() {
            // One round at a time: the next is armed when this one ends, so
            // slow probes never pile up in the mailbox.
            myself.cast(HealthMsg::Probe)?;
        }
        Ok(HealthState {
            shared: args.shared,
            urls,
            client,
            // A probe must end before the next one is due.
            timeout: Duration::from_millis(args.interval_ms.clamp(10, 2_000)),
            interval: Duration::from_millis(args.interval_ms),
            last: None,
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<HealthMsg>,
        msg: HealthMsg,
        state: &mut HealthState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            HealthMsg::Probe => {
                let started = tokio::time::Instant::now();
                // Every URL at once, under one deadline.
                let probes = state.urls.iter().map(|uri| {
                    let client = state.client.clone();
                    let uri = uri.clone();
                    let timeout = state.timeout;
                    async move {
                        let ok = matches!(
                            tokio::time::timeout(timeout, client.get(uri.clone())).await,
                            Ok(Ok(resp)) if resp.status().is_success()
                        );
                        (uri, ok)
                    }
                });
                let results = futures_util::future::join_all(probes).await;
                let failed: Vec<String> = results
                    .iter()
                    .filter(|(_, ok)| !ok)
                    .map(|(u, _)| u.to_string())
                    .collect();
                let healthy = failed.is_empty();
                if state.last != Some(healthy) {
                    if healthy {
                        tracing::info!("healthy");
                    } else {
                        tracing::warn!(failing = ?failed, "unhealthy: health probes failed");
                    }
                }
                state.last = Some(healthy);
                state.shared.healthy.store(healthy, Ordering::Relaxed);
                let wait = state.interval.saturating_sub(started.elapsed());
                myself.send_after(wait, || HealthMsg::Probe);
            }
        }
        Ok(())
    }
}
