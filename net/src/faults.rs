//! A fault-injecting wrapper around any [`Connector`]: per address, drop calls, delay them,
//! stall them until the fault is lifted, corrupt the bytes read, or partition the node away
//! entirely.
//!
//! Decisions come from one seeded RNG, so a failing test replays with the same seed. A
//! stalled call waits for an event (the fault being lifted), never for a time: the caller's
//! own deadline is what ends it, so no test races a deadline against a delay.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::sync::Notify;

use crate::NetError;
use crate::api::{Connector, ProviderApi, TrackerApi};
use crate::audit::{
    AuditReport, Challenge, ChallengeAnswer, Complaint, Entrust, Entrusted, Lease, Mirror,
};
use crate::auth::Signed;
use crate::index::{
    Answer, Append, GetCatalog, GetEntries, GetHead, IndexApi, LogHead, QueryTable,
};
use crate::types::{
    ConfirmStored, Confirmed, DeletePieces, Deleted, Forget, Heartbeat, HeartbeatAck, Locate,
    PieceData, PieceStream, Placement, ProviderRecord, ProviderStatus, ReadPiece, ReserveSegment,
    SegmentLocation, StorePiece, StoreReceipt,
};

/// What goes wrong with calls to one address.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Fault {
    /// Probability (0..=1) that a call is dropped (fails as `Unavailable` without reaching it).
    pub drop_rate: f64,
    /// Added before every call.
    pub delay: Duration,
    /// Flip one byte of every piece read from it and of every challenge answer (a lying
    /// provider).
    pub corrupt_reads: bool,
    /// Every call fails as `Unavailable` (the node is cut off).
    pub partitioned: bool,
    /// Every call hangs until this fault is lifted ([`Faults::set`] to another, or
    /// [`Faults::heal_all`]), then goes on under the fault then in force: a node that stopped
    /// answering. Only the caller's deadline ends the wait sooner.
    pub stalled: bool,
}

#[derive(Debug)]
struct FaultState {
    by_address: HashMap<String, Fault>,
    rng: StdRng,
    /// Calls that have stalled so far.
    stalls: u64,
}

/// The faults in force, shared by every handle a [`FaultyConnector`] gives out.
#[derive(Debug, Clone)]
pub struct Faults {
    state: Arc<Mutex<FaultState>>,
    /// Wakes stalled calls when the faults change.
    changed: Arc<Notify>,
}

impl Faults {
    /// No faults yet; random decisions drawn from `seed`.
    pub fn new(seed: u64) -> Faults {
        Faults {
            state: Arc::new(Mutex::new(FaultState {
                by_address: HashMap::new(),
                rng: StdRng::seed_from_u64(seed),
                stalls: 0,
            })),
            changed: Arc::new(Notify::new()),
        }
    }

    /// Sets the fault for `address` (the default [`Fault`] heals it).
    pub fn set(&self, address: &str, fault: Fault) {
        if let Ok(mut state) = self.state.lock() {
            state.by_address.insert(address.to_string(), fault);
        }
        self.changed.notify_waiters();
    }

    /// Removes every fault.
    pub fn heal_all(&self) {
        if let Ok(mut state) = self.state.lock() {
            state.by_address.clear();
        }
        self.changed.notify_waiters();
    }

    /// How many calls have stalled so far ([`Fault::stalled`]).
    pub fn stalls(&self) -> u64 {
        self.state.lock().map(|s| s.stalls).unwrap_or(0)
    }

    fn lock(&self) -> Result<std::sync::MutexGuard<'_, FaultState>, NetError> {
        self.state
            .lock()
            .map_err(|_| NetError::Internal("fault state poisoned".into()))
    }

    /// Decides the fate of one call to `address`: its delay and whether to corrupt its read.
    async fn before_call(&self, address: &str) -> Result<bool, NetError> {
        let mut stalled = false;
        let fault = loop {
            // Listening before looking, so a change in between still wakes this call.
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            {
                let mut state = self.lock()?;
                let Some(fault) = state.by_address.get(address).cloned() else {
                    return Ok(false);
                };
                if !fault.stalled {
                    break fault;
                }
                if !stalled {
                    stalled = true;
                    state.stalls += 1;
                }
            }
            changed.await;
        };
        let (delay, corrupt) = {
            let mut state = self.lock()?;
            if fault.partitioned {
                return Err(NetError::Unavailable(format!("{address} is partitioned")));
            }
            if fault.drop_rate > 0.0 && state.rng.random_bool(fault.drop_rate.min(1.0)) {
                return Err(NetError::Unavailable(format!("call to {address} dropped")));
            }
            (fault.delay, fault.corrupt_reads)
        };
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        Ok(corrupt)
    }

    fn flip_byte(&self, data: &Bytes) -> Bytes {
        if data.is_empty() {
            return data.clone();
        }
        let at = self
            .state
            .lock()
            .map(|mut s| s.rng.random_range(0..data.len()))
            .unwrap_or(0);
        let mut bytes = data.to_vec();
        bytes[at] ^= 0x01;
        Bytes::from(bytes)
    }
}

/// A [`Connector`] whose handles pass through [`Faults`].
#[derive(Clone)]
pub struct FaultyConnector {
    inner: Arc<dyn Connector>,
    faults: Faults,
}

impl std::fmt::Debug for FaultyConnector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FaultyConnector")
            .field("faults", &self.faults)
            .finish_non_exhaustive()
    }
}

impl FaultyConnector {
    /// Wraps `inner`; change faults later through `faults`.
    pub fn new(inner: Arc<dyn Connector>, faults: Faults) -> FaultyConnector {
        FaultyConnector { inner, faults }
    }
}

impl Connector for FaultyConnector {
    fn provider(&self, address: &str) -> Result<Arc<dyn ProviderApi>, NetError> {
        Ok(Arc::new(FaultyProvider {
            inner: self.inner.provider(address)?,
            faults: self.faults.clone(),
            address: address.to_string(),
        }))
    }

    fn tracker(&self, address: &str) -> Result<Arc<dyn TrackerApi>, NetError> {
        Ok(Arc::new(FaultyTracker {
            inner: self.inner.tracker(address)?,
            faults: self.faults.clone(),
            address: address.to_string(),
        }))
    }

    fn index(&self, address: &str) -> Result<Arc<dyn IndexApi>, NetError> {
        Ok(Arc::new(FaultyIndex {
            inner: self.inner.index(address)?,
            faults: self.faults.clone(),
            address: address.to_string(),
        }))
    }
}

struct FaultyProvider {
    inner: Arc<dyn ProviderApi>,
    faults: Faults,
    address: String,
}

#[async_trait]
impl ProviderApi for FaultyProvider {
    async fn store(
        &self,
        request: Signed<StorePiece>,
        data: PieceStream,
    ) -> Result<StoreReceipt, NetError> {
        self.faults.before_call(&self.address).await?;
        self.inner.store(request, data).await
    }

    async fn read(&self, request: Signed<ReadPiece>) -> Result<PieceData, NetError> {
        let corrupt = self.faults.before_call(&self.address).await?;
        let mut data = self.inner.read(request).await?;
        if corrupt {
            data.data = self.faults.flip_byte(&data.data);
            // A range read's proof carries the bytes too: lie there as well.
            data.proof = self.faults.flip_byte(&data.proof);
        }
        Ok(data)
    }

    async fn status(&self) -> Result<ProviderStatus, NetError> {
        self.faults.before_call(&self.address).await?;
        self.inner.status().await
    }

    async fn challenge(&self, request: Signed<Challenge>) -> Result<ChallengeAnswer, NetError> {
        let corrupt = self.faults.before_call(&self.address).await?;
        let mut answer = self.inner.challenge(request).await?;
        if corrupt {
            answer.data = self.faults.flip_byte(&answer.data);
        }
        Ok(answer)
    }

    async fn delete(&self, request: Signed<DeletePieces>) -> Result<Deleted, NetError> {
        self.faults.before_call(&self.address).await?;
        self.inner.delete(request).await
    }
}

struct FaultyTracker {
    inner: Arc<dyn TrackerApi>,
    faults: Faults,
    address: String,
}

#[async_trait]
impl TrackerApi for FaultyTracker {
    async fn heartbeat(&self, request: Signed<Heartbeat>) -> Result<HeartbeatAck, NetError> {
        self.faults.before_call(&self.address).await?;
        self.inner.heartbeat(request).await
    }

    async fn reserve(&self, request: Signed<ReserveSegment>) -> Result<Placement, NetError> {
        self.faults.before_call(&self.address).await?;
        self.inner.reserve(request).await
    }

    async fn confirm(&self, request: Signed<ConfirmStored>) -> Result<Confirmed, NetError> {
        self.faults.before_call(&self.address).await?;
        self.inner.confirm(request).await
    }

    async fn locate(&self, request: Signed<Locate>) -> Result<SegmentLocation, NetError> {
        self.faults.before_call(&self.address).await?;
        self.inner.locate(request).await
    }

    async fn providers(&self) -> Result<Vec<ProviderRecord>, NetError> {
        self.faults.before_call(&self.address).await?;
        self.inner.providers().await
    }

    async fn entrust(&self, request: Signed<Entrust>) -> Result<Entrusted, NetError> {
        self.faults.before_call(&self.address).await?;
        self.inner.entrust(request).await
    }

    async fn complain(&self, request: Signed<Complaint>) -> Result<(), NetError> {
        self.faults.before_call(&self.address).await?;
        self.inner.complain(request).await
    }

    async fn mirror(&self, request: Signed<Mirror>) -> Result<(), NetError> {
        self.faults.before_call(&self.address).await?;
        self.inner.mirror(request).await
    }

    async fn lease(&self, request: Signed<Lease>) -> Result<(), NetError> {
        self.faults.before_call(&self.address).await?;
        self.inner.lease(request).await
    }

    async fn forget(&self, request: Signed<Forget>) -> Result<u32, NetError> {
        self.faults.before_call(&self.address).await?;
        self.inner.forget(request).await
    }

    async fn audits(&self, limit: u32) -> Result<AuditReport, NetError> {
        self.faults.before_call(&self.address).await?;
        self.inner.audits(limit).await
    }
}

/// An index service behind [`Faults`] (drop, delay, partition; `corrupt_reads` concerns
/// pieces only).
struct FaultyIndex {
    inner: Arc<dyn IndexApi>,
    faults: Faults,
    address: String,
}

#[async_trait]
impl IndexApi for FaultyIndex {
    async fn append(&self, entry: Signed<Append>) -> Result<LogHead, NetError> {
        self.faults.before_call(&self.address).await?;
        self.inner.append(entry).await
    }

    async fn head(&self, request: Signed<GetHead>) -> Result<Option<Signed<Append>>, NetError> {
        self.faults.before_call(&self.address).await?;
        self.inner.head(request).await
    }

    async fn entries(&self, request: Signed<GetEntries>) -> Result<Vec<Signed<Append>>, NetError> {
        self.faults.before_call(&self.address).await?;
        self.inner.entries(request).await
    }

    async fn query(
        &self,
        request: Signed<QueryTable>,
    ) -> Result<Answer<wwt_index::QueryOutput>, NetError> {
        self.faults.before_call(&self.address).await?;
        self.inner.query(request).await
    }

    async fn catalog(
        &self,
        request: Signed<GetCatalog>,
    ) -> Result<Answer<wwt_index::CatalogBlob>, NetError> {
        self.faults.before_call(&self.address).await?;
        self.inner.catalog(request).await
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[tokio::test]
    async fn a_stalled_call_waits_until_the_fault_is_lifted_then_obeys_the_new_one() {
        let faults = Faults::new(1);
        let stall = Fault {
            stalled: true,
            ..Fault::default()
        };
        faults.set("a", stall.clone());
        let call = tokio::spawn({
            let faults = faults.clone();
            async move { faults.before_call("a").await }
        });
        while faults.stalls() == 0 {
            tokio::task::yield_now().await;
        }
        // Another address's change wakes it, but it stays stalled.
        faults.set("b", Fault::default());
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        assert!(!call.is_finished());
        assert_eq!(faults.stalls(), 1);
        let lie = Fault {
            corrupt_reads: true,
            ..Fault::default()
        };
        faults.set("a", lie);
        assert!(call.await.unwrap().unwrap(), "goes on as a lying node");
        faults.set("a", stall);
        let healed = tokio::spawn({
            let faults = faults.clone();
            async move { faults.before_call("a").await }
        });
        while faults.stalls() == 1 {
            tokio::task::yield_now().await;
        }
        faults.heal_all();
        assert!(!healed.await.unwrap().unwrap());
    }
}
