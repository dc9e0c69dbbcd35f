//! Pieces on disk: records appended to log files, found through an index in sled.
//!
//! Layout under the data directory:
//! - `log/<8 hex digits>`: the log files, numbered from 0, each filled up to about
//!   [`LOG_FILE_BYTES`]. A piece's record starts at a block-aligned offset: the piece's bytes,
//!   the chaining values of its 16 KiB groups (0.2 % of the piece, from which ranged-read
//!   proofs are built), and zeros up to a whole number of 4 KiB blocks.
//! - `meta/`: sled; tree `pieces` maps piece id → its log, offset and [`PieceMeta`] ([`Stored`]);
//!   tree `counters` keeps the bytes deletes have freed ([`Freed`]).
//!
//! A piece is hashed as its bytes arrive and gathered in a block-aligned buffer of at most
//! [`WRITE_BUFFER`] bytes. A record that fits is written in one `O_DIRECT` write (where the
//! file system allows it) once every byte is in and its hash is the reserved piece id; a larger
//! one in writes of that size as its bytes arrive, so a large piece is never held whole in
//! memory. Each record takes its own region at the log's end, so records are written in
//! parallel. Then it is committed in a group: one thread takes every record written
//! meanwhile, writes a journal block naming them, syncs their log files (`fdatasync`) and adds
//! their index entries (sled is flushed at checkpoints: the journal is replayed from the last
//! one at start-up); only then is each piece visible and acknowledged. So the index holds only
//! complete, hashed, durable records, and an acknowledged piece survives a power loss. A piece
//! that comes short, long or with another hash leaves nothing: the region of a record that is
//! not committed goes back to the file system (a hole punched in the log), and at start-up so
//! does every stretch of a log that no index entry covers (records a crash cut short).
//!
//! A delete goes through the same commit thread, so puts and deletes are ordered in one
//! journal: each deleted piece is a tombstone entry in a group's block ([`TOMBSTONE`]). Once
//! the block is durable the index entries go, the records are punched out of the log and the
//! bytes are counted as freed; a replay after a crash removes the entries again, and the
//! start-up's punching frees their records. A deleted piece never comes back.
//!
//! Until 2026-12 each piece was a file of its own (`pieces/<2 hex>/<64 hex>`); such folders
//! are moved into the log at start-up, each piece checked against its name. Why the log: see
//! `docs/ARCHITECTURE.md` (a file per piece cost an inode, a rename and two syncs per piece).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fs;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, RwLock, mpsc};
use std::thread::JoinHandle;

use bytes::Bytes;
use futures::StreamExt;
use tracing::{debug, info, warn};
use wwt_engine::proof::{self, GroupHasher};
use wwt_net::NetError;
use wwt_net::types::{Deleted, NodeId, PieceId, PieceStream, SegmentId};

use crate::ProviderError;

/// What the provider records about a stored piece.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PieceMeta {
    /// The client that stored it (the only client that may read it).
    pub owner: NodeId,
    /// Its segment.
    pub segment: SegmentId,
    /// Its index in the segment.
    pub index: u32,
    /// Its size in bytes.
    pub size: u64,
}

const META_LEN: usize = 32 + 32 + 4 + 8;

/// A stored piece: its metadata and where its record is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stored {
    /// What the provider records about the piece.
    pub meta: PieceMeta,
    /// The number of its log file.
    log: u32,
    /// Where its record starts in that file (a whole number of blocks).
    offset: u64,
}

const STORED_LEN: usize = META_LEN + 4 + 8;

/// The alignment `O_DIRECT` asks of buffers, lengths and offsets (a page covers every
/// logical block size in use).
const BLOCK: usize = 4096;

/// The most a record's write buffer holds (a whole number of blocks): the record of a piece up
/// to about 2 MiB is written in one write, a larger one in writes of this size. One write
/// instead of five for a 1 MiB piece (fewer `O_DIRECT` requests, completions and wake-ups) cut
/// the CPU of `wwt bench-net`'s upload from 2.2–2.4× raw gRPC's to 1.75–2.07×.
const WRITE_BUFFER: usize = 2 << 20;

/// The most bytes of a part hashed and gathered before the store's task yields to others.
const STEP: usize = 256 << 10;

/// A log file takes no record that would carry it past this size (a record may start below
/// it and end past it when the file is empty: one piece is at most 64 MiB).
pub const LOG_FILE_BYTES: u64 = 1 << 30;

/// The length of the record of a piece of `size` bytes: bytes, group chaining values, zeros
/// up to a whole number of blocks (so it is written without cutting padding off).
pub fn record_len(size: u64) -> u64 {
    (size + proof::groups_len(size)).next_multiple_of(BLOCK as u64)
}

impl PieceMeta {
    fn encode(&self) -> [u8; META_LEN] {
        let mut out = [0u8; META_LEN];
        out[..32].copy_from_slice(&self.owner.0);
        out[32..64].copy_from_slice(&self.segment.0);
        out[64..68].copy_from_slice(&self.index.to_le_bytes());
        out[68..].copy_from_slice(&self.size.to_le_bytes());
        out
    }

    fn decode(bytes: &[u8]) -> Option<PieceMeta> {
        if bytes.len() != META_LEN {
            return None;
        }
        Some(PieceMeta {
            owner: NodeId(bytes[..32].try_into().ok()?),
            segment: SegmentId(bytes[32..64].try_into().ok()?),
            index: u32::from_le_bytes(bytes[64..68].try_into().ok()?),
            size: u64::from_le_bytes(bytes[68..].try_into().ok()?),
        })
    }
}

impl Stored {
    fn encode(&self) -> [u8; STORED_LEN] {
        let mut out = [0u8; STORED_LEN];
        out[..META_LEN].copy_from_slice(&self.meta.encode());
        out[META_LEN..META_LEN + 4].copy_from_slice(&self.log.to_le_bytes());
        out[META_LEN + 4..].copy_from_slice(&self.offset.to_le_bytes());
        out
    }

    fn decode(bytes: &[u8]) -> Option<Stored> {
        if bytes.len() != STORED_LEN {
            return None;
        }
        Some(Stored {
            meta: PieceMeta::decode(&bytes[..META_LEN])?,
            log: u32::from_le_bytes(bytes[META_LEN..META_LEN + 4].try_into().ok()?),
            offset: u64::from_le_bytes(bytes[META_LEN + 4..].try_into().ok()?),
        })
    }

    /// Where its record ends.
    fn end(&self) -> u64 {
        self.offset + record_len(self.meta.size)
    }

    /// The journal entry that deletes a piece described by `meta` (see [`TOMBSTONE`]).
    fn tombstone(meta: PieceMeta) -> Stored {
        Stored {
            meta,
            log: TOMBSTONE,
            offset: 0,
        }
    }

    /// Whether this journal entry deletes its piece rather than commits it.
    fn is_tombstone(&self) -> bool {
        self.log == TOMBSTONE
    }
}

/// The log number of a journal entry that deletes its piece (a tombstone): no log file has it
/// ([`Log::allocate`] never numbers one so, [`Log::open`] takes no file of that name). The
/// entry keeps the deleted piece's [`PieceMeta`], whose size a replay counts as freed.
const TOMBSTONE: u32 = u32::MAX;

#[derive(Debug, Default)]
struct Usage {
    used: u64,
    pieces: u64,
    inflight: u64,
    /// The pieces claimed by a put or a delete under way.
    writing: HashSet<PieceId>,
}

/// A piece being written or deleted: counted in flight (a write), and neither written nor
/// deleted by a second request at once, until dropped (by the commit thread once the piece is
/// indexed or its entry removed, or when the request or the store fails).
struct Claim {
    usage: Arc<Mutex<Usage>>,
    piece: PieceId,
    size: u64,
}

impl Drop for Claim {
    fn drop(&mut self) {
        if let Ok(mut usage) = self.usage.lock() {
            usage.inflight -= self.size;
            usage.writing.remove(&self.piece);
        }
    }
}

/// What the commit thread journals: a record to commit, or pieces to delete.
#[expect(
    clippy::large_enum_variant,
    reason = "puts are nearly every change: boxing them would cost an allocation each to save \
              a few hundred bytes on the rare delete"
)]
enum Change {
    Put(Commit),
    Delete(Removal),
}

impl Change {
    /// Its journal entries, in order.
    fn entries(&self) -> Vec<Entry> {
        match self {
            Change::Put(commit) => vec![(commit.piece, commit.stored)],
            Change::Delete(removal) => removal
                .pieces
                .iter()
                .map(|(piece, stored)| (*piece, Stored::tombstone(stored.meta)))
                .collect(),
        }
    }

    /// How many journal entries it takes.
    fn len(&self) -> usize {
        match self {
            Change::Put(_) => 1,
            Change::Delete(removal) => removal.pieces.len(),
        }
    }

    /// Lets go of its pieces, then says how its group commit went (so the caller's next
    /// request finds them, or their absence).
    fn answer(self, result: Result<(), NetError>) {
        let done = match self {
            Change::Put(Commit { claim, done, .. }) => {
                drop(claim);
                done
            }
            Change::Delete(Removal { claims, done, .. }) => {
                drop(claims);
                done
            }
        };
        let _ = done.send(result);
    }
}

/// Held pieces to delete (at most [`GROUP_MAX`]), and where to say how that went.
struct Removal {
    /// The pieces and where their records are.
    pieces: Vec<(PieceId, Stored)>,
    /// Held until the pieces are gone from the index, so that no put or other delete of them
    /// runs meanwhile.
    claims: Vec<Claim>,
    done: tokio::sync::oneshot::Sender<Result<(), NetError>>,
}

/// A record written and waiting for its group commit, and where to say how that went.
struct Commit {
    piece: PieceId,
    stored: Stored,
    record: Record,
    /// Held until the piece is indexed, so that a retry of a store whose caller gave up
    /// waiting finds either the claim or the piece, and never writes it twice.
    claim: Claim,
    done: tokio::sync::oneshot::Sender<Result<(), NetError>>,
}

/// The piece store of one provider.
#[derive(Debug)]
pub struct PieceStore {
    log: Arc<Log>,
    pieces: sled::Tree,
    capacity: u64,
    usage: Arc<Mutex<Usage>>,
    freed: Freed,
    /// To the thread that commits records and deletes in groups; taken on drop, which ends
    /// the thread.
    commits: Option<mpsc::Sender<Change>>,
    committer: Option<JoinHandle<()>>,
    // Kept so the database outlives the tree handle and is flushed on drop.
    _db: sled::Db,
}

fn disk(path: &Path) -> impl FnOnce(std::io::Error) -> ProviderError + '_ {
    move |source| ProviderError::Disk {
        path: path.to_path_buf(),
        source,
    }
}

fn internal(what: &str) -> impl FnOnce(std::io::Error) -> NetError + '_ {
    move |e| NetError::Internal(format!("{what}: {e}"))
}

/// `Forbidden` if `stored` (piece `piece`) is held for another owner than `owner`.
fn foreign(piece: &PieceId, stored: &Stored, owner: NodeId) -> Result<(), NetError> {
    if stored.meta.owner == owner {
        return Ok(());
    }
    Err(NetError::Forbidden(format!(
        "piece {piece} is held for another owner: only a piece's owner or a trusted tracker \
         may delete it; nothing was deleted"
    )))
}

/// Runs `f` (file I/O) on tokio's blocking threads.
async fn on_blocking_thread<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, NetError> + Send + 'static,
) -> Result<T, NetError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| NetError::Internal(format!("a blocking task failed: {e}")))?
}

impl PieceStore {
    /// Opens (or creates) the store under `root`: moves piece files of the layout before the
    /// log into it, drops index entries without their record, and gives back the space of
    /// records that were never committed.
    pub fn open(root: &Path, capacity: u64) -> Result<PieceStore, ProviderError> {
        PieceStore::open_with_log_files_of(root, capacity, LOG_FILE_BYTES)
    }

    /// [`PieceStore::open`], with log files that take no record past `file_bytes`.
    fn open_with_log_files_of(
        root: &Path,
        capacity: u64,
        file_bytes: u64,
    ) -> Result<PieceStore, ProviderError> {
        let db = sled::open(root.join("meta"))?;
        let pieces = db.open_tree("pieces")?;
        let freed = Freed {
            counters: db.open_tree("counters")?,
        };
        let log_dir = root.join("log");
        let log = Arc::new(Log::open(&log_dir, file_bytes).map_err(disk(&log_dir))?);
        let (journal, replayed) = Journal::recover(&log, &pieces, freed.clone())?;
        let migrated = migrate_piece_files(root, &log, &pieces)?;

        let lengths = log.lengths().map_err(disk(&log_dir))?;
        let mut usage = Usage::default();
        let mut records: BTreeMap<u32, Vec<(u64, u64)>> = BTreeMap::new();
        for entry in pieces.iter() {
            let (key, value) = entry?;
            if *key == *JOURNAL_HEAD {
                continue;
            }
            // Its log file exists and is long enough to hold its record.
            let held = |s: &Stored| lengths.get(&s.log).is_some_and(|&len| len >= s.end());
            let stored =
                Stored::decode(&value).filter(|s| PieceId::from_slice(&key).is_ok() && held(s));
            match stored {
                Some(s) => {
                    usage.used += s.meta.size;
                    usage.pieces += 1;
                    records.entry(s.log).or_default().push((s.offset, s.end()));
                }
                None => {
                    warn!("an index entry without its record; forgetting the piece");
                    pieces.remove(key)?;
                }
            }
        }
        records
            .entry(journal.head.log)
            .or_default()
            .push((journal.head.offset, journal.head.offset + BLOCK as u64));
        pieces.flush()?;
        let gaps = log.punch_gaps(records).unwrap_or_else(|e| {
            warn!(error = %e, "could not give the log's unused stretches back; they stay in use");
            0
        });
        info!(
            pieces = usage.pieces,
            used = usage.used,
            migrated,
            replayed,
            gaps,
            "piece store opened"
        );
        let usage = Arc::new(Mutex::new(usage));
        let (commits, queue) = mpsc::channel();
        let committer = {
            let (log, pieces, usage) = (log.clone(), pieces.clone(), usage.clone());
            std::thread::Builder::new()
                .name("wwt-piece-commit".into())
                .spawn(move || commit_in_groups(&log, &pieces, &usage, journal, queue))
                .map_err(disk(root))?
        };
        Ok(PieceStore {
            log,
            pieces,
            capacity,
            usage,
            freed,
            commits: Some(commits),
            committer: Some(committer),
            _db: db,
        })
    }

    fn usage(&self) -> Result<MutexGuard<'_, Usage>, NetError> {
        self.usage
            .lock()
            .map_err(|_| NetError::Internal("usage counters poisoned".into()))
    }

    /// Bytes offered.
    pub fn capacity(&self) -> u64 {
        self.capacity
    }

    /// Bytes and pieces held.
    pub fn used(&self) -> Result<(u64, u64), NetError> {
        let usage = self.usage()?;
        Ok((usage.used, usage.pieces))
    }

    /// Bytes given back by deletes since the store was created.
    pub fn freed(&self) -> Result<u64, NetError> {
        let (bytes, _) = self
            .freed
            .read()
            .map_err(|e| NetError::Internal(format!("metadata read: {e}")))?;
        Ok(bytes)
    }

    /// The stored piece `piece`, if it is stored.
    pub fn get(&self, piece: &PieceId) -> Result<Option<Stored>, NetError> {
        let value = self
            .pieces
            .get(piece.0)
            .map_err(|e| NetError::Internal(format!("metadata read: {e}")))?;
        Ok(value.and_then(|v| Stored::decode(&v)))
    }

    /// The distinct segments of the stored pieces.
    pub fn segments(&self) -> Result<Vec<SegmentId>, NetError> {
        let mut segments = HashSet::new();
        for entry in self.pieces.iter() {
            let (_, value) =
                entry.map_err(|e| NetError::Internal(format!("metadata read: {e}")))?;
            if let Some(stored) = Stored::decode(&value) {
                segments.insert(stored.meta.segment);
            }
        }
        Ok(segments.into_iter().collect())
    }

    /// Stores the piece `piece` described by `meta` from `data` as its bytes arrive, and
    /// makes it visible once it is complete, hashes to `piece` and is durable. Refuses when
    /// the capacity would be exceeded, and a piece of another size or hash (keeping nothing).
    /// A piece already stored for the same owner is kept once (nothing is written); one stored
    /// for another owner is `Conflict`.
    pub async fn put(
        &self,
        piece: PieceId,
        meta: PieceMeta,
        data: PieceStream,
    ) -> Result<(), NetError> {
        let claim = {
            let mut usage = self.usage()?;
            if usage.writing.contains(&piece) {
                return Err(NetError::Unavailable(format!(
                    "piece {piece} is being written or deleted by another request; retry"
                )));
            }
            let needed = usage.used + usage.inflight + meta.size;
            if needed > self.capacity {
                return Err(NetError::NoCapacity(format!(
                    "provider is full: {} of {} bytes used or in flight, piece needs {}",
                    usage.used + usage.inflight,
                    self.capacity,
                    meta.size
                )));
            }
            usage.inflight += meta.size;
            usage.writing.insert(piece);
            Claim {
                usage: self.usage.clone(),
                piece,
                size: meta.size,
            }
        };
        // Committed since the caller looked: kept once, for its owner only.
        match self.get(&piece)? {
            Some(stored) if stored.meta.owner == meta.owner => return Ok(()),
            Some(_) => {
                return Err(NetError::Conflict(format!(
                    "piece {piece} is stored for another owner"
                )));
            }
            None => {}
        }
        self.write_durably(claim, meta, data).await
    }

    /// Hashes the parts and gathers them in the record's buffer as they arrive, on this task
    /// (it yields every [`STEP`] bytes), and writes a full buffer out on a blocking thread; then
    /// checks the size and hash, writes the rest of the record on a blocking thread and hands
    /// it to the group commit (which counts the piece as used once it is durable and indexed).
    /// A piece of up to about [`WRITE_BUFFER`] bytes goes to a blocking thread once: handing
    /// each part to a writer thread cost a wake-up per part.
    async fn write_durably(
        &self,
        claim: Claim,
        meta: PieceMeta,
        mut data: PieceStream,
    ) -> Result<(), NetError> {
        let piece = claim.piece;
        let mut record = Record::new(self.log.clone(), meta.size);
        let mut hasher = GroupHasher::default();
        let mut received = 0u64;
        while let Some(part) = data.next().await {
            let part = part?;
            received += part.len() as u64;
            if received > meta.size {
                return Err(NetError::BadRequest(format!(
                    "more bytes were sent than the {} the reservation says",
                    meta.size
                )));
            }
            for (i, mut step) in part.chunks(STEP).enumerate() {
                if i > 0 {
                    tokio::task::yield_now().await;
                }
                hasher.update(step);
                while !step.is_empty() {
                    step = &step[record.fill(step)..];
                    if record.is_full() {
                        record = on_blocking_thread(move || {
                            record.flush().map_err(internal("write piece"))?;
                            Ok(record)
                        })
                        .await?;
                    }
                }
            }
        }
        if received != meta.size {
            return Err(NetError::BadRequest(format!(
                "piece is {received} bytes but the reservation says {}",
                meta.size
            )));
        }
        let (groups, hash) = hasher.finalize();
        if hash.0 != piece.0 {
            return Err(NetError::BadRequest(
                "piece bytes do not hash to the reserved piece id".into(),
            ));
        }
        let record = on_blocking_thread(move || {
            record.finish(&groups).map_err(internal("write piece"))?;
            Ok(record)
        })
        .await?;
        let stored = record.stored(meta)?;
        let (done, committed) = tokio::sync::oneshot::channel();
        let stopped = || NetError::Unavailable("the piece store is closing; retry".into());
        self.commits
            .as_ref()
            .ok_or_else(stopped)?
            .send(Change::Put(Commit {
                piece,
                stored,
                record,
                claim,
                done,
            }))
            .map_err(|_| stopped())?;
        committed.await.map_err(|_| stopped())??;
        debug!(piece = %piece, size = meta.size, "piece stored");
        Ok(())
    }

    /// Refuses (`Forbidden`) if any of `pieces` is held for another owner than `owner`;
    /// pieces not held pass.
    pub fn check_owner(&self, pieces: &[PieceId], owner: NodeId) -> Result<(), NetError> {
        for piece in pieces {
            if let Some(stored) = self.get(piece)? {
                foreign(piece, &stored, owner)?;
            }
        }
        Ok(())
    }

    /// Deletes `pieces` for good: each is journaled as a tombstone, and once that is durable
    /// its index entry goes, its record is punched out of the log, and its bytes count as
    /// freed. With `owner` set, every held piece must be that owner's, else the request is
    /// refused (`Forbidden`); the check runs while the pieces are claimed, so no store of
    /// another owner's copy slips in after it. A piece not held counts as deleted already (a
    /// retried delete succeeds); one being written, or deleted by another request, refuses
    /// the request (`Unavailable`, retry). Either refusal deletes nothing.
    ///
    /// Returns how many pieces this call deleted and the bytes they held. More than
    /// [`GROUP_MAX`] pieces go in several groups: if the store fails midway the pieces of the
    /// groups before are deleted, and a retry counts them as gone already.
    ///
    /// A read that found a piece's entry before the delete may read the punched zeros; readers
    /// check what they read against the piece id (clients) or the audit's sentinels and proofs
    /// (trackers), and a punched stretch of the log is never written again, so such a read
    /// fails its check and never yields another piece's bytes.
    pub async fn delete(
        &self,
        pieces: &[PieceId],
        owner: Option<NodeId>,
    ) -> Result<Deleted, NetError> {
        let mut wanted = pieces.to_vec();
        wanted.sort_unstable();
        wanted.dedup();
        let claims: Vec<Claim> = {
            let mut usage = self.usage()?;
            if let Some(busy) = wanted.iter().find(|p| usage.writing.contains(p)) {
                return Err(NetError::Unavailable(format!(
                    "piece {busy} is being written or deleted by another request; nothing was \
                     deleted; retry"
                )));
            }
            usage.writing.extend(wanted.iter().copied());
            wanted
                .iter()
                .map(|&piece| Claim {
                    usage: self.usage.clone(),
                    piece,
                    size: 0,
                })
                .collect()
        };
        // The claims of pieces not held are let go at once.
        let mut held = Vec::new();
        for claim in claims {
            if let Some(stored) = self.get(&claim.piece)? {
                if let Some(owner) = owner {
                    foreign(&claim.piece, &stored, owner)?;
                }
                held.push((claim, stored));
            }
        }
        let stopped = || NetError::Unavailable("the piece store is closing; retry".into());
        let commits = self.commits.as_ref().ok_or_else(stopped)?;
        let mut answers = Vec::new();
        let mut held = held.into_iter().peekable();
        while held.peek().is_some() {
            let (claims, pieces): (Vec<Claim>, Vec<_>) = held
                .by_ref()
                .take(GROUP_MAX)
                .map(|(claim, stored)| {
                    let piece = claim.piece;
                    (claim, (piece, stored))
                })
                .unzip();
            let deleted = Deleted {
                pieces: pieces.len() as u32,
                freed: pieces.iter().map(|(_, s)| s.meta.size).sum(),
            };
            let (done, answer) = tokio::sync::oneshot::channel();
            commits
                .send(Change::Delete(Removal {
                    pieces,
                    claims,
                    done,
                }))
                .map_err(|_| stopped())?;
            answers.push((deleted, answer));
        }
        let mut total = Deleted::default();
        for (deleted, answer) in answers {
            answer.await.map_err(|_| stopped())??;
            total.pieces += deleted.pieces;
            total.freed += deleted.freed;
        }
        Ok(total)
    }

    /// Reads the whole of a stored piece (the reader checks it against its hash).
    pub async fn read_whole(&self, stored: &Stored) -> Result<Bytes, NetError> {
        let file = self.log.file(stored.log)?;
        let (offset, size) = (stored.offset, stored.meta.size);
        let size = usize::try_from(size).unwrap_or(usize::MAX);
        on_blocking_thread(move || {
            read_direct(&file.direct, offset, size).map_err(internal("read piece"))
        })
        .await
    }

    /// Reads `len` bytes at `offset` of a stored piece, with the Bao slice proving them
    /// against the piece id (`wwt_engine::proof::verify` checks it). The caller checks bounds.
    /// Reads only the piece's group chaining values and the 16 KiB groups the range covers.
    pub async fn read_range(
        &self,
        stored: &Stored,
        offset: u64,
        len: u64,
    ) -> Result<(Bytes, Bytes), NetError> {
        let file = self.log.file(stored.log)?;
        let (start, size) = (stored.offset, stored.meta.size);
        on_blocking_thread(move || {
            let mut groups = vec![0u8; usize::try_from(proof::groups_len(size)).unwrap_or(0)];
            file.cached
                .read_exact_at(&mut groups, start + size)
                .map_err(internal("read group chaining values"))?;
            let piece = PieceReader {
                file: &file.cached,
                start,
                size,
                at: 0,
            };
            let slice = proof::prove(piece, size, &groups, offset, len).map_err(|e| match e {
                wwt_engine::Error::OutOfRange { .. } => {
                    NetError::BadRequest(format!("cannot prove range: {e}"))
                }
                e => NetError::Internal(format!("proving a range of a piece: {e}")),
            })?;
            let mut range = vec![0u8; usize::try_from(len).unwrap_or(0)];
            file.cached
                .read_exact_at(&mut range, start + offset)
                .map_err(internal("read range"))?;
            Ok((Bytes::from(range), Bytes::from(slice)))
        })
        .await
    }

    /// Reads the byte at each of `positions` of a stored piece (a sentinel challenge), one
    /// positioned read each instead of the whole piece.
    pub async fn read_positions(
        &self,
        stored: &Stored,
        positions: Vec<u64>,
    ) -> Result<Bytes, NetError> {
        // The record goes on past the piece (its groups, then the next record): bound by the
        // piece's size.
        let (start, size) = (stored.offset, stored.meta.size);
        if let Some(at) = positions.iter().find(|&&at| at >= size) {
            return Err(NetError::BadRequest(format!(
                "position {at} is past the end of the {size}-byte piece"
            )));
        }
        let file = self.log.file(stored.log)?;
        on_blocking_thread(move || {
            let mut out = vec![0u8; positions.len()];
            for (byte, &at) in out.iter_mut().zip(&positions) {
                file.cached
                    .read_exact_at(std::slice::from_mut(byte), start + at)
                    .map_err(internal("read a sentinel position"))?;
            }
            Ok(Bytes::from(out))
        })
        .await
    }
}

impl Drop for PieceStore {
    /// Ends the commit thread once it has committed what it was given, so that the index is
    /// closed (and its lock released) when the store is gone.
    fn drop(&mut self) {
        self.commits.take();
        if let Some(committer) = self.committer.take() {
            let _ = committer.join();
        }
    }
}

/// The commit journal: a chain of blocks in the log, one per group commit, each naming the
/// pieces it commits (id and [`Stored`]) or deletes (id and a tombstone, see [`TOMBSTONE`]), in
/// order, and where the next block goes. A group is durable with one `fdatasync` of the log
/// (its records and its block), and the index is flushed only at checkpoints; at start-up the
/// chain from the last checkpoint is replayed into the index.
///
/// A block is written only after the previous group's sync returned, so every group but the
/// last whose block is intact was durable before the next began; the last one's records may
/// have been cut short by the crash, and are replayed only if they hash to their ids.
#[derive(Debug)]
struct Journal {
    /// Where the next group's block goes.
    head: Region,
    /// The next group's number (a block of another number is not part of the chain).
    seq: u64,
    /// Blocks written since the last checkpoint (given back at the next).
    behind: Vec<Region>,
    /// Counts the bytes its tombstones free.
    freed: Freed,
}

/// The bytes deletes have freed since the store was created: sled tree `counters`, key
/// [`FREED`], holding the total and the number of the journal block after the last one
/// counted (16 bytes, little-endian). A block is counted only if its number is not below
/// that, so a replay of the journal counts no delete twice, whether or not the index kept
/// the count before the crash.
#[derive(Debug, Clone)]
struct Freed {
    counters: sled::Tree,
}

const FREED: &[u8] = b"freed";

impl Freed {
    /// The total, and the number of the first journal block not yet counted.
    fn read(&self) -> Result<(u64, u64), sled::Error> {
        let Some(value) = self.counters.get(FREED)? else {
            return Ok((0, 0));
        };
        let number = |at: usize| {
            value
                .get(at..at + 8)
                .and_then(|b| b.try_into().ok())
                .map(u64::from_le_bytes)
        };
        match (value.len(), number(0), number(8)) {
            (16, Some(total), Some(next)) => Ok((total, next)),
            _ => Err(sled::Error::Unsupported(
                "the freed-bytes counter is unreadable".into(),
            )),
        }
    }

    /// Counts `bytes` freed by journal block `seq`, unless that block was counted already.
    fn add(&self, seq: u64, bytes: u64) -> Result<(), sled::Error> {
        let (total, next) = self.read()?;
        if seq < next {
            return Ok(());
        }
        let mut value = [0u8; 16];
        value[..8].copy_from_slice(&total.saturating_add(bytes).to_le_bytes());
        value[8..].copy_from_slice(&(seq + 1).to_le_bytes());
        self.counters.insert(FREED, &value[..])?;
        Ok(())
    }
}

/// A journal entry: a piece committed, and where its record is; or a piece deleted, and a
/// tombstone.
type Entry = (PieceId, Stored);

/// The sled key of the journal's head at the last checkpoint: log, offset, sequence number.
const JOURNAL_HEAD: &[u8] = b"journal head";
const JOURNAL_MAGIC: &[u8; 8] = b"wwtjrnl1";
const ENTRY_LEN: usize = 32 + STORED_LEN;
/// Magic, sequence number, next block's log and offset, entry count; a BLAKE3 checksum ends
/// the block.
const BLOCK_HEADER: usize = 8 + 8 + 4 + 8 + 2;
/// The most pieces one group commits or deletes (what fits in a block's entries).
const GROUP_MAX: usize = (BLOCK - BLOCK_HEADER - 32) / ENTRY_LEN;
/// Groups between checkpoints: at most this many blocks are replayed at start-up.
const CHECKPOINT_GROUPS: usize = 64;

impl Journal {
    /// The block of group `seq` committing `entries`, followed by a block at `next`.
    fn encode(seq: u64, next: &Region, entries: &[Entry]) -> (Vec<u8>, usize) {
        let (mut buffer, start) = aligned(BLOCK);
        let block = &mut buffer[start..start + BLOCK];
        block[..8].copy_from_slice(JOURNAL_MAGIC);
        block[8..16].copy_from_slice(&seq.to_le_bytes());
        block[16..20].copy_from_slice(&next.log.to_le_bytes());
        block[20..28].copy_from_slice(&next.offset.to_le_bytes());
        block[28..30].copy_from_slice(&(entries.len() as u16).to_le_bytes());
        for (slot, (piece, stored)) in block[BLOCK_HEADER..]
            .chunks_exact_mut(ENTRY_LEN)
            .zip(entries)
        {
            slot[..32].copy_from_slice(&piece.0);
            slot[32..].copy_from_slice(&stored.encode());
        }
        let sum = blake3::hash(&block[..BLOCK - 32]);
        block[BLOCK - 32..].copy_from_slice(sum.as_bytes());
        (buffer, start)
    }

    /// The entries of an intact block of group `seq`, and where the next block goes (log,
    /// offset).
    fn decode(block: &[u8], seq: u64) -> Option<(Vec<Entry>, (u32, u64))> {
        let sum = blake3::hash(block.get(..BLOCK - 32)?);
        if block.len() != BLOCK
            || &block[..8] != JOURNAL_MAGIC
            || block[BLOCK - 32..] != *sum.as_bytes()
            || block[8..16] != seq.to_le_bytes()
        {
            return None;
        }
        let next = (
            u32::from_le_bytes(block[16..20].try_into().ok()?),
            u64::from_le_bytes(block[20..28].try_into().ok()?),
        );
        let count = usize::from(u16::from_le_bytes(block[28..30].try_into().ok()?));
        let entries = block[BLOCK_HEADER..]
            .chunks_exact(ENTRY_LEN)
            .take(count)
            .map(|e| {
                Some((
                    PieceId::from_slice(&e[..32]).ok()?,
                    Stored::decode(&e[32..])?,
                ))
            })
            .collect::<Option<Vec<_>>>()?;
        (entries.len() == count).then_some((entries, next))
    }

    /// Replays the chain from the last checkpoint into the index (tombstones remove their
    /// pieces' entries, and count as freed once), and starts a new chain at the log's end
    /// (checkpointed, so a crash before the next group replays nothing twice). Returns the
    /// journal and how many entries were replayed.
    fn recover(
        log: &Log,
        pieces: &sled::Tree,
        freed: Freed,
    ) -> Result<(Journal, usize), ProviderError> {
        let damaged = |what: String| {
            ProviderError::Damaged(format!(
                "{what} (data directory {})",
                log.dir.parent().unwrap_or(&log.dir).display()
            ))
        };
        // What a killed process wrote may still be only in the page cache or the drive's
        // cache: make it durable before the index names it.
        log.sync_all().map_err(disk(&log.dir))?;
        let bytes: u64 = log.lengths().map_err(disk(&log.dir))?.values().sum();
        let head = match pieces.get(JOURNAL_HEAD)? {
            None if bytes > 0 => {
                return Err(damaged(format!(
                    "the piece log holds {bytes} bytes but its index (meta/) has no journal head: \
                     the index was lost"
                )));
            }
            None => None,
            Some(h) => Some(
                (|| {
                    Some((
                        u32::from_le_bytes(h.get(..4)?.try_into().ok()?),
                        u64::from_le_bytes(h.get(4..12)?.try_into().ok()?),
                        u64::from_le_bytes(h.get(12..20)?.try_into().ok()?),
                    ))
                })()
                .ok_or_else(|| damaged("the index's journal head is unreadable".into()))?,
            ),
        };
        let (mut replayed, mut seq) = (0, 0);
        if let Some((mut at_log, mut at, first)) = head {
            seq = first;
            let mut last: Option<(u64, Vec<Entry>)> = None;
            let mut block = vec![0u8; BLOCK];
            loop {
                // The chain ends at a block never written (past the end of its file, or not
                // an intact block of this sequence number); any other failure to read it
                // would lose the groups after it, so it stops the start-up.
                let file = log.file(at_log).map_err(|_| {
                    damaged(format!(
                        "the journal names log file {at_log:08x}, which is missing"
                    ))
                })?;
                match file.cached.read_exact_at(&mut block, at) {
                    Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => break,
                    read => read.map_err(disk(&log_path(&log.dir, at_log)))?,
                }
                let Some((entries, next)) = Journal::decode(&block, seq) else {
                    break;
                };
                // The group before this block was durable before this block was written.
                if let Some((before, entries)) = last.replace((seq, entries)) {
                    replayed += replay(log, pieces, &freed, before, entries, false)?;
                }
                (at_log, at) = next;
                seq += 1;
            }
            if let Some((before, entries)) = last {
                replayed += replay(log, pieces, &freed, before, entries, true)?;
            }
        }
        let dir = &log.dir;
        let mut journal = Journal {
            head: log.allocate(BLOCK as u64).map_err(disk(dir))?,
            seq,
            behind: Vec::new(),
            freed,
        };
        journal.checkpoint(pieces)?;
        Ok((journal, replayed))
    }

    /// Records the head in the index and flushes it (with every entry added so far), then
    /// gives the blocks behind the head back.
    fn checkpoint(&mut self, pieces: &sled::Tree) -> Result<(), sled::Error> {
        let mut head = [0u8; 20];
        head[..4].copy_from_slice(&self.head.log.to_le_bytes());
        head[4..12].copy_from_slice(&self.head.offset.to_le_bytes());
        head[12..].copy_from_slice(&self.seq.to_le_bytes());
        pieces.insert(JOURNAL_HEAD, &head[..])?;
        pieces.flush()?;
        for block in self.behind.drain(..) {
            if let Err(e) = punch(&block.file, block.offset, block.len) {
                warn!(error = %e, "could not give a journal block back; it stays allocated");
            }
        }
        Ok(())
    }

    /// Makes `group` durable and applies it: writes its block at the head (naming a new head),
    /// syncs the log files of its records and its block, then indexes its records, removes the
    /// entries of the pieces it deletes, counts their bytes as freed and punches their records
    /// out of the log. Once the sync has returned the group holds whatever follows: the journal
    /// names it, and the next start applies it if this does not.
    fn commit(
        &mut self,
        log: &Log,
        pieces: &sled::Tree,
        group: &mut [Change],
    ) -> Result<(), NetError> {
        let metadata = |e: sled::Error| NetError::Internal(format!("metadata write: {e}"));
        let next = log
            .allocate(BLOCK as u64)
            .map_err(internal("extend the log"))?;
        let entries: Vec<Entry> = group.iter().flat_map(Change::entries).collect();
        let (block, start) = Journal::encode(self.seq, &next, &entries);
        self.head
            .file
            .direct
            .write_all_at(&block[start..start + BLOCK], self.head.offset)
            .map_err(internal("write the journal"))?;
        let mut logs: BTreeSet<u32> = entries
            .iter()
            .filter(|(_, s)| !s.is_tombstone())
            .map(|(_, s)| s.log)
            .collect();
        logs.insert(self.head.log);
        for n in logs {
            log.file(n)?
                .direct
                .sync_data()
                .map_err(internal("sync the log"))?;
        }
        for change in group.iter_mut() {
            if let Change::Put(commit) = change {
                commit.record.committed = true;
            }
        }
        // One insert each: a sled batch would write sled's log at once (a write and a thread
        // wake-up per group), and the journal already makes the group atomic.
        let mut freed = None;
        for (piece, stored) in &entries {
            if stored.is_tombstone() {
                pieces.remove(piece.0).map_err(metadata)?;
                *freed.get_or_insert(0) += stored.meta.size;
            } else {
                pieces
                    .insert(piece.0, &stored.encode()[..])
                    .map_err(metadata)?;
            }
        }
        if let Some(bytes) = freed {
            self.freed.add(self.seq, bytes).map_err(metadata)?;
        }
        // The entries are gone: a failed punch leaves the record to the next start's.
        let deleted = group.iter().filter_map(|change| match change {
            Change::Delete(removal) => Some(&removal.pieces),
            Change::Put(_) => None,
        });
        for (_, stored) in deleted.flatten() {
            let punched = log
                .file(stored.log)
                .map_err(std::io::Error::other)
                .and_then(|file| punch(&file, stored.offset, record_len(stored.meta.size)));
            if let Err(e) = punched {
                warn!(error = %e, "could not give a deleted record back; the next start will");
            }
        }
        self.behind.push(std::mem::replace(&mut self.head, next));
        self.seq += 1;
        Ok(())
    }
}

/// Applies the entries of journal block `seq` to the index, in order: a record's entry is
/// inserted (if the block is the chain's `last`, only if its record holds its piece: the crash
/// may have cut it short), a tombstone's removed and its bytes counted as freed. Returns how
/// many entries were applied.
fn replay(
    log: &Log,
    pieces: &sled::Tree,
    freed: &Freed,
    seq: u64,
    entries: Vec<Entry>,
    last: bool,
) -> Result<usize, ProviderError> {
    let (mut applied, mut bytes) = (0, None);
    for (piece, stored) in entries {
        if stored.is_tombstone() {
            pieces.remove(piece.0)?;
            *bytes.get_or_insert(0) += stored.meta.size;
        } else if !last || log.holds_piece(&piece, &stored) {
            pieces.insert(piece.0, &stored.encode()[..])?;
        } else {
            warn!(piece = %piece, "the last group's record was cut short; dropped");
            continue;
        }
        applied += 1;
    }
    if let Some(bytes) = bytes {
        freed.add(seq, bytes)?;
    }
    Ok(applied)
}

/// The commit thread: takes the records written and the deletes asked for since its last
/// group (up to [`GROUP_MAX`] entries), journals them, counts them in the usage, and answers
/// each; checkpoints every [`CHECKPOINT_GROUPS`] groups and when the store closes. After a
/// failed commit (a disk error: what a failed sync left on disk is unknown) it refuses every
/// further change until the provider restarts and recovers from the journal.
fn commit_in_groups(
    log: &Log,
    pieces: &sled::Tree,
    usage: &Mutex<Usage>,
    mut journal: Journal,
    queue: mpsc::Receiver<Change>,
) {
    let mut failed: Option<NetError> = None;
    // A change that did not fit in the last group.
    let mut waiting: Option<Change> = None;
    while let Some(first) = waiting.take().or_else(|| queue.recv().ok()) {
        let mut entries = first.len();
        let mut group = vec![first];
        while entries < GROUP_MAX
            && let Ok(change) = queue.try_recv()
        {
            if entries + change.len() > GROUP_MAX {
                waiting = Some(change);
                break;
            }
            entries += change.len();
            group.push(change);
        }
        let result = match &failed {
            Some(e) => Err(e.clone()),
            None => journal.commit(log, pieces, &mut group).inspect_err(|e| {
                warn!(error = %e, "a group commit failed; refusing changes until restarted");
                failed = Some(NetError::Unavailable(format!(
                    "the provider's piece log failed ({e}); it refuses pieces until restarted"
                )));
            }),
        };
        if result.is_ok()
            && let Ok(mut usage) = usage.lock()
        {
            for change in &group {
                match change {
                    Change::Put(commit) => {
                        usage.used += commit.stored.meta.size;
                        usage.pieces += 1;
                    }
                    Change::Delete(removal) => {
                        for (_, stored) in &removal.pieces {
                            usage.used = usage.used.saturating_sub(stored.meta.size);
                            usage.pieces = usage.pieces.saturating_sub(1);
                        }
                    }
                }
            }
        }
        for change in group {
            change.answer(result.clone());
        }
        if failed.is_none()
            && journal.behind.len() >= CHECKPOINT_GROUPS
            && let Err(e) = journal.checkpoint(pieces)
        {
            warn!(error = %e, "a checkpoint failed; the journal keeps the groups since the last");
        }
    }
    if failed.is_none()
        && !journal.behind.is_empty()
        && let Err(e) = journal.checkpoint(pieces)
    {
        warn!(error = %e, "the closing checkpoint failed; the next start replays the journal");
    }
}

/// The log files of one store, and where the next record goes.
#[derive(Debug)]
struct Log {
    dir: PathBuf,
    /// A log file takes no record that would carry it past this size.
    file_bytes: u64,
    files: RwLock<HashMap<u32, Arc<LogFile>>>,
    tail: Mutex<Tail>,
    /// Write buffers kept for the next records: each [`WRITE_BUFFER`] bytes from a
    /// block-aligned offset, and that offset.
    buffers: Mutex<Vec<(Vec<u8>, usize)>>,
}

/// Write buffers a store keeps for reuse. A new buffer costs the kernel a page fault and a
/// zeroed page per 4 KiB on first touch: in `wwt bench-net`'s upload that was about 6 % of
/// the CPU, as much as hashing the pieces.
const BUFFERS_KEPT: usize = 16;

/// The log file records are appended to, and where its next record starts.
#[derive(Debug)]
struct Tail {
    log: u32,
    end: u64,
}

/// One log file, opened twice: for block-aligned reads and writes straight to the device
/// (`O_DIRECT` where the file system allows it), and for small reads through the page cache.
#[derive(Debug)]
struct LogFile {
    direct: fs::File,
    cached: fs::File,
}

/// The part of a log file that a record is written to.
#[derive(Debug)]
struct Region {
    log: u32,
    offset: u64,
    len: u64,
    file: Arc<LogFile>,
}

impl LogFile {
    fn open(path: &Path) -> std::io::Result<LogFile> {
        let cached = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)?;
        let direct = open_direct(fs::OpenOptions::new().read(true).write(true), path)?;
        Ok(LogFile { direct, cached })
    }
}

impl Log {
    /// Opens the log files in `dir` (creating the first if there is none); records go on at
    /// the end of the last.
    fn open(dir: &Path, file_bytes: u64) -> std::io::Result<Log> {
        fs::create_dir_all(dir)?;
        let mut files = HashMap::new();
        for entry in fs::read_dir(dir)? {
            let path = entry?.path();
            let number = path
                .file_name()
                .and_then(|n| n.to_str())
                .filter(|n| n.len() == 8)
                .and_then(|n| u32::from_str_radix(n, 16).ok())
                .filter(|&n| n != TOMBSTONE);
            match number {
                Some(number) => {
                    files.insert(number, Arc::new(LogFile::open(&path)?));
                }
                None => warn!(path = %path.display(), "not a log file; left alone"),
            }
        }
        let last = match files.keys().max() {
            Some(&last) => last,
            None => {
                files.insert(0, Arc::new(LogFile::open(&log_path(dir, 0))?));
                sync_dir(dir)?;
                0
            }
        };
        let end = files[&last]
            .direct
            .metadata()?
            .len()
            .next_multiple_of(BLOCK as u64);
        Ok(Log {
            dir: dir.to_path_buf(),
            file_bytes,
            files: RwLock::new(files),
            tail: Mutex::new(Tail { log: last, end }),
            buffers: Mutex::new(Vec::new()),
        })
    }

    fn file(&self, log: u32) -> Result<Arc<LogFile>, NetError> {
        self.files
            .read()
            .map_err(|_| NetError::Internal("log files poisoned".into()))?
            .get(&log)
            .cloned()
            .ok_or_else(|| NetError::Internal(format!("log file {log:08x} is missing")))
    }

    /// The log files, by number.
    fn all(&self) -> std::io::Result<Vec<(u32, Arc<LogFile>)>> {
        Ok(self
            .files
            .read()
            .map_err(|_| std::io::Error::other("log files poisoned"))?
            .iter()
            .map(|(&n, f)| (n, f.clone()))
            .collect())
    }

    /// Each log file's length, by number.
    fn lengths(&self) -> std::io::Result<HashMap<u32, u64>> {
        self.all()?
            .into_iter()
            .map(|(n, f)| Ok((n, f.direct.metadata()?.len())))
            .collect()
    }

    /// Syncs every log file.
    fn sync_all(&self) -> std::io::Result<()> {
        self.all()?
            .into_iter()
            .try_for_each(|(_, f)| f.direct.sync_data())
    }

    /// Whether `stored`'s record is complete: the piece's bytes hash to `piece`, and the group
    /// chaining values after them are theirs.
    fn holds_piece(&self, piece: &PieceId, stored: &Stored) -> bool {
        let Ok(size) = usize::try_from(stored.meta.size) else {
            return false;
        };
        let mut record = vec![0u8; size + proof::groups_len(stored.meta.size) as usize];
        let read = self
            .file(stored.log)
            .ok()
            .filter(|f| f.cached.read_exact_at(&mut record, stored.offset).is_ok());
        let (bytes, groups) = record.split_at(size);
        let (want, hash) = proof::groups(bytes);
        read.is_some() && hash.0 == piece.0 && want == groups
    }

    /// A write buffer of [`WRITE_BUFFER`] bytes from a block-aligned offset, and that offset.
    fn buffer(&self) -> (Vec<u8>, usize) {
        let kept = self.buffers.lock().ok().and_then(|mut kept| kept.pop());
        kept.unwrap_or_else(|| aligned(WRITE_BUFFER))
    }

    /// Keeps `buffer` (from [`Log::buffer`]) for the next record, if fewer than
    /// [`BUFFERS_KEPT`] are kept.
    fn give_back(&self, buffer: (Vec<u8>, usize)) {
        if let Ok(mut kept) = self.buffers.lock()
            && kept.len() < BUFFERS_KEPT
        {
            kept.push(buffer);
        }
    }

    /// A region of `len` bytes at the end of the log, in a new log file when the last is full.
    fn allocate(&self, len: u64) -> std::io::Result<Region> {
        let poisoned = || std::io::Error::other("log tail poisoned");
        let mut tail = self.tail.lock().map_err(|_| poisoned())?;
        if tail.end > 0 && tail.end + len > self.file_bytes {
            let next = tail
                .log
                .checked_add(1)
                .filter(|&n| n != TOMBSTONE)
                .ok_or_else(|| std::io::Error::other("no log file numbers left"))?;
            let file = Arc::new(LogFile::open(&log_path(&self.dir, next))?);
            sync_dir(&self.dir)?;
            self.files
                .write()
                .map_err(|_| poisoned())?
                .insert(next, file);
            *tail = Tail { log: next, end: 0 };
        }
        let offset = tail.end;
        tail.end += len;
        let file = self.file(tail.log).map_err(std::io::Error::other)?;
        Ok(Region {
            log: tail.log,
            offset,
            len,
            file,
        })
    }

    /// Gives the blocks of every stretch of each log file that `records` (per log: where each
    /// record starts and ends) do not cover back to the file system. Returns how many
    /// stretches there were.
    fn punch_gaps(&self, mut records: BTreeMap<u32, Vec<(u64, u64)>>) -> std::io::Result<usize> {
        let mut gaps = 0;
        for (n, file) in self.all()? {
            let mut covered = records.remove(&n).unwrap_or_default();
            covered.sort_unstable();
            covered.push((file.direct.metadata()?.len(), u64::MAX));
            let mut from = 0;
            for (start, end) in covered {
                if start > from {
                    punch(&file, from, start - from)?;
                    gaps += 1;
                }
                from = from.max(end);
            }
        }
        Ok(gaps)
    }
}

/// The path of log file `n` in `dir`.
fn log_path(dir: &Path, n: u32) -> PathBuf {
    dir.join(format!("{n:08x}"))
}

/// Gives `len` bytes at `offset` of `file` back to the file system (a hole that reads as
/// zeros); where the file system cannot, they stay allocated until the log is compacted.
fn punch(file: &LogFile, offset: u64, len: u64) -> std::io::Result<()> {
    use rustix::fs::{FallocateFlags, fallocate};
    match fallocate(
        &file.direct,
        FallocateFlags::PUNCH_HOLE | FallocateFlags::KEEP_SIZE,
        offset,
        len,
    ) {
        Err(rustix::io::Errno::OPNOTSUPP) => {
            debug!("the file system cannot punch holes; the space stays in use");
            Ok(())
        }
        result => result.map_err(std::io::Error::from),
    }
}

/// A piece's record being written to the log through a block-aligned buffer. It takes its
/// region when its first write goes out; dropped uncommitted, it gives the region back.
struct Record {
    log: Arc<Log>,
    /// The record's length: the piece's bytes, group chaining values and padding.
    len: u64,
    region: Option<Region>,
    /// Bytes written to the region so far.
    written: u64,
    buffer: Vec<u8>,
    /// Where the aligned part of `buffer` starts.
    start: usize,
    /// How much of the aligned part is used: the whole record, or [`WRITE_BUFFER`] if less.
    capacity: usize,
    filled: usize,
    committed: bool,
}

impl Record {
    /// The record of a piece of `size` bytes, to be written to `log`.
    fn new(log: Arc<Log>, size: u64) -> Record {
        let len = record_len(size);
        // Both are whole numbers of blocks.
        let capacity = usize::try_from(len).map_or(WRITE_BUFFER, |len| len.min(WRITE_BUFFER));
        let (buffer, start) = log.buffer();
        Record {
            log,
            len,
            region: None,
            written: 0,
            buffer,
            start,
            capacity,
            filled: 0,
            committed: false,
        }
    }

    /// Copies as much of `bytes` into the buffer as it has room for; returns how much.
    fn fill(&mut self, bytes: &[u8]) -> usize {
        let take = bytes.len().min(self.capacity - self.filled);
        let at = self.start + self.filled;
        self.buffer[at..at + take].copy_from_slice(&bytes[..take]);
        self.filled += take;
        take
    }

    /// Whether the buffer must be written out ([`Record::flush`]) before it takes more.
    fn is_full(&self) -> bool {
        self.filled == self.capacity
    }

    /// Gathers `bytes`, writing the buffer out each time it fills.
    fn write(&mut self, mut bytes: &[u8]) -> std::io::Result<()> {
        while !bytes.is_empty() {
            bytes = &bytes[self.fill(bytes)..];
            if self.is_full() {
                self.flush()?;
            }
        }
        Ok(())
    }

    /// Writes out the buffer: a whole number of blocks, as every write but the last is a full
    /// buffer and the record is.
    fn flush(&mut self) -> std::io::Result<()> {
        let region = match self.region {
            Some(ref region) => region,
            None => self.region.insert(self.log.allocate(self.len)?),
        };
        region.file.direct.write_all_at(
            &self.buffer[self.start..self.start + self.filled],
            region.offset + self.written,
        )?;
        self.written += self.filled as u64;
        self.filled = 0;
        Ok(())
    }

    /// Appends the group chaining values and the padding to the piece's bytes and writes out
    /// the rest of the record; the buffer goes back to the log.
    fn finish(&mut self, groups: &[u8]) -> std::io::Result<()> {
        self.write(groups)?;
        let padding = self.len - self.written - self.filled as u64;
        self.write(&[0u8; BLOCK][..usize::try_from(padding).unwrap_or(0)])?;
        self.flush()?;
        self.log
            .give_back((std::mem::take(&mut self.buffer), self.start));
        Ok(())
    }

    /// Where the finished record of the piece described by `meta` is.
    fn stored(&self, meta: PieceMeta) -> Result<Stored, NetError> {
        match &self.region {
            Some(region) if self.written == self.len => Ok(Stored {
                meta,
                log: region.log,
                offset: region.offset,
            }),
            _ => Err(NetError::Internal("the record is not written out".into())),
        }
    }
}

impl Drop for Record {
    fn drop(&mut self) {
        if !self.buffer.is_empty() {
            self.log
                .give_back((std::mem::take(&mut self.buffer), self.start));
        }
        if let (false, Some(region)) = (self.committed, &self.region)
            && let Err(e) = punch(&region.file, region.offset, region.len)
        {
            warn!(error = %e, "could not give an unused log region back; it stays allocated");
        }
    }
}

/// A stored piece's bytes, read as a file of their own (for [`proof::prove`]).
struct PieceReader<'a> {
    file: &'a fs::File,
    /// Where the piece starts in the file.
    start: u64,
    size: u64,
    /// The position in the piece.
    at: u64,
}

impl Read for PieceReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let left = usize::try_from(self.size.saturating_sub(self.at)).unwrap_or(usize::MAX);
        let len = buf.len().min(left);
        let read = self.file.read_at(&mut buf[..len], self.start + self.at)?;
        self.at += read as u64;
        Ok(read)
    }
}

impl Seek for PieceReader<'_> {
    fn seek(&mut self, to: SeekFrom) -> std::io::Result<u64> {
        let at = match to {
            SeekFrom::Start(at) => Some(at),
            SeekFrom::Current(by) => self.at.checked_add_signed(by),
            SeekFrom::End(by) => self.size.checked_add_signed(by),
        };
        self.at = at.ok_or_else(|| std::io::Error::other("seek before the piece's start"))?;
        Ok(self.at)
    }
}

/// Moves the piece files of the layout before the log (`pieces/<2 hex>/<64 hex>`: the piece's
/// bytes, its group chaining values, zeros, its [`PieceMeta`] and `wwtpiec2`) into the log,
/// each checked against its name, then removes them. Returns how many moved. A crash midway
/// leaves the files, moved again at the next start (the copies already moved are skipped, or
/// their regions punched as uncovered).
fn migrate_piece_files(
    root: &Path,
    log: &Arc<Log>,
    pieces: &sled::Tree,
) -> Result<usize, ProviderError> {
    let old = root.join("pieces");
    if !old.exists() {
        return Ok(0);
    }
    let mut records = Vec::new();
    for shard in fs::read_dir(&old).map_err(disk(&old))? {
        let shard = shard.map_err(disk(&old))?.path();
        if !shard.is_dir() {
            warn!(path = %shard.display(), "not a shard folder; dropped");
            continue;
        }
        for file in fs::read_dir(&shard).map_err(disk(&shard))? {
            let path = file.map_err(disk(&shard))?.path();
            let named = path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.parse::<PieceId>().ok());
            let Some(piece) = named else {
                warn!(path = %path.display(), "not a piece file; dropped");
                continue;
            };
            if pieces
                .get(piece.0)?
                .is_some_and(|v| Stored::decode(&v).is_some())
            {
                continue;
            }
            let Some((meta, bytes)) = read_piece_file(&path).map_err(disk(&path))? else {
                warn!(piece = %piece, "an incomplete piece file; dropped");
                continue;
            };
            let (groups, hash) = proof::groups(&bytes);
            if hash.0 != piece.0 {
                warn!(piece = %piece, "a piece file that does not hash to its name; dropped");
                continue;
            }
            let mut record = Record::new(log.clone(), meta.size);
            record.write(&bytes).map_err(disk(&path))?;
            record.finish(&groups).map_err(disk(&path))?;
            let stored = record.stored(meta)?;
            records.push((piece, stored, record));
        }
    }
    let logs: BTreeSet<u32> = records.iter().map(|(_, s, _)| s.log).collect();
    for n in logs {
        let path = log_path(&log.dir, n);
        log.file(n)?.direct.sync_data().map_err(disk(&path))?;
    }
    for (piece, stored, record) in &mut records {
        pieces.insert(piece.0, &stored.encode()[..])?;
        record.committed = true;
    }
    pieces.flush()?;
    fs::remove_dir_all(&old).map_err(disk(&old))?;
    let tmp = root.join("tmp");
    if tmp.exists() {
        fs::remove_dir_all(&tmp).map_err(disk(&tmp))?;
    }
    Ok(records.len())
}

/// The metadata and bytes of a piece file of the layout before the log; `None` if it is not
/// complete. A file that cannot be read stops the migration (it is not dropped).
fn read_piece_file(path: &Path) -> std::io::Result<Option<(PieceMeta, Vec<u8>)>> {
    const MAGIC: &[u8; 8] = b"wwtpiec2";
    let mut bytes = fs::read(path)?;
    let complete = (|| {
        let trailer = bytes.len().checked_sub(META_LEN + MAGIC.len())?;
        if &bytes[trailer + META_LEN..] != MAGIC {
            return None;
        }
        let meta = PieceMeta::decode(&bytes[trailer..trailer + META_LEN])?;
        let size = usize::try_from(meta.size).ok().filter(|&s| s <= trailer)?;
        Some((meta, size))
    })();
    Ok(complete.map(|(meta, size)| {
        bytes.truncate(size);
        (meta, bytes)
    }))
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    fs::File::open(dir)?.sync_all()
}

/// Opens `path` with `O_DIRECT`, or without it where the file system refuses it.
fn open_direct(options: &mut fs::OpenOptions, path: &Path) -> std::io::Result<fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    match options.custom_flags(libc::O_DIRECT).open(path) {
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => options.custom_flags(0).open(path),
        opened => opened,
    }
}

/// Opens a log file for [`read_direct`] (straight from the device where the file system allows
/// it), as the store reads whole pieces.
pub fn open_for_direct_reads(path: &Path) -> std::io::Result<fs::File> {
    open_direct(fs::OpenOptions::new().read(true), path)
}

/// Reads the `size` bytes at `offset` of a log file opened for direct reads: whole blocks from
/// a block-aligned offset, which a record has (its padding ends it on a block).
pub fn read_direct(file: &fs::File, offset: u64, size: usize) -> std::io::Result<Bytes> {
    let len = size.next_multiple_of(BLOCK);
    let (mut buffer, start) = aligned(len);
    file.read_exact_at(&mut buffer[start..start + len], offset)?;
    Ok(Bytes::from(buffer).slice(start..start + size))
}

/// A buffer with `len` bytes from a block-aligned offset, and that offset.
fn aligned(len: usize) -> (Vec<u8>, usize) {
    let buffer = vec![0u8; len + BLOCK];
    // Always below BLOCK for a byte pointer.
    let start = buffer.as_ptr().align_offset(BLOCK);
    (buffer, start)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::os::unix::fs::MetadataExt;

    /// Opens the store at `dir`. sled lets go of its file lock from background threads after
    /// its last handle is dropped, so a store (or a bare sled handle) dropped just before may
    /// still hold it: wait for that, up to 10 s, as a restarted daemon's supervisor would.
    fn open(dir: &Path, capacity: u64) -> PieceStore {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            match PieceStore::open(dir, capacity) {
                Err(ProviderError::Database(e))
                    if e.to_string().contains("could not acquire lock")
                        && std::time::Instant::now() < deadline =>
                {
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
                other => return other.unwrap(),
            }
        }
    }

    fn meta(size: u64) -> PieceMeta {
        PieceMeta {
            owner: NodeId([1; 32]),
            segment: SegmentId([2; 32]),
            index: 3,
            size,
        }
    }

    fn random(len: usize, seed: u64) -> Bytes {
        let mut data = vec![0u8; len];
        blake3::Hasher::new()
            .update(&seed.to_le_bytes())
            .finalize_xof()
            .fill(&mut data);
        Bytes::from(data)
    }

    /// Bytes the log files take on disk (holes take none).
    fn allocated(dir: &Path) -> u64 {
        fs::read_dir(dir.join("log"))
            .unwrap()
            .map(|f| f.unwrap().metadata().unwrap().blocks() * 512)
            .sum()
    }

    proptest::proptest! {
        #[test]
        fn index_entries_round_trip(
            owner: [u8; 32], segment: [u8; 32], index: u32, size: u64, log: u32, offset: u64,
        ) {
            let meta = PieceMeta { owner: NodeId(owner), segment: SegmentId(segment), index, size };
            let stored = Stored { meta, log, offset };
            proptest::prop_assert_eq!(Stored::decode(&stored.encode()), Some(stored));
            proptest::prop_assert_eq!(Stored::decode(&stored.encode()[1..]), None);
        }
    }

    #[tokio::test]
    async fn pieces_survive_reopen_and_what_a_crash_leaves_is_cleared() {
        let dir = tempfile::tempdir().unwrap();
        let data = random(3000, 1);
        let id = PieceId::of(&data);
        {
            let store = open(dir.path(), 10_000);
            store
                .put(id, meta(3000), PieceStream::whole(data.clone()))
                .await
                .unwrap();
            assert_eq!(store.used().unwrap(), (3000, 1));
        }
        let one_piece = allocated(dir.path());
        assert!(one_piece >= record_len(3000), "{one_piece}");

        // A crash mid-write leaves part of a record past the last committed one; a lost log
        // file leaves index entries that point nowhere.
        let log = log_path(&dir.path().join("log"), 0);
        let mut file = fs::OpenOptions::new().append(true).open(&log).unwrap();
        std::io::Write::write_all(&mut file, &[0xab; 3 * BLOCK]).unwrap();
        file.sync_all().unwrap();
        assert!(allocated(dir.path()) > one_piece);
        let lost = PieceId::of(b"lost");
        let missing = PieceId::of(b"missing");
        {
            let db = sled::open(dir.path().join("meta")).unwrap();
            let pieces = db.open_tree("pieces").unwrap();
            let past_the_end = Stored {
                meta: meta(5000),
                log: 0,
                offset: 1 << 20,
            };
            let no_file = Stored {
                log: 7,
                offset: 0,
                ..past_the_end
            };
            pieces.insert(lost.0, &past_the_end.encode()[..]).unwrap();
            pieces.insert(missing.0, &no_file.encode()[..]).unwrap();
            pieces.flush().unwrap();
        }

        let store = open(dir.path(), 10_000);
        assert_eq!(store.used().unwrap(), (3000, 1));
        assert_eq!(
            allocated(dir.path()),
            one_piece,
            "the cut-short record is punched"
        );
        assert_eq!(store.get(&lost).unwrap(), None);
        assert_eq!(store.get(&missing).unwrap(), None);
        let stored = store.get(&id).unwrap().unwrap();
        assert_eq!(stored.meta, meta(3000));
        assert_eq!(store.read_whole(&stored).await.unwrap(), data);
        let (range, slice) = store.read_range(&stored, 10, 20).await.unwrap();
        assert_eq!(range, data.slice(10..30));
        let proven = proof::verify(&wwt_engine::PieceHash(id.0), 10, 20, &slice).unwrap();
        assert_eq!(proven, range);
        let positions = vec![0, 1234, 2999];
        let bytes = store
            .read_positions(&stored, positions.clone())
            .await
            .unwrap();
        let want: Vec<u8> = positions.iter().map(|&at| data[at as usize]).collect();
        assert_eq!(bytes, want);
        let past = store.read_positions(&stored, vec![3000]).await.unwrap_err();
        assert!(matches!(past, NetError::BadRequest(_)), "{past}");

        // Records go on after the punched stretch, and the next start keeps both pieces.
        let more = random(5000, 2);
        store
            .put(
                PieceId::of(&more),
                meta(5000),
                PieceStream::whole(more.clone()),
            )
            .await
            .unwrap();
        drop(store);
        let store = open(dir.path(), 10_000);
        assert_eq!(store.used().unwrap(), (8000, 2));
        let stored = store.get(&PieceId::of(&more)).unwrap().unwrap();
        assert_eq!(store.read_whole(&stored).await.unwrap(), more);
    }

    #[tokio::test]
    async fn a_piece_is_kept_once_and_a_lost_index_stops_the_start_changing_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let data = random(7000, 6);
        let id = PieceId::of(&data);
        {
            let store = open(dir.path(), 1 << 20);
            for _ in 0..2 {
                let stream = PieceStream::whole(data.clone());
                store.put(id, meta(7000), stream).await.unwrap();
            }
            assert_eq!(store.used().unwrap(), (7000, 1));
        }
        let held = allocated(dir.path());
        assert!(
            held >= record_len(7000) && held < 2 * record_len(7000),
            "{held}"
        );

        // Without its index the log cannot tell its records from its gaps: refuse to start,
        // and punch nothing.
        let meta_dir = dir.path().join("meta");
        fs::rename(&meta_dir, dir.path().join("meta.lost")).unwrap();
        let err = PieceStore::open(dir.path(), 1 << 20).unwrap_err();
        assert!(matches!(err, ProviderError::Damaged(_)), "{err}");
        assert!(err.to_string().contains("index was lost"), "{err}");
        assert_eq!(allocated(dir.path()), held);
        fs::remove_dir_all(&meta_dir).unwrap();
        fs::rename(dir.path().join("meta.lost"), &meta_dir).unwrap();
        let store = open(dir.path(), 1 << 20);
        let stored = store.get(&id).unwrap().unwrap();
        assert_eq!(store.read_whole(&stored).await.unwrap(), data);
    }

    #[tokio::test]
    async fn capacity_is_enforced() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path(), 1500);
        let a = Bytes::from(vec![1u8; 1000]);
        let b = Bytes::from(vec![2u8; 1000]);
        store
            .put(PieceId::of(&a), meta(1000), PieceStream::whole(a))
            .await
            .unwrap();
        let err = store
            .put(PieceId::of(&b), meta(1000), PieceStream::whole(b))
            .await
            .unwrap_err();
        assert!(matches!(err, NetError::NoCapacity(_)), "{err}");
        assert_eq!(store.used().unwrap(), (1000, 1));
    }

    /// The parts of `data` cut every `every` bytes, then `tail` (an error, say).
    fn parts(data: &Bytes, every: usize, tail: Vec<Result<Bytes, NetError>>) -> PieceStream {
        let mut parts: Vec<_> = (0..data.len())
            .step_by(every)
            .map(|at| Ok(data.slice(at..data.len().min(at + every))))
            .collect();
        parts.extend(tail);
        PieceStream::new(futures::stream::iter(parts))
    }

    #[tokio::test]
    async fn a_piece_arriving_in_parts_is_stored_only_whole_and_with_its_hash() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path(), 10 << 20);
        // Parts that straddle the write buffer and the 16 KiB groups.
        let data = random(3 * WRITE_BUFFER + 12_345, 3);
        let id = PieceId::of(&data);
        let size = data.len() as u64;

        let lost = NetError::Unavailable("connection reset".into());
        let refusals = [
            // Short: the stream ends a byte early.
            (
                parts(&data.slice(..data.len() - 1), 100_003, vec![]),
                "reservation says",
            ),
            // Long: one byte more than reserved.
            (
                parts(&data, 100_003, vec![Ok(Bytes::from_static(b"x"))]),
                "more bytes",
            ),
            // The right size, another hash.
            (
                parts(&Bytes::from(vec![1u8; data.len()]), 65_536, vec![]),
                "do not hash",
            ),
            // The sender goes away midway.
            (
                parts(&data.slice(..WRITE_BUFFER + 5), 70_000, vec![Err(lost)]),
                "connection reset",
            ),
        ];
        for (stream, why) in refusals {
            let err = store.put(id, meta(size), stream).await.unwrap_err();
            assert!(err.to_string().contains(why), "{why}: {err}");
            assert_eq!(store.used().unwrap(), (0, 0));
            assert_eq!(store.get(&id).unwrap(), None);
            assert_eq!(allocated(dir.path()), 0, "{why}: nothing is left on disk");
        }

        store
            .put(id, meta(size), parts(&data, 100_003, vec![]))
            .await
            .unwrap();
        assert_eq!(store.used().unwrap(), (size, 1));
        let stored = store.get(&id).unwrap().unwrap();
        assert_eq!(store.read_whole(&stored).await.unwrap(), data);
        let (range, slice) = store.read_range(&stored, 500_000, 40_000).await.unwrap();
        assert_eq!(range, data.slice(500_000..540_000));
        let proven = proof::verify(&wwt_engine::PieceHash(id.0), 500_000, 40_000, &slice).unwrap();
        assert_eq!(proven, range);
        drop(store);
        let store = open(dir.path(), 10 << 20);
        assert_eq!(store.used().unwrap(), (size, 1));
        let stored = store.get(&id).unwrap().unwrap();
        assert_eq!(store.read_whole(&stored).await.unwrap(), data);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn pieces_stored_at_once_are_committed_together_across_log_files() {
        let dir = tempfile::tempdir().unwrap();
        // Log files of 64 KiB: the 40 records of about 20 KiB fill several.
        let store =
            Arc::new(PieceStore::open_with_log_files_of(dir.path(), 1 << 20, 64 << 10).unwrap());
        let pieces: Vec<Bytes> = (0..40).map(|i| random(20_000 + i, i as u64)).collect();
        let puts = pieces.iter().cloned().map(|data| {
            let store = store.clone();
            tokio::spawn(async move {
                let size = data.len() as u64;
                store
                    .put(PieceId::of(&data), meta(size), PieceStream::whole(data))
                    .await
            })
        });
        for put in futures::future::join_all(puts).await {
            put.unwrap().unwrap();
        }
        let total: u64 = pieces.iter().map(|p| p.len() as u64).sum();
        assert_eq!(store.used().unwrap(), (total, 40));
        drop(store);
        let files = fs::read_dir(dir.path().join("log")).unwrap().count();
        assert!(files >= 10, "{files} log files");

        let store = PieceStore::open_with_log_files_of(dir.path(), 1 << 20, 64 << 10).unwrap();
        assert_eq!(store.used().unwrap(), (total, 40));
        for data in &pieces {
            let stored = store.get(&PieceId::of(data)).unwrap().unwrap();
            assert_eq!(&store.read_whole(&stored).await.unwrap(), data);
        }
    }

    #[tokio::test]
    async fn piece_files_of_the_layout_before_the_log_are_moved_into_it() {
        let dir = tempfile::tempdir().unwrap();
        // The old layout: bytes, group chaining values, zeros to a block, metadata, magic.
        let old_file = |data: &Bytes, meta: PieceMeta| {
            let mut file = data.to_vec();
            file.extend(proof::groups(data).0);
            let trailer = META_LEN + 8;
            file.resize((file.len() + trailer).next_multiple_of(BLOCK) - trailer, 0);
            file.extend(meta.encode());
            file.extend(b"wwtpiec2");
            file
        };
        let good = random(10_000, 4);
        let bad = random(10_000, 5);
        let named = |piece: &PieceId| {
            let name = piece.to_string();
            dir.path().join("pieces").join(&name[..2]).join(name)
        };
        let (good_id, lying_id) = (PieceId::of(&good), PieceId::of(b"another piece"));
        for (id, data) in [(good_id, &good), (lying_id, &bad)] {
            fs::create_dir_all(named(&id).parent().unwrap()).unwrap();
            fs::write(named(&id), old_file(data, meta(10_000))).unwrap();
        }
        fs::create_dir_all(dir.path().join("tmp")).unwrap();
        fs::write(dir.path().join("tmp").join("partial"), b"half").unwrap();

        let store = open(dir.path(), 1 << 20);
        assert_eq!(store.used().unwrap(), (10_000, 1));
        let stored = store.get(&good_id).unwrap().unwrap();
        assert_eq!(stored.meta, meta(10_000));
        assert_eq!(store.read_whole(&stored).await.unwrap(), good);
        assert_eq!(
            store.get(&lying_id).unwrap(),
            None,
            "a file that lies is not moved"
        );
        assert!(!dir.path().join("pieces").exists());
        assert!(!dir.path().join("tmp").exists());
    }
    /// Copies the files under `from` to `to`.
    fn copy_tree(from: &Path, to: &Path) {
        fs::create_dir_all(to).unwrap();
        for entry in fs::read_dir(from).unwrap() {
            let path = entry.unwrap().path();
            let dest = to.join(path.file_name().unwrap());
            if path.is_dir() {
                copy_tree(&path, &dest);
            } else {
                fs::copy(&path, &dest).unwrap();
            }
        }
    }

    #[tokio::test]
    async fn a_crash_loses_no_acknowledged_piece_and_keeps_no_cut_short_one() {
        let dir = tempfile::tempdir().unwrap();
        let (before, after) = (dir.path().join("before"), dir.path().join("after"));
        let store = open(&before, 1 << 20);
        // One at a time: each piece is a group of its own, the last one in the last group.
        let pieces: Vec<Bytes> = (0..5).map(|i| random(9000 + i, 10 + i as u64)).collect();
        put_all(&store, &pieces).await;
        let last = store.get(&PieceId::of(&pieces[4])).unwrap().unwrap();

        // The crash: the files as they are now, with an index that never got the entries it
        // had not flushed, and the last group's record cut short.
        store.pieces.flush().unwrap();
        copy_tree(&before, &after);
        drop(store);
        {
            let db = sled::open(after.join("meta")).unwrap();
            let index = db.open_tree("pieces").unwrap();
            for data in &pieces {
                index.remove(PieceId::of(data).0).unwrap();
            }
            index.flush().unwrap();
        }
        let log = fs::OpenOptions::new()
            .write(true)
            .open(log_path(&after.join("log"), last.log))
            .unwrap();
        log.write_all_at(&[0xee; 100], last.offset + 5000).unwrap();

        let store = open(&after, 1 << 20);
        let kept: u64 = pieces[..4].iter().map(|p| p.len() as u64).sum();
        assert_eq!(store.used().unwrap(), (kept, 4));
        for data in &pieces[..4] {
            let stored = store.get(&PieceId::of(data)).unwrap().unwrap();
            assert_eq!(&store.read_whole(&stored).await.unwrap(), data);
        }
        assert_eq!(store.get(&PieceId::of(&pieces[4])).unwrap(), None);
        drop(store);
        // Recovered once: the next start finds the same.
        let store = open(&after, 1 << 20);
        assert_eq!(store.used().unwrap(), (kept, 4));
    }

    #[tokio::test]
    async fn the_journal_gives_its_blocks_back_at_checkpoints() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path(), 1 << 20);
        let pieces: Vec<Bytes> = (0..2 * CHECKPOINT_GROUPS as u64 + 5)
            .map(|i| random(100, i))
            .collect();
        for data in &pieces {
            store
                .put(
                    PieceId::of(data),
                    meta(100),
                    PieceStream::whole(data.clone()),
                )
                .await
                .unwrap();
        }
        let records = pieces.len() as u64 * record_len(100);
        // Records, and at most the blocks since the last checkpoint.
        let held = allocated(dir.path());
        assert!(held >= records, "{held}");
        assert!(
            held <= records + (CHECKPOINT_GROUPS as u64 + 1) * BLOCK as u64,
            "{held}"
        );
        drop(store);
        // All blocks are given back at close (the file system may keep a block or two of its
        // own for the extent tree of a file with many holes).
        let held = allocated(dir.path());
        assert!(
            held >= records && held <= records + 2 * BLOCK as u64,
            "{held}"
        );
        let store = open(dir.path(), 1 << 20);
        assert_eq!(
            store.used().unwrap(),
            (100 * pieces.len() as u64, pieces.len() as u64)
        );
    }

    /// Stores each of `pieces` (for the owner of [`meta`]); returns their ids and sizes.
    async fn put_all(store: &PieceStore, pieces: &[Bytes]) -> (Vec<PieceId>, Vec<u64>) {
        for data in pieces {
            let size = data.len() as u64;
            let stream = PieceStream::whole(data.clone());
            store
                .put(PieceId::of(data), meta(size), stream)
                .await
                .unwrap();
        }
        let ids = pieces.iter().map(|p| PieceId::of(p)).collect();
        (ids, pieces.iter().map(|p| p.len() as u64).collect())
    }

    #[tokio::test]
    async fn deleted_pieces_give_their_space_back_and_stay_gone() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path(), 1 << 20);
        let pieces: Vec<Bytes> = (0..3)
            .map(|i| random(50_000 + 10_000 * i, 30 + i as u64))
            .collect();
        let (ids, sizes) = put_all(&store, &pieces).await;
        let held = allocated(dir.path());

        let deleted = store.delete(&ids[..2], None).await.unwrap();
        let gone = sizes[0] + sizes[1];
        assert_eq!(
            deleted,
            Deleted {
                pieces: 2,
                freed: gone
            }
        );
        assert_eq!(store.used().unwrap(), (sizes[2], 1));
        assert_eq!(store.freed().unwrap(), gone);
        for id in &ids[..2] {
            assert_eq!(store.get(id).unwrap(), None);
        }
        // Their records are punched; the delete's journal block is given back at the next
        // checkpoint.
        let now = allocated(dir.path());
        let records = record_len(sizes[0]) + record_len(sizes[1]);
        assert!(now + records <= held + BLOCK as u64, "{held} → {now}");
        let stored = store.get(&ids[2]).unwrap().unwrap();
        assert_eq!(store.read_whole(&stored).await.unwrap(), pieces[2]);

        // Deleted again, with a piece never held: nothing more is deleted, and that succeeds.
        let again = [ids[1], ids[0], ids[0], PieceId::of(b"never held")];
        assert_eq!(
            store.delete(&again, None).await.unwrap(),
            Deleted::default()
        );
        assert_eq!(store.freed().unwrap(), gone);

        drop(store);
        let left = allocated(dir.path());
        assert!(
            left >= record_len(sizes[2]) && left <= record_len(sizes[2]) + 2 * BLOCK as u64,
            "the third's record alone is left: {left}"
        );
        let store = open(dir.path(), 1 << 20);
        assert_eq!(store.used().unwrap(), (sizes[2], 1));
        assert_eq!(store.freed().unwrap(), gone);
        for id in &ids[..2] {
            assert_eq!(store.get(id).unwrap(), None);
        }
        let stored = store.get(&ids[2]).unwrap().unwrap();
        assert_eq!(store.read_whole(&stored).await.unwrap(), pieces[2]);
    }

    #[tokio::test]
    async fn a_delete_that_cannot_have_every_piece_deletes_none() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path(), 1 << 20);
        let pieces: Vec<Bytes> = (0..2).map(|i| random(8000, 40 + i)).collect();
        let (ids, sizes) = put_all(&store, &pieces).await;
        let all = (sizes.iter().sum(), 2);

        // The second is being written (or deleted) by another request.
        store.usage().unwrap().writing.insert(ids[1]);
        let err = store.delete(&ids, None).await.unwrap_err();
        assert!(matches!(err, NetError::Unavailable(_)), "{err}");
        assert!(err.to_string().contains("retry"), "{err}");
        store.usage().unwrap().writing.remove(&ids[1]);
        assert_eq!(store.used().unwrap(), all);

        // Held for the owner of `meta`: another owner may delete neither.
        let err = store.delete(&ids, Some(NodeId([9; 32]))).await.unwrap_err();
        assert!(matches!(err, NetError::Forbidden(_)), "{err}");
        assert!(err.to_string().contains("nothing was deleted"), "{err}");
        assert_eq!(store.used().unwrap(), all);
        assert_eq!(store.freed().unwrap(), 0);
        for (id, data) in ids.iter().zip(&pieces) {
            let stored = store.get(id).unwrap().unwrap();
            assert_eq!(&store.read_whole(&stored).await.unwrap(), data);
        }

        // The refusals let go of the pieces: their owner deletes both.
        let deleted = store.delete(&ids, Some(meta(0).owner)).await.unwrap();
        assert_eq!(deleted.pieces, 2);
        assert_eq!(store.used().unwrap(), (0, 0));
    }

    #[tokio::test]
    async fn more_pieces_than_a_group_takes_are_deleted_in_several() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path(), 1 << 20);
        let pieces: Vec<Bytes> = (0..2 * GROUP_MAX as u64 + 3)
            .map(|i| random(100, 100 + i))
            .collect();
        let (ids, _) = put_all(&store, &pieces).await;
        let deleted = store.delete(&ids, None).await.unwrap();
        assert_eq!(
            deleted,
            Deleted {
                pieces: pieces.len() as u32,
                freed: 100 * pieces.len() as u64
            }
        );
        assert_eq!(store.used().unwrap(), (0, 0));
        drop(store);
        let store = open(dir.path(), 1 << 20);
        assert_eq!(store.used().unwrap(), (0, 0));
        assert_eq!(store.freed().unwrap(), 100 * pieces.len() as u64);
    }

    #[tokio::test]
    async fn a_crash_after_a_delete_never_brings_the_pieces_back() {
        let dir = tempfile::tempdir().unwrap();
        let before = dir.path().join("before");
        let store = open(&before, 1 << 20);
        let pieces: Vec<Bytes> = (0..3).map(|i| random(20_000 + i, 50 + i as u64)).collect();
        let (ids, sizes) = put_all(&store, &pieces).await;
        let entries: Vec<_> = ids[..2]
            .iter()
            .map(|id| store.pieces.get(id.0).unwrap().unwrap())
            .collect();
        let counter = store.freed.counters.get(FREED).unwrap();
        store.delete(&ids[..2], None).await.unwrap();
        let gone = sizes[0] + sizes[1];

        // The crash, right after the delete was acknowledged and before any checkpoint: the
        // files as they are now; in one copy the index as sled last wrote it, in the other an
        // index that never got the delete (its entries and its count as before it).
        store.pieces.flush().unwrap();
        let (kept, lost) = (dir.path().join("kept"), dir.path().join("lost"));
        copy_tree(&before, &kept);
        copy_tree(&before, &lost);
        drop(store);
        {
            let db = sled::open(lost.join("meta")).unwrap();
            let index = db.open_tree("pieces").unwrap();
            for (id, entry) in ids.iter().zip(entries) {
                index.insert(id.0, entry).unwrap();
            }
            let counters = db.open_tree("counters").unwrap();
            match counter {
                Some(value) => counters.insert(FREED, value).map(drop).unwrap(),
                None => counters.remove(FREED).map(drop).unwrap(),
            }
            db.flush().unwrap();
        }

        for copy in [&kept, &lost] {
            for _ in 0..2 {
                let store = open(copy, 1 << 20);
                let at = copy.display();
                assert_eq!(store.used().unwrap(), (sizes[2], 1), "{at}");
                assert_eq!(store.freed().unwrap(), gone, "{at}: counted once");
                for id in &ids[..2] {
                    assert_eq!(store.get(id).unwrap(), None, "{at}");
                }
                let stored = store.get(&ids[2]).unwrap().unwrap();
                assert_eq!(store.read_whole(&stored).await.unwrap(), pieces[2]);
                let left = allocated(copy);
                assert!(
                    left <= record_len(sizes[2]) + 2 * BLOCK as u64,
                    "{at}: the deleted records are given back: {left}"
                );
            }
        }
    }
}
