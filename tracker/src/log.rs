//! The tracker's audit log: append-only and hash-linked, in sled.
//!
//! Entry `n` is stored under key `n` (u64 big-endian) as
//! `time (u64 LE) ‖ provider (32) ‖ piece (32) ‖ hash (32) ‖ len ‖ kind ‖ len ‖ outcome ‖ detail`,
//! where `hash = BLAKE3("wwt audit entry v1\0" ‖ previous hash ‖ n (u64 LE) ‖ time ‖ provider ‖
//! piece ‖ len ‖ kind ‖ len ‖ outcome ‖ detail)` and the hash before entry 0 is 32 zero bytes.
//! Anyone holding a copy can recompute the chain ([`AuditLog::verify`]); changing or removing
//! an entry changes every hash after it.

use std::sync::Mutex;

use wwt_net::NetError;
use wwt_net::audit::AuditEntry;
use wwt_net::types::{NodeId, PieceId};

const DOMAIN: &[u8] = b"wwt audit entry v1\0";

fn db_err(e: sled::Error) -> NetError {
    NetError::Internal(format!("audit log: {e}"))
}

fn corrupt(seq: u64) -> NetError {
    NetError::Internal(format!("audit log entry {seq} is corrupt"))
}

/// What an entry says, before it is numbered and hashed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// The audit clock's time.
    pub time_ms: u64,
    /// The provider concerned.
    pub provider: NodeId,
    /// The piece concerned.
    pub piece: PieceId,
    /// `sentinel`, `chunk`, `read`, `complaint`, `repair`, `refresh`, `condemn` or `forget`
    /// (a segment its owner deleted, or an orphan).
    pub kind: &'static str,
    /// `pass`, `fail`, `missed`, `done` or `error`.
    pub outcome: &'static str,
    /// Free text.
    pub detail: String,
}

fn short(s: &str) -> &[u8] {
    &s.as_bytes()[..s.len().min(255)]
}

fn entry_hash(prev: &[u8; 32], seq: u64, e: &AuditEntry) -> [u8; 32] {
    let mut h = blake3::Hasher::new();
    h.update(DOMAIN);
    h.update(prev);
    h.update(&seq.to_le_bytes());
    h.update(&e.time_ms.to_le_bytes());
    h.update(&e.provider.0);
    h.update(&e.piece.0);
    for field in [short(&e.kind), short(&e.outcome)] {
        h.update(&[field.len() as u8]);
        h.update(field);
    }
    h.update(e.detail.as_bytes());
    *h.finalize().as_bytes()
}

fn encode(e: &AuditEntry) -> Vec<u8> {
    let mut out = Vec::with_capacity(110 + e.detail.len());
    out.extend_from_slice(&e.time_ms.to_le_bytes());
    out.extend_from_slice(&e.provider.0);
    out.extend_from_slice(&e.piece.0);
    out.extend_from_slice(&e.hash);
    for field in [short(&e.kind), short(&e.outcome)] {
        out.push(field.len() as u8);
        out.extend_from_slice(field);
    }
    out.extend_from_slice(e.detail.as_bytes());
    out
}

fn decode(seq: u64, bytes: &[u8]) -> Result<AuditEntry, NetError> {
    let bad = || corrupt(seq);
    let fixed = bytes.get(..104).ok_or_else(bad)?;
    let mut rest = &bytes[104..];
    let mut text = || -> Result<String, NetError> {
        let (&len, tail) = rest.split_first().ok_or_else(bad)?;
        let field = tail.get(..len as usize).ok_or_else(bad)?;
        rest = &tail[len as usize..];
        String::from_utf8(field.to_vec()).map_err(|_| bad())
    };
    let kind = text()?;
    let outcome = text()?;
    Ok(AuditEntry {
        seq,
        time_ms: u64::from_le_bytes(fixed[..8].try_into().map_err(|_| bad())?),
        provider: NodeId::from_slice(&fixed[8..40]).map_err(|_| bad())?,
        piece: PieceId::from_slice(&fixed[40..72]).map_err(|_| bad())?,
        kind,
        outcome,
        detail: String::from_utf8(rest.to_vec()).map_err(|_| bad())?,
        hash: fixed[72..104].try_into().map_err(|_| bad())?,
    })
}

/// The append-only, hash-linked audit log of one tracker.
#[derive(Debug)]
pub struct AuditLog {
    tree: sled::Tree,
    /// The next sequence number and the last entry's hash.
    head: Mutex<(u64, [u8; 32])>,
}

impl AuditLog {
    /// Opens the log kept in `tree`.
    pub fn open(tree: sled::Tree) -> Result<AuditLog, NetError> {
        let head = match tree.last().map_err(db_err)? {
            Some((k, v)) => {
                let seq = u64::from_be_bytes(k.as_ref().try_into().map_err(|_| corrupt(0))?);
                (seq + 1, decode(seq, &v)?.hash)
            }
            None => (0, [0; 32]),
        };
        Ok(AuditLog {
            tree,
            head: Mutex::new(head),
        })
    }

    /// Appends an entry (durable at the tracker's next flush) and returns it.
    pub fn append(&self, event: Event) -> Result<AuditEntry, NetError> {
        let mut head = self
            .head
            .lock()
            .map_err(|_| NetError::Internal("audit log poisoned".into()))?;
        let (seq, prev) = *head;
        let mut entry = AuditEntry {
            seq,
            time_ms: event.time_ms,
            provider: event.provider,
            piece: event.piece,
            kind: event.kind.to_string(),
            outcome: event.outcome.to_string(),
            detail: event.detail,
            hash: [0; 32],
        };
        entry.hash = entry_hash(&prev, seq, &entry);
        self.tree
            .insert(seq.to_be_bytes(), encode(&entry))
            .map_err(db_err)?;
        *head = (seq + 1, entry.hash);
        Ok(entry)
    }

    /// Entries in the log and the last entry's hash.
    pub fn head(&self) -> (u64, [u8; 32]) {
        self.head.lock().map(|h| *h).unwrap_or((0, [0; 32]))
    }

    /// The latest `n` entries, oldest first.
    pub fn latest(&self, n: usize) -> Result<Vec<AuditEntry>, NetError> {
        let mut out: Vec<AuditEntry> = self
            .tree
            .iter()
            .rev()
            .take(n)
            .map(|item| {
                let (k, v) = item.map_err(db_err)?;
                let seq = u64::from_be_bytes(k.as_ref().try_into().map_err(|_| corrupt(0))?);
                decode(seq, &v)
            })
            .collect::<Result<_, _>>()?;
        out.reverse();
        Ok(out)
    }

    /// The entries from `from_ms` on, oldest first: at most the latest `max`, and whether
    /// older entries from `from_ms` on were left out. (Times follow the audit clock, so they
    /// only grow: the walk back stops at the first older entry.)
    pub fn since(&self, from_ms: u64, max: usize) -> Result<(Vec<AuditEntry>, bool), NetError> {
        let mut out = Vec::new();
        let mut cut = false;
        for item in self.tree.iter().rev() {
            let (k, v) = item.map_err(db_err)?;
            let seq = u64::from_be_bytes(k.as_ref().try_into().map_err(|_| corrupt(0))?);
            let entry = decode(seq, &v)?;
            if entry.time_ms < from_ms {
                break;
            }
            if out.len() == max {
                cut = true;
                break;
            }
            out.push(entry);
        }
        out.reverse();
        Ok((out, cut))
    }

    /// Recomputes the whole chain; `Err` names the first entry that does not fit.
    pub fn verify(&self) -> Result<u64, NetError> {
        let mut prev = [0u8; 32];
        let mut expected = 0u64;
        for item in self.tree.iter() {
            let (k, v) = item.map_err(db_err)?;
            let seq = u64::from_be_bytes(k.as_ref().try_into().map_err(|_| corrupt(expected))?);
            let entry = decode(seq, &v)?;
            if seq != expected || entry_hash(&prev, seq, &entry) != entry.hash {
                return Err(NetError::Conflict(format!(
                    "audit log broken at entry {expected}"
                )));
            }
            prev = entry.hash;
            expected += 1;
        }
        Ok(expected)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn event(i: u8) -> Event {
        Event {
            time_ms: u64::from(i) * 1000,
            provider: NodeId([i; 32]),
            piece: PieceId([i + 1; 32]),
            kind: "sentinel",
            outcome: if i.is_multiple_of(2) { "pass" } else { "fail" },
            detail: format!("entry {i}"),
        }
    }

    #[test]
    fn entries_chain_survive_reopen_and_tampering_breaks_the_chain() {
        let dir = tempfile::tempdir().unwrap();
        {
            let db = sled::open(dir.path()).unwrap();
            let log = AuditLog::open(db.open_tree("log").unwrap()).unwrap();
            for i in 0..5 {
                log.append(event(i)).unwrap();
            }
            db.flush().unwrap();
        }
        let db = sled::open(dir.path()).unwrap();
        let tree = db.open_tree("log").unwrap();
        let log = AuditLog::open(tree.clone()).unwrap();
        let sixth = log.append(event(5)).unwrap();
        assert_eq!(sixth.seq, 5);
        assert_eq!(log.head(), (6, sixth.hash));
        assert_eq!(log.verify().unwrap(), 6);
        let latest = log.latest(2).unwrap();
        assert_eq!(latest.len(), 2);
        assert_eq!((latest[0].seq, latest[1].detail.as_str()), (4, "entry 5"));
        assert_eq!(latest[0].outcome, "pass");

        // Rewriting one entry's outcome is caught.
        let mut forged = decode(1, &tree.get(1u64.to_be_bytes()).unwrap().unwrap()).unwrap();
        assert_eq!(forged.outcome, "fail");
        forged.outcome = "pass".into();
        tree.insert(1u64.to_be_bytes(), encode(&forged)).unwrap();
        let err = log.verify().unwrap_err();
        assert!(err.to_string().contains("entry 1"), "{err}");
    }
}
