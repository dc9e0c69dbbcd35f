//! The DHT node's record store: kad's `MemoryStore` (its limits and lookups), written through
//! to sled when the node has a folder, so a restarted node still answers for the provider and
//! value records it held, without waiting for their holders to announce them again.
//!
//! On disk, in the folder's sled database: tree `records`, key → expiry (u64 LE, Unix ms, 0 for
//! none) ‖ value; tree `providers`, key length (u16 LE) ‖ key ‖ provider peer id → expiry ‖
//! the provider's addresses (each a u16 LE length and the multiaddress's bytes).
//! Expiries are kept in wall-clock time (kad's are monotonic instants); a record past its
//! expiry is deleted, not loaded. A write that fails on disk leaves the record in memory only.

use std::borrow::Cow;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use libp2p::kad::store::{MemoryStore, MemoryStoreConfig, RecordStore, Result};
use libp2p::kad::{ProviderRecord, Record, RecordKey};
use libp2p::{Multiaddr, PeerId};
use tracing::debug;

use crate::NetError;

/// The store of a DHT node; on disk too if opened with a folder.
pub(crate) struct DiskStore {
    memory: MemoryStore,
    disk: Option<Disk>,
}

struct Disk {
    records: sled::Tree,
    providers: sled::Tree,
}

/// An expiry as Unix milliseconds (0: none).
fn to_wall(expires: Option<Instant>) -> u64 {
    let Some(at) = expires else {
        return 0;
    };
    let left = at.saturating_duration_since(Instant::now());
    (SystemTime::now() + left)
        .duration_since(UNIX_EPOCH)
        .map_or(1, |d| d.as_millis().max(1) as u64)
}

/// An expiry read back: `None` if it has passed.
fn from_wall(ms: u64) -> Option<Option<Instant>> {
    if ms == 0 {
        return Some(None);
    }
    let at = UNIX_EPOCH + Duration::from_millis(ms);
    let left = at.duration_since(SystemTime::now()).ok()?;
    Some(Some(Instant::now() + left))
}

fn provider_key(key: &RecordKey, provider: &PeerId) -> Vec<u8> {
    let key = key.as_ref();
    let mut out = Vec::with_capacity(2 + key.len() + 38);
    out.extend_from_slice(&(key.len() as u16).to_le_bytes());
    out.extend_from_slice(key);
    out.extend_from_slice(&provider.to_bytes());
    out
}

fn split_provider_key(bytes: &[u8]) -> Option<(RecordKey, PeerId)> {
    let len = u16::from_le_bytes(bytes.get(..2)?.try_into().ok()?) as usize;
    let key = bytes.get(2..2 + len)?;
    let peer = PeerId::from_bytes(bytes.get(2 + len..)?).ok()?;
    Some((RecordKey::new(&key), peer))
}

fn expiry(bytes: &[u8]) -> Option<u64> {
    Some(u64::from_le_bytes(bytes.get(..8)?.try_into().ok()?))
}

fn provider_value(expires: Option<Instant>, addresses: &[Multiaddr]) -> Vec<u8> {
    let mut out = to_wall(expires).to_le_bytes().to_vec();
    for address in addresses {
        let bytes = address.to_vec();
        out.extend_from_slice(&(bytes.len() as u16).to_le_bytes());
        out.extend_from_slice(&bytes);
    }
    out
}

/// The addresses after a provider record's expiry (those that do not parse are left out).
fn addresses(mut bytes: &[u8]) -> Vec<Multiaddr> {
    let mut out = Vec::new();
    while let Some(len) = bytes.get(..2) {
        let len = u16::from_le_bytes([len[0], len[1]]) as usize;
        let Some(address) = bytes.get(2..2 + len) else {
            break;
        };
        out.extend(Multiaddr::try_from(address.to_vec()).ok());
        bytes = &bytes[2 + len..];
    }
    out
}

impl DiskStore {
    /// kad's memory store for `local` under `config`, loaded from and written through to
    /// `dir` if given.
    pub(crate) fn open(
        local: PeerId,
        config: MemoryStoreConfig,
        dir: Option<&Path>,
    ) -> std::result::Result<DiskStore, NetError> {
        let mut memory = MemoryStore::with_config(local, config);
        let Some(dir) = dir else {
            return Ok(DiskStore { memory, disk: None });
        };
        let fail =
            |e: sled::Error| NetError::Internal(format!("DHT records at {}: {e}", dir.display()));
        let db = sled::open(dir).map_err(fail)?;
        let disk = Disk {
            records: db.open_tree("records").map_err(fail)?,
            providers: db.open_tree("providers").map_err(fail)?,
        };
        let (mut records, mut providers) = (0, 0);
        for item in disk.records.iter() {
            let (key, value) = item.map_err(fail)?;
            let Some(expires) = expiry(&value).and_then(from_wall) else {
                written(disk.records.remove(&key));
                continue;
            };
            let record = Record {
                key: RecordKey::new(&key),
                value: value[8..].to_vec(),
                publisher: None,
                expires,
            };
            if memory.put(record).is_ok() {
                records += 1;
            }
        }
        for item in disk.providers.iter() {
            let (stored, value) = item.map_err(fail)?;
            let (Some((key, provider)), Some(expires)) = (
                split_provider_key(&stored),
                expiry(&value).and_then(from_wall),
            ) else {
                written(disk.providers.remove(&stored));
                continue;
            };
            let record = ProviderRecord {
                key,
                provider,
                expires,
                addresses: addresses(&value[8..]),
            };
            if memory.add_provider(record).is_ok() {
                providers += 1;
            }
        }
        debug!(records, providers, dir = %dir.display(), "DHT records loaded");
        Ok(DiskStore {
            memory,
            disk: Some(disk),
        })
    }
}

/// Logs a write that failed on disk (the record stays in memory).
fn written(result: sled::Result<Option<sled::IVec>>) {
    if let Err(e) = result {
        debug!(error = %e, "a DHT record is kept in memory only");
    }
}

impl RecordStore for DiskStore {
    type RecordsIter<'a> = <MemoryStore as RecordStore>::RecordsIter<'a>;
    type ProvidedIter<'a> = <MemoryStore as RecordStore>::ProvidedIter<'a>;

    fn get(&self, k: &RecordKey) -> Option<Cow<'_, Record>> {
        self.memory.get(k)
    }

    fn put(&mut self, r: Record) -> Result<()> {
        let mut value = to_wall(r.expires).to_le_bytes().to_vec();
        value.extend_from_slice(&r.value);
        let key = r.key.to_vec();
        self.memory.put(r)?;
        if let Some(disk) = &self.disk {
            written(disk.records.insert(key, value));
        }
        Ok(())
    }

    fn remove(&mut self, k: &RecordKey) {
        self.memory.remove(k);
        if let Some(disk) = &self.disk {
            written(disk.records.remove(k.as_ref()));
        }
    }

    fn records(&self) -> Self::RecordsIter<'_> {
        self.memory.records()
    }

    fn add_provider(&mut self, record: ProviderRecord) -> Result<()> {
        let (key, provider) = (record.key.clone(), record.provider);
        let value = provider_value(record.expires, &record.addresses);
        self.memory.add_provider(record)?;
        // A full list keeps its providers and ignores the new one: so does the disk.
        let kept = self
            .memory
            .providers(&key)
            .iter()
            .any(|p| p.provider == provider);
        if let (Some(disk), true) = (&self.disk, kept) {
            written(disk.providers.insert(provider_key(&key, &provider), value));
        }
        Ok(())
    }

    fn providers(&self, key: &RecordKey) -> Vec<ProviderRecord> {
        self.memory.providers(key)
    }

    fn provided(&self) -> Self::ProvidedIter<'_> {
        self.memory.provided()
    }

    fn remove_provider(&mut self, k: &RecordKey, p: &PeerId) {
        self.memory.remove_provider(k, p);
        if let Some(disk) = &self.disk {
            written(disk.providers.remove(provider_key(k, p)));
        }
    }
}
