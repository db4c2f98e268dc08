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
            myself.send_interval(Duration::from_millis(args.interval_ms), || HealthMsg::Probe);
            myself.cast(HealthMsg::Probe)?;
        }
        Ok(HealthState {
            shared: args.shared,
            urls,
            client,
            // A probe must end before the next one is due.
            timeout: Duration::from_millis(args.interval_ms.clamp(10, 2_000)),
            last: None,
        })
    }

    async fn handle(
        &self,
        _myself: ActorRef<HealthMsg>,
        msg: HealthMsg,
        state: &mut HealthState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            HealthMsg::Probe => {
                let mut healthy = true;
                for uri in &state.urls {
                    let ok =
                        match tokio::time::timeout(state.timeout, state.client.get(uri.clone()))
                            .await
                        {
                            Ok(Ok(resp)) => resp.status().is_success(),
                            _ => false,
                        };
                    if !ok {
                        healthy = false;
                        if state.last != Some(false) {
                            tracing::warn!(url = %uri, "health probe failed");
                        }
                        break;
                    }
                }
                if state.last != Some(healthy) {
                    tracing::info!(healthy, "health changed");
                }
                state.last = Some(healthy);
                state.shared.healthy.store(healthy, Ordering::Relaxed);
            }
        }
        Ok(())
    }
}
