//! Pieces on disk: one file per piece, metadata in sled.
//!
//! Layout under the data directory:
//! - `tmp/`: pieces being written; emptied at start-up (anything there is partial).
//! - `pieces/<2 hex>/<64 hex>`: complete pieces, named by their BLAKE3 hash. One file each: the
//!   piece's bytes, the chaining values of its 16 KiB groups (0.2 % of the piece, from which
//!   ranged-read proofs are built), zeros up to a whole number of 4 KiB blocks, and a trailer
//!   holding its [`PieceMeta`], so the file alone says what it is.
//! - `meta/`: sled; tree `pieces` maps piece id → [`PieceMeta`]: the index reads go through.
//!
//! A piece is hashed as its bytes arrive and written to a unique temporary file (`O_DIRECT`
//! where the file system allows it, through an aligned buffer of at most [`WRITE_BUFFER`]
//! bytes: a file that fits is written in one write, a larger one in writes of that size as its
//! bytes arrive, so the disk writes one part while the next arrives and a large piece is never
//! held whole in memory). Once every byte is in and its hash is the reserved piece id, the
//! file gets its group chaining values and trailer, is synced, renamed into `pieces/`, and the
//! directory fsynced; only then is it indexed and acknowledged. A piece that comes short, long
//! or with another hash leaves nothing. sled flushes the index in the background: at start-up
//! a complete file the index lacks is indexed again from its trailer, and an index entry
//! without its complete file is dropped. So a crash at any point leaves either no trace of the
//! piece (a temporary file, swept at start-up) or the complete piece, and an acknowledged piece
//! survives a power loss.

use std::collections::HashSet;
use std::fs;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use futures::StreamExt;
use tracing::{debug, info, warn};
use wwt_engine::proof::{self, GroupHasher};
use wwt_net::NetError;
use wwt_net::types::{NodeId, PieceId, PieceStream, SegmentId};

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
/// Ends every piece file, after its metadata. (`wwtpiece` files held Bao's full outboard tree.)
const MAGIC: &[u8; 8] = b"wwtpiec2";
const TRAILER_LEN: usize = META_LEN + MAGIC.len();

/// The alignment `O_DIRECT` asks of buffers, lengths and offsets (a page covers every
/// logical block size in use).
const BLOCK: usize = 4096;

/// The most a piece file's write buffer holds (a whole number of blocks): the file of a piece
/// up to about 2 MiB is written in one write, a larger one in writes of this size. One write
/// instead of five for a 1 MiB piece (fewer `O_DIRECT` requests, completions and wake-ups) cut
/// the CPU of `wwt bench-net`'s upload from 2.2–2.4× raw gRPC's to 1.75–2.07×.
const WRITE_BUFFER: usize = 2 << 20;

/// Parts received but not yet written, per piece: the network runs this far ahead of the disk.
const PARTS_AHEAD: usize = 4;

/// The length of the file of a piece of `size` bytes: bytes, group chaining values, zeros up
/// to a whole number of blocks (so it is written without cutting padding off), trailer.
fn file_len(size: u64) -> u64 {
    (size + proof::groups_len(size) + TRAILER_LEN as u64).next_multiple_of(BLOCK as u64)
}

/// The zeros between a piece's group chaining values and its trailer.
fn padding_len(size: u64) -> usize {
    (file_len(size) - size - proof::groups_len(size) - TRAILER_LEN as u64) as usize
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

#[derive(Debug, Default)]
struct Usage {
    used: u64,
    pieces: u64,
    inflight: u64,
    writing: HashSet<PieceId>,
}

/// The piece store of one provider.
#[derive(Debug)]
pub struct PieceStore {
    root: PathBuf,
    pieces: sled::Tree,
    capacity: u64,
    usage: Arc<Mutex<Usage>>,
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

impl PieceStore {
    /// Opens (or creates) the store under `root`: sweeps partial files, drops index entries
    /// without their complete file, and indexes complete files the index lacks.
    pub fn open(root: &Path, capacity: u64) -> Result<PieceStore, ProviderError> {
        let tmp = root.join("tmp");
        let pieces_dir = root.join("pieces");
        if tmp.exists() {
            fs::remove_dir_all(&tmp).map_err(disk(&tmp))?;
        }
        fs::create_dir_all(&tmp).map_err(disk(&tmp))?;
        // All 256 shard folders exist (durably) before any piece is written, so storing a
        // piece only needs its own folder synced.
        for shard in 0..=255u8 {
            let shard = pieces_dir.join(format!("{shard:02x}"));
            fs::create_dir_all(&shard).map_err(disk(&shard))?;
        }
        sync_dir(&pieces_dir).map_err(disk(&pieces_dir))?;
        let db = sled::open(root.join("meta"))?;
        let pieces = db.open_tree("pieces")?;

        let mut usage = Usage::default();
        let mut known = HashSet::new();
        for entry in pieces.iter() {
            let (key, value) = entry?;
            let (Ok(id), Some(meta)) = (PieceId::from_slice(&key), PieceMeta::decode(&value))
            else {
                warn!("dropping an unreadable metadata entry");
                pieces.remove(key)?;
                continue;
            };
            match fs::metadata(piece_path(root, &id)) {
                Ok(m) if m.len() == file_len(meta.size) => {
                    usage.used += meta.size;
                    usage.pieces += 1;
                    known.insert(id);
                }
                _ => {
                    warn!(piece = %id, "metadata without its complete file; forgetting the piece");
                    pieces.remove(key)?;
                }
            }
        }
        let (mut orphans, mut reindexed) = (0usize, 0usize);
        for shard in fs::read_dir(&pieces_dir).map_err(disk(&pieces_dir))? {
            let shard = shard.map_err(disk(&pieces_dir))?.path();
            for file in fs::read_dir(&shard).map_err(disk(&shard))? {
                let file = file.map_err(disk(&shard))?.path();
                let named = file
                    .file_name()
                    .and_then(|n| n.to_str())
                    .and_then(|n| n.parse::<PieceId>().ok());
                match named {
                    Some(id) if known.contains(&id) => {}
                    Some(id) if file == piece_path(root, &id) => match read_trailer(&file) {
                        Some(meta) => {
                            pieces.insert(id.0, &meta.encode()[..])?;
                            usage.used += meta.size;
                            usage.pieces += 1;
                            reindexed += 1;
                        }
                        None => {
                            fs::remove_file(&file).map_err(disk(&file))?;
                            orphans += 1;
                        }
                    },
                    _ => {
                        fs::remove_file(&file).map_err(disk(&file))?;
                        orphans += 1;
                    }
                }
            }
        }
        pieces.flush()?;
        info!(
            pieces = usage.pieces,
            used = usage.used,
            orphans,
            reindexed,
            "piece store opened"
        );
        Ok(PieceStore {
            root: root.to_path_buf(),
            pieces,
            capacity,
            usage: Arc::new(Mutex::new(usage)),
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

    /// The metadata of a stored piece, if it is stored.
    pub fn get(&self, piece: &PieceId) -> Result<Option<PieceMeta>, NetError> {
        let value = self
            .pieces
            .get(piece.0)
            .map_err(|e| NetError::Internal(format!("metadata read: {e}")))?;
        Ok(value.and_then(|v| PieceMeta::decode(&v)))
    }

    /// The distinct segments of the stored pieces.
    pub fn segments(&self) -> Result<Vec<SegmentId>, NetError> {
        let mut segments = HashSet::new();
        for entry in self.pieces.iter() {
            let (_, value) =
                entry.map_err(|e| NetError::Internal(format!("metadata read: {e}")))?;
            if let Some(meta) = PieceMeta::decode(&value) {
                segments.insert(meta.segment);
            }
        }
        Ok(segments.into_iter().collect())
    }

    /// Stores the piece `piece` described by `meta` from `data` as its bytes arrive, and
    /// makes it visible once it is complete, hashes to `piece` and is durable. Refuses when
    /// the capacity would be exceeded, and a piece of another size or hash (keeping nothing).
    pub async fn put(
        &self,
        piece: PieceId,
        meta: PieceMeta,
        data: PieceStream,
    ) -> Result<(), NetError> {
        {
            let mut usage = self.usage()?;
            if usage.writing.contains(&piece) {
                return Err(NetError::Unavailable(format!(
                    "piece {piece} is being written by another request; retry"
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
        }
        let result = self.write_durably(piece, meta, data).await;
        let mut usage = self.usage()?;
        usage.inflight -= meta.size;
        usage.writing.remove(&piece);
        if result.is_ok() {
            usage.used += meta.size;
            usage.pieces += 1;
        }
        result
    }

    /// Hashes and writes the parts on a blocking thread as they arrive; then checks the size
    /// and hash, commits the file and indexes it. The index is not flushed here: sled flushes
    /// it in the background, and start-up re-indexes a file whose entry was lost.
    async fn write_durably(
        &self,
        piece: PieceId,
        meta: PieceMeta,
        mut data: PieceStream,
    ) -> Result<(), NetError> {
        let root = self.root.clone();
        let (parts, mut arriving) = tokio::sync::mpsc::channel::<Bytes>(PARTS_AHEAD);
        let writer = tokio::task::spawn_blocking(move || {
            let mut file =
                TempPiece::create(&root, &piece, meta.size).map_err(internal("create piece"))?;
            let mut hasher = GroupHasher::default();
            while let Some(part) = arriving.blocking_recv() {
                hasher.update(&part);
                file.write(&part).map_err(internal("write piece"))?;
            }
            Ok::<_, NetError>((file, hasher))
        });
        let received = async {
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
                if parts.send(part).await.is_err() {
                    break; // The writer failed: its error follows.
                }
            }
            Ok(received)
        }
        .await;
        drop(parts);
        let written = writer
            .await
            .map_err(|e| NetError::Internal(format!("writer task failed: {e}")))?;
        let received = received?;
        let (file, hasher) = written?;
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
        let root = self.root.clone();
        let pieces = self.pieces.clone();
        tokio::task::spawn_blocking(move || {
            file.commit(&root, &piece, &meta, &groups)
                .map_err(|e| NetError::Internal(format!("writing piece {piece}: {e}")))?;
            pieces
                .insert(piece.0, &meta.encode()[..])
                .map_err(|e| NetError::Internal(format!("metadata write: {e}")))?;
            Ok::<(), NetError>(())
        })
        .await
        .map_err(|e| NetError::Internal(format!("writer task failed: {e}")))??;
        debug!(piece = %piece, size = meta.size, "piece stored");
        Ok(())
    }

    /// Reads a whole stored piece of `size` bytes (the reader checks it against its hash).
    pub async fn read_whole(&self, piece: PieceId, size: u64) -> Result<Bytes, NetError> {
        let path = piece_path(&self.root, &piece);
        let size = usize::try_from(size).unwrap_or(usize::MAX);
        tokio::task::spawn_blocking(move || read_direct(&path, size))
            .await
            .map_err(|e| NetError::Internal(format!("reader task failed: {e}")))?
            .map_err(internal("read piece"))
    }

    /// Reads `len` bytes at `offset` of a stored piece of `size` bytes, with the Bao slice
    /// proving them against the piece id (`wwt_engine::proof::verify` checks it). The caller
    /// checks bounds. Reads only the piece's group chaining values and the 16 KiB groups the
    /// range covers.
    pub async fn read_range(
        &self,
        piece: PieceId,
        size: u64,
        offset: u64,
        len: u64,
    ) -> Result<(Bytes, Bytes), NetError> {
        use std::os::unix::fs::FileExt;
        let path = piece_path(&self.root, &piece);
        tokio::task::spawn_blocking(move || {
            let file = fs::File::open(&path).map_err(internal("open piece"))?;
            let mut groups = vec![0u8; usize::try_from(proof::groups_len(size)).unwrap_or(0)];
            file.read_exact_at(&mut groups, size)
                .map_err(internal("read group chaining values"))?;
            let slice = proof::prove(&file, size, &groups, offset, len).map_err(|e| match e {
                wwt_engine::Error::OutOfRange { .. } => {
                    NetError::BadRequest(format!("cannot prove range: {e}"))
                }
                e => NetError::Internal(format!("proving a range of piece {piece}: {e}")),
            })?;
            let mut range = vec![0u8; usize::try_from(len).unwrap_or(0)];
            file.read_exact_at(&mut range, offset)
                .map_err(internal("read range"))?;
            Ok((Bytes::from(range), Bytes::from(slice)))
        })
        .await
        .map_err(|e| NetError::Internal(format!("reader task failed: {e}")))?
    }
}

impl PieceStore {
    /// Reads the byte at each of `positions` of a stored piece of `size` bytes (a sentinel
    /// challenge), one positioned read each instead of the whole piece.
    pub async fn read_positions(
        &self,
        piece: PieceId,
        size: u64,
        positions: Vec<u64>,
    ) -> Result<Bytes, NetError> {
        use std::os::unix::fs::FileExt;
        // The file goes on past the piece (its groups and trailer): bound by the piece's size.
        if let Some(at) = positions.iter().find(|&&at| at >= size) {
            return Err(NetError::BadRequest(format!(
                "position {at} is past the end of the {size}-byte piece"
            )));
        }
        let path = piece_path(&self.root, &piece);
        tokio::task::spawn_blocking(move || {
            let file = fs::File::open(&path).map_err(internal("open piece"))?;
            let mut out = vec![0u8; positions.len()];
            for (byte, &at) in out.iter_mut().zip(&positions) {
                file.read_exact_at(std::slice::from_mut(byte), at)
                    .map_err(|_| {
                        NetError::BadRequest(format!("position {at} is past the end of the piece"))
                    })?;
            }
            Ok(Bytes::from(out))
        })
        .await
        .map_err(|e| NetError::Internal(format!("reader task failed: {e}")))?
    }
}

/// Where the provider with data directory `root` keeps piece `piece`'s file.
pub fn piece_path(root: &Path, piece: &PieceId) -> PathBuf {
    let name = piece.to_string();
    root.join("pieces").join(&name[..2]).join(name)
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    fs::File::open(dir)?.sync_all()
}

/// The metadata in the trailer of a piece file, if the file is a complete piece file.
fn read_trailer(path: &Path) -> Option<PieceMeta> {
    let mut file = fs::File::open(path).ok()?;
    let len = file.metadata().ok()?.len();
    file.seek(SeekFrom::Start(len.checked_sub(TRAILER_LEN as u64)?))
        .ok()?;
    let mut trailer = [0u8; TRAILER_LEN];
    file.read_exact(&mut trailer).ok()?;
    let (meta, magic) = trailer.split_at(META_LEN);
    let meta = PieceMeta::decode(meta).filter(|_| magic == MAGIC)?;
    (file_len(meta.size) == len).then_some(meta)
}

/// A piece file being written in `tmp/`, through a block-aligned buffer; removed when dropped
/// uncommitted.
///
/// Where the file system allows `O_DIRECT`, the buffer goes straight to the device and one
/// `fdatasync` makes the file durable at the end: copying into the page cache cost the kernel
/// about 3 ms per MiB here, more than receiving the piece over gRPC. Elsewhere the same writes
/// go through the page cache.
struct TempPiece {
    path: PathBuf,
    file: fs::File,
    buffer: Vec<u8>,
    /// Where the aligned part of `buffer` starts.
    start: usize,
    /// The aligned part's length: the whole file, or [`WRITE_BUFFER`] if less.
    capacity: usize,
    filled: usize,
    committed: bool,
}

impl TempPiece {
    /// A temporary file for piece `piece` of `size` bytes.
    fn create(root: &Path, piece: &PieceId, size: u64) -> std::io::Result<TempPiece> {
        let path = root.join("tmp").join(format!("{piece}.{}", temp_suffix()));
        let file = open_direct(
            fs::OpenOptions::new().write(true).create_new(true),
            &path,
            true,
        )?;
        // Both are whole numbers of blocks.
        let capacity =
            usize::try_from(file_len(size)).map_or(WRITE_BUFFER, |len| len.min(WRITE_BUFFER));
        let (buffer, start) = aligned(capacity);
        Ok(TempPiece {
            path,
            file,
            buffer,
            start,
            capacity,
            filled: 0,
            committed: false,
        })
    }

    fn write(&mut self, mut bytes: &[u8]) -> std::io::Result<()> {
        while !bytes.is_empty() {
            let take = bytes.len().min(self.capacity - self.filled);
            let at = self.start + self.filled;
            self.buffer[at..at + take].copy_from_slice(&bytes[..take]);
            self.filled += take;
            bytes = &bytes[take..];
            if self.filled == self.capacity {
                self.flush()?;
            }
        }
        Ok(())
    }

    /// Writes out the buffer: a whole number of blocks, as every write but the last is a full
    /// buffer and the file is.
    fn flush(&mut self) -> std::io::Result<()> {
        self.file
            .write_all(&self.buffer[self.start..self.start + self.filled])?;
        self.filled = 0;
        Ok(())
    }

    /// Appends the group chaining values, padding and trailer to the piece's bytes, makes the
    /// file durable, renames it into `pieces/` and fsyncs that folder.
    fn commit(
        mut self,
        root: &Path,
        piece: &PieceId,
        meta: &PieceMeta,
        groups: &[u8],
    ) -> std::io::Result<()> {
        self.write(groups)?;
        self.write(&vec![0u8; padding_len(meta.size)])?;
        self.write(&meta.encode())?;
        self.write(MAGIC)?;
        self.flush()?;
        self.file.sync_data()?;
        let dest = piece_path(root, piece);
        fs::rename(&self.path, &dest)?;
        self.committed = true;
        sync_dir(dest.parent().unwrap_or(root))
    }
}

impl Drop for TempPiece {
    fn drop(&mut self) {
        if !self.committed {
            let _ = fs::remove_file(&self.path);
        }
    }
}

/// Opens `path` with `O_DIRECT`, or without it where the file system refuses it. When `creates`
/// (the options create a new file), the file the refused open may have created is removed first.
fn open_direct(
    options: &mut fs::OpenOptions,
    path: &Path,
    creates: bool,
) -> std::io::Result<fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    match options.custom_flags(libc::O_DIRECT).open(path) {
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
            if creates {
                let _ = fs::remove_file(path);
            }
            options.custom_flags(0).open(path)
        }
        opened => opened,
    }
}

/// Reads the `size` bytes of the piece file at `path` straight from the device, as pieces are
/// written (`O_DIRECT` where the file system allows it): whole blocks, which the file has past
/// the piece's bytes.
pub fn read_direct(path: &Path, size: usize) -> std::io::Result<Bytes> {
    use std::os::unix::fs::FileExt;
    let len = size.next_multiple_of(BLOCK);
    let (mut buffer, start) = aligned(len);
    open_direct(fs::OpenOptions::new().read(true), path, false)?
        .read_exact_at(&mut buffer[start..start + len], 0)?;
    Ok(Bytes::from(buffer).slice(start..start + size))
}

/// A buffer with `len` bytes from a block-aligned offset, and that offset.
fn aligned(len: usize) -> (Vec<u8>, usize) {
    let buffer = vec![0u8; len + BLOCK];
    // Always below BLOCK for a byte pointer.
    let start = buffer.as_ptr().align_offset(BLOCK);
    (buffer, start)
}

/// A suffix unique among this process's writes. sled's lock keeps other processes out of the
/// data directory, and `tmp/` is emptied at start-up, so a counter suffices.
fn temp_suffix() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    COUNTER.fetch_add(1, Ordering::Relaxed)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn meta(size: u64) -> PieceMeta {
        PieceMeta {
            owner: NodeId([1; 32]),
            segment: SegmentId([2; 32]),
            index: 3,
            size,
        }
    }

    proptest::proptest! {
        #[test]
        fn metadata_round_trips(owner: [u8; 32], segment: [u8; 32], index: u32, size: u64) {
            let meta = PieceMeta { owner: NodeId(owner), segment: SegmentId(segment), index, size };
            proptest::prop_assert_eq!(PieceMeta::decode(&meta.encode()), Some(meta));
            proptest::prop_assert_eq!(PieceMeta::decode(&meta.encode()[1..]), None);
        }
    }

    #[tokio::test]
    async fn pieces_survive_reopen_partial_files_are_swept_and_lost_index_entries_rebuilt() {
        let dir = tempfile::tempdir().unwrap();
        let data = Bytes::from(vec![9u8; 3000]);
        let id = PieceId::of(&data);
        {
            let store = PieceStore::open(dir.path(), 10_000).unwrap();
            store
                .put(id, meta(3000), PieceStream::whole(data.clone()))
                .await
                .unwrap();
            assert_eq!(store.used().unwrap(), (3000, 1));
        }
        // A crash mid-write leaves a temporary file; one after the rename, before the index
        // entry was flushed, leaves a complete file the index lacks; a stray file in
        // `pieces/` is not a piece.
        fs::write(dir.path().join("tmp").join("partial"), b"half").unwrap();
        let unindexed = Bytes::from(vec![7u8; 2000]);
        let unindexed_id = PieceId::of(&unindexed);
        let mut file = TempPiece::create(dir.path(), &unindexed_id, 2000).unwrap();
        file.write(&unindexed).unwrap();
        let groups = proof::groups(&unindexed).0;
        file.commit(dir.path(), &unindexed_id, &meta(2000), &groups)
            .unwrap();
        let stray = PieceId::of(b"stray");
        fs::write(piece_path(dir.path(), &stray), b"stray").unwrap();

        let store = PieceStore::open(dir.path(), 10_000).unwrap();
        assert_eq!(store.used().unwrap(), (5000, 2));
        assert_eq!(store.get(&id).unwrap(), Some(meta(3000)));
        assert_eq!(store.get(&unindexed_id).unwrap(), Some(meta(2000)));
        assert_eq!(store.get(&stray).unwrap(), None);
        assert!(!piece_path(dir.path(), &stray).exists());
        assert_eq!(fs::read_dir(dir.path().join("tmp")).unwrap().count(), 0);
        let (range, slice) = store.read_range(id, 3000, 10, 20).await.unwrap();
        assert_eq!(range, data.slice(10..30));
        let proven = proof::verify(&wwt_engine::PieceHash(id.0), 10, 20, &slice).unwrap();
        assert_eq!(proven, range);
        assert_eq!(store.read_whole(id, 3000).await.unwrap(), data);
        assert_eq!(
            store.read_whole(unindexed_id, 2000).await.unwrap(),
            unindexed
        );
    }

    #[tokio::test]
    async fn capacity_is_enforced() {
        let dir = tempfile::tempdir().unwrap();
        let store = PieceStore::open(dir.path(), 1500).unwrap();
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

    fn files(dir: &Path) -> usize {
        let tmp = fs::read_dir(dir.join("tmp")).unwrap().count();
        let pieces: usize = fs::read_dir(dir.join("pieces"))
            .unwrap()
            .map(|shard| fs::read_dir(shard.unwrap().path()).unwrap().count())
            .sum();
        tmp + pieces
    }

    #[tokio::test]
    async fn a_piece_arriving_in_parts_is_stored_only_whole_and_with_its_hash() {
        let dir = tempfile::tempdir().unwrap();
        let store = PieceStore::open(dir.path(), 10 << 20).unwrap();
        // Parts that straddle the write buffer and the 16 KiB groups.
        let mut data = vec![0u8; 3 * WRITE_BUFFER + 12_345];
        blake3::Hasher::new().finalize_xof().fill(&mut data);
        let data = Bytes::from(data);
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
            assert_eq!(files(dir.path()), 0, "nothing is left on disk");
        }

        store
            .put(id, meta(size), parts(&data, 100_003, vec![]))
            .await
            .unwrap();
        assert_eq!(store.used().unwrap(), (size, 1));
        assert_eq!(store.read_whole(id, size).await.unwrap(), data);
        let (range, slice) = store.read_range(id, size, 500_000, 40_000).await.unwrap();
        assert_eq!(range, data.slice(500_000..540_000));
        let proven = proof::verify(&wwt_engine::PieceHash(id.0), 500_000, 40_000, &slice).unwrap();
        assert_eq!(proven, range);
        drop(store);
        let store = PieceStore::open(dir.path(), 10 << 20).unwrap();
        assert_eq!(store.used().unwrap(), (size, 1));
        assert_eq!(store.read_whole(id, size).await.unwrap(), data);
    }
}
