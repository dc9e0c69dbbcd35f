//! Pieces on disk: one file per piece, metadata in sled.
//!
//! Layout under the data directory:
//! - `tmp/`: pieces being written; emptied at start-up (anything there is partial).
//! - `pieces/<2 hex>/<64 hex>`: complete pieces, named by their BLAKE3 hash, each with its Bao
//!   outboard tree beside it (`<64 hex>.obao`, about 6 % of the piece) for ranged-read proofs.
//! - `meta/`: sled; tree `pieces` maps piece id → [`PieceMeta`].
//!
//! A piece becomes visible in three steps, each durable before the next: its bytes (already
//! hash-checked in memory) and its outboard tree are written to unique temporary files and
//! fsynced; the files are renamed into `pieces/` and the directory fsynced; its metadata is
//! inserted and sled flushed.
//! Reads go through the metadata, so a crash at any point leaves either no trace of the piece
//! (the temporary file or an orphan file is swept at start-up) or the complete piece.

use std::collections::HashSet;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use tracing::{debug, info, warn};
use wwt_engine::proof;
use wwt_net::NetError;
use wwt_net::types::{NodeId, PieceId, SegmentId};

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
    /// Opens (or creates) the store under `root`, sweeping partial and orphaned files.
    pub fn open(root: &Path, capacity: u64) -> Result<PieceStore, ProviderError> {
        let tmp = root.join("tmp");
        let pieces_dir = root.join("pieces");
        if tmp.exists() {
            fs::remove_dir_all(&tmp).map_err(disk(&tmp))?;
        }
        fs::create_dir_all(&tmp).map_err(disk(&tmp))?;
        fs::create_dir_all(&pieces_dir).map_err(disk(&pieces_dir))?;
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
            let path = piece_path(root, &id);
            let has_tree = outboard_path(root, &id).exists();
            match fs::metadata(&path) {
                Ok(m) if m.len() == meta.size && has_tree => {
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
        let mut orphans = 0usize;
        for shard in fs::read_dir(&pieces_dir).map_err(disk(&pieces_dir))? {
            let shard = shard.map_err(disk(&pieces_dir))?.path();
            for file in fs::read_dir(&shard).map_err(disk(&shard))? {
                let file = file.map_err(disk(&shard))?.path();
                let named = file
                    .file_name()
                    .and_then(|n| n.to_str())
                    .and_then(|n| n.strip_suffix(".obao").unwrap_or(n).parse::<PieceId>().ok());
                if !named.is_some_and(|id| known.contains(&id)) {
                    fs::remove_file(&file).map_err(disk(&file))?;
                    orphans += 1;
                }
            }
        }
        pieces.flush()?;
        info!(
            pieces = usage.pieces,
            used = usage.used,
            orphans,
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

    /// Stores `data` and its outboard `tree` (whose root the caller has checked is `piece`)
    /// durably, then makes the piece visible. Refuses when the capacity would be exceeded.
    pub async fn put(
        &self,
        piece: PieceId,
        meta: PieceMeta,
        data: Bytes,
        tree: Vec<u8>,
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
        let result = self.write_durably(piece, meta, data, tree).await;
        let mut usage = self.usage()?;
        usage.inflight -= meta.size;
        usage.writing.remove(&piece);
        if result.is_ok() {
            usage.used += meta.size;
            usage.pieces += 1;
        }
        result
    }

    /// Writes the files (piece and tree), then the metadata, each durable before the next, on a blocking
    /// thread. (sled's `flush_async` runs on sled's own small thread pool, which concurrent
    /// flushes can exhaust while they wait for log writes that need the same pool: a deadlock
    /// seen under load. A plain `flush` on tokio's blocking pool avoids it.)
    async fn write_durably(
        &self,
        piece: PieceId,
        meta: PieceMeta,
        data: Bytes,
        tree: Vec<u8>,
    ) -> Result<(), NetError> {
        let root = self.root.clone();
        let pieces = self.pieces.clone();
        tokio::task::spawn_blocking(move || {
            write_files(&root, &piece, &data, &tree)?;
            pieces
                .insert(piece.0, &meta.encode()[..])
                .map_err(|e| NetError::Internal(format!("metadata write: {e}")))?;
            pieces
                .flush()
                .map_err(|e| NetError::Internal(format!("metadata flush: {e}")))?;
            Ok::<(), NetError>(())
        })
        .await
        .map_err(|e| NetError::Internal(format!("writer task failed: {e}")))??;
        debug!(piece = %piece, size = meta.size, "piece stored");
        Ok(())
    }

    /// Reads a whole stored piece (the reader checks it against its hash).
    pub async fn read_whole(&self, piece: PieceId) -> Result<Bytes, NetError> {
        let path = piece_path(&self.root, &piece);
        tokio::task::spawn_blocking(move || fs::read(&path).map(Bytes::from))
            .await
            .map_err(|e| NetError::Internal(format!("reader task failed: {e}")))?
            .map_err(internal("read piece"))
    }

    /// Reads `len` bytes at `offset` of a stored piece, with the Bao slice proving them against
    /// the piece id (`wwt_engine::proof::verify` checks it). The caller checks bounds.
    ///
    /// The whole piece is read to build the slice (the engine's `prove` takes byte slices).
    pub async fn read_range(
        &self,
        piece: PieceId,
        offset: u64,
        len: u64,
    ) -> Result<(Bytes, Bytes), NetError> {
        let path = piece_path(&self.root, &piece);
        let tree_path = outboard_path(&self.root, &piece);
        tokio::task::spawn_blocking(move || {
            let data = fs::read(&path).map_err(internal("read piece"))?;
            let tree = fs::read(&tree_path).map_err(internal("read outboard tree"))?;
            let slice = proof::prove(&data, &tree, offset, len)
                .map_err(|e| NetError::BadRequest(format!("cannot prove range: {e}")))?;
            let range = usize::try_from(offset)
                .ok()
                .zip(usize::try_from(offset.saturating_add(len)).ok())
                .and_then(|(start, end)| data.get(start..end))
                .ok_or_else(|| NetError::BadRequest("range past the end of the piece".into()))?;
            Ok((Bytes::copy_from_slice(range), Bytes::from(slice)))
        })
        .await
        .map_err(|e| NetError::Internal(format!("reader task failed: {e}")))?
    }
}

impl PieceStore {
    /// Reads the byte at each of `positions` of a stored piece (a sentinel challenge), one
    /// positioned read each instead of the whole piece.
    pub async fn read_positions(
        &self,
        piece: PieceId,
        positions: Vec<u64>,
    ) -> Result<Bytes, NetError> {
        use std::os::unix::fs::FileExt;
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

fn piece_path(root: &Path, piece: &PieceId) -> PathBuf {
    let name = piece.to_string();
    root.join("pieces").join(&name[..2]).join(name)
}

fn outboard_path(root: &Path, piece: &PieceId) -> PathBuf {
    piece_path(root, piece).with_extension("obao")
}

/// Writes the piece and its outboard tree to unique temporary files, fsyncs them, renames them
/// into place (tree first) and fsyncs the directory.
fn write_files(root: &Path, piece: &PieceId, data: &[u8], tree: &[u8]) -> Result<(), NetError> {
    let suffix = temp_suffix();
    let tmp = root.join("tmp").join(format!("{piece}.{suffix}"));
    let tmp_tree = root.join("tmp").join(format!("{piece}.{suffix}.obao"));
    let write = || -> std::io::Result<()> {
        for (path, bytes) in [(&tmp_tree, tree), (&tmp, data)] {
            let mut file = fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(path)?;
            file.write_all(bytes)?;
            file.sync_all()?;
        }
        let dest = piece_path(root, piece);
        let dir = dest.parent().unwrap_or(root);
        fs::create_dir_all(dir)?;
        fs::rename(&tmp_tree, outboard_path(root, piece))?;
        fs::rename(&tmp, &dest)?;
        fs::File::open(dir)?.sync_all()
    };
    write().map_err(|e| {
        let _ = fs::remove_file(&tmp);
        let _ = fs::remove_file(&tmp_tree);
        NetError::Internal(format!("writing piece {piece}: {e}"))
    })
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
    async fn pieces_survive_reopen_and_partial_files_are_swept() {
        let dir = tempfile::tempdir().unwrap();
        let data = Bytes::from(vec![9u8; 1000]);
        let id = PieceId::of(&data);
        {
            let store = PieceStore::open(dir.path(), 10_000).unwrap();
            let tree = proof::outboard(&data).0;
            store.put(id, meta(1000), data.clone(), tree).await.unwrap();
            assert_eq!(store.used().unwrap(), (1000, 1));
        }
        // A crash mid-write leaves a temporary file; one between rename and metadata leaves
        // an orphan file.
        fs::write(dir.path().join("tmp").join("partial"), b"half").unwrap();
        let orphan = PieceId::of(b"orphan");
        let orphan_path = piece_path(dir.path(), &orphan);
        fs::create_dir_all(orphan_path.parent().unwrap()).unwrap();
        fs::write(&orphan_path, b"orphan").unwrap();
        fs::write(outboard_path(dir.path(), &orphan), b"tree").unwrap();

        let store = PieceStore::open(dir.path(), 10_000).unwrap();
        assert_eq!(store.used().unwrap(), (1000, 1));
        assert_eq!(store.get(&id).unwrap(), Some(meta(1000)));
        assert!(!orphan_path.exists());
        assert!(!outboard_path(dir.path(), &orphan).exists());
        assert_eq!(fs::read_dir(dir.path().join("tmp")).unwrap().count(), 0);
        let (range, slice) = store.read_range(id, 10, 20).await.unwrap();
        assert_eq!(range, data.slice(10..30));
        let proven = proof::verify(&wwt_engine::PieceHash(id.0), 10, 20, &slice).unwrap();
        assert_eq!(proven, range);
        assert_eq!(store.read_whole(id).await.unwrap(), data);
    }

    #[tokio::test]
    async fn capacity_is_enforced() {
        let dir = tempfile::tempdir().unwrap();
        let store = PieceStore::open(dir.path(), 1500).unwrap();
        let a = Bytes::from(vec![1u8; 1000]);
        let b = Bytes::from(vec![2u8; 1000]);
        let (ta, tb) = (proof::outboard(&a).0, proof::outboard(&b).0);
        store.put(PieceId::of(&a), meta(1000), a, ta).await.unwrap();
        let err = store
            .put(PieceId::of(&b), meta(1000), b, tb)
            .await
            .unwrap_err();
        assert!(matches!(err, NetError::NoCapacity(_)), "{err}");
        assert_eq!(store.used().unwrap(), (1000, 1));
    }
}
