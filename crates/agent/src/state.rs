//! What the agent serves, on disk: written before it is served or reported
//! applied, appended to a journal so that applying a change costs O(that
//! change), and checked on load so that a corrupt or half-written file is
//! never served as truth.
//!
//! # Layout
//!
//! ```text
//! <state_dir>/                      0700
//!   meta.bin                        0600  segment, watermark, generation, last sync,
//!                                         and which entities directory is current
//!   entities.<n>/                   0700  the current one; others are leftovers
//!     pack.bin                      0600  every key's record, as of the last whole write
//!     journal.bin                   0600  the records written since, in order (a later
//!                                         record of a key wins; with neither entity nor
//!                                         block: deleted); see [`crate::journal`]
//!     <key>.entity                  0600  one key's record, written by agents before the
//!                                         journal (read only; between the pack and the journal)
//!   <file>.corrupt-<unix ms>        0600  anything that failed its check, moved aside
//! ```
//!
//! A record ([`EntityRecord`]) is all the agent keeps about one key: its
//! last good revision and/or its block. Every file is a header line
//! `phasegate-agent-<what> v1 <sha256 hex of body>`, then the body in
//! MessagePack maps, and is written atomically: temporary file (0600),
//! fsync, rename, then an fsync of its directory. The journal is the one
//! file appended to in place: each record is framed with its length and
//! checksum.
//!
//! # What a batch costs
//!
//! A batch appends one record per key it changed to the journal and syncs
//! it: O(the batch), whatever the number of entities, one `fdatasync` of a
//! file that exists (no new file, no rename, no directory sync: creating
//! files was what a change cost most). `meta.bin` is rewritten with the
//! last sync (every half staleness bound) and by whole writes, not per
//! batch. Compaction writes the whole state instead, into a fresh
//! `entities.<n+1>` (one pack file and an empty journal, then `meta.bin`
//! naming it, which switches to it atomically; the old directory is
//! removed after), once the journal's records would outnumber the
//! entities ([`Store::wants_whole`]): its O(state) cost comes after at
//! least O(state) records, so a change costs O(1) amortised, and a
//! catch-up of more keys than the agent holds is one whole write. A first start, a new bucket generation and a migration are whole writes
//! too.
//!
//! # Order of writes: the meta file is the commit point
//!
//! The watermark on disk is written after the records it covers (with
//! the last sync, or by a whole write), so it never leads what is on disk;
//! it may lag, which only delays the first acks after a restart until the
//! watch has re-delivered every key's latest revision. A crash within an
//! append leaves a torn tail, cut off on load: that batch was never acked,
//! and the records before it are a state the agent was in (each record
//! carries its revision, and the watch re-delivers every key's latest
//! revision on restart).
//!
//! # Damage
//!
//! A `meta.bin` that fails its check (or names a directory that is not
//! there) is moved aside and nothing is served, as before; so is a journal
//! that fails its check anywhere but at its tail (which keys it held newer
//! records of is unknown), with the `meta.bin` naming it. A key file that
//! fails its check is moved aside and that key alone is not served (nor the
//! pack's older record of it); a pack that fails its check loses the keys
//! without a key file. The agent treats them as missing and lets the watch
//! deliver them again. Since it cannot know which revisions it lost, it
//! first resets the watermark and the last sync on disk: it acks nothing,
//! and says it is stale, until the watch has caught up again.
//!
//! # Migration
//!
//! Agents before this layout kept everything in one checksummed
//! `state.bin` ([`legacy`]). Found without a `meta.bin`, it is read once,
//! written in this layout, and removed once the new `meta.bin` is durable.

use std::collections::BTreeMap;
use std::fs::{DirBuilder, OpenOptions, Permissions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use phasegate_proto::codec::{decode_with_limit, encode_with_limit};
use phasegate_proto::{BlockedEntity, DesiredEntity, Encoding, Segment};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::AgentError;
use crate::journal::{self, Journal};

/// The largest entity file read or written: far more than one NATS
/// message, which is the most a desired-state revision can be.
pub const MAX_ENTITY_BYTES: usize = 64 * 1024 * 1024;
const META: &str = "meta.bin";
const META_MAGIC: &str = "phasegate-agent-meta v1 ";
const ENTITY_MAGIC: &str = "phasegate-agent-entity v1 ";
const ENTITY_EXT: &str = ".entity";
const ENTITIES_PREFIX: &str = "entities.";
const PACK: &str = "pack.bin";
const PACK_MAGIC: &str = "phasegate-agent-pack v1 ";
/// Records tolerated over a pack, however few the entities.
const MIN_LOOSE: usize = 256;
/// Longest file name used for a key; longer keys are named by their hash.
const MAX_NAME: usize = 200;

/// One entity as last received, with the revision that brought it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredDesired {
    /// Revision of the desired-state bucket that wrote it.
    pub revision: u64,
    /// What the coordinator published.
    pub desired: DesiredEntity,
}

/// Everything the agent persists, in memory.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct DiskState {
    /// The segment it was written for; a state of another segment is ignored.
    #[serde(default)]
    pub segment: Option<Segment>,
    /// Every desired-state revision up to this one is processed: applied,
    /// or listed in `blocked`. It may lag behind what was acked (a batch
    /// that changes nothing else is not written for it alone), never lead.
    #[serde(default)]
    pub applied_revision: u64,
    /// The generation of the desired-state bucket these revisions belong
    /// to (its stream's creation time in Unix ns): revisions of another
    /// generation mean nothing here.
    #[serde(default)]
    pub generation: Option<u64>,
    /// When the agent last knew itself in sync.
    #[serde(default)]
    pub last_sync_ms: Option<u64>,
    /// By key (`<kind>.<name>`).
    #[serde(default)]
    pub entities: BTreeMap<String, StoredDesired>,
    /// Keys whose latest revision could not be decoded or compiled, by key;
    /// their last good version (if any) stays in `entities` and is served.
    #[serde(default)]
    pub blocked: BTreeMap<String, BlockedEntity>,
}

/// What one entity file holds: all the agent keeps about one key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EntityRecord {
    /// The bucket key.
    pub key: String,
    /// Its last good revision, served.
    #[serde(default)]
    pub stored: Option<StoredDesired>,
    /// Its latest revision, when that one could not be read.
    #[serde(default)]
    pub blocked: Option<BlockedEntity>,
}

/// What a batch does to one key's file.
#[derive(Debug, Clone, PartialEq)]
pub enum FileChange {
    /// Write the key's file with this.
    Write(Box<EntityRecord>),
    /// Nothing is kept about the key any more: remove its file.
    Delete(String),
}

impl FileChange {
    /// The key it changes.
    pub fn key(&self) -> &str {
        match self {
            Self::Write(r) => &r.key,
            Self::Delete(key) => key,
        }
    }
}

/// The small part of the state, kept in `meta.bin`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Progress {
    /// See [`DiskState::segment`].
    pub segment: Option<Segment>,
    /// See [`DiskState::applied_revision`].
    pub applied_revision: u64,
    /// See [`DiskState::generation`].
    pub generation: Option<u64>,
    /// See [`DiskState::last_sync_ms`].
    pub last_sync_ms: Option<u64>,
}

impl DiskState {
    /// Its small part, as `meta.bin` keeps it.
    pub fn progress(&self) -> Progress {
        Progress {
            segment: self.segment.clone(),
            applied_revision: self.applied_revision,
            generation: self.generation,
            last_sync_ms: self.last_sync_ms,
        }
    }

    /// Takes a key's change in: what the state is once it is on disk.
    pub fn apply(&mut self, change: FileChange) {
        let (key, stored, blocked) = match change {
            FileChange::Write(r) => (r.key, r.stored, r.blocked),
            FileChange::Delete(key) => (key, None, None),
        };
        match stored {
            Some(s) => self.entities.insert(key.clone(), s),
            None => self.entities.remove(&key),
        };
        match blocked {
            Some(b) => self.blocked.insert(key, b),
            None => self.blocked.remove(&key),
        };
    }

    /// The record of every key it keeps something about, in key order.
    pub fn records(&self) -> impl Iterator<Item = EntityRecord> + '_ {
        let mut keys: Vec<&String> = self.entities.keys().chain(self.blocked.keys()).collect();
        keys.sort();
        keys.dedup();
        keys.into_iter().map(|k| EntityRecord {
            key: k.clone(),
            stored: self.entities.get(k).cloned(),
            blocked: self.blocked.get(k).cloned(),
        })
    }

    fn from_parts(p: Progress, records: impl IntoIterator<Item = EntityRecord>) -> Self {
        let mut state = Self {
            segment: p.segment,
            applied_revision: p.applied_revision,
            generation: p.generation,
            last_sync_ms: p.last_sync_ms,
            ..Self::default()
        };
        for r in records {
            state.apply(FileChange::Write(Box::new(r)));
        }
        state
    }
}

#[derive(Serialize, Deserialize)]
struct Meta {
    #[serde(default)]
    segment: Option<Segment>,
    #[serde(default)]
    applied_revision: u64,
    #[serde(default)]
    generation: Option<u64>,
    #[serde(default)]
    last_sync_ms: Option<u64>,
    /// The name of the current entities directory.
    entities: String,
}

impl Meta {
    fn progress(&self) -> Progress {
        Progress {
            segment: self.segment.clone(),
            applied_revision: self.applied_revision,
            generation: self.generation,
            last_sync_ms: self.last_sync_ms,
        }
    }
}

/// What an entities directory holds before its journal: the pack, then
/// the key files over it, by file name.
struct Found {
    records: BTreeMap<String, EntityRecord>,
    /// Files that failed their check, with why.
    bad: Vec<(PathBuf, String)>,
    /// Records over the pack.
    loose: usize,
}

impl Found {
    /// Reads `ents`; `Err` when the directory itself cannot be listed.
    fn read(ents: &Path) -> Result<Self, String> {
        let listing =
            std::fs::read_dir(ents).map_err(|e| format!("cannot read {}: {e}", ents.display()))?;
        let mut found = Self {
            records: BTreeMap::new(),
            bad: Vec::new(),
            loose: 0,
        };
        let pack = ents.join(PACK);
        match std::fs::read(&pack) {
            Ok(bytes) => {
                match unseal::<Vec<EntityRecord>>(PACK_MAGIC, &bytes, legacy::MAX_STATE_BYTES) {
                    Ok(rs) => found.take(rs),
                    Err(reason) => found.bad.push((pack, reason)),
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => found.bad.push((pack, format!("cannot read: {e}"))),
        }
        for entry in listing.filter_map(Result::ok) {
            found.key_file(&entry.file_name().to_string_lossy(), &entry.path());
        }
        Ok(found)
    }

    /// Later records of a key win.
    fn take(&mut self, records: Vec<EntityRecord>) {
        self.records
            .extend(records.into_iter().map(|r| (file_name(&r.key), r)));
    }

    fn key_file(&mut self, name: &str, path: &Path) {
        if name.ends_with(".tmp") {
            // Left by a crash before its rename: never part of the state.
            let _ = std::fs::remove_file(path);
            return;
        }
        if !name.ends_with(ENTITY_EXT) {
            return;
        }
        self.loose += 1;
        match read_entity(path, name) {
            Ok(r) => {
                self.records.insert(name.to_owned(), r);
            }
            Err(reason) => {
                // Nor is the pack's older version of that key served: it
                // is not what the agent had applied.
                self.records.remove(name);
                self.bad.push((path.to_path_buf(), reason));
            }
        }
    }
}

/// A file that failed its check.
#[derive(Debug)]
pub struct Damaged {
    /// What was wrong.
    pub reason: String,
    /// Where it was moved, out of the way and kept for inspection; `None`
    /// when it could not be (it is then found again at the next start).
    pub moved_to: Option<PathBuf>,
}

/// How loading went.
#[derive(Debug)]
pub enum Loaded {
    /// Nothing on disk: a first start.
    Missing,
    /// A good state. `damaged` lists entity files that failed their check:
    /// those entities are left out, and the watermark and last sync are
    /// reset (on disk too) since what was lost is not known.
    Ok {
        /// What was read.
        state: DiskState,
        /// Entity files moved aside.
        damaged: Vec<Damaged>,
    },
    /// A state file of the single-file format, converted.
    Migrated {
        /// What was read.
        state: DiskState,
        /// Whether the new layout could be written; if not, the old file
        /// stays and the next write tries again.
        converted: bool,
    },
    /// The state as a whole failed its check: nothing is served from it.
    Corrupt(Damaged),
}

/// Mode of the state directories the agent creates: what it serves is
/// nobody else's business on the host (rules may name users and emails).
const DIR_MODE: u32 = 0o700;
/// Mode of every file the agent writes or moves aside.
pub(crate) const FILE_MODE: u32 = 0o600;

/// Creates `dir` and its missing parents with mode 0700. A directory that
/// already exists keeps its mode: the operator chose it.
pub fn create_dir(dir: &Path) -> Result<(), AgentError> {
    DirBuilder::new()
        .recursive(true)
        .mode(DIR_MODE)
        .create(dir)
        .map_err(|e| AgentError::State(format!("cannot create {}: {e}", dir.display())))
}

/// The file name of `key` in an entities directory: the key itself when it
/// is made of `[a-z0-9._-]` (every entity key is), escaped as `%XX`
/// otherwise (a bucket may hold any key, and a blocked one is kept too),
/// and its SHA-256 when that would be too long. The key is also inside the
/// file, and checked against its name on load.
pub fn file_name(key: &str) -> String {
    use std::fmt::Write as _;
    let mut name = String::with_capacity(key.len() + ENTITY_EXT.len());
    for (i, b) in key.bytes().enumerate() {
        let plain = b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-';
        // A leading dot would hide the file; `%` is the escape itself.
        if plain || (b == b'.' && i > 0) {
            name.push(char::from(b));
        } else {
            let _ = write!(name, "%{b:02X}");
        }
    }
    if name.is_empty() || name.len() > MAX_NAME {
        name = format!("~{}", hex(&Sha256::digest(key.as_bytes())));
    }
    name.push_str(ENTITY_EXT);
    name
}

/// The state of one directory: where its current entities are.
#[derive(Debug, Clone)]
pub struct Store {
    dir: PathBuf,
    /// The entities directory `meta.bin` names; `None` until the state on
    /// disk is this agent's (nothing yet, or not usable): the next write is
    /// then a whole [`Store::replace`].
    entities: Option<String>,
    /// Records over its pack: in its journal and in key files of the
    /// per-key layout (counted with repeats).
    loose: usize,
    /// Its journal, open; `None` until one is read or created (a directory
    /// of the per-key layout gets one with its first write).
    journal: Option<Journal>,
}

impl Store {
    /// Reads the state of `dir`, checking every file; converts a state of
    /// the single-file format. Never fails: what cannot be read is moved
    /// aside and reported.
    pub fn open(dir: &Path) -> (Self, Loaded) {
        let mut store = Self {
            dir: dir.to_path_buf(),
            entities: None,
            loose: 0,
            journal: None,
        };
        let loaded = store.load();
        (store, loaded)
    }

    /// Whether writes go to an entities directory already on disk.
    pub fn is_committed(&self) -> bool {
        self.entities.is_some()
    }

    /// The state found is not this agent's (another segment): leave it
    /// alone, the next write is a whole new state.
    pub fn forget(&mut self) {
        self.entities = None;
        self.journal = None;
    }

    fn meta_path(&self) -> PathBuf {
        self.dir.join(META)
    }

    fn load(&mut self) -> Loaded {
        let meta = match self.read_meta() {
            Ok(m) => m,
            Err(loaded) => return *loaded,
        };
        let ents = self.dir.join(&meta.entities);
        let mut found = match Found::read(&ents) {
            Ok(f) => f,
            Err(reason) => return Loaded::Corrupt(move_aside(&self.meta_path(), reason)),
        };
        // The journal last: newer than the pack and than any key file
        // (those are only read, written by the per-key layout before it).
        let torn = match Journal::read(&ents) {
            Ok(None) => None,
            Ok(Some(read)) => {
                found.loose += read.records.len();
                found.take(read.records);
                self.journal = Some(read.journal);
                read.torn
            }
            Err(reason) => {
                // Which keys it held newer records of is unknown: serve
                // none of this directory, as for a corrupt meta.
                let damaged = move_aside(&ents.join(journal::FILE), reason);
                let _ = move_aside(&self.meta_path(), "its entities' journal is corrupt".into());
                return Loaded::Corrupt(damaged);
            }
        };
        self.loose = found.loose;
        self.entities = Some(meta.entities.clone());
        let mut progress = meta.progress();
        let damaged = if found.bad.is_empty() && torn.is_none() {
            Vec::new()
        } else {
            self.claim_nothing(&mut progress, found.bad, torn)
        };
        // A migration that stopped after its commit point left this.
        let _ = std::fs::remove_file(self.dir.join(legacy::FILE));
        Loaded::Ok {
            state: DiskState::from_parts(progress, found.records.into_values()),
            damaged,
        }
    }

    /// `meta.bin`, checked; `Err` with what loading comes to when it is
    /// missing (a migration, or nothing) or unusable (moved aside).
    fn read_meta(&mut self) -> Result<Meta, Box<Loaded>> {
        let meta_path = self.meta_path();
        let corrupt = |reason| Box::new(Loaded::Corrupt(move_aside(&meta_path, reason)));
        let bytes = match std::fs::read(&meta_path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(Box::new(self.migrate()));
            }
            Err(e) => return Err(corrupt(format!("cannot read: {e}"))),
        };
        let meta: Meta = unseal(META_MAGIC, &bytes, MAX_ENTITY_BYTES).map_err(corrupt)?;
        if !is_entities_dir(&meta.entities) {
            return Err(corrupt(format!(
                "names {:?}, not an entities directory",
                meta.entities
            )));
        }
        Ok(meta)
    }

    /// Something was lost and what is unknown: claim nothing about it, on
    /// disk first, so that a restart before the watch has delivered it
    /// again does not claim it either (the bad file is gone by then); then
    /// move the bad files and the torn tail aside.
    fn claim_nothing(
        &mut self,
        progress: &mut Progress,
        bad: Vec<(PathBuf, String)>,
        torn: Option<Vec<u8>>,
    ) -> Vec<Damaged> {
        progress.applied_revision = 0;
        progress.last_sync_ms = None;
        let reset = self.write_meta(progress);
        let mut damaged = Vec::new();
        if let (Some(bytes), Ok(())) = (torn, &reset) {
            damaged.push(self.cut_torn_tail(&bytes));
        }
        for (path, reason) in bad {
            damaged.push(match &reset {
                Ok(()) => move_aside(&path, reason),
                Err(_) => Damaged {
                    reason,
                    moved_to: None,
                },
            });
        }
        damaged
    }

    /// Cuts the journal back to its last good record, the bytes after it
    /// kept aside: a crash during an append that was never acked, or damage
    /// to the last record (they look the same).
    fn cut_torn_tail(&mut self, bytes: &[u8]) -> Damaged {
        let reason = format!(
            "the journal ends in {} bytes that are not a whole record (a crash during a write, or damage); cut back",
            bytes.len()
        );
        let to = self
            .dir
            .join(format!("{}.corrupt-{}", journal::FILE, unix_ms()));
        let kept = write_private(&to, bytes).ok().map(|()| to);
        if let Some(j) = &self.journal
            && let Err(e) = j.cut_back()
        {
            tracing::error!(error = %e, "cannot cut the journal back; the next write replaces it");
            self.forget();
        }
        Damaged {
            reason,
            moved_to: kept,
        }
    }

    fn migrate(&mut self) -> Loaded {
        match legacy::load(&self.dir) {
            legacy::Loaded::Missing => Loaded::Missing,
            legacy::Loaded::Corrupt(d) => Loaded::Corrupt(d),
            legacy::Loaded::Ok(state) => {
                let converted = match self.replace(&state) {
                    Ok(()) => true,
                    Err(e) => {
                        tracing::error!(error = %e, "cannot convert the state file to the per-entity layout; serving it, trying again with the next write");
                        false
                    }
                };
                Loaded::Migrated { state, converted }
            }
        }
    }

    /// Whether a batch of `changes` records is better written as a whole
    /// new state: when nothing of this agent's is on disk yet, or when the
    /// records over the pack would outnumber the entities (compaction; its
    /// O(state) cost comes after at least O(state) records).
    pub fn wants_whole(&self, changes: usize, entities: usize) -> bool {
        !self.is_committed() || self.loose + changes > entities.max(MIN_LOOSE)
    }

    /// Writes one batch: the changed keys' records, appended to the journal
    /// and synced (one `fdatasync` of a file that exists). `meta.bin` is
    /// not rewritten: the watermark it holds may lag (it is refreshed with
    /// the last sync, and a restarted agent re-derives it from the watch),
    /// never lead. `progress` is what the caller will ack once this
    /// returns.
    ///
    /// # Errors
    ///
    /// When the store is not committed (see [`Store::is_committed`]) or a
    /// write fails; what was written before stays, and is consistent. A
    /// journal that could not be cut back after a failed append is given
    /// up: the next write is a whole one, into a fresh directory.
    pub fn write(&mut self, progress: &Progress, changes: &[FileChange]) -> Result<(), AgentError> {
        let _ = progress;
        if changes.is_empty() {
            return Ok(());
        }
        let name = self
            .entities
            .as_ref()
            .ok_or_else(|| AgentError::State("no entities directory yet".into()))?;
        let mut frames = Vec::new();
        for c in changes {
            match c {
                FileChange::Write(r) => journal::frame(r, &mut frames)?,
                // A deleted key's record says so (a tombstone over the pack).
                FileChange::Delete(key) => journal::frame(
                    &EntityRecord {
                        key: key.clone(),
                        stored: None,
                        blocked: None,
                    },
                    &mut frames,
                )?,
            }
        }
        let journal = match &mut self.journal {
            Some(j) => j,
            None => {
                let ents = self.dir.join(name);
                let j = Journal::create(&ents)?;
                sync_dir(&ents);
                self.journal.insert(j)
            }
        };
        if let Err(failed) = journal.append(&frames) {
            if !failed.cut_back {
                self.forget();
            }
            return Err(failed.error);
        }
        self.loose += changes.len();
        Ok(())
    }

    /// Writes `meta.bin` alone: a new watermark, generation or last sync.
    ///
    /// # Errors
    ///
    /// When the store is not committed or the write fails.
    pub fn write_meta(&self, progress: &Progress) -> Result<(), AgentError> {
        let entities = self
            .entities
            .clone()
            .ok_or_else(|| AgentError::State("no entities directory yet".into()))?;
        let meta = Meta {
            segment: progress.segment.clone(),
            applied_revision: progress.applied_revision,
            generation: progress.generation,
            last_sync_ms: progress.last_sync_ms,
            entities,
        };
        let body = encode_with_limit(Encoding::MsgPack, &meta, MAX_ENTITY_BYTES)
            .map_err(|e| AgentError::State(e.to_string()))?;
        write_file(&self.dir, META, META_MAGIC, &body)?;
        sync_dir(&self.dir);
        Ok(())
    }

    /// Writes `state` whole into a fresh entities directory and switches to
    /// it (the `meta.bin` naming it is the commit point); the previous
    /// directories and a single-file state are removed after. O(state):
    /// for a first start, a new bucket generation, a migration.
    ///
    /// # Errors
    ///
    /// When a write fails; the previous state stays current.
    pub fn replace(&mut self, state: &DiskState) -> Result<(), AgentError> {
        create_dir(&self.dir)?;
        let (old, next) = self.entities_dirs();
        let name = format!("{ENTITIES_PREFIX}{next}");
        let ents = self.dir.join(&name);
        create_dir(&ents)?;
        let records: Vec<EntityRecord> = state.records().collect();
        let body = encode_with_limit(Encoding::MsgPack, &records, legacy::MAX_STATE_BYTES)
            .map_err(|e| AgentError::State(e.to_string()))?;
        write_file(&ents, PACK, PACK_MAGIC, &body)?;
        let journal = Journal::create(&ents)?;
        sync_dir(&ents);
        let fresh = Self {
            dir: self.dir.clone(),
            entities: Some(name),
            loose: 0,
            journal: Some(journal),
        };
        fresh.write_meta(&state.progress())?;
        *self = fresh;
        for d in old {
            let _ = std::fs::remove_dir_all(self.dir.join(d));
        }
        let _ = std::fs::remove_file(self.dir.join(legacy::FILE));
        Ok(())
    }

    /// The entities directories present, and the next free number.
    fn entities_dirs(&self) -> (Vec<String>, u64) {
        let mut names = Vec::new();
        let mut next = 1;
        if let Ok(listing) = std::fs::read_dir(&self.dir) {
            for e in listing.filter_map(Result::ok) {
                let name = e.file_name().to_string_lossy().into_owned();
                if let Some(n) = name
                    .strip_prefix(ENTITIES_PREFIX)
                    .and_then(|n| n.parse::<u64>().ok())
                {
                    next = next.max(n.saturating_add(1));
                    names.push(name);
                }
            }
        }
        (names, next)
    }
}

fn is_entities_dir(name: &str) -> bool {
    name.strip_prefix(ENTITIES_PREFIX)
        .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

fn read_entity(path: &Path, name: &str) -> Result<EntityRecord, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read: {e}"))?;
    let r: EntityRecord = unseal(ENTITY_MAGIC, &bytes, MAX_ENTITY_BYTES)?;
    if file_name(&r.key) != name {
        return Err(format!("holds {}, not the key of its name", r.key));
    }
    Ok(r)
}

/// Moves a file that failed its check out of the way of the next write,
/// into the state directory, kept for inspection and private whatever mode
/// it had.
fn move_aside(p: &Path, reason: String) -> Damaged {
    let now = unix_ms();
    let name = p
        .file_name()
        .map_or_else(|| "state".into(), |n| n.to_string_lossy().into_owned());
    // Entity files come out of their directory, which a new state removes.
    let root = match p.parent() {
        Some(parent)
            if parent
                .file_name()
                .is_some_and(|n| is_entities_dir(&n.to_string_lossy())) =>
        {
            parent.parent().unwrap_or(parent)
        }
        Some(parent) => parent,
        None => Path::new("."),
    };
    let to = root.join(format!("{name}.corrupt-{now}"));
    let moved_to = match std::fs::rename(p, &to) {
        Ok(()) => {
            let _ = std::fs::set_permissions(&to, Permissions::from_mode(FILE_MODE));
            Some(to)
        }
        Err(_) => None,
    };
    Damaged { reason, moved_to }
}

fn unix_ms() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis())
}

/// Writes `bytes` to a new file `path`, mode 0600.
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(FILE_MODE)
        .open(path)?;
    f.write_all(bytes)
}

/// The body of a checksummed file, decoded.
fn unseal<T: DeserializeOwned>(magic: &str, bytes: &[u8], limit: usize) -> Result<T, String> {
    let nl = bytes
        .iter()
        .position(|&b| b == b'\n')
        .ok_or("no header line")?;
    let header = std::str::from_utf8(&bytes[..nl]).map_err(|_| "header is not text")?;
    let want = header
        .strip_prefix(magic)
        .ok_or_else(|| format!("not a file of this kind (expected {:?})", magic.trim_end()))?;
    let body = &bytes[nl + 1..];
    let got = hex(&Sha256::digest(body));
    if got != want {
        return Err(format!(
            "checksum mismatch (file says {want}, body is {got}): truncated or altered"
        ));
    }
    decode_with_limit(Encoding::MsgPack, body, limit).map_err(|e| format!("undecodable body: {e}"))
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// Writes `dir/name` atomically: header and body into `name.tmp` (0600),
/// fsync, rename. The rename is durable once the caller syncs `dir`.
fn write_file(dir: &Path, name: &str, magic: &str, body: &[u8]) -> Result<(), AgentError> {
    let tmp = dir.join(format!("{name}.tmp"));
    let io = |e: std::io::Error| AgentError::State(format!("cannot write {}: {e}", tmp.display()));
    {
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(FILE_MODE)
            .open(&tmp)
            .map_err(io)?;
        // `mode` applies only to a file it creates: a temporary file left
        // by a crash of an older version keeps its mode otherwise.
        f.set_permissions(Permissions::from_mode(FILE_MODE))
            .map_err(io)?;
        let mut head = String::with_capacity(magic.len() + 65);
        head.push_str(magic);
        head.push_str(&hex(&Sha256::digest(body)));
        head.push('\n');
        f.write_all(head.as_bytes()).map_err(io)?;
        f.write_all(body).map_err(io)?;
        f.sync_all().map_err(io)?;
    }
    std::fs::rename(&tmp, dir.join(name)).map_err(io)
}

/// A rename or removal is durable only once its directory is synced.
fn sync_dir(dir: &Path) {
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
}

/// The single-file format of agents before the per-entity layout: one
/// checksummed `state.bin` holding the whole [`DiskState`], rewritten for
/// every batch. Read once to migrate; its writer is kept for the tests and
/// for the benchmark's "before" figure.
pub mod legacy {
    use std::path::Path;

    use phasegate_proto::Encoding;
    use phasegate_proto::codec::encode_with_limit;

    use super::{Damaged, DiskState, move_aside, unseal, write_file};
    use crate::AgentError;

    /// Its name in the state directory.
    pub const FILE: &str = "state.bin";
    const MAGIC: &str = "phasegate-agent-state v1 ";
    /// The largest state file read or written.
    pub const MAX_STATE_BYTES: usize = 512 * 1024 * 1024;

    pub(super) enum Loaded {
        Missing,
        Ok(DiskState),
        Corrupt(Damaged),
    }

    pub(super) fn load(dir: &Path) -> Loaded {
        let p = dir.join(FILE);
        let bytes = match std::fs::read(&p) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Loaded::Missing,
            Err(e) => return Loaded::Corrupt(move_aside(&p, format!("cannot read: {e}"))),
        };
        match unseal(MAGIC, &bytes, MAX_STATE_BYTES) {
            Ok(state) => Loaded::Ok(state),
            Err(reason) => Loaded::Corrupt(move_aside(&p, reason)),
        }
    }

    /// Writes `state` whole, as agents before the per-entity layout did
    /// for every batch.
    ///
    /// # Errors
    ///
    /// When encoding or writing fails.
    pub fn save(dir: &Path, state: &DiskState) -> Result<(), AgentError> {
        super::create_dir(dir)?;
        let body = encode_with_limit(Encoding::MsgPack, state, MAX_STATE_BYTES)
            .map_err(|e| AgentError::State(e.to_string()))?;
        write_file(dir, FILE, MAGIC, &body)?;
        super::sync_dir(dir);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use phasegate_proto::{EntityKind, EntityName, EntitySpec};

    fn desired(name: &str, revision: u64) -> StoredDesired {
        let n = EntityName::new(name).unwrap();
        let mut spec = EntitySpec::new(EntityKind::Gate, n.clone());
        spec.version = revision;
        StoredDesired {
            revision,
            desired: DesiredEntity {
                kind: EntityKind::Gate,
                name: n,
                base: Some(spec),
                rollout: None,
            },
        }
    }

    fn sample() -> DiskState {
        let mut s = DiskState {
            segment: Some(Segment::new("dev").unwrap()),
            applied_revision: 7,
            generation: Some(42),
            last_sync_ms: Some(1),
            entities: BTreeMap::new(),
            blocked: BTreeMap::new(),
        };
        s.blocked.insert(
            "gate.b".into(),
            BlockedEntity {
                key: "gate.b".into(),
                revision: 6,
                error: "undecodable".into(),
            },
        );
        s.entities.insert("gate.b".into(), desired("b", 3));
        s.entities.insert("gate.g".into(), desired("g", 7));
        // A blocked key that is no entity key at all.
        s.blocked.insert(
            "Odd/Key".into(),
            BlockedEntity {
                key: "Odd/Key".into(),
                revision: 5,
                error: "cannot decode".into(),
            },
        );
        s
    }

    fn open(dir: &Path) -> (Store, Loaded) {
        Store::open(dir)
    }

    fn loaded_ok(dir: &Path) -> (DiskState, Vec<Damaged>) {
        match open(dir).1 {
            Loaded::Ok { state, damaged } => (state, damaged),
            other => panic!("{other:?}"),
        }
    }

    fn entities_dir(dir: &Path) -> PathBuf {
        let dirs: Vec<PathBuf> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| is_entities_dir(&p.file_name().unwrap().to_string_lossy()))
            .collect();
        assert_eq!(dirs.len(), 1, "one current entities directory: {dirs:?}");
        dirs[0].clone()
    }

    #[test]
    fn round_trip_one_file_per_key() {
        let dir = tempfile::tempdir().unwrap();
        let (mut store, loaded) = open(dir.path());
        assert!(matches!(loaded, Loaded::Missing));
        assert!(!store.is_committed());
        store.replace(&sample()).unwrap();
        let (state, damaged) = loaded_ok(dir.path());
        assert!(damaged.is_empty());
        assert_eq!(state, sample());
        assert_eq!(
            names(&entities_dir(dir.path())),
            [journal::FILE, PACK],
            "a whole write is one pack, and an empty journal"
        );
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    /// Writes `r` as the per-key layout did, before journals.
    fn key_file(ents: &Path, r: &EntityRecord) {
        let body = encode_with_limit(Encoding::MsgPack, r, MAX_ENTITY_BYTES).unwrap();
        write_file(ents, &file_name(&r.key), ENTITY_MAGIC, &body).unwrap();
    }

    /// `sample()` with every key in its own file over an empty pack, as the
    /// per-key layout wrote it (no journal).
    fn in_key_files(dir: &Path) {
        let (mut store, _) = open(dir);
        let s = sample();
        store
            .replace(&DiskState {
                entities: BTreeMap::new(),
                blocked: BTreeMap::new(),
                ..s.clone()
            })
            .unwrap();
        let ents = entities_dir(dir);
        std::fs::remove_file(ents.join(journal::FILE)).unwrap();
        for r in s.records() {
            key_file(&ents, &r);
        }
        assert_eq!(
            names(&ents),
            [
                "%4Fdd%2F%4Bey.entity",
                "gate.b.entity",
                "gate.g.entity",
                PACK
            ]
        );
    }

    #[test]
    fn key_files_of_the_per_key_layout_are_read_and_the_journal_comes_after() {
        let dir = tempfile::tempdir().unwrap();
        in_key_files(dir.path());
        let (state, damaged) = loaded_ok(dir.path());
        assert!(damaged.is_empty());
        assert_eq!(state, sample());
        // The first write creates the journal; its records win.
        let (mut store, _) = open(dir.path());
        let newer = FileChange::Write(Box::new(EntityRecord {
            key: "gate.g".into(),
            stored: Some(desired("g", 8)),
            blocked: None,
        }));
        store
            .write(&sample().progress(), std::slice::from_ref(&newer))
            .unwrap();
        let mut want = sample();
        want.apply(newer);
        assert_eq!(loaded_ok(dir.path()).0, want);
        assert_eq!(open(dir.path()).0.loose, 4, "three key files, one record");
    }

    #[test]
    fn file_names_are_plain_escaped_or_hashed() {
        assert_eq!(file_name("gate.checkout-v2_x"), "gate.checkout-v2_x.entity");
        assert_eq!(file_name(".hidden"), "%2Ehidden.entity");
        assert_eq!(file_name("a%b"), "a%25b.entity");
        assert_eq!(file_name("../x"), "%2E.%2Fx.entity");
        let long = file_name(&"k".repeat(300));
        assert!(long.starts_with('~') && long.len() < 80, "{long}");
        assert_ne!(file_name(""), file_name("~"));
    }

    #[test]
    fn a_change_appends_its_records_only() {
        let dir = tempfile::tempdir().unwrap();
        let (mut store, _) = open(dir.path());
        let mut state = sample();
        store.replace(&state).unwrap();
        let ents = entities_dir(dir.path());
        // A rewrite is a rename over it: a new inode.
        let inode = |n: &str| {
            std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(ents.join(n)).unwrap())
        };
        let len = |n: &str| std::fs::metadata(ents.join(n)).unwrap().len();
        let (pack, journal, empty) = (inode(PACK), inode(journal::FILE), len(journal::FILE));
        // gate.b unblocked at a new revision; Odd/Key deleted; gate.n new.
        let changes = vec![
            FileChange::Write(Box::new(EntityRecord {
                key: "gate.b".into(),
                stored: Some(desired("b", 8)),
                blocked: None,
            })),
            FileChange::Delete("Odd/Key".into()),
            FileChange::Write(Box::new(EntityRecord {
                key: "gate.n".into(),
                stored: Some(desired("n", 9)),
                blocked: None,
            })),
        ];
        for c in &changes {
            state.apply(c.clone());
        }
        state.applied_revision = 9;
        store.write(&state.progress(), &changes).unwrap();
        assert_eq!(inode(PACK), pack, "the pack is not rewritten");
        assert_eq!(inode(journal::FILE), journal, "the journal is appended to");
        let mut frames = Vec::new();
        for c in &changes {
            let r = match c {
                FileChange::Write(r) => (**r).clone(),
                FileChange::Delete(key) => EntityRecord {
                    key: key.clone(),
                    stored: None,
                    blocked: None,
                },
            };
            journal::frame(&r, &mut frames).unwrap();
        }
        assert_eq!(
            len(journal::FILE),
            empty + frames.len() as u64,
            "one record per changed key, a deleted one included, and nothing else"
        );
        assert_eq!(names(&ents), [journal::FILE, PACK]);
        let (loaded, _) = loaded_ok(dir.path());
        // The entities are on disk; the watermark on disk lags (meta.bin is
        // not rewritten per batch) and catches up with the last sync.
        assert_eq!(loaded.entities, state.entities);
        assert_eq!(loaded.applied_revision, 7);
        store.write_meta(&state.progress()).unwrap();
        let (loaded, _) = loaded_ok(dir.path());
        assert_eq!(loaded, state);
        // A key written again is appended again.
        let again = FileChange::Write(Box::new(EntityRecord {
            key: "gate.n".into(),
            stored: Some(desired("n", 10)),
            blocked: None,
        }));
        state.apply(again.clone());
        store.write(&state.progress(), &[again]).unwrap();
        assert_eq!(loaded_ok(dir.path()).0, state);
        // Deleting what is not there is fine (a crash may have done it).
        store
            .write(&state.progress(), &[FileChange::Delete("Odd/Key".into())])
            .unwrap();
    }

    #[test]
    fn a_corrupt_entity_file_is_moved_aside_and_the_others_are_served() {
        let dir = tempfile::tempdir().unwrap();
        in_key_files(dir.path());
        let ents = entities_dir(dir.path());
        let g = ents.join("gate.g.entity");
        let bytes = std::fs::read(&g).unwrap();
        std::fs::write(&g, &bytes[..bytes.len() / 2]).unwrap();
        // A file holding another key than its name says is refused too.
        std::fs::copy(ents.join("gate.b.entity"), ents.join("gate.x.entity")).unwrap();
        // And a temporary file left by a crash is dropped.
        std::fs::write(ents.join("gate.y.entity.tmp"), b"half").unwrap();
        let (state, damaged) = loaded_ok(dir.path());
        assert_eq!(damaged.len(), 2, "{damaged:?}");
        for d in &damaged {
            let to = d.moved_to.as_ref().unwrap();
            assert_eq!(to.parent().unwrap(), dir.path(), "kept beside the state");
            assert!(to.to_string_lossy().contains(".corrupt-"));
            assert_eq!(mode(to), 0o600);
        }
        assert!(!g.exists() && !ents.join("gate.y.entity.tmp").exists());
        let mut want = sample();
        want.entities.remove("gate.g");
        // What was lost is unknown: nothing is claimed about it.
        want.applied_revision = 0;
        want.last_sync_ms = None;
        assert_eq!(state, want);
        // Reset on disk too: a restart claims nothing either.
        let (again, damaged) = loaded_ok(dir.path());
        assert!(damaged.is_empty());
        assert_eq!(again, want);
    }

    fn newer_g() -> FileChange {
        FileChange::Write(Box::new(EntityRecord {
            key: "gate.g".into(),
            stored: Some(desired("g", 8)),
            blocked: None,
        }))
    }

    /// The sample written whole, then `gate.g` at revision 8 in the journal.
    fn pack_then_newer_g(dir: &Path) -> Store {
        let (mut store, _) = open(dir);
        let state = sample();
        store.replace(&state).unwrap();
        store.write(&state.progress(), &[newer_g()]).unwrap();
        store
    }

    #[test]
    fn a_corrupt_key_file_does_not_uncover_the_packs_older_record() {
        let dir = tempfile::tempdir().unwrap();
        let (mut store, _) = open(dir.path());
        store.replace(&sample()).unwrap();
        std::fs::write(entities_dir(dir.path()).join("gate.g.entity"), b"junk").unwrap();
        let (loaded, damaged) = loaded_ok(dir.path());
        assert_eq!(damaged.len(), 1);
        assert!(
            !loaded.entities.contains_key("gate.g"),
            "revision 7 must not come back"
        );
        assert!(loaded.entities.contains_key("gate.b"));
    }

    #[test]
    fn a_torn_journal_tail_serves_the_records_before_it() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = pack_then_newer_g(dir.path());
        let j = entities_dir(dir.path()).join(journal::FILE);
        let one = std::fs::metadata(&j).unwrap().len();
        let newest = FileChange::Write(Box::new(EntityRecord {
            key: "gate.g".into(),
            stored: Some(desired("g", 9)),
            blocked: None,
        }));
        store.write(&sample().progress(), &[newest]).unwrap();
        // A crash in the middle of the last batch's append.
        let bytes = std::fs::read(&j).unwrap();
        std::fs::write(&j, &bytes[..bytes.len() - 7]).unwrap();
        let (loaded, damaged) = loaded_ok(dir.path());
        assert_eq!(damaged.len(), 1, "{damaged:?}");
        let kept = damaged[0].moved_to.as_ref().unwrap();
        assert_eq!(
            std::fs::read(kept).unwrap(),
            bytes[one as usize..bytes.len() - 7]
        );
        assert_eq!(mode(kept), 0o600);
        let mut want = sample();
        want.apply(newer_g());
        // Revision 8, the last whole record; and since a torn tail may as
        // well be damage to an acked record, nothing is claimed about sync.
        want.applied_revision = 0;
        want.last_sync_ms = None;
        assert_eq!(loaded, want);
        assert_eq!(std::fs::metadata(&j).unwrap().len(), one, "cut back");
        let (again, damaged) = loaded_ok(dir.path());
        assert!(damaged.is_empty());
        assert_eq!(again, want);
    }

    #[test]
    fn a_corrupt_journal_serves_nothing_of_its_directory() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = pack_then_newer_g(dir.path());
        store.write(&sample().progress(), &[newer_g()]).unwrap();
        let j = entities_dir(dir.path()).join(journal::FILE);
        let mut bytes = std::fs::read(&j).unwrap();
        // A bit of the first record, with a good one after it.
        let at = bytes.len() / 2 - 20;
        bytes[at] ^= 1;
        std::fs::write(&j, &bytes).unwrap();
        let (store, loaded) = open(dir.path());
        match loaded {
            Loaded::Corrupt(d) => {
                assert!(d.moved_to.unwrap().exists());
                assert!(d.reason.contains("checksum"), "{}", d.reason);
            }
            other => panic!("{other:?}"),
        }
        assert!(!store.is_committed() && !j.exists());
        // Nor does a restart serve the pack's older records.
        assert!(matches!(open(dir.path()).1, Loaded::Missing));
    }

    #[test]
    fn a_corrupt_pack_loses_only_the_keys_without_a_file() {
        let dir = tempfile::tempdir().unwrap();
        pack_then_newer_g(dir.path());
        let pack = entities_dir(dir.path()).join(PACK);
        let bytes = std::fs::read(&pack).unwrap();
        std::fs::write(&pack, &bytes[..bytes.len() - 1]).unwrap();
        let (loaded, damaged) = loaded_ok(dir.path());
        assert_eq!(damaged.len(), 1);
        let keys: Vec<&str> = loaded.entities.keys().map(String::as_str).collect();
        assert_eq!(keys, ["gate.g"]);
        assert!(loaded.blocked.is_empty());
        assert_eq!(loaded.applied_revision, 0);
    }

    #[test]
    fn many_records_over_the_pack_are_written_whole() {
        let dir = tempfile::tempdir().unwrap();
        let (mut store, _) = open(dir.path());
        assert!(store.wants_whole(1, 0), "nothing on disk yet");
        store.replace(&sample()).unwrap();
        assert!(!store.wants_whole(1, 10_000));
        assert!(!store.wants_whole(5_000, 10_000), "a catch-up is appended");
        assert!(store.wants_whole(MIN_LOOSE + 1, 3), "more than there is");
        // Compaction once the key files outnumber the entities.
        let p = sample().progress();
        let one = |i: u64| {
            vec![FileChange::Write(Box::new(EntityRecord {
                key: "gate.g".into(),
                stored: Some(desired("g", i)),
                blocked: None,
            }))]
        };
        for i in 0..MIN_LOOSE {
            assert!(!store.wants_whole(1, 3), "{i}");
            store.write(&p, &one(i as u64)).unwrap();
        }
        assert!(store.wants_whole(1, 3));
        // Counted again at start, from the journal's records.
        let (store, _) = open(dir.path());
        assert_eq!(store.loose, MIN_LOOSE);
    }

    #[test]
    fn a_corrupt_or_dangling_meta_serves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let (mut store, _) = open(dir.path());
        store.replace(&sample()).unwrap();
        let meta = dir.path().join(META);
        let bytes = std::fs::read(&meta).unwrap();
        for bad in [
            bytes[..bytes.len() - 3].to_vec(),
            {
                let mut b = bytes.clone();
                let last = b.len() - 1;
                b[last] ^= 1;
                b
            },
            b"garbage".to_vec(),
            Vec::new(),
        ] {
            std::fs::write(&meta, &bad).unwrap();
            let (store, loaded) = open(dir.path());
            match loaded {
                Loaded::Corrupt(d) => assert!(d.moved_to.unwrap().exists()),
                other => panic!("{other:?}"),
            }
            assert!(!meta.exists() && !store.is_committed());
        }
        // A meta naming a directory that is gone.
        store.replace(&sample()).unwrap();
        std::fs::remove_dir_all(entities_dir(dir.path())).unwrap();
        assert!(matches!(open(dir.path()).1, Loaded::Corrupt(_)));
    }

    #[test]
    fn a_new_state_replaces_the_old_directory_atomically() {
        let dir = tempfile::tempdir().unwrap();
        let (mut store, _) = open(dir.path());
        store.replace(&sample()).unwrap();
        let first = entities_dir(dir.path());
        // A new generation: the old directory stays current until the meta
        // names the new one, and is removed after.
        let next = DiskState {
            segment: Some(Segment::new("dev").unwrap()),
            generation: Some(43),
            applied_revision: 1,
            entities: [("gate.z".to_owned(), desired("z", 1))].into(),
            ..DiskState::default()
        };
        store.replace(&next).unwrap();
        let second = entities_dir(dir.path());
        assert_ne!(first, second);
        assert_eq!(loaded_ok(dir.path()).0, next);
        // A directory left by a crash before its meta is not read, and goes
        // with the next replacement.
        std::fs::create_dir(dir.path().join("entities.9")).unwrap();
        assert_eq!(loaded_ok(dir.path()).0, next);
        store.replace(&sample()).unwrap();
        assert_eq!(entities_dir(dir.path()).file_name().unwrap(), "entities.10");
    }

    #[test]
    fn a_single_file_state_is_migrated_once() {
        let dir = tempfile::tempdir().unwrap();
        let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/state-v1.bin");
        std::fs::copy(&fixture, dir.path().join(legacy::FILE)).unwrap();
        let (store, loaded) = open(dir.path());
        let Loaded::Migrated { state, converted } = loaded else {
            panic!("{loaded:?}")
        };
        assert!(converted && store.is_committed());
        // What the fixture holds (written by the single-file agent).
        assert_eq!(state.segment.as_ref().map(Segment::as_str), Some("dev"));
        assert_eq!((state.applied_revision, state.generation), (7, Some(42)));
        assert_eq!(state.last_sync_ms, Some(1_700_000_000_000));
        let keys: Vec<&str> = state.entities.keys().map(String::as_str).collect();
        assert_eq!(keys, ["config.c", "gate.b", "gate.g"]);
        assert_eq!(state.entities["gate.g"].revision, 7);
        assert_eq!(state.blocked["gate.b"].revision, 6);
        assert!(
            !dir.path().join(legacy::FILE).exists(),
            "removed once converted"
        );
        // Read as the new layout from now on.
        let (again, damaged) = loaded_ok(dir.path());
        assert!(damaged.is_empty());
        assert_eq!(again, state);
        // A migration that stopped after its commit point: the new layout
        // wins, the old file goes.
        legacy::save(dir.path(), &sample()).unwrap();
        assert_eq!(loaded_ok(dir.path()).0, state);
        assert!(!dir.path().join(legacy::FILE).exists());
    }

    #[test]
    fn a_corrupt_single_file_state_is_moved_aside() {
        let dir = tempfile::tempdir().unwrap();
        legacy::save(dir.path(), &sample()).unwrap();
        let p = dir.path().join(legacy::FILE);
        let bytes = std::fs::read(&p).unwrap();
        std::fs::write(&p, &bytes[..bytes.len() - 1]).unwrap();
        match open(dir.path()).1 {
            Loaded::Corrupt(d) => assert!(d.moved_to.unwrap().exists()),
            other => panic!("{other:?}"),
        }
        assert!(!p.exists());
        assert!(matches!(open(dir.path()).1, Loaded::Missing));
    }

    #[test]
    fn a_state_larger_than_a_nats_message_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let mut big = sample();
        for i in 0..2_000 {
            let mut e = desired(&format!("g{i}"), 1);
            if let Some(b) = e.desired.base.as_mut() {
                b.description = "x".repeat(600);
            }
            big.entities.insert(format!("gate.g{i}"), e);
        }
        let (mut store, _) = open(dir.path());
        store.replace(&big).unwrap();
        let (state, _) = loaded_ok(dir.path());
        assert_eq!(state.entities.len(), 2_002);
        assert_eq!(state, big);
    }

    fn mode(p: &Path) -> u32 {
        std::fs::metadata(p).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn state_is_private_to_the_agent() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("a/b");
        let (mut store, _) = open(&dir);
        store.replace(&sample()).unwrap();
        assert_eq!(mode(&root.path().join("a")), 0o700);
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&dir.join(META)), 0o600);
        let ents = entities_dir(&dir);
        assert_eq!(mode(&ents), 0o700);
        assert_eq!(mode(&ents.join(PACK)), 0o600);
        assert_eq!(mode(&ents.join(journal::FILE)), 0o600);
        // A stale temporary file with a loose mode is tightened when reused.
        let tmp = dir.join("meta.bin.tmp");
        std::fs::write(&tmp, b"old").unwrap();
        std::fs::set_permissions(&tmp, Permissions::from_mode(0o644)).unwrap();
        store.write_meta(&sample().progress()).unwrap();
        assert_eq!(mode(&dir.join(META)), 0o600);
        // So is a journal with a loose mode, when it is read.
        std::fs::set_permissions(ents.join(journal::FILE), Permissions::from_mode(0o644)).unwrap();
        let _ = open(&dir);
        assert_eq!(mode(&ents.join(journal::FILE)), 0o600);
        // A corrupt meta moved aside is private too.
        std::fs::write(dir.join(META), b"garbage").unwrap();
        std::fs::set_permissions(dir.join(META), Permissions::from_mode(0o644)).unwrap();
        match open(&dir).1 {
            Loaded::Corrupt(d) => assert_eq!(mode(&d.moved_to.unwrap()), 0o600),
            other => panic!("{other:?}"),
        }
    }
}
