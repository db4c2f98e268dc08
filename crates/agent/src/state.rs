//! What the agent serves, on disk: written atomically (temporary file,
//! fsync, rename, fsync of the directory) before it is served or reported
//! applied, and checked on load so that a corrupt or half-written file is
//! never served as truth.
//!
//! Layout: a header line `phasegate-agent-state v1 <sha256 hex of body>`,
//! then the body: the state in MessagePack maps.

use std::collections::BTreeMap;
use std::fs::{DirBuilder, OpenOptions, Permissions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use phasegate_proto::codec::{decode_with_limit, encode_with_limit};
use phasegate_proto::{BlockedEntity, DesiredEntity, Encoding, Segment};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::AgentError;

const MAGIC: &str = "phasegate-agent-state v1 ";

/// The largest state file read or written: a segment's whole state, far
/// more than one NATS message.
pub const MAX_STATE_BYTES: usize = 512 * 1024 * 1024;
const FILE: &str = "state.bin";

/// One entity as last received, with the revision that brought it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredDesired {
    /// Revision of the desired-state bucket that wrote it.
    pub revision: u64,
    /// What the coordinator published.
    pub desired: DesiredEntity,
}

/// Everything the agent persists.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct DiskState {
    /// The segment it was written for; a file of another segment is ignored.
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

/// How loading went.
#[derive(Debug)]
pub enum Loaded {
    /// No file: a first start.
    Missing,
    /// A good file.
    Ok(DiskState),
    /// A file that failed its check; it was moved aside to the path given.
    Corrupt {
        /// What was wrong.
        reason: String,
        /// Where the file was moved.
        moved_to: PathBuf,
    },
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

/// The state file in `dir`.
pub fn path(dir: &Path) -> PathBuf {
    dir.join(FILE)
}

/// Loads the state file of `dir`, checking it.
pub fn load(dir: &Path) -> Loaded {
    let p = path(dir);
    let bytes = match std::fs::read(&p) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Loaded::Missing,
        Err(e) => return corrupt(&p, format!("cannot read: {e}")),
    };
    match parse(&bytes) {
        Ok(state) => Loaded::Ok(state),
        Err(reason) => corrupt(&p, reason),
    }
}

fn corrupt(p: &Path, reason: String) -> Loaded {
    let moved_to = p.with_extension(format!(
        "corrupt-{}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis())
    ));
    // Kept for inspection, out of the way of the next write, and private
    // whatever mode it had.
    if std::fs::rename(p, &moved_to).is_ok() {
        let _ = std::fs::set_permissions(&moved_to, Permissions::from_mode(FILE_MODE));
    }
    Loaded::Corrupt { reason, moved_to }
}

fn parse(bytes: &[u8]) -> Result<DiskState, String> {
    let nl = bytes
        .iter()
        .position(|&b| b == b'\n')
        .ok_or("no header line")?;
    let header = std::str::from_utf8(&bytes[..nl]).map_err(|_| "header is not text")?;
    let want = header
        .strip_prefix(MAGIC)
        .ok_or("not a phasegate agent state file")?;
    let body = &bytes[nl + 1..];
    let got = hex(&Sha256::digest(body));
    if got != want {
        return Err(format!(
            "checksum mismatch (file says {want}, body is {got}): truncated or altered"
        ));
    }
    decode_with_limit(Encoding::MsgPack, body, MAX_STATE_BYTES)
        .map_err(|e| format!("undecodable body: {e}"))
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// Writes `state` to `dir` atomically and durably.
pub fn save(dir: &Path, state: &DiskState) -> Result<(), AgentError> {
    create_dir(dir)?;
    let body = encode_with_limit(Encoding::MsgPack, state, MAX_STATE_BYTES)
        .map_err(|e| AgentError::State(e.to_string()))?;
    let tmp = dir.join(format!("{FILE}.tmp"));
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
        f.write_all(MAGIC.as_bytes()).map_err(io)?;
        f.write_all(hex(&Sha256::digest(&body)).as_bytes())
            .map_err(io)?;
        f.write_all(b"\n").map_err(io)?;
        f.write_all(&body).map_err(io)?;
        f.sync_all().map_err(io)?;
    }
    std::fs::rename(&tmp, path(dir)).map_err(io)?;
    // The rename itself is durable only once the directory is synced.
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use phasegate_proto::{EntityKind, EntityName};

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
        s.entities.insert(
            "gate.g".into(),
            StoredDesired {
                revision: 7,
                desired: DesiredEntity {
                    kind: EntityKind::Gate,
                    name: EntityName::new("g").unwrap(),
                    base: None,
                    rollout: None,
                },
            },
        );
        s
    }

    #[test]
    fn round_trip() {
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(load(dir.path()), Loaded::Missing));
        save(dir.path(), &sample()).unwrap();
        match load(dir.path()) {
            Loaded::Ok(s) => assert_eq!(s, sample()),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_state_larger_than_a_nats_message_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let mut big = sample();
        let one = big.entities["gate.g"].clone();
        for i in 0..5_000 {
            let mut e = one.clone();
            e.desired.name = EntityName::new(format!("g{i}")).unwrap();
            let mut spec =
                phasegate_proto::EntitySpec::new(EntityKind::Gate, e.desired.name.clone());
            spec.description = "x".repeat(300);
            e.desired.base = Some(spec);
            big.entities.insert(format!("gate.g{i}"), e);
        }
        save(dir.path(), &big).unwrap();
        assert!(std::fs::metadata(path(dir.path())).unwrap().len() > 1024 * 1024);
        match load(dir.path()) {
            Loaded::Ok(s) => assert_eq!(s.entities.len(), 5_001),
            other => panic!("{other:?}"),
        }
    }

    fn mode(p: &Path) -> u32 {
        std::fs::metadata(p).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn state_is_private_to_the_agent() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("a/b");
        save(&dir, &sample()).unwrap();
        assert_eq!(mode(&root.path().join("a")), 0o700);
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&path(&dir)), 0o600);
        // A stale temporary file with a loose mode is tightened when reused.
        let tmp = dir.join(format!("{FILE}.tmp"));
        std::fs::write(&tmp, b"old").unwrap();
        std::fs::set_permissions(&tmp, Permissions::from_mode(0o644)).unwrap();
        save(&dir, &sample()).unwrap();
        assert_eq!(mode(&path(&dir)), 0o600);
        // A corrupt file moved aside is private too.
        std::fs::write(path(&dir), b"garbage").unwrap();
        std::fs::set_permissions(path(&dir), Permissions::from_mode(0o644)).unwrap();
        match load(&dir) {
            Loaded::Corrupt { moved_to, .. } => assert_eq!(mode(&moved_to), 0o600),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn truncated_and_altered_files_are_refused_and_moved_aside() {
        let dir = tempfile::tempdir().unwrap();
        save(dir.path(), &sample()).unwrap();
        let p = path(dir.path());
        let bytes = std::fs::read(&p).unwrap();
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
            std::fs::write(&p, &bad).unwrap();
            match load(dir.path()) {
                Loaded::Corrupt { moved_to, .. } => {
                    assert!(moved_to.exists());
                    assert!(!p.exists());
                }
                other => panic!("{other:?}"),
            }
        }
    }
}
