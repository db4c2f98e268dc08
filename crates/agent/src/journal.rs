//! The journal of an entities directory: the records written since its
//! pack, appended in order to one file that stays open.
//!
//! Appending costs one `write` and one `fdatasync` of a file that already
//! exists: no new inode, no rename, no directory sync. That is what a batch
//! costs on disk, the same as the least a durable ack can cost.
//!
//! # Format
//!
//! ```text
//! phasegate-agent-journal v1\n              the header, written when it is created
//! [u32 LE body length][its complement][SHA-256 of body][body: one EntityRecord, MessagePack]
//! ...
//! ```
//!
//! # A torn tail, and corruption
//!
//! A batch is acked only once its frames are synced, so a crash can leave
//! at most the frames of a batch nobody heard of, cut short or half
//! written, at the end. Reading stops at a last frame that is short or
//! fails its checksum: the records before it are good, and the caller cuts
//! the file back to them ([`Journal::cut_back`]) once it has recorded that
//! something was lost (the same tail is what damage to the last record
//! looks like). A frame that fails its check with more bytes after it, or a
//! length that fails its own check, is not the trace of a crash: the
//! journal is corrupt, and which keys it held is unknown.

use std::fs::{File, OpenOptions, Permissions};
use std::os::unix::fs::{FileExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::sync::Arc;

use phasegate_proto::Encoding;
use phasegate_proto::codec::{decode_with_limit, encode_with_limit};
use sha2::{Digest, Sha256};

use crate::AgentError;
use crate::state::{EntityRecord, FILE_MODE, MAX_ENTITY_BYTES};

/// Its name in an entities directory.
pub(crate) const FILE: &str = "journal.bin";
const HEADER: &[u8] = b"phasegate-agent-journal v1\n";
/// Length, its complement and checksum before each body.
const FRAME_HEAD: usize = 4 + 4 + 32;

/// An open journal, appended to at `len`. Cloning shares the file.
#[derive(Debug, Clone)]
pub(crate) struct Journal {
    file: Arc<File>,
    /// Where the next frame goes: the end of the last good frame.
    len: u64,
}

/// What reading a journal found.
#[derive(Debug)]
pub(crate) struct Read {
    /// Its records, oldest first.
    pub(crate) records: Vec<EntityRecord>,
    /// Open for the next append, after the last good frame.
    pub(crate) journal: Journal,
    /// The bytes after the last good frame, when there are: the file still
    /// holds them until [`Journal::cut_back`].
    pub(crate) torn: Option<Vec<u8>>,
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> AgentError + '_ {
    move |e| AgentError::State(format!("cannot write {}: {e}", path.display()))
}

impl Journal {
    /// Creates an empty journal in `dir`, its header synced. The caller
    /// syncs `dir` before counting on the file being there. Fails if one
    /// exists: a journal is never truncated by creating it.
    pub(crate) fn create(dir: &Path) -> Result<Self, AgentError> {
        let path = dir.join(FILE);
        let err = io(&path);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(FILE_MODE)
            .open(&path)
            .map_err(&err)?;
        file.write_all_at(HEADER, 0).map_err(&err)?;
        file.sync_data().map_err(&err)?;
        Ok(Self {
            file: Arc::new(file),
            len: HEADER.len() as u64,
        })
    }

    /// Reads the journal of `dir`; a torn tail is returned, not yet cut.
    /// `Ok(None)` when there is none (a directory written before journals).
    ///
    /// # Errors
    ///
    /// The reason, when the journal is corrupt or cannot be read.
    pub(crate) fn read(dir: &Path) -> Result<Option<Read>, String> {
        let path = dir.join(FILE);
        let file = match OpenOptions::new().read(true).write(true).open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(format!("cannot open: {e}")),
        };
        let mut bytes = std::fs::read(&path).map_err(|e| format!("cannot read: {e}"))?;
        let (records, good) = parse(&bytes)?;
        // Private whatever mode a crash of an older version left.
        let _ = file.set_permissions(Permissions::from_mode(FILE_MODE));
        let journal = Self {
            file: Arc::new(file),
            len: good.max(HEADER.len()) as u64,
        };
        if good < HEADER.len() {
            // Created, but its header never made it to disk: nothing after
            // it could have been acked.
            journal
                .file
                .write_all_at(HEADER, 0)
                .and_then(|()| journal.cut_back())
                .map_err(|e| format!("cannot write its header: {e}"))?;
            return Ok(Some(Read {
                records,
                journal,
                torn: None,
            }));
        }
        let torn = (good < bytes.len()).then(|| bytes.split_off(good));
        Ok(Some(Read {
            records,
            journal,
            torn,
        }))
    }

    /// Cuts the file back to the end of its last good frame, durably.
    pub(crate) fn cut_back(&self) -> std::io::Result<()> {
        self.file.set_len(self.len)?;
        self.file.sync_data()
    }

    /// Appends `frames` (see [`frame`]) and syncs them: durable once this
    /// returns. On failure the file is cut back to where it was.
    pub(crate) fn append(&mut self, frames: &[u8]) -> Result<(), AppendFailed> {
        let written = self
            .file
            .write_all_at(frames, self.len)
            .and_then(|()| self.file.sync_data());
        let Err(e) = written else {
            self.len += frames.len() as u64;
            return Ok(());
        };
        let cut = self.cut_back();
        Err(AppendFailed {
            cut_back: cut.is_ok(),
            error: AgentError::State(match cut {
                Ok(()) => format!("cannot append to the journal: {e}"),
                Err(c) => format!("cannot append to the journal: {e}; nor cut it back: {c}"),
            }),
        })
    }
}

/// An append that failed.
#[derive(Debug)]
pub(crate) struct AppendFailed {
    /// What went wrong.
    pub(crate) error: AgentError,
    /// Whether the file is as before the append. If not, nothing may be
    /// appended to it any more: what follows would come after garbage.
    pub(crate) cut_back: bool,
}

/// One record as a frame, appended to `out`.
pub(crate) fn frame(record: &EntityRecord, out: &mut Vec<u8>) -> Result<(), AgentError> {
    let body = encode_with_limit(Encoding::MsgPack, record, MAX_ENTITY_BYTES)
        .map_err(|e| AgentError::State(format!("{}: {e}", record.key)))?;
    let len = u32::try_from(body.len())
        .map_err(|_| AgentError::State(format!("{}: record too large", record.key)))?;
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&(!len).to_le_bytes());
    out.extend_from_slice(&Sha256::digest(&body));
    out.extend_from_slice(&body);
    Ok(())
}

/// The records of a journal's bytes and how many bytes are good: all of
/// them, or up to a torn tail.
fn parse(bytes: &[u8]) -> Result<(Vec<EntityRecord>, usize), String> {
    if bytes.len() < HEADER.len() && HEADER.starts_with(bytes) {
        return Ok((Vec::new(), 0));
    }
    if !bytes.starts_with(HEADER) {
        return Err("not a journal (no header)".into());
    }
    let mut records = Vec::new();
    let mut at = HEADER.len();
    while at < bytes.len() {
        let Some(frame) = checked_frame(&bytes[at..]) else {
            // Short, or failing its checksum as the last thing in the file.
            return Ok((records, at));
        };
        let (body, next) = frame.map_err(|reason| format!("at byte {at}: {reason}"))?;
        let r = decode_with_limit(Encoding::MsgPack, body, MAX_ENTITY_BYTES)
            .map_err(|e| format!("at byte {at}: undecodable record: {e}"))?;
        records.push(r);
        at += next;
    }
    Ok((records, at))
}

/// The frame at the start of `rest`: `None` when it is torn (short, or
/// bad and last), `Some(Err)` when it is bad otherwise, else its body and
/// length. A length that disagrees with its complement is never taken for
/// a torn tail: it would say where the file should end.
fn checked_frame(rest: &[u8]) -> Option<Result<(&[u8], usize), String>> {
    let head = rest.get(..FRAME_HEAD)?;
    let word = |i: usize| u32::from_le_bytes([head[i], head[i + 1], head[i + 2], head[i + 3]]);
    let (len, check) = (word(0), word(4));
    if len != !check {
        return Some(Err("a record's length fails its check".into()));
    }
    let end = FRAME_HEAD.checked_add(len as usize)?;
    let body = rest.get(FRAME_HEAD..end)?;
    if Sha256::digest(body).as_slice() == &head[8..] {
        Some(Ok((body, end)))
    } else if end == rest.len() {
        None
    } else {
        Some(Err("a record fails its checksum, with more after it".into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(key: &str) -> EntityRecord {
        EntityRecord {
            key: key.into(),
            stored: None,
            blocked: None,
        }
    }

    fn frames(keys: &[&str]) -> Vec<u8> {
        let mut out = Vec::new();
        for k in keys {
            frame(&record(k), &mut out).unwrap();
        }
        out
    }

    fn keys(read: &Read) -> Vec<&str> {
        read.records.iter().map(|r| r.key.as_str()).collect()
    }

    #[test]
    fn appends_are_read_back_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let mut j = Journal::create(dir.path()).unwrap();
        assert!(Journal::create(dir.path()).is_err(), "never truncated");
        j.append(&frames(&["a", "b"])).unwrap();
        j.append(&frames(&["a"])).unwrap();
        let mut read = Journal::read(dir.path()).unwrap().unwrap();
        assert_eq!(keys(&read), ["a", "b", "a"]);
        // Appends go on after what was read.
        read.journal.append(&frames(&["c"])).unwrap();
        let read = Journal::read(dir.path()).unwrap().unwrap();
        assert_eq!(keys(&read), ["a", "b", "a", "c"]);
        assert!(Journal::read(&dir.path().join("none")).unwrap().is_none());
    }

    #[test]
    fn a_torn_tail_is_cut_back_at_every_length() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE);
        let mut j = Journal::create(dir.path()).unwrap();
        j.append(&frames(&["a"])).unwrap();
        let whole = std::fs::read(&path).unwrap();
        let one = whole.len();
        j.append(&frames(&["bb"])).unwrap();
        let whole = std::fs::read(&path).unwrap();
        for cut in one + 1..whole.len() {
            std::fs::write(&path, &whole[..cut]).unwrap();
            let read = Journal::read(dir.path()).unwrap().unwrap();
            assert_eq!(keys(&read), ["a"], "cut at {cut}");
            assert_eq!(read.torn.as_deref(), Some(&whole[one..cut]));
            assert_eq!(std::fs::metadata(&path).unwrap().len(), cut as u64);
            read.journal.cut_back().unwrap();
            assert_eq!(std::fs::metadata(&path).unwrap().len(), one as u64);
        }
        assert!(Journal::read(dir.path()).unwrap().unwrap().torn.is_none());
        // A last frame whose bytes are all there but wrong: torn too.
        let mut bad = whole.clone();
        let last = bad.len() - 1;
        bad[last] ^= 1;
        std::fs::write(&path, &bad).unwrap();
        let read = Journal::read(dir.path()).unwrap().unwrap();
        assert_eq!(keys(&read), ["a"]);
        assert!(read.torn.is_some());
        // A header cut short: created, nothing acked after it.
        std::fs::write(&path, &HEADER[..5]).unwrap();
        let mut read = Journal::read(dir.path()).unwrap().unwrap();
        assert!(read.records.is_empty() && read.torn.is_none());
        read.journal.append(&frames(&["c"])).unwrap();
        assert_eq!(keys(&Journal::read(dir.path()).unwrap().unwrap()), ["c"]);
    }

    #[test]
    fn a_bad_frame_with_more_after_it_is_corruption() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE);
        let mut j = Journal::create(dir.path()).unwrap();
        j.append(&frames(&["a", "b"])).unwrap();
        let mut bytes = std::fs::read(&path).unwrap();
        // A bit of the first body.
        bytes[HEADER.len() + FRAME_HEAD] ^= 1;
        std::fs::write(&path, &bytes).unwrap();
        let err = Journal::read(dir.path()).unwrap_err();
        assert!(err.contains("checksum"), "{err}");
        // A length that disagrees with its complement.
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[HEADER.len() + FRAME_HEAD] ^= 1;
        bytes[HEADER.len()] ^= 0x40;
        std::fs::write(&path, &bytes).unwrap();
        let err = Journal::read(dir.path()).unwrap_err();
        assert!(err.contains("length"), "{err}");
        std::fs::write(&path, b"something else entirely").unwrap();
        assert!(Journal::read(dir.path()).is_err());
    }
}
