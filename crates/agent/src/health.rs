//! Health probes: every `--heartbeat-ms`, one **round** probes every
//! `--health-url` at once; a round passes when each answers GET with 2xx
//! within `--probe-timeout-ms`. One slow or failed round does not make the
//! agent unhealthy (one flaky probe on one agent would pause a rollout):
//! the k-of-n rule of [`Hysteresis`] decides. The result is only read at
//! each heartbeat, so a flapping probe costs at most one report per
//! interval.

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

/// The k-of-n rule: healthy at start; unhealthy only after
/// `unhealthy_after` consecutive failed rounds, healthy again only after
/// `healthy_after` consecutive passing rounds. A round that agrees with
/// the current verdict resets the opposite streak.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Hysteresis {
    unhealthy_after: u32,
    healthy_after: u32,
    healthy: bool,
    /// Consecutive rounds disagreeing with `healthy`.
    streak: u32,
}

impl Hysteresis {
    /// Healthy, with the given thresholds (0 is taken as 1).
    pub(crate) fn new(unhealthy_after: u32, healthy_after: u32) -> Self {
        Self {
            unhealthy_after: unhealthy_after.max(1),
            healthy_after: healthy_after.max(1),
            healthy: true,
            streak: 0,
        }
    }

    /// The current verdict.
    pub(crate) fn healthy(&self) -> bool {
        self.healthy
    }

    /// Counts one round; returns the new verdict when it changed.
    pub(crate) fn round(&mut self, passed: bool) -> Option<bool> {
        if passed == self.healthy {
            self.streak = 0;
            return None;
        }
        self.streak += 1;
        let needed = if self.healthy {
            self.unhealthy_after
        } else {
            self.healthy_after
        };
        if self.streak < needed {
            return None;
        }
        self.healthy = passed;
        self.streak = 0;
        Some(passed)
    }
}

pub(crate) enum HealthMsg {
    Probe,
}

pub(crate) struct HealthArgs {
    pub(crate) shared: Arc<Shared>,
    pub(crate) urls: Vec<String>,
    pub(crate) interval_ms: u64,
    pub(crate) probe_timeout_ms: u64,
    pub(crate) unhealthy_after: u32,
    pub(crate) healthy_after: u32,
}

pub(crate) struct HealthState {
    shared: Arc<Shared>,
    urls: Vec<hyper::Uri>,
    client: Client<HttpConnector, Empty<Bytes>>,
    timeout: Duration,
    interval: Duration,
    verdict: Hysteresis,
}

/// The actor that runs the probe rounds.
pub(crate) struct HealthActor;

impl Actor for HealthActor {
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
        let timeout = Duration::from_millis(args.probe_timeout_ms);
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(timeout));
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
            // Its own setting: a probe may take longer than the interval
            // (the next round then starts as soon as it ends).
            timeout,
            interval: Duration::from_millis(args.interval_ms),
            verdict: Hysteresis::new(args.unhealthy_after, args.healthy_after),
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
                let failed = state.round().await;
                state.judge(&failed);
                let wait = state.interval.saturating_sub(started.elapsed());
                myself.send_after(wait, || HealthMsg::Probe);
            }
        }
        Ok(())
    }
}

impl HealthState {
    /// Probes every URL at once, under one deadline; returns those that
    /// failed.
    async fn round(&self) -> Vec<String> {
        let probes = self.urls.iter().map(|uri| {
            let client = self.client.clone();
            let uri = uri.clone();
            let timeout = self.timeout;
            async move {
                let ok = matches!(
                    tokio::time::timeout(timeout, client.get(uri.clone())).await,
                    Ok(Ok(resp)) if resp.status().is_success()
                );
                (uri, ok)
            }
        });
        let results = futures_util::future::join_all(probes).await;
        results
            .iter()
            .filter(|(_, ok)| !ok)
            .map(|(u, _)| u.to_string())
            .collect()
    }

    /// Counts a round that `failed` those URLs (none: it passed) and
    /// publishes the verdict.
    fn judge(&mut self, failed: &[String]) {
        let passed = failed.is_empty();
        if !passed {
            tracing::debug!(failing = ?failed, "health probe round failed");
        }
        match self.verdict.round(passed) {
            Some(true) => tracing::info!("healthy again"),
            Some(false) => {
                tracing::warn!(failing = ?failed, "unhealthy: health probe rounds failed in a row");
            }
            None => {}
        }
        self.shared
            .healthy
            .store(self.verdict.healthy(), Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `rounds` ('+' passed, '-' failed) and writes the verdict after
    /// each ('H' healthy, 'U' unhealthy).
    fn run(h: &mut Hysteresis, rounds: &str) -> String {
        rounds
            .chars()
            .map(|r| {
                h.round(r == '+');
                if h.healthy() { 'H' } else { 'U' }
            })
            .collect()
    }

    #[test]
    fn turns_unhealthy_after_k_failed_rounds_in_a_row_and_back_after_n_passes() {
        let table = [
            // (unhealthy_after, healthy_after, rounds, verdicts)
            (3, 2, "--+--+", "HHHHHH"),
            (3, 2, "---", "HHU"),
            (3, 2, "---+-++", "HHUUUUH"),
            (3, 2, "---+++", "HHUUHH"),
            (1, 1, "-+-+", "UHUH"),
            (2, 3, "--++-+++", "HUUUUUUH"),
        ];
        for (k, n, rounds, want) in table {
            let mut h = Hysteresis::new(k, n);
            assert_eq!(run(&mut h, rounds), want, "k={k} n={n} rounds={rounds}");
        }
    }

    #[test]
    fn reports_only_changes_of_verdict() {
        let mut h = Hysteresis::new(2, 1);
        assert_eq!(h.round(true), None);
        assert_eq!(h.round(false), None);
        assert_eq!(h.round(false), Some(false));
        assert_eq!(h.round(false), None);
        assert_eq!(h.round(true), Some(true));
    }

    #[test]
    fn zero_thresholds_mean_one_round() {
        let mut h = Hysteresis::new(0, 0);
        assert_eq!(h.round(false), Some(false));
        assert_eq!(h.round(true), Some(true));
    }
}
