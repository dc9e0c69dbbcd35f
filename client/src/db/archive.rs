//! The owner's log in pieces: every entry a majority of the replicas kept is also stored as an
//! ordinary sealed, RS-coded, audited segment, so the keystore alone rebuilds every
//! namespace when every replica is lost ([`Client::recover`]).
//!
//! Entry `seq` lives in its own segment, whose id is a PRF of `seq` under the hidden table
//! `"\0log"`'s keys. Two ways lead a client holding only the keys to the segments:
//! - forward, through the trackers: 1, 2, 3, … until a tracker knows no such segment;
//! - back, without a tracker: each segment also holds the manifest of the one before it, and
//!   the owner's head record in the DHT holds the newest one's manifest, sealed. The client
//!   walks back to entry 1 collecting manifests (a few hundred bytes each), then replays
//!   forward, reading each segment from the holders the DHT names.
//!
//! The entry is sealed as row `PRF(seq)` at version `seq`, with a nonce drawn from what it
//! holds: two devices that store the same entry behind the same manifest store the same
//! bytes. Trackers and providers see one more segment per entry, of an owner they already
//! know; the index provider sees nothing of it; the DHT sees a sealed manifest.

use std::sync::Arc;
use wwt_engine::{
    Codec, MasterKey, RowCipher, RowId as EngineRowId, Segment, SegmentId as EngineSegmentId,
    SegmentManifest, TableKeys,
};

use futures::future::join_all;
use tracing::warn;
use wwt_engine::Keystore;
use wwt_net::index::{Append, Archived, GetEntries, entry_hash, open_entry};
use wwt_net::types::SegmentId;
use wwt_net::{Connector, NetError, Signed};
use wwt_query::{Outcome, Value};

use super::log::Replica;
use super::{Client, ClientConfig, ClientError, Result, State, index_err};

/// The hidden table whose keys seal and name the log's segments.
const LOG: &str = "\0log";

/// The keys of the log's segments.
pub(super) fn log_keys(master: &MasterKey) -> TableKeys {
    master.table(LOG)
}

/// The id of the segment that holds entry `seq`.
pub(super) fn entry_segment(keys: &TableKeys, seq: u64) -> EngineSegmentId {
    let mut h = blake3::Hasher::new_keyed(keys.row_id.as_bytes());
    h.update(b"log entry segment");
    h.update(&seq.to_le_bytes());
    EngineSegmentId(*h.finalize().as_bytes())
}

/// The row id under which entry `seq` is sealed.
fn entry_row(keys: &TableKeys, seq: u64) -> EngineRowId {
    keys.row_id.row_id(&seq.to_le_bytes())
}

/// The row id under which the manifest of entry `seq`'s segment is sealed for the DHT (its
/// input is longer than an entry's, so the two never meet).
fn manifest_row(keys: &TableKeys, seq: u64) -> EngineRowId {
    let mut input = b"segment manifest".to_vec();
    input.extend_from_slice(&seq.to_le_bytes());
    keys.row_id.row_id(&input)
}

/// Entry `seq` sealed into its segment, with the manifest of entry `seq - 1`'s segment
/// (`None` for entry 1): the entry's length (4 bytes, little-endian), the entry, the manifest.
fn seal_entry(
    keys: &TableKeys,
    seq: u64,
    entry: &Signed<Append>,
    prev: Option<&SegmentManifest>,
) -> Segment {
    let entry = entry.to_bytes();
    let mut plain = Vec::with_capacity(4 + entry.len() + 512);
    plain.extend_from_slice(&(entry.len() as u32).to_le_bytes());
    plain.extend_from_slice(&entry);
    if let Some(prev) = prev {
        plain.extend_from_slice(&prev.to_bytes());
    }
    // The same contents seal to the same bytes (AES-SIV stays misuse-resistant).
    let mut cipher =
        RowCipher::with_nonce_seed(&keys.row, keys.id, *blake3::hash(&plain).as_bytes());
    Segment {
        id: entry_segment(keys, seq),
        bytes: cipher.seal(entry_row(keys, seq), seq, &plain),
    }
}

/// Opens entry `seq` and the manifest of the segment before it from its segment's bytes.
fn open_entry_segment(
    keys: &TableKeys,
    seq: u64,
    bytes: &[u8],
) -> Result<(Signed<Append>, Option<SegmentManifest>)> {
    let damaged = |e: String| ClientError::Damaged(format!("log entry {seq} in pieces: {e}"));
    let mut cipher = RowCipher::new(&keys.row, keys.id);
    let plain = cipher
        .open(entry_row(keys, seq), seq, bytes)
        .map_err(|e| damaged(e.to_string()))?;
    let (len, rest) = plain
        .split_first_chunk::<4>()
        .ok_or_else(|| damaged("cut short".into()))?;
    let (entry, prev) = rest
        .split_at_checked(u32::from_le_bytes(*len) as usize)
        .ok_or_else(|| damaged("cut short".into()))?;
    let entry = Signed::from_bytes(entry).map_err(|e| damaged(e.to_string()))?;
    let prev = match prev {
        [] => None,
        m => Some(SegmentManifest::from_bytes(m).map_err(|e| damaged(e.to_string()))?),
    };
    Ok((entry, prev))
}

/// The manifest of entry `seq`'s segment, sealed for the owner's head record.
pub(super) fn seal_manifest(keys: &TableKeys, seq: u64, manifest: &SegmentManifest) -> Archived {
    let mut cipher = RowCipher::new(&keys.row, keys.id);
    Archived {
        seq,
        manifest: cipher.seal(manifest_row(keys, seq), seq, &manifest.to_bytes()),
    }
}

/// Opens the manifest a head record names, checked to be entry `seq`'s segment's.
pub(super) fn open_manifest(keys: &TableKeys, archived: &Archived) -> Result<SegmentManifest> {
    let seq = archived.seq;
    let damaged =
        |e: String| ClientError::Damaged(format!("the head record's manifest of entry {seq}: {e}"));
    let mut cipher = RowCipher::new(&keys.row, keys.id);
    let plain = cipher
        .open(manifest_row(keys, seq), seq, &archived.manifest)
        .map_err(|e| damaged(e.to_string()))?;
    let manifest = SegmentManifest::from_bytes(&plain).map_err(|e| damaged(e.to_string()))?;
    if manifest.segment != entry_segment(keys, seq) {
        return Err(damaged("another segment's".into()));
    }
    Ok(manifest)
}

impl Client {
    /// Bytes of pieces this client stored for its log entries so far.
    pub fn log_piece_bytes(&self) -> u64 {
        self.log_piece_bytes
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Stores entry `seq` as its own audited segment, behind the manifest of the one before;
    /// returns its manifest.
    async fn archive(
        &self,
        seq: u64,
        entry: &Signed<Append>,
        prev: Option<&SegmentManifest>,
    ) -> Result<SegmentManifest> {
        let keys = log_keys(&self.master);
        let codec = Codec::new(self.config.coding)?;
        let encoded = codec.encode(&keys.audit, &seal_entry(&keys, seq, entry, prev));
        self.storage.put_audited(&encoded, &keys.audit).await?;
        let bytes: usize = encoded.pieces.iter().map(Vec::len).sum();
        self.log_piece_bytes
            .fetch_add(bytes as u64, std::sync::atomic::Ordering::Relaxed);
        Ok(encoded.manifest)
    }

    /// Stores entry `seq` in pieces, and before it every earlier entry not yet there (one that
    /// failed to upload, one another device wrote, one a statement that failed left behind),
    /// read from a replica at the head: the chain [`Client::recover`] walks has no gap.
    /// Remembers the newest one stored, for the head record.
    pub(super) async fn archive_through(
        &self,
        state: &mut State,
        seq: u64,
        entry: Signed<Append>,
    ) -> Result<()> {
        let keys = log_keys(&self.master);
        let mut prev = open_entry(&entry).map_err(index_err)?.1.prev;
        let mut missing = vec![(seq, entry)];
        let mut before = seq - 1;
        let mut stored = None;
        while before > 0 {
            stored = match &state.log.archived {
                Some((s, m)) if *s == before => Some(m.clone()),
                _ => {
                    self.storage
                        .manifest(SegmentId(entry_segment(&keys, before).0))
                        .await?
                }
            };
            if stored.is_some() {
                break;
            }
            // Only the entry the later one follows: never one a replica kept that lost its seq.
            let entry = self
                .replica_entry(state.log.replicas.iter(), before, Some(prev))
                .await?;
            prev = open_entry(&entry).map_err(index_err)?.1.prev;
            missing.push((before, entry));
            before -= 1;
        }
        for (seq, entry) in missing.iter().rev() {
            let manifest = self.archive(*seq, entry, stored.as_ref()).await?;
            state.log.archived = Some((*seq, manifest.clone()));
            stored = Some(manifest);
        }
        Ok(())
    }

    /// Refuses replicas whose head is behind the log in pieces (entry head + 1 is stored
    /// there): they were wiped or rolled back, and showing them would show tables missing.
    /// One `Locate`, and the keys alone find it: a new device needs no kept head for this.
    /// Whether it could check: without a tracker, and with the DHT's head to stand in for it
    /// ([`Client::check_floor`]), it cannot.
    pub(super) async fn check_pieces_head(&self, state: &mut State) -> Result<bool> {
        let keys = log_keys(&self.master);
        let next = state.log.head.seq + 1;
        match self
            .storage
            .entrusted(SegmentId(entry_segment(&keys, next).0))
            .await
        {
            Ok(false) => return Ok(true),
            Ok(true) => {}
            Err(e) if state.log.published.is_some() => {
                warn!(error = %e, "cannot check the log in pieces against the replicas");
                return Ok(false);
            }
            Err(e) => return Err(e.into()),
        }
        // Another device may have appended it since the heads were asked.
        self.refresh_heads(state).await?;
        if state.log.head.seq < next {
            return Err(ClientError::Index(NetError::Unavailable(format!(
                "the index replicas hold this owner's log to seq {}, but its copy in pieces \
                 goes further: they were wiped or rolled back; rebuild them with `wwt recover`",
                next - 1
            ))));
        }
        Ok(true)
    }

    /// Entry `seq` of the owner's log, from the first of `replicas` that holds it, checked:
    /// signed by the owner, at `seq`, and if `want` is given, with that hash.
    pub(super) async fn replica_entry(
        &self,
        replicas: impl Iterator<Item = &Replica>,
        seq: u64,
        want: Option<[u8; 32]>,
    ) -> Result<Signed<Append>> {
        let owner = self.identity.node_id();
        let mut why = Vec::new();
        for r in replicas {
            let ask = GetEntries {
                owner,
                after: seq - 1,
                limit: 1,
            };
            match r.api.entries(self.sign(ask)?).await {
                Ok(mut page) if !page.is_empty() => {
                    let entry = page.swap_remove(0);
                    match open_entry(&entry) {
                        Ok((signer, body))
                            if signer == owner
                                && body.seq == seq
                                && want.is_none_or(|h| h == entry_hash(&entry)) =>
                        {
                            return Ok(entry);
                        }
                        _ => why.push(format!("{}: not entry {seq} of this owner", r.id)),
                    }
                }
                Ok(_) => why.push(format!("{}: does not hold it", r.id)),
                Err(e) => why.push(format!("{}: {e}", r.id)),
            }
        }
        Err(ClientError::Index(NetError::Unavailable(format!(
            "no index replica gave entry {seq} of the log ({})",
            why.join("; ")
        ))))
    }

    /// Entry `seq` from its segment, if it was stored whole, found through the trackers.
    async fn archived(&self, seq: u64) -> Result<Option<Signed<Append>>> {
        let keys = log_keys(&self.master);
        match self
            .storage
            .manifest(SegmentId(entry_segment(&keys, seq).0))
            .await?
        {
            Some(manifest) => Ok(Some(self.read_archived(seq, &manifest).await?.0)),
            None => Ok(None),
        }
    }

    /// Entry `seq` and the manifest of the segment before it, read from its segment.
    async fn read_archived(
        &self,
        seq: u64,
        manifest: &SegmentManifest,
    ) -> Result<(Signed<Append>, Option<SegmentManifest>)> {
        let keys = log_keys(&self.master);
        let codec = Codec::new(self.config.coding)?;
        if manifest.segment != entry_segment(&keys, seq) {
            return Err(ClientError::Damaged(format!(
                "the log in pieces names another segment as entry {seq}'s"
            )));
        }
        let bytes = self.storage.get(&codec, &keys.audit, manifest).await?;
        open_entry_segment(&keys, seq, &bytes)
    }

    /// The manifests of entries 1 to `tail`'s, walking back from the one a head record names:
    /// each segment holds the one before's. Needs no tracker.
    async fn archived_chain(&self, tail: (u64, SegmentManifest)) -> Result<Vec<SegmentManifest>> {
        let (mut seq, manifest) = tail;
        let mut chain = Vec::new();
        let mut next = Some(manifest);
        while let Some(manifest) = next {
            if seq == 0 {
                return Err(ClientError::Damaged(
                    "the log in pieces names a segment before entry 1".into(),
                ));
            }
            next = self.read_archived(seq, &manifest).await?.1;
            chain.push(manifest);
            seq -= 1;
        }
        if seq > 0 {
            return Err(ClientError::Damaged(format!(
                "the log in pieces names no segment before entry {}",
                seq + 1
            )));
        }
        chain.reverse();
        Ok(chain)
    }

    /// Hands recovered entry `seq` to every replica, if it follows `prev` (which it becomes).
    async fn replay(
        &self,
        state: &State,
        seq: u64,
        prev: &mut [u8; 32],
        entry: Signed<Append>,
    ) -> Result<()> {
        let (signer, body) = open_entry(&entry).map_err(index_err)?;
        if signer != self.identity.node_id() || body.seq != seq || body.prev != *prev {
            return Err(ClientError::Damaged(format!(
                "log entry {seq} in pieces does not follow entry {}",
                seq - 1
            )));
        }
        *prev = entry_hash(&entry);
        let calls = state
            .log
            .replicas
            .iter()
            .map(|r| r.api.append(entry.clone()));
        for (r, answer) in state.log.replicas.iter().zip(join_all(calls).await) {
            if let Err(e) = answer {
                warn!(replica = %r.id, seq, error = %e, "a recovered entry was refused");
            }
        }
        Ok(())
    }
}

/// What [`Client::recover`] rebuilt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Recovered {
    /// Log entries read back from the pieces (seq 1 to this).
    pub entries: u64,
    /// The replicas that hold them now, by address.
    pub replicas: Vec<String>,
    /// Each table and its row count.
    pub tables: Vec<(String, i64)>,
}

impl Client {
    /// Rebuilds the owner's index replicas from the log in pieces, with only the keystore:
    /// reads entries 1, 2, … from their segments (each signed by the owner and following the
    /// one before; found back from the DHT's head record, then forward through the trackers),
    /// hands the replica set ([`Client::connect`]'s) what each lacks, in order, and connects. For when every replica lost the log; with replicas that hold it, nothing
    /// changes.
    pub async fn recover(
        keystore: &Keystore,
        connector: Arc<dyn Connector>,
        config: ClientConfig,
    ) -> Result<(Client, Recovered)> {
        let client = Client::new(keystore, connector, config)?;
        let (entries, replicas) = {
            let mut state = client.state.lock().await;
            client.open_log(&mut state).await?;
            let mut entries = 0;
            let mut prev = [0u8; 32];
            // Back from the segment the head record in the DHT names (no tracker needed), then
            // on through the trackers, entry by entry: memory grows by a manifest per entry.
            let chain = match state.log.archived.clone() {
                Some(tail) => client.archived_chain(tail).await?,
                None => Vec::new(),
            };
            for manifest in &chain {
                let (entry, _) = client.read_archived(entries + 1, manifest).await?;
                client.replay(&state, entries + 1, &mut prev, entry).await?;
                entries += 1;
            }
            loop {
                let next = match client.archived(entries + 1).await {
                    Ok(next) => next,
                    Err(e) if !chain.is_empty() => {
                        warn!(error = %e, "no tracker to find log entries after {entries} in \
                            pieces: recovered to where the head record in the DHT leads");
                        None
                    }
                    Err(e) => return Err(e),
                };
                let Some(entry) = next else {
                    break;
                };
                client.replay(&state, entries + 1, &mut prev, entry).await?;
                entries += 1;
            }
            client.refresh_heads(&mut state).await?;
            // The pieces were just replayed: they, not the DHT, say where the log ends.
            client.check_floor(&state, false)?;
            client.publish_held_head(&state);
            client.reload_catalog(&mut state).await?;
            let replicas = state
                .log
                .replicas
                .iter()
                .map(|r| r.address.clone())
                .collect();
            (entries, replicas)
        };
        let mut tables = Vec::new();
        for table in client.catalog().await.tables() {
            let sql = format!(
                "SELECT count(*) FROM \"{}\"",
                table.name.replace('"', "\"\"")
            );
            let rows = match client.execute(&sql).await?.pop() {
                Some(Outcome::Rows(r)) => match r.rows.first().and_then(|row| row.first()) {
                    Some(Value::Int(n)) => *n,
                    _ => 0,
                },
                _ => 0,
            };
            tables.push((table.name.clone(), rows));
        }
        Ok((
            client,
            Recovered {
                entries,
                replicas,
                tables,
            },
        ))
    }
}
