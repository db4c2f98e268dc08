//! Propagation: how long a change takes from `put` to every agent, to the
//! coordinator's `phase_applied` and to `completed`, against the raw-NATS
//! baseline of the same fleet size on the same server.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, bail};
use futures_util::StreamExt as _;
use phasegate_bus::Kv;
use phasegate_devkit::NatsServer;
use phasegate_proto::subjects::entity_key;
use phasegate_proto::{
    AgentReport, Bucket, Encoding, EntityKind, EntityName, HistoryType, Subjects, Trigger,
    TriggerStatus, decode,
};
use phasegate_tests::NatsServerExt as _;
use phasegate_tests::rollout::{actor, put_pipeline};
use serde_json::json;
use tokio::time::Instant;

use crate::fleet::{Coord, Fleet};
use crate::{Settings, baseline, p50_p99, quantile, ratio};

/// How long one sample may take before the run is called broken.
const SAMPLE_PATIENCE: Duration = Duration::from_secs(120);

/// How often the trigger is read while waiting for `completed`. The
/// figures do not depend on it: they come from the times the coordinator
/// recorded and the reports the agents sent.
const POLL: Duration = Duration::from_millis(10);

/// What the bench hears on its own connection: every agent report, with
/// the moment it arrived.
///
/// It reads the desired-state bucket by direct gets, never by a watch: a
/// stream takes at most 1,000 consumers by default on nats-server 2.15,
/// and a thousand agents already hold that many.
#[derive(Default)]
struct Heard {
    /// Latest `applied_revision` per agent.
    applied: HashMap<String, u64>,
    /// Since the current sample began: (arrival, agent, applied revision).
    report_log: Vec<(Instant, String, u64)>,
    /// Since the current sample began: when a desired-state write was
    /// heard (the stream's own subject, on core NATS).
    desired_log: Vec<Instant>,
}

/// One sample's figures.
struct Sample {
    /// Until the desired state of the phase was written (the coordinator's
    /// share before the fan-out).
    desired: Duration,
    /// Until the last agent's report acked the phase's revision.
    agents: Duration,
    /// Until the coordinator recorded `phase_applied`.
    applied: Duration,
    /// Until the coordinator recorded `completed`.
    completed: Duration,
}

/// One fleet size: the baseline first, then phasegate, on one server.
pub(crate) async fn run(s: &Settings, n: usize) -> anyhow::Result<()> {
    let segments = n.div_ceil(s.per_segment);
    println!(
        "\npropagation: {n} agents in {segments} segment(s) of up to {}, heartbeat {} ms, {} samples",
        s.per_segment, s.heartbeat_ms, s.samples
    );
    let nats = NatsServer::start().await?;
    let base = baseline::run(&nats, n, s.samples).await?;
    println!(
        "  baseline: KV put → {n} watchers wrote+fsynced+acked   {}",
        p50_p99(&base)
    );

    let coord = Coord::start(&nats).await?;
    let started = Instant::now();
    let fleet = Fleet::start(&nats.url(), "fleet", n, s.per_segment, s.heartbeat_ms).await?;
    coord.wait_live(n).await?;
    println!(
        "  {n} agents started and counted live in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let (heard, desired) = listen(&nats).await?;
    put_pipeline(
        &coord.client,
        json!({"name": "fleet", "phases": [{"id": "all", "segments": ["fleet-*"], "wait_ms": 0}]}),
    )
    .await?;
    let mut samples = Vec::with_capacity(s.samples);
    for i in 1..=s.samples {
        samples.push(sample(&coord, &heard, &desired, n, i).await?);
    }
    fleet.stop().await;

    let pick = |f: fn(&Sample) -> Duration| samples.iter().map(f).collect::<Vec<_>>();
    let (desired, agents, applied, completed) = (
        pick(|x| x.desired),
        pick(|x| x.agents),
        pick(|x| x.applied),
        pick(|x| x.completed),
    );
    println!(
        "  put → desired state written              {}",
        p50_p99(&desired)
    );
    println!(
        "  put → every agent acked (their reports)   {}",
        p50_p99(&agents)
    );
    println!(
        "  put → phase_applied recorded              {}",
        p50_p99(&applied)
    );
    println!(
        "  put → completed recorded                  {}",
        p50_p99(&completed)
    );
    for (what, v) in [("phase_applied", &applied), ("completed", &completed)] {
        println!(
            "  {what}/baseline: p50 {}  p99 {}   (target: p99 within 2× at 100 and 1,000 agents)",
            ratio(quantile(v, 0.5), quantile(&base, 0.5)),
            ratio(quantile(v, 0.99), quantile(&base, 0.99)),
        );
    }
    Ok(())
}

/// One put of a new version of gate `g`, timed until `completed`.
async fn sample(
    coord: &Coord,
    heard: &Mutex<Heard>,
    desired: &Kv,
    n: usize,
    i: usize,
) -> anyhow::Result<Sample> {
    let key = entity_key(EntityKind::Gate, &EntityName::new("g")?);
    let before = desired.get(&key).await?.map_or(0, |e| e.revision);
    settle(heard, before, n).await?;
    let spec = serde_json::from_value(json!({
        "name": "g", "pipeline": "fleet", "salt": format!("s{i}"),
        "rules": [{"id": "all", "pass_percentage": 100}]
    }))?;
    let (t0, t0_ms) = (Instant::now(), epoch_ms());
    let put = coord
        .client
        .entity_put(EntityKind::Gate, spec, actor("bench"), None, None)
        .await?;
    let id = put.trigger.context("the put started no trigger")?.id;
    let t = wait_completed(coord, &id).await?;
    let at = |kind: HistoryType| -> anyhow::Result<Duration> {
        let e = t
            .history
            .iter()
            .find(|h| h.kind == kind)
            .with_context(|| format!("no {kind:?} in the history of {id}"))?;
        #[allow(clippy::cast_precision_loss)] // epoch milliseconds
        let d = (e.at_ms as f64 - t0_ms).max(0.0);
        Ok(Duration::from_secs_f64(d / 1e3))
    };
    let desired = {
        let h = heard.lock().expect("heard");
        h.desired_log
            .iter()
            .find(|at| **at >= t0)
            .map_or(Duration::ZERO, |at| at.saturating_duration_since(t0))
    };
    Ok(Sample {
        desired,
        agents: agents_acked(heard, before, t0, n).await?,
        applied: at(HistoryType::PhaseApplied)?,
        completed: at(HistoryType::Completed)?,
    })
}

/// Polls the trigger until it is `completed`.
async fn wait_completed(coord: &Coord, id: &phasegate_proto::TriggerId) -> anyhow::Result<Trigger> {
    let deadline = Instant::now() + SAMPLE_PATIENCE;
    loop {
        let t = coord.client.trigger_get(id.clone()).await?;
        match t.status {
            TriggerStatus::Completed => return Ok(t),
            TriggerStatus::Aborted => bail!("trigger {id} aborted"),
            TriggerStatus::InProgress if Instant::now() >= deadline => {
                bail!("trigger {id} not completed within {SAMPLE_PATIENCE:?}: {t:?}")
            }
            TriggerStatus::InProgress => tokio::time::sleep(POLL).await,
        }
    }
}

/// Waits until every agent reported desired-state revision `latest` (the
/// previous sample's `completed` has reached them all), then starts the
/// log of a new sample.
async fn settle(heard: &Mutex<Heard>, latest: u64, n: usize) -> anyhow::Result<()> {
    let deadline = Instant::now() + SAMPLE_PATIENCE;
    loop {
        {
            let mut h = heard.lock().expect("heard");
            let behind = h.applied.values().filter(|r| **r < latest).count()
                + n.saturating_sub(h.applied.len());
            if behind == 0 {
                h.report_log.clear();
                h.desired_log.clear();
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!("{behind} agents still behind revision {latest}");
            }
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// When the last agent acked a desired-state revision above `before`
/// (the phase is the first written after the put), from the reports heard.
async fn agents_acked(
    heard: &Mutex<Heard>,
    before: u64,
    t0: Instant,
    n: usize,
) -> anyhow::Result<Duration> {
    let deadline = Instant::now() + SAMPLE_PATIENCE;
    loop {
        {
            let h = heard.lock().expect("heard");
            let mut first: HashMap<&str, Instant> = HashMap::new();
            for (at, agent, rev) in &h.report_log {
                if *rev > before {
                    first.entry(agent.as_str()).or_insert(*at);
                }
            }
            if first.len() >= n
                && let Some(last) = first.values().max()
            {
                return Ok(last.saturating_duration_since(t0));
            }
            if Instant::now() >= deadline {
                bail!("not every agent acked the phase within {SAMPLE_PATIENCE:?}");
            }
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Subscribes to every agent report on a connection of its own; what is
/// heard is kept in [`Heard`]. Returns it with the desired-state bucket.
async fn listen(nats: &NatsServer) -> anyhow::Result<(Arc<Mutex<Heard>>, Kv)> {
    let subjects = Subjects::default();
    let client = nats.client("bench-listener").await?;
    let heard = Arc::new(Mutex::new(Heard::default()));
    let mut reports = client
        .subscribe_payloads(subjects.all_agent_reports())
        .await?;
    let desired_bucket = subjects.bucket(Bucket::Desired);
    let mut writes = client
        .subscribe_payloads(format!("$KV.{desired_bucket}.>"))
        .await?;
    let desired = client.kv_existing(&desired_bucket).await?;
    client.ping().await?;
    let h = heard.clone();
    tokio::spawn(async move {
        while writes.next().await.is_some() {
            h.lock().expect("heard").desired_log.push(Instant::now());
        }
    });
    let h = heard.clone();
    tokio::spawn(async move {
        // The connection lives as long as this task.
        let _client = client;
        while let Some((_, payload)) = reports.next().await {
            let Ok(r) = decode::<AgentReport>(Encoding::MsgPack, &payload) else {
                continue;
            };
            let mut h = h.lock().expect("heard");
            let id = r.agent_id.to_string();
            h.report_log
                .push((Instant::now(), id.clone(), r.applied_revision));
            h.applied.insert(id, r.applied_revision);
        }
    });
    Ok((heard, desired))
}

/// Now, in Unix-epoch milliseconds with a fraction: the clock the
/// coordinator records history with.
fn epoch_ms() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64() * 1e3)
}
