//! Keeps the agent in step with the coordinator: watches the desired-state
//! bucket (from the start on every (re)connection, so an agent that was
//! offline catches up), writes what it applies to disk, then swaps it in
//! and acks it. What a batch of changes does is decided by
//! [`crate::plan::plan_batch`]; this actor only carries the plan out.
//!
//! # What is written, and when
//!
//! A batch that changes an entity or a blocked key is written (and
//! fsynced) before anything of it is served or acked: the files of the
//! keys it changed, then the watermark (`crate::state`), so its cost is
//! that of its own changes whatever the number of entities. A batch that only
//! moves the watermark — replays after a reconnect, deletions of unknown
//! keys — is not written for that alone: the watermark then stands for
//! state that is already on disk, so acking it is sound, and after a
//! restart the agent re-derives it from the watch (every key's latest
//! revision is delivered again). The file's watermark may therefore lag
//! behind the acked one, never lead it; a lagging one only makes the first
//! reports after a restart more conservative. It is written with the next
//! real change or checkpoint.
//!
//! An entity file found corrupt at start is moved aside and that entity is
//! not served; the watermark and last sync are reset (the agent acks
//! nothing and says it is stale) until the watch, which delivers every
//! key's latest revision again, has brought it back.
//!
//! # A new bucket generation
//!
//! Revisions restart at 1 when the bucket is deleted and created again. The
//! bucket's generation (its stream's creation time) is stored with the
//! state; when a watch starts on another generation (or the pump sees the
//! generation change under a running watch), the agent acks nothing more
//! (watermark 0), rebuilds its state from the new bucket's contents while
//! it keeps serving the old one, and swaps the whole new state in once the
//! watch has caught up and it is written. An empty new bucket rebuilds to
//! an empty state: the bucket is the truth the coordinator publishes.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use futures_util::{FutureExt, StreamExt};
use phasegate_bus::{BusError, Client, Kv, KvChange, KvWatch};
use phasegate_proto::{Bucket, Segment};
use ractor::{Actor, ActorProcessingErr, ActorRef, MessagingErr};
use tokio::sync::Notify;

use crate::AgentError;
use crate::analysis::Changed;
use crate::plan::{self, ApplyTrace, Plan, ServeChange, plan_batch};
use crate::report::ReportMsg;
use crate::served::{Served, Shared, now_ms};
use crate::state::{DiskState, FileChange, Loaded, Progress, Store};

/// The most changes applied (and written to disk) as one batch.
const MAX_BATCH: usize = 4096;

pub(crate) enum SyncMsg {
    /// A watch began on the bucket of this generation; `empty`: it holds
    /// nothing, there is nothing to catch up.
    Watching { generation: u64, empty: bool },
    /// Changes from the watch, in revision order.
    Changes(Vec<KvChange>),
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
    /// How often a running watch checks the bucket's generation.
    pub(crate) generation_check: Duration,
}

pub(crate) struct SyncState {
    /// Tells the pump to set the watch up again from the start.
    resync: Arc<Notify>,
    shared: Arc<Shared>,
    store: Store,
    /// What is on disk (its watermark may be ahead in memory, see above).
    disk: DiskState,
    /// The state of a new bucket generation being read from scratch; the
    /// old one is served until this one has caught up and is written.
    rebuild: Option<DiskState>,
    reporter: ActorRef<ReportMsg>,
    pump: Option<tokio::task::JoinHandle<()>>,
}

/// The actor that keeps the segment's desired state in sync: watch →
/// plan → disk → snapshot → ack.
pub(crate) struct SyncActor;

/// What `disk` serves, compiled; entities that no longer compile are left
/// out (and logged), never served half-read.
fn served_from(shared: &Shared, disk: &DiskState) -> Served {
    let mut served = Served::default();
    for (key, sd) in &disk.entities {
        match plan::compile(shared.segment.as_str(), &sd.desired) {
            Ok(c) => served.insert(sd.desired.kind, sd.desired.name.to_string(), c),
            Err(error) => {
                tracing::error!(%key, %error, "stored desired state does not compile; not served")
            }
        }
    }
    served
}

/// Opens the state directory: the store, and what of it this agent may
/// serve (nothing of another segment's, nothing of a corrupt state).
fn open_state(dir: &Path, segment: &Segment) -> (Store, DiskState) {
    let (mut store, loaded) = Store::open(dir);
    let mut disk = readable(loaded);
    if disk.segment.as_ref() != Some(segment) {
        if disk != DiskState::default() {
            tracing::warn!(file_segment = ?disk.segment.as_ref().map(|s| s.as_str()), "state belongs to another segment; ignored");
        }
        // Whatever is there is not this agent's: the next write starts afresh.
        store.forget();
        disk = DiskState::default();
    }
    disk.segment = Some(segment.clone());
    (store, disk)
}

/// The state read from disk, with what could not be read logged.
fn readable(loaded: Loaded) -> DiskState {
    match loaded {
        Loaded::Ok { state, damaged } => {
            for d in damaged {
                tracing::error!(reason = %d.reason, moved_to = ?d.moved_to, "entity file is corrupt; that entity is not served until the watch delivers it again, and nothing is acked until then");
            }
            state
        }
        Loaded::Migrated { state, converted } => {
            tracing::info!(
                converted,
                "state file of the single-file format read; written as a pack and a journal"
            );
            state
        }
        Loaded::Missing => DiskState::default(),
        Loaded::Corrupt(d) => {
            tracing::error!(reason = %d.reason, moved_to = ?d.moved_to, "state file is corrupt; not served, waiting for the coordinator");
            DiskState::default()
        }
    }
}

impl Actor for SyncActor {
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
        let (store, disk) = open_state(&args.state_dir, &shared.segment);
        let served = served_from(&shared, &disk);
        tracing::info!(
            entities = served.len(),
            blocked = disk.blocked.len(),
            applied_revision = disk.applied_revision,
            "serving state from disk"
        );
        shared.served.store(Arc::new(served));
        shared
            .last_sync_ms
            .store(disk.last_sync_ms.unwrap_or(0), Ordering::Relaxed);
        let resync = Arc::new(Notify::new());
        let pump = tokio::spawn(pump(
            args.client,
            myself.clone(),
            resync.clone(),
            args.generation_check,
        ));
        let every = Duration::from_millis((shared.stale_after_ms / 2).max(100));
        myself.send_interval(every, || SyncMsg::Checkpoint);
        let state = SyncState {
            resync,
            shared,
            store,
            disk,
            rebuild: None,
            reporter: args.reporter,
            pump: Some(pump),
        };
        state.publish(Changed::All);
        Ok(state)
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
            SyncMsg::Watching { generation, empty } => state.watching(generation, empty).await,
            SyncMsg::Changes(batch) => {
                if state.rebuild.is_some() {
                    state.rebuild_with(&batch).await;
                } else {
                    state.apply(&batch).await;
                }
            }
            SyncMsg::Checkpoint => state.checkpoint().await,
        }
        Ok(())
    }
}

impl SyncState {
    /// A watch began on `generation`.
    async fn watching(&mut self, generation: u64, empty: bool) {
        match self.disk.generation {
            Some(g) if g == generation => self.rebuild = None,
            None => {
                // A first start (or a file from before generations were
                // kept): this is the bucket its state came from.
                self.rebuild = None;
                self.disk.generation = Some(generation);
                let _ = self.save_progress().await;
            }
            Some(old) => {
                tracing::warn!(
                    old_generation = old,
                    generation,
                    "the desired-state bucket was created again; rebuilding from its contents, serving the old state until then"
                );
                self.rebuild = Some(DiskState {
                    segment: Some(self.shared.segment.clone()),
                    generation: Some(generation),
                    ..DiskState::default()
                });
                // Nothing of the new generation is applied yet: ack nothing.
                self.shared.current.store(false, Ordering::Relaxed);
                if self.shared.applied_revision.swap(0, Ordering::AcqRel) != 0 {
                    let _ = self.reporter.cast(ReportMsg::Applied);
                }
            }
        }
        if empty {
            if self.rebuild.is_some() {
                self.finish_rebuild().await;
            } else {
                self.shared.current.store(true, Ordering::Relaxed);
                self.mark_synced().await;
            }
        }
    }

    /// Applies one batch of the current generation: plan it, write what
    /// it changes, then serve and ack it.
    async fn apply(&mut self, batch: &[KvChange]) {
        let plan = plan_batch(&self.disk, self.shared.segment.as_str(), batch);
        log_blocked(&plan);
        // One span per rollout applied here, in the rollout's trace; they
        // end once the change is on disk and served.
        let spans: Vec<tracing::Span> = plan.traces.iter().map(|t| self.span(t)).collect();
        let current = plan.current;
        // Changes that arrive after the catch-up come from a live watch:
        // we are in step with what the coordinator published.
        let synced_at = current.then(now_ms);
        if let Some(now) = synced_at {
            self.shared.last_sync_ms.fetch_max(now, Ordering::Relaxed);
        }
        // Durable first: only what is on disk is served and acked.
        if plan.persist() && self.persist(&plan, synced_at).await.is_err() {
            // Nothing of the batch is served or acked; the watch
            // starts over so that it is delivered again.
            self.resync.notify_one();
            return;
        }
        plan.apply_to(&mut self.disk);
        self.serve(plan.serve);
        if current {
            self.shared.current.store(true, Ordering::Relaxed);
        }
        drop(spans);
        self.publish(Changed::Keys(&plan.files));
    }

    /// Writes the files `plan` changes, then its watermark (and
    /// `synced_at`, when the batch came from a live watch).
    async fn persist(&mut self, plan: &Plan, synced_at: Option<u64>) -> Result<(), AgentError> {
        let mut progress = self.disk.progress();
        progress.applied_revision = plan.applied_revision;
        if synced_at.is_some() {
            progress.last_sync_ms = synced_at;
        }
        if self
            .store
            .wants_whole(plan.files.len(), self.disk.entities.len())
        {
            // Time to compact: O(state), after as many records.
            let mut next = self.disk.clone();
            plan.apply_to(&mut next);
            next.last_sync_ms = progress.last_sync_ms;
            self.replace(next).await?;
        } else {
            self.save(progress, plan.files.clone()).await?;
        }
        if synced_at.is_some() {
            self.disk.last_sync_ms = synced_at;
        }
        Ok(())
    }

    /// Swaps in a snapshot with `changes` made, for the HTTP API.
    fn serve(&self, changes: Vec<ServeChange>) {
        if changes.is_empty() {
            return;
        }
        let mut entities: Served = (**self.shared.served.load()).clone();
        for change in changes {
            match change {
                ServeChange::Put {
                    kind,
                    name,
                    revision,
                    compiled,
                } => {
                    tracing::info!(%kind, %name, revision, "applied");
                    entities.insert(kind, name, compiled);
                }
                ServeChange::Remove { kind, name } => {
                    tracing::info!(%kind, %name, "removed");
                    entities.remove(kind, &name);
                }
            }
        }
        self.shared.served.store(Arc::new(entities));
    }

    /// Reads one batch of a new generation into the state being rebuilt.
    async fn rebuild_with(&mut self, batch: &[KvChange]) {
        let Some(base) = &mut self.rebuild else {
            return;
        };
        let plan = plan_batch(base, self.shared.segment.as_str(), batch);
        log_blocked(&plan);
        // Held in memory only: the whole of it is written once caught up.
        plan.apply_to(base);
        if plan.current {
            self.finish_rebuild().await;
        }
    }

    /// The new generation has caught up: write it, then serve and ack it.
    async fn finish_rebuild(&mut self) {
        let Some(mut next) = self.rebuild.take() else {
            return;
        };
        next.last_sync_ms = Some(now_ms());
        if self.replace(next.clone()).await.is_err() {
            // The watch starts over and the rebuild with it.
            self.resync.notify_one();
            return;
        }
        let served = served_from(&self.shared, &next);
        tracing::info!(
            entities = served.len(),
            applied_revision = next.applied_revision,
            "rebuilt from the new desired-state bucket"
        );
        self.shared.served.store(Arc::new(served));
        self.shared
            .last_sync_ms
            .fetch_max(next.last_sync_ms.unwrap_or(0), Ordering::Relaxed);
        self.disk = next;
        self.shared.current.store(true, Ordering::Relaxed);
        self.publish(Changed::All);
    }

    /// Makes the blocked keys, then the watermark, visible to the reports
    /// and the HTTP API; reports at once when either changed. `changed`:
    /// which keys' analyses may have moved.
    fn publish(&self, changed: Changed<'_>) {
        self.shared
            .analysis
            .announce(self.shared.segment.as_str(), &self.disk, changed);
        let blocked: Vec<_> = self.disk.blocked.values().cloned().collect();
        let blocks_changed = **self.shared.blocked.load() != blocked;
        if blocks_changed {
            self.shared.blocked.store(Arc::new(blocked));
        }
        let before = self
            .shared
            .applied_revision
            .swap(self.disk.applied_revision, Ordering::AcqRel);
        if before != self.disk.applied_revision || blocks_changed {
            let _ = self.reporter.cast(ReportMsg::Applied);
        }
        // OFREP event streams: only a new snapshot makes an event.
        self.shared
            .push
            .announce(self.disk.applied_revision, &self.shared.served.load_full());
    }

    /// The `apply` span of one rollout, continuing its trace.
    fn span(&self, t: &ApplyTrace) -> tracing::Span {
        let span = tracing::info_span!(
            "phasegate.apply",
            otel.name = "apply",
            phasegate.segment = %self.shared.segment,
            phasegate.agent_id = %self.shared.agent_id,
            phasegate.trigger_id = %t.trigger_id,
            phasegate.phase_id = %t.phase_id,
            phasegate.entity = %t.key,
            phasegate.revision = t.revision,
            trace_id = %t.trace_parent.as_deref().and_then(phasegate_bus::trace::trace_id_of).unwrap_or(""),
        );
        phasegate_bus::trace::continue_from_traceparent(&span, t.trace_parent.as_deref());
        span
    }

    /// Writes down the last moment the agent knew itself in sync, when it
    /// is newer than the one on disk.
    async fn checkpoint(&mut self) {
        let last = self.shared.last_sync_ms.load(Ordering::Relaxed);
        if last > self.disk.last_sync_ms.unwrap_or(0) {
            self.disk.last_sync_ms = Some(last);
            // Failures are logged; the next checkpoint tries again.
            let _ = self.save_progress().await;
        }
    }

    async fn mark_synced(&mut self) {
        let now = now_ms();
        self.disk.last_sync_ms = Some(now);
        self.shared.last_sync_ms.store(now, Ordering::Relaxed);
        let _ = self.save_progress().await;
    }

    /// Writes one batch's file changes, then `progress`, durably.
    async fn save(&mut self, progress: Progress, files: Vec<FileChange>) -> Result<(), AgentError> {
        self.commit_first().await?;
        self.on_disk(move |store| store.write(&progress, &files))
            .await
    }

    /// Writes the watermark, generation and last sync of `self.disk`.
    async fn save_progress(&mut self) -> Result<(), AgentError> {
        self.commit_first().await?;
        let progress = self.disk.progress();
        self.on_disk(move |store| store.write_meta(&progress)).await
    }

    /// Writes `self.disk` whole when the directory holds nothing of this
    /// agent's yet (a first start, a state of another segment or a corrupt
    /// one): once, after which writes are per key.
    async fn commit_first(&mut self) -> Result<(), AgentError> {
        if self.store.is_committed() {
            return Ok(());
        }
        self.replace(self.disk.clone()).await
    }

    /// Writes `state` whole, in place of what is on disk.
    async fn replace(&mut self, state: DiskState) -> Result<(), AgentError> {
        self.on_disk(move |store| store.replace(&state)).await
    }

    /// Runs `write` on the store off the actor's thread; failures are
    /// logged too.
    async fn on_disk(
        &mut self,
        write: impl FnOnce(&mut Store) -> Result<(), AgentError> + Send + 'static,
    ) -> Result<(), AgentError> {
        let mut store = self.store.clone();
        let done = tokio::task::spawn_blocking(move || {
            let r = write(&mut store);
            (store, r)
        })
        .await;
        let saved = match done {
            Ok((store, r)) => {
                self.store = store;
                r
            }
            Err(e) => Err(AgentError::State(format!("state writer failed: {e}"))),
        };
        if let Err(e) = &saved {
            tracing::error!(error = %e, "cannot write state");
        }
        saved
    }
}

fn log_blocked(plan: &Plan) {
    for b in &plan.newly_blocked {
        tracing::error!(key = %b.key, revision = b.revision, error = %b.error, "cannot apply desired state; serving the last good version");
    }
}

/// Feeds the actor from the desired-state watch, setting it up again
/// whenever it breaks (NATS down, bucket not created yet) or the bucket's
/// generation changes under it (a deleted and recreated bucket would
/// otherwise go unnoticed: the watch would wait for revisions above the
/// old ones). Ends when the actor is gone.
async fn pump(
    client: Client,
    sync: ActorRef<SyncMsg>,
    resync: Arc<Notify>,
    generation_check: Duration,
) {
    let bucket = client.subjects().bucket(Bucket::Desired);
    let mut backoff = Duration::from_millis(50);
    loop {
        match open_watch(&client, &bucket).await {
            Ok(watch) => {
                backoff = Duration::from_millis(50);
                if forward(watch, &sync, &resync, generation_check)
                    .await
                    .is_err()
                {
                    return;
                }
            }
            Err(e) => tracing::debug!(error = %e, "desired state not reachable yet"),
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(2));
    }
}

/// A watch on the desired-state bucket, from the start.
struct Watch {
    kv: Kv,
    changes: KvWatch,
    generation: u64,
    /// The bucket held nothing when the watch began.
    empty: bool,
}

async fn open_watch(client: &Client, bucket: &str) -> Result<Watch, BusError> {
    let kv = client.kv_existing(bucket).await?;
    let generation = kv.generation().await?;
    let empty = kv.is_empty().await?;
    let changes = kv.watch_all_with_history().await?;
    Ok(Watch {
        kv,
        changes,
        generation,
        empty,
    })
}

/// Forwards `watch` to the actor, in batches, until it breaks, the actor
/// asks for a fresh one, the bucket's generation changes, or the watch
/// has fallen silently behind; then tells the actor the watch is lost.
/// Fails only when the actor is gone.
///
/// Falling behind: when the server that held the watch's consumer dies
/// (a cluster's stream leader), the watch hears nothing until its idle
/// heartbeats are missed, about ten seconds in `async-nats`. The periodic
/// check sees it sooner: the bucket has writes the watch has not
/// delivered, at two checks in a row without any progress between them.
async fn forward(
    mut watch: Watch,
    sync: &ActorRef<SyncMsg>,
    resync: &Notify,
    generation_check: Duration,
) -> Result<(), MessagingErr<SyncMsg>> {
    sync.cast(SyncMsg::Watching {
        generation: watch.generation,
        empty: watch.empty,
    })?;
    let mut check = tokio::time::interval(generation_check);
    check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    check.reset();
    // The highest revision delivered, and where it stood at the last check
    // that found the bucket ahead of it.
    let mut seen = 0;
    let mut behind_at = None;
    loop {
        let next = tokio::select! {
            n = watch.changes.next() => n,
            () = resync.notified() => break,
            _ = check.tick() => {
                match still_fed(&watch.kv, watch.generation, seen, &mut behind_at).await {
                    true => continue,
                    false => break,
                }
            }
        };
        match next {
            Some(Ok(first)) => {
                let batch = batch(first, &mut watch.changes);
                seen = batch.iter().map(|c| c.revision).fold(seen, u64::max);
                sync.cast(SyncMsg::Changes(batch))?;
            }
            other => {
                if let Some(Err(e)) = other {
                    tracing::warn!(error = %e, "desired-state watch broke");
                }
                break;
            }
        }
    }
    sync.cast(SyncMsg::WatchLost)
}

/// `first` and whatever else the watch already holds, up to
/// [`MAX_BATCH`]: one disk write for a catch-up of thousands.
fn batch(first: KvChange, changes: &mut KvWatch) -> Vec<KvChange> {
    let mut batch = vec![first];
    while batch.len() < MAX_BATCH {
        match changes.next().now_or_never() {
            Some(Some(Ok(c))) => batch.push(c),
            _ => break,
        }
    }
    batch
}

/// Whether the watch still feeds from the bucket: the bucket is still of
/// `generation`, and it has no writes beyond `seen` that stayed undelivered
/// since the previous check (`behind_at` remembers where that one found
/// the watch behind). Says why when not.
async fn still_fed(kv: &Kv, generation: u64, seen: u64, behind_at: &mut Option<u64>) -> bool {
    match kv.generation_and_last_revision().await {
        Ok((g, _)) if g != generation => {
            tracing::warn!("the desired-state bucket was created again; watching it afresh");
            false
        }
        Ok((_, last)) if last > seen => {
            if *behind_at == Some(seen) {
                tracing::warn!(
                    seen,
                    last,
                    "the desired-state watch delivers nothing while the bucket moved on; watching it afresh"
                );
                return false;
            }
            *behind_at = Some(seen);
            true
        }
        Ok(_) => {
            *behind_at = None;
            true
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot check the desired-state bucket; watching it afresh");
            false
        }
    }
}
