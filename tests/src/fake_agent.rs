//! A minimal agent that speaks the coordinator ↔ agent protocol and
//! nothing more: it watches the desired-state bucket, acks what it sees
//! (unless told not to) and heartbeats with a health the test controls.
//! It lets coordinator tests drive the fleet precisely; the real agent is
//! tested on its own.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use futures_util::StreamExt;
use phasegate_bus::{Client, ConnectOptions};
use phasegate_proto::{
    AgentId, AgentReport, BlockedEntity, Bucket, Encoding, Segment, Subjects, encode,
};
use tokio::task::JoinHandle;

/// A protocol-level stand-in for an agent.
pub struct FakeAgent {
    blocked: Arc<std::sync::Mutex<Vec<BlockedEntity>>>,
    healthy: Arc<AtomicBool>,
    acking: Arc<AtomicBool>,
    seen: Arc<AtomicU64>,
    task: JoinHandle<()>,
    client: Client,
    agent_id: AgentId,
    segment: Segment,
    heartbeat_ms: u64,
}

impl FakeAgent {
    /// Starts an agent of `segment` reporting every `heartbeat_ms`.
    pub async fn start(
        url: &str,
        agent_id: &str,
        segment: &str,
        heartbeat_ms: u64,
    ) -> anyhow::Result<Self> {
        let subjects = Subjects::default();
        let client = phasegate_bus::connect(ConnectOptions::new(url, agent_id)).await?;
        let healthy = Arc::new(AtomicBool::new(true));
        let acking = Arc::new(AtomicBool::new(true));
        let seen = Arc::new(AtomicU64::new(0));
        let agent_id = AgentId::new(agent_id)?;
        let segment = Segment::new(segment)?;
        let blocked = Arc::new(std::sync::Mutex::new(Vec::new()));
        let task = tokio::spawn(run(
            blocked.clone(),
            client.clone(),
            subjects,
            agent_id.clone(),
            segment.clone(),
            heartbeat_ms,
            healthy.clone(),
            acking.clone(),
            seen.clone(),
        ));
        Ok(Self {
            blocked,
            healthy,
            acking,
            seen,
            task,
            client,
            agent_id,
            segment,
            heartbeat_ms,
        })
    }

    /// Reports `key` as blocked (undecodable) at `revision`, or nothing
    /// blocked with `None`.
    pub fn set_blocked(&self, blocked: Option<(&str, u64)>) {
        if let Ok(mut b) = self.blocked.lock() {
            *b = blocked
                .map(|(key, revision)| BlockedEntity {
                    key: key.to_owned(),
                    revision,
                    error: "cannot compile".to_owned(),
                })
                .into_iter()
                .collect();
        }
    }

    /// Sets the health it reports.
    pub fn set_healthy(&self, healthy: bool) {
        self.healthy.store(healthy, Ordering::SeqCst);
    }

    /// Stops (or resumes) acking new revisions: a stuck agent.
    pub fn set_acking(&self, acking: bool) {
        self.acking.store(acking, Ordering::SeqCst);
    }

    /// The highest desired-state revision it has seen.
    pub fn seen(&self) -> u64 {
        self.seen.load(Ordering::SeqCst)
    }

    /// Stops it: it goes silent, as a dead agent does.
    pub fn stop(&self) {
        self.task.abort();
    }

    /// Stops it cleanly: it says it is leaving, as a real agent does on
    /// SIGTERM, then goes silent.
    pub async fn leave(&self) -> anyhow::Result<()> {
        self.task.abort();
        let report = AgentReport {
            agent_id: self.agent_id.clone(),
            segment: self.segment.clone(),
            tier: None,
            healthy: true,
            applied_revision: self.seen(),
            stale: false,
            heartbeat_ms: self.heartbeat_ms,
            sent_at_ms: 0,
            blocked: Vec::new(),
            leaving: true,
            analyses: Vec::new(),
        };
        let subject = Subjects::default().agent_report(&self.segment);
        self.client
            .nats()
            .publish(subject, encode(Encoding::MsgPack, &report)?.into())
            .await?;
        self.client.flush().await;
        Ok(())
    }
}

impl Drop for FakeAgent {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[allow(clippy::too_many_arguments)] // a task's captured state, passed once
async fn run(
    blocked: Arc<std::sync::Mutex<Vec<BlockedEntity>>>,
    client: Client,
    subjects: Subjects,
    agent_id: AgentId,
    segment: Segment,
    heartbeat_ms: u64,
    healthy: Arc<AtomicBool>,
    acking: Arc<AtomicBool>,
    seen: Arc<AtomicU64>,
) {
    let bucket = subjects.bucket(Bucket::Desired);
    let kv = loop {
        match client.kv_existing(&bucket).await {
            Ok(kv) => break kv,
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    };
    let Ok(mut watch) = kv.watch_all_with_history().await else {
        return;
    };
    let mut applied = 0u64;
    let mut tick = tokio::time::interval(Duration::from_millis(heartbeat_ms));
    let subject = subjects.agent_report(&segment);
    loop {
        let mut send = false;
        tokio::select! {
            change = watch.next() => match change {
                Some(Ok(c)) => {
                    seen.fetch_max(c.revision, Ordering::SeqCst);
                    if acking.load(Ordering::SeqCst) {
                        applied = applied.max(c.revision);
                        send = true;
                    }
                }
                _ => return,
            },
            _ = tick.tick() => {
                if acking.load(Ordering::SeqCst) {
                    applied = applied.max(seen.load(Ordering::SeqCst));
                }
                send = true;
            }
        }
        if send {
            let report = AgentReport {
                agent_id: agent_id.clone(),
                segment: segment.clone(),
                tier: None,
                healthy: healthy.load(Ordering::SeqCst),
                applied_revision: applied,
                stale: false,
                heartbeat_ms,
                sent_at_ms: 0,
                blocked: blocked.lock().map(|b| b.clone()).unwrap_or_default(),
                leaving: false,
                analyses: Vec::new(),
            };
            if let Ok(body) = encode(Encoding::MsgPack, &report) {
                let _ = client.nats().publish(subject.clone(), body.into()).await;
            }
        }
    }
}
