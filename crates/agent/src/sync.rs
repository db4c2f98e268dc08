//! Keeps the agent in step with the coordinator: watches the desired-state
//! bucket (from the start on every (re)connection, so an agent that was
//! offline catches up), never applies an older revision over a newer one,
//! writes the result to disk, then swaps it in and acks it.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use futures_util::{FutureExt, StreamExt};
use phasegate_bus::{Client, KvChange};
use phasegate_eval::CompiledState;
use phasegate_proto::{Bucket, DesiredEntity, Encoding, EntityKind, decode, entity_key};
use ractor::{Actor, ActorProcessingErr, ActorRef};

use crate::report::ReportMsg;
use crate::served::{Served, Shared, now_ms};
use crate::state::{self, DiskState, Loaded, StoredDesired};

/// The most changes applied (and written to disk) as one batch.
const MAX_BATCH: usize = 4096;

pub(crate) enum SyncMsg {
    /// Changes from the watch, in revision order.
    Changes(Vec<KvChange>),
    /// The watch started on an empty bucket: nothing to catch up.
    EmptyBucket,
    /// The watch broke; it is being set up again.
    WatchLost,
    /// Periodic: write down the last moment we knew ourselves in sync, so
    /// a restart without NATS does not report stale too early.
    Checkpoint,
}

pub(crate) struct SyncArgs {
    pub(crate) shared: Arc<Shared>,
    pub(crate) client: Client,
    pub(crate) state_dir: PathBuf,
    pub(crate) reporter: ActorRef<ReportMsg>,
}

pub(crate) struct SyncState {
    /// Keys whose latest revision could not be applied (undecodable, or not
    /// compilable), with that revision: acks stop just below the lowest.
    blocked: std::collections::BTreeMap<String, u64>,
    /// Tells the pump to set the watch up again from the start.
    resync: Arc<tokio::sync::Notify>,
    shared: Arc<Shared>,
    dir: PathBuf,
    disk: DiskState,
    reporter: ActorRef<ReportMsg>,
    pump: Option<tokio::task::JoinHandle<()>>,
}

pub(crate) struct Sync;

type Key = (EntityKind, String);

fn compile(shared: &Shared, d: &DesiredEntity) -> Option<Arc<CompiledState>> {
    let view = phasegate_model::desired::view(d, shared.segment.as_str());
    match CompiledState::new(d.kind, &view) {
        Ok(c) => Some(Arc::new(c)),
        Err(e) => {
            tracing::error!(kind = %d.kind, name = %d.name, error = %e, "cannot compile desired state; keeping the previous one");
            None
        }
    }
}

impl Actor for Sync {
    type Msg = SyncMsg;
    type State = SyncState;
    type Arguments = SyncArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<SyncMsg>,
        args: SyncArgs,
    ) -> Result<SyncState, ActorProcessingErr> {
        let shared = args.shared;
        // Serve what is on disk at once, before NATS is reachable.
        let disk = match state::load(&args.state_dir) {
            Loaded::Ok(d) if d.segment.as_ref() == Some(&shared.segment) => d,
            Loaded::Ok(d) => {
                tracing::warn!(file_segment = ?d.segment.as_ref().map(|s| s.as_str()), "state file belongs to another segment; ignored");
                DiskState::default()
            }
            Loaded::Missing => DiskState::default(),
            Loaded::Corrupt { reason, moved_to } => {
                tracing::error!(%reason, moved_to = %moved_to.display(), "state file is corrupt; not served, waiting for the coordinator");
                DiskState::default()
            }
        };
        let mut served = Served::default();
        for sd in disk.entities.values() {
            if let Some(c) = compile(&shared, &sd.desired) {
                served.insert(sd.desired.kind, sd.desired.name.to_string(), c);
            }
        }
        tracing::info!(
            entities = served.len(),
            applied_revision = disk.applied_revision,
            "serving state from disk"
        );
        shared.served.store(Arc::new(served));
        shared
            .applied_revision
            .store(disk.applied_revision, Ordering::Relaxed);
        shared
            .last_sync_ms
            .store(disk.last_sync_ms.unwrap_or(0), Ordering::Relaxed);
        let resync = Arc::new(tokio::sync::Notify::new());
        let pump = tokio::spawn(pump(args.client, myself.clone(), resync.clone()));
        let every = std::time::Duration::from_millis((shared.stale_after_ms / 2).max(100));
        myself.send_interval(every, || SyncMsg::Checkpoint);
        Ok(SyncState {
            blocked: std::collections::BTreeMap::new(),
            resync,
            shared,
            dir: args.state_dir,
            disk,
            reporter: args.reporter,
            pump: Some(pump),
        })
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<SyncMsg>,
        state: &mut SyncState,
    ) -> Result<(), ActorProcessingErr> {
        if let Some(p) = state.pump.take() {
            p.abort();
        }
        Ok(())
    }

    async fn handle(
        &self,
        _myself: ActorRef<SyncMsg>,
        msg: SyncMsg,
        state: &mut SyncState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            SyncMsg::WatchLost => {
                state.shared.current.store(false, Ordering::Relaxed);
            }
            SyncMsg::EmptyBucket => {
                state.shared.current.store(true, Ordering::Relaxed);
                state.mark_synced().await;
            }
            SyncMsg::Changes(batch) => state.apply(batch).await,
            SyncMsg::Checkpoint => {
                let last = state.shared.last_sync_ms.load(Ordering::Relaxed);
                if last > state.disk.last_sync_ms.unwrap_or(0) {
                    state.disk.last_sync_ms = Some(last);
                    state.save_disk().await;
                }
            }
        }
        Ok(())
    }
}

impl SyncState {
    async fn apply(&mut self, batch: Vec<KvChange>) {
        let mut next = self.disk.clone();
        // Compiled before anything is written: what cannot be compiled is
        // neither stored nor acked (see `blocked`).
        let mut changed: Vec<(Key, Option<Arc<CompiledState>>)> = Vec::new();
        // One span per rollout applied here, in the rollout's trace; they
        // end once the change is on disk and served.
        let mut spans: Vec<tracing::Span> = Vec::new();
        let mut current = false;
        for c in batch {
            current |= c.seen_current;
            next.applied_revision = next.applied_revision.max(c.revision);
            if next
                .entities
                .get(&c.key)
                .is_some_and(|e| e.revision >= c.revision)
            {
                continue; // never an older revision over a newer one
            }
            match c.value {
                Some(bytes) => match decode::<DesiredEntity>(Encoding::MsgPack, &bytes) {
                    Ok(d) if entity_key(d.kind, &d.name) == c.key => {
                        // Only rollouts that reach this segment are traced here.
                        let view = phasegate_model::desired::view(&d, self.shared.segment.as_str());
                        if let (Some(r), Some(v)) = (&d.rollout, &view.rollout) {
                            let phase = v.phase_id.to_string();
                            let span = tracing::info_span!(
                                "phasegate.apply",
                                otel.name = "apply",
                                phasegate.segment = %self.shared.segment,
                                phasegate.agent_id = %self.shared.agent_id,
                                phasegate.trigger_id = %r.trigger_id,
                                phasegate.phase_id = %phase,
                                phasegate.entity = %c.key,
                                phasegate.revision = c.revision,
                                trace_id = %r.trace_parent.as_deref().and_then(phasegate_bus::trace::trace_id_of).unwrap_or(""),
                            );
                            phasegate_bus::trace::continue_from_traceparent(
                                &span,
                                r.trace_parent.as_deref(),
                            );
                            spans.push(span);
                        }
                        match compile(&self.shared, &d) {
                            Some(compiled) => {
                                self.blocked.remove(&c.key);
                                changed.push(((d.kind, d.name.to_string()), Some(compiled)));
                                next.entities.insert(
                                    c.key,
                                    StoredDesired {
                                        revision: c.revision,
                                        desired: d,
                                    },
                                );
                            }
                            None => {
                                self.blocked.insert(c.key, c.revision);
                            }
                        }
                    }
                    Ok(_) => {
                        tracing::error!(key = %c.key, "desired state under the wrong key: not applied");
                        self.blocked.insert(c.key, c.revision);
                    }
                    Err(e) => {
                        tracing::error!(key = %c.key, error = %e, "undecodable desired state: not applied");
                        self.blocked.insert(c.key, c.revision);
                    }
                },
                None => {
                    self.blocked.remove(&c.key);
                    if let Some(old) = next.entities.remove(&c.key) {
                        changed.push(((old.desired.kind, old.desired.name.to_string()), None));
                    }
                }
            }
        }
        // Never ack past a revision we could not apply: the coordinator must
        // not call a phase applied here while we serve the old version.
        if let Some(&b) = self.blocked.values().min() {
            next.applied_revision = next.applied_revision.min(b.saturating_sub(1));
        }
        // Changes that arrive after the catch-up come from a live watch:
        // we are in step with what the coordinator published.
        if current {
            next.last_sync_ms = Some(now_ms());
        }
        // Durable first: only what is on disk is served and acked.
        let dir = self.dir.clone();
        next.segment = Some(self.shared.segment.clone());
        let to_save = next.clone();
        let saved = tokio::task::spawn_blocking(move || state::save(&dir, &to_save)).await;
        match saved {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                // Nothing of the batch is served or acked; the watch starts
                // over so that it is delivered again.
                tracing::error!(error = %e, "cannot write state; not applying, will sync again");
                self.resync.notify_one();
                return;
            }
            Err(e) => {
                tracing::error!(error = %e, "state writer failed; will sync again");
                self.resync.notify_one();
                return;
            }
        }
        if !changed.is_empty() {
            let old = self.shared.served.load();
            let mut entities: Served = (**old).clone();
            for (k, c) in changed {
                match c {
                    Some(c) => {
                        tracing::info!(kind = %k.0, name = %k.1, "applied");
                        entities.insert(k.0, k.1, c);
                    }
                    None => {
                        tracing::info!(kind = %k.0, name = %k.1, "removed");
                        entities.remove(k.0, &k.1);
                    }
                }
            }
            self.shared.served.store(Arc::new(entities));
        }
        self.disk = next;
        if current {
            self.shared.current.store(true, Ordering::Relaxed);
        }
        if let Some(t) = self.disk.last_sync_ms {
            self.shared.last_sync_ms.fetch_max(t, Ordering::Relaxed);
        }
        drop(spans);
        let before = self
            .shared
            .applied_revision
            .swap(self.disk.applied_revision, Ordering::Relaxed);
        if before != self.disk.applied_revision {
            let _ = self.reporter.cast(ReportMsg::Applied);
        }
    }

    async fn mark_synced(&mut self) {
        self.disk.last_sync_ms = Some(now_ms());
        self.shared.last_sync_ms.store(now_ms(), Ordering::Relaxed);
        self.save_disk().await;
    }

    async fn save_disk(&mut self) {
        let dir = self.dir.clone();
        self.disk.segment = Some(self.shared.segment.clone());
        let to_save = self.disk.clone();
        if let Ok(Err(e)) = tokio::task::spawn_blocking(move || state::save(&dir, &to_save)).await {
            tracing::error!(error = %e, "cannot write state");
        }
    }
}

/// Feeds the actor from the desired-state watch, setting it up again
/// whenever it breaks (NATS down, bucket not created yet).
async fn pump(client: Client, sync: ActorRef<SyncMsg>, resync: Arc<tokio::sync::Notify>) {
    let bucket = client.subjects().bucket(Bucket::Desired);
    let mut backoff = Duration::from_millis(50);
    loop {
        let watch = async {
            let kv = client.kv_existing(&bucket).await?;
            let empty = kv.is_empty().await?;
            let w = kv.watch_all_with_history().await?;
            Ok::<_, phasegate_bus::BusError>((w, empty))
        }
        .await;
        match watch {
            Ok((mut w, empty)) => {
                backoff = Duration::from_millis(50);
                if empty && sync.cast(SyncMsg::EmptyBucket).is_err() {
                    return;
                }
                loop {
                    let next = tokio::select! {
                        n = w.next() => n,
                        () = resync.notified() => break,
                    };
                    match next {
                        Some(Ok(c)) => {
                            let mut batch = vec![c];
                            // Take whatever else is already here: one disk
                            // write for a catch-up of thousands.
                            while batch.len() < MAX_BATCH {
                                match w.next().now_or_never() {
                                    Some(Some(Ok(c))) => batch.push(c),
                                    _ => break,
                                }
                            }
                            if sync.cast(SyncMsg::Changes(batch)).is_err() {
                                return;
                            }
                        }
                        other => {
                            if let Some(Err(e)) = other {
                                tracing::warn!(error = %e, "desired-state watch broke");
                            }
                            break;
                        }
                    }
                }
                if sync.cast(SyncMsg::WatchLost).is_err() {
                    return;
                }
            }
            Err(e) => tracing::debug!(error = %e, "desired state not reachable yet"),
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(2));
    }
}
