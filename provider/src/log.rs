//! The owner logs a replica keeps ([`Logs`]): each owner's entries exactly as the owner
//! signed them, its head, and how far the index store has applied them, in one sled tree.
//!
//! Keys: `e ‖ owner ‖ seq (u64 BE)` → the entry (an encoded `SignedRequest`);
//! `h ‖ owner` → head seq (u64 BE) ‖ head hash; `a ‖ owner` → the last seq applied. An entry
//! and the head that names it are written in one atomic batch and flushed before the entry
//! is applied, so a crash between the two leaves an entry to apply again on opening
//! ([`Logs::unapplied`]), never an applied change the log does not hold.

use std::path::Path;

use wwt_net::index::{Append, LogHead};
use wwt_net::types::NodeId;
use wwt_net::{NetError, Signed};

use crate::ProviderError;

/// The owner logs of one replica.
#[derive(Debug)]
pub struct Logs {
    db: sled::Db,
    tree: sled::Tree,
}

fn key(tag: u8, owner: &NodeId) -> Vec<u8> {
    let mut k = Vec::with_capacity(41);
    k.push(tag);
    k.extend_from_slice(&owner.0);
    k
}

fn entry_key(owner: &NodeId, seq: u64) -> Vec<u8> {
    let mut k = key(b'e', owner);
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

fn stored(e: sled::Error) -> NetError {
    NetError::Internal(format!("the log store failed: {e}"))
}

fn seq_of(bytes: &[u8]) -> Result<u64, NetError> {
    bytes
        .first_chunk::<8>()
        .map(|b| u64::from_be_bytes(*b))
        .ok_or_else(|| NetError::Internal("a log record is cut short".into()))
}

impl Logs {
    /// Opens (or creates) the logs in `dir`.
    pub fn open(dir: &Path) -> Result<Logs, ProviderError> {
        let db = sled::open(dir)?;
        let tree = db.open_tree("logs")?;
        Ok(Logs { db, tree })
    }

    /// Where `owner`'s log stands.
    pub fn head(&self, owner: &NodeId) -> Result<LogHead, NetError> {
        match self.tree.get(key(b'h', owner)).map_err(stored)? {
            None => Ok(LogHead::default()),
            Some(bytes) => Ok(LogHead {
                seq: seq_of(&bytes)?,
                hash: bytes
                    .get(8..40)
                    .and_then(|h| <[u8; 32]>::try_from(h).ok())
                    .ok_or_else(|| NetError::Internal("a log head is cut short".into()))?,
            }),
        }
    }

    /// The last seq of `owner`'s log that the index store has applied.
    pub fn applied(&self, owner: &NodeId) -> Result<u64, NetError> {
        match self.tree.get(key(b'a', owner)).map_err(stored)? {
            None => Ok(0),
            Some(bytes) => seq_of(&bytes),
        }
    }

    /// Entry `seq` of `owner`'s log.
    pub fn entry(&self, owner: &NodeId, seq: u64) -> Result<Option<Signed<Append>>, NetError> {
        self.tree
            .get(entry_key(owner, seq))
            .map_err(stored)?
            .map(|bytes| Signed::from_bytes(&bytes))
            .transpose()
    }

    /// Up to `limit` entries of `owner`'s log after `after`, stopping before `budget` bytes
    /// (but always at least one).
    pub fn entries(
        &self,
        owner: &NodeId,
        after: u64,
        limit: usize,
        budget: usize,
    ) -> Result<Vec<Signed<Append>>, NetError> {
        let mut out = Vec::new();
        let mut bytes = 0;
        let start = entry_key(owner, after.saturating_add(1));
        let end = entry_key(owner, u64::MAX);
        for item in self.tree.range(start..=end) {
            let (_, value) = item.map_err(stored)?;
            bytes += value.len();
            if out.len() == limit || (!out.is_empty() && bytes > budget) {
                break;
            }
            out.push(Signed::from_bytes(&value)?);
        }
        Ok(out)
    }

    /// Appends `entry` as `owner`'s new head `head` (its seq and hash), durably.
    pub fn push(
        &self,
        owner: &NodeId,
        head: LogHead,
        entry: &Signed<Append>,
    ) -> Result<(), NetError> {
        let mut record = Vec::with_capacity(40);
        record.extend_from_slice(&head.seq.to_be_bytes());
        record.extend_from_slice(&head.hash);
        let mut batch = sled::Batch::default();
        batch.insert(entry_key(owner, head.seq), entry.to_bytes());
        batch.insert(key(b'h', owner), record);
        self.tree.apply_batch(batch).map_err(stored)?;
        self.db.flush().map_err(stored)?;
        Ok(())
    }

    /// Records that the index store has applied `owner`'s entries up to `seq` (made durable
    /// by the next flush; applying an entry twice changes nothing).
    pub fn set_applied(&self, owner: &NodeId, seq: u64) -> Result<(), NetError> {
        self.tree
            .insert(key(b'a', owner), &seq.to_be_bytes())
            .map_err(stored)?;
        Ok(())
    }

    /// Every owner whose log this replica keeps, with its head seq (the entries it holds).
    pub fn heads(&self) -> Result<Vec<(NodeId, u64)>, NetError> {
        self.tree
            .scan_prefix([b'h'])
            .map(|item| {
                let (k, v) = item.map_err(stored)?;
                Ok((NodeId::from_slice(&k[1..])?, seq_of(&v)?))
            })
            .collect()
    }

    /// The owners whose log holds entries the index store has not applied.
    pub fn unapplied(&self) -> Result<Vec<NodeId>, NetError> {
        let mut out = Vec::new();
        for item in self.tree.scan_prefix([b'h']) {
            let (k, _) = item.map_err(stored)?;
            let owner = NodeId::from_slice(&k[1..])?;
            if self.applied(&owner)? < self.head(&owner)?.seq {
                out.push(owner);
            }
        }
        Ok(out)
    }

    /// Flushes what is not yet on disk.
    pub fn flush(&self) -> Result<(), NetError> {
        self.db.flush().map_err(stored)?;
        Ok(())
    }
}
