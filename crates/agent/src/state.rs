//! What the agent serves, on disk: written before it is served or reported
//! applied, one small file per entity so that applying a change costs
//! O(that change), and checked on load so that a corrupt or half-written
//! file is never served as truth.
//!
//! # Layout
//!
//! ```text
//! <state_dir>/                      0700
//!   meta.bin                        0600  segment, watermark, generation, last sync,
//!                                         and which entities directory is current
//!   entities.<n>/                   0700  the current one; others are leftovers
//!     pack.bin                      0600  every key's record, as of the last whole write
//!     <key>.entity                  0600  one key's record since then (wins over the pack;
//!                                         with neither entity nor block: deleted)
//!   <file>.corrupt-<unix ms>        0600  anything that failed its check, moved aside
//! ```
//!
//! A record ([`EntityRecord`]) is all the agent keeps about one key: its
//! last good revision and/or its block. Every file is a header line
//! `phasegate-agent-<what> v1 <sha256 hex of body>`, then the body in
//! MessagePack maps, and is written atomically: temporary file (0600),
//! fsync, rename, then an fsync of its directory.
//!
//! # What a batch costs
//!
//! A batch writes one key file per key it changed and syncs the entities
//! directory: O(the batch), whatever the number of entities, one fsync per
//! key and one of the directory. `meta.bin` is rewritten with the last sync
//! (every half staleness bound) and by whole writes, not per batch. Two cases write the whole
//! state instead, into a fresh `entities.<n+1>` (one pack file, then
//! `meta.bin` naming it, which switches to it atomically; the old directory
//! is removed after): a bulk batch (a catch-up of many keys: one file
//! beats that many fsyncs), and compaction, once the key files outnumber
//! the entities ([`Store::wants_whole`]), so a change costs O(1) amortised.
//! A first start, a new bucket generation and a migration are whole writes
//! too.
//!
//! # Order of writes: the meta file is the commit point
//!
//! The watermark on disk is written after the key files it covers (with
//! the last sync, or by a whole write), so it never leads what is on disk;
//! it may lag, which only delays the first acks after a restart until the
//! watch has re-delivered every key's latest revision. Each key's file is atomic on its own; a
//! crash within a batch may leave some of its keys written and others not,
//! which is a state the agent could have been in anyway (each record
//! carries its revision, and the watch re-delivers every key's latest
//! revision on restart).
//!
//! # Damage
//!
//! A `meta.bin` that fails its check (or names a directory that is not
//! there) is moved aside and nothing is served, as before. A key file that
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
/// A batch of at least this many changed keys is written as a whole new
/// state (one pack file) rather than as that many key files.
const BULK_CHANGES: usize = 64;
/// Key files tolerated over a pack, however few the entities.
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
const FILE_MODE: u32 = 0o600;

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
    /// Key files in it, over its pack (counted with repeats).
    loose: usize,
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
    }

    fn meta_path(&self) -> PathBuf {
        self.dir.join(META)
    }

    fn load(&mut self) -> Loaded {
        let meta_path = self.meta_path();
        let bytes = match std::fs::read(&meta_path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return self.migrate(),
            Err(e) => return Loaded::Corrupt(move_aside(&meta_path, format!("cannot read: {e}"))),
        };
        let meta: Meta = match unseal(META_MAGIC, &bytes, MAX_ENTITY_BYTES) {
            Ok(m) => m,
            Err(reason) => return Loaded::Corrupt(move_aside(&meta_path, reason)),
        };
        if !is_entities_dir(&meta.entities) {
            let reason = format!("names {:?}, not an entities directory", meta.entities);
            return Loaded::Corrupt(move_aside(&meta_path, reason));
        }
        let ents = self.dir.join(&meta.entities);
        let listing = match std::fs::read_dir(&ents) {
            Ok(l) => l,
            Err(e) => {
                let reason = format!("cannot read {}: {e}", ents.display());
                return Loaded::Corrupt(move_aside(&meta_path, reason));
            }
        };
        // The pack first, then the key files over it, by file name.
        let mut records: BTreeMap<String, EntityRecord> = BTreeMap::new();
        let mut bad = Vec::new();
        let pack = ents.join(PACK);
        match std::fs::read(&pack) {
            Ok(bytes) => {
                match unseal::<Vec<EntityRecord>>(PACK_MAGIC, &bytes, legacy::MAX_STATE_BYTES) {
                    Ok(rs) => records.extend(rs.into_iter().map(|r| (file_name(&r.key), r))),
                    Err(reason) => bad.push((pack, reason)),
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => bad.push((pack, format!("cannot read: {e}"))),
        }
        let mut loose = 0;
        for entry in listing.filter_map(Result::ok) {
            let name = entry.file_name().to_string_lossy().into_owned();
            let path = entry.path();
            if name.ends_with(".tmp") {
                // Left by a crash before its rename: never part of the state.
                let _ = std::fs::remove_file(&path);
                continue;
            }
            if !name.ends_with(ENTITY_EXT) {
                continue;
            }
            loose += 1;
            match read_entity(&path, &name) {
                Ok(r) => {
                    records.insert(name, r);
                }
                Err(reason) => {
                    // Nor is the pack's older version of that key served:
                    // it is not what the agent had applied.
                    records.remove(&name);
                    bad.push((path, reason));
                }
            }
        }
        self.loose = loose;
        let mut progress = Progress {
            segment: meta.segment,
            applied_revision: meta.applied_revision,
            generation: meta.generation,
            last_sync_ms: meta.last_sync_ms,
        };
        self.entities = Some(meta.entities);
        let mut damaged = Vec::new();
        if !bad.is_empty() {
            // What was lost is unknown: claim nothing about it, on disk
            // first, so that a restart before the watch has delivered it
            // again does not claim it either (the bad file is gone by then).
            progress.applied_revision = 0;
            progress.last_sync_ms = None;
            let reset = self.write_meta(&progress);
            for (path, reason) in bad {
                damaged.push(match &reset {
                    Ok(()) => move_aside(&path, reason),
                    Err(_) => Damaged {
                        reason,
                        moved_to: None,
                    },
                });
            }
        }
        // A migration that stopped after its commit point left this.
        let _ = std::fs::remove_file(self.dir.join(legacy::FILE));
        Loaded::Ok {
            state: DiskState::from_parts(progress, records.into_values()),
            damaged,
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

    /// Whether a batch of `changes` key files is better written as a whole
    /// new state: when it is a bulk (a catch-up: one file beats thousands
    /// of fsyncs), or when the key files since the last pack outnumber the
    /// entities (compaction; its O(state) cost comes after at least
    /// O(state) changes, so a change costs O(1) amortised).
    pub fn wants_whole(&self, changes: usize, entities: usize) -> bool {
        !self.is_committed()
            || changes >= BULK_CHANGES
            || self.loose + changes > entities.max(MIN_LOOSE)
    }

    /// Writes one batch: the changed keys' files, synced with their
    /// directory. `meta.bin` is not rewritten: the watermark it holds may
    /// lag (it is refreshed with the last sync, and a restarted agent
    /// re-derives it from the watch), never lead, and a change then costs
    /// one file's fsync and one directory fsync. `progress` is what the
    /// caller will ack once this returns.
    ///
    /// # Errors
    ///
    /// When the store is not committed (see [`Store::is_committed`]) or a
    /// write fails; what was written before stays, and is consistent.
    pub fn write(&mut self, progress: &Progress, changes: &[FileChange]) -> Result<(), AgentError> {
        let name = self
            .entities
            .as_ref()
            .ok_or_else(|| AgentError::State("no entities directory yet".into()))?;
        let ents = self.dir.join(name);
        for c in changes {
            // A deleted key's file says so (a tombstone over the pack).
            let (key, record) = match c {
                FileChange::Write(r) => (&r.key, &**r),
                FileChange::Delete(key) => (
                    key,
                    &EntityRecord {
                        key: key.clone(),
                        stored: None,
                        blocked: None,
                    },
                ),
            };
            let body = encode_with_limit(Encoding::MsgPack, record, MAX_ENTITY_BYTES)
                .map_err(|e| AgentError::State(format!("{key}: {e}")))?;
            write_file(&ents, &file_name(key), ENTITY_MAGIC, &body)?;
            self.loose += 1;
        }
        if !changes.is_empty() {
            sync_dir(&ents);
        }
        let _ = progress;
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
        sync_dir(&ents);
        let fresh = Self {
            dir: self.dir.clone(),
            entities: Some(name),
            loose: 0,
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
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
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
            [PACK],
            "a whole write is one file"
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

    /// `sample()` with every key in its own file over an empty pack.
    fn in_key_files(dir: &Path) -> Store {
        let (mut store, _) = open(dir);
        let s = sample();
        store
            .replace(&DiskState {
                entities: BTreeMap::new(),
                blocked: BTreeMap::new(),
                ..s.clone()
            })
            .unwrap();
        let changes: Vec<FileChange> = s
            .records()
            .map(|r| FileChange::Write(Box::new(r)))
            .collect();
        store.write(&s.progress(), &changes).unwrap();
        assert_eq!(
            names(&entities_dir(dir)),
            [
                "%4Fdd%2F%4Bey.entity",
                "gate.b.entity",
                "gate.g.entity",
                PACK
            ]
        );
        store
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
    fn a_change_writes_its_key_only() {
        let dir = tempfile::tempdir().unwrap();
        let (mut store, _) = open(dir.path());
        let mut state = sample();
        store.replace(&state).unwrap();
        let ents = entities_dir(dir.path());
        // A rewrite is a rename over it: a new inode.
        let inode = |n: &str| {
            std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(ents.join(n)).unwrap())
        };
        let pack = inode(PACK);
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
        assert_eq!(
            names(&ents),
            [
                "%4Fdd%2F%4Bey.entity",
                "gate.b.entity",
                "gate.n.entity",
                PACK
            ],
            "one file per changed key, a deleted one included"
        );
        let (loaded, _) = loaded_ok(dir.path());
        // The entities are on disk; the watermark on disk lags (meta.bin is
        // not rewritten per batch) and catches up with the last sync.
        assert_eq!(loaded.entities, state.entities);
        assert_eq!(loaded.applied_revision, 7);
        store.write_meta(&state.progress()).unwrap();
        let (loaded, _) = loaded_ok(dir.path());
        assert_eq!(loaded, state);
        // A key written again is rewritten in place.
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

    /// The sample written whole, then `gate.g` at revision 8 in its own file.
    fn pack_then_newer_g(dir: &Path) {
        let (mut store, _) = open(dir);
        let mut state = sample();
        store.replace(&state).unwrap();
        let newer = FileChange::Write(Box::new(EntityRecord {
            key: "gate.g".into(),
            stored: Some(desired("g", 8)),
            blocked: None,
        }));
        state.apply(newer.clone());
        store.write(&state.progress(), &[newer]).unwrap();
    }

    #[test]
    fn a_corrupt_key_file_does_not_uncover_the_packs_older_record() {
        let dir = tempfile::tempdir().unwrap();
        pack_then_newer_g(dir.path());
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
    fn bulks_and_many_key_files_are_written_whole() {
        let dir = tempfile::tempdir().unwrap();
        let (mut store, _) = open(dir.path());
        assert!(store.wants_whole(1, 0), "nothing on disk yet");
        store.replace(&sample()).unwrap();
        assert!(!store.wants_whole(1, 10_000));
        assert!(store.wants_whole(BULK_CHANGES, 10_000));
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
        // Counted again at start, from the files there (one, rewritten).
        let (store, _) = open(dir.path());
        assert_eq!(store.loose, 1);
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
        // A stale temporary file with a loose mode is tightened when reused.
        let tmp = ents.join("gate.g.entity.tmp");
        std::fs::write(&tmp, b"old").unwrap();
        std::fs::set_permissions(&tmp, Permissions::from_mode(0o644)).unwrap();
        let rec = EntityRecord {
            key: "gate.g".into(),
            stored: Some(desired("g", 8)),
            blocked: None,
        };
        store
            .write(&sample().progress(), &[FileChange::Write(Box::new(rec))])
            .unwrap();
        assert_eq!(mode(&ents.join("gate.g.entity")), 0o600);
        // A corrupt meta moved aside is private too.
        std::fs::write(dir.join(META), b"garbage").unwrap();
        std::fs::set_permissions(dir.join(META), Permissions::from_mode(0o644)).unwrap();
        match open(&dir).1 {
            Loaded::Corrupt(d) => assert_eq!(mode(&d.moved_to.unwrap()), 0o600),
            other => panic!("{other:?}"),
        }
    }
}
