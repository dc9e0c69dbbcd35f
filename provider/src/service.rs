//! The provider service: checks requests and reservations, then stores and serves pieces.
//!
//! A request is recorded against replay only once its signer is authorized (the piece's owner,
//! a trusted tracker, the holder of a valid reservation), so strangers' refused requests take
//! no room in the replay cache that the owners' and trackers' requests need.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use tracing::{Instrument, debug, info_span, warn};
use wwt_net::audit::{Challenge, ChallengeAnswer, ChallengeKind};
use wwt_net::types::{
    Heartbeat, HeartbeatAck, NodeId, OperatorCert, PieceData, PieceStream, ProviderStatus,
    ReadPiece, SegmentId, StorePiece, StoreReceipt,
};
use wwt_net::{
    Discovery, Identity, NetError, PeerKeys, ProviderApi, Signed, TrackerApi, Verifier, now_ms,
};

use crate::ProviderError;
use crate::config::ProviderConfig;
use crate::store::{PieceMeta, PieceStore};

/// One provider: its identity, its piece store, and the trackers it trusts.
pub struct Provider {
    identity: Identity,
    /// The keys that check its trackers' reservations and tag its receipts.
    keys: PeerKeys,
    verifier: Verifier,
    store: PieceStore,
    /// Trusted tracker ids → their addresses.
    trackers: HashMap<NodeId, String>,
    zone: String,
    /// Its operator's certificate, said in heartbeats.
    operator: Option<OperatorCert>,
    /// Also an index provider (said in heartbeats).
    index: bool,
    max_piece_bytes: u64,
    discovery: Option<Arc<dyn Discovery>>,
    /// Segments already announced through `discovery` since start-up.
    announced: Mutex<HashSet<SegmentId>>,
}

impl std::fmt::Debug for Provider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Provider")
            .field("node", &self.identity.node_id())
            .finish_non_exhaustive()
    }
}

impl Provider {
    /// Opens the provider described by `config` (identity, store, trusted trackers).
    pub fn open(config: &ProviderConfig) -> Result<Provider, ProviderError> {
        config.validate()?;
        let identity = Identity::load_or_create(&config.identity_path())?;
        Ok(Provider {
            store: PieceStore::open(&config.data_dir, config.capacity_bytes)?,
            keys: PeerKeys::new(&identity),
            identity,
            verifier: Verifier::new(Duration::from_millis(config.signature_window_ms)),
            trackers: config
                .trackers
                .iter()
                .map(|t| (t.id, t.address.clone()))
                .collect(),
            zone: config.zone.clone(),
            operator: config.operator_certificate,
            index: config.index,
            max_piece_bytes: config.max_piece_bytes,
            discovery: None,
            announced: Mutex::new(HashSet::new()),
        })
    }

    /// Announces the segment of every stored piece through `discovery` (the DHT): those already
    /// on disk now (DHT provider records do not survive a restart), new ones as they arrive.
    pub fn with_discovery(mut self, discovery: Arc<dyn Discovery>) -> Result<Provider, NetError> {
        self.discovery = Some(discovery);
        for segment in self.store.segments()? {
            self.announce(segment);
        }
        Ok(self)
    }

    /// Announces `segment` in the background, once per segment since start-up, so a store never
    /// waits for the DHT.
    fn announce(&self, segment: SegmentId) {
        let Some(discovery) = self.discovery.clone() else {
            return;
        };
        let fresh = self
            .announced
            .lock()
            .map(|mut seen| seen.insert(segment))
            .unwrap_or(false);
        if fresh {
            tokio::spawn(async move {
                match discovery.announce(segment).await {
                    Ok(()) => {}
                    // The node stopped (the provider is shutting down) with the segment still
                    // queued for its batch: the next start announces every segment held.
                    Err(NetError::Unavailable(e)) => {
                        debug!(segment = %segment, error = %e, "DHT announce dropped");
                    }
                    Err(e) => warn!(segment = %segment, error = %e, "DHT announce failed"),
                }
            });
        }
    }

    /// This provider's identity (for the libp2p node started beside it).
    pub(crate) fn identity(&self) -> &Identity {
        &self.identity
    }

    /// This provider's node id.
    pub fn node_id(&self) -> NodeId {
        self.identity.node_id()
    }

    /// The trusted trackers and their addresses.
    pub fn trackers(&self) -> &HashMap<NodeId, String> {
        &self.trackers
    }

    /// Sends one heartbeat, announcing `address`, to `tracker`.
    pub async fn heartbeat_once(
        &self,
        tracker: &dyn TrackerApi,
        address: &str,
    ) -> Result<HeartbeatAck, NetError> {
        let (used, pieces) = self.store.used()?;
        let beat = Heartbeat {
            address: address.to_string(),
            zone: self.zone.clone(),
            capacity: self.store.capacity(),
            used,
            pieces,
            index: self.index,
            operator: self.operator,
        };
        tracker.heartbeat(self.identity.sign(beat)?).await
    }

    fn check_store(&self, signer: NodeId, req: &StorePiece) -> Result<(), NetError> {
        let r = &req.reservation;
        if !self.trackers.contains_key(&r.tracker) {
            return Err(NetError::Forbidden(format!(
                "reservation issued by {}, which is not a tracker this provider trusts",
                r.tracker
            )));
        }
        r.check_for_provider(&self.keys)?;
        // The owner uploads; the issuing tracker stores the pieces its repairs re-code.
        if r.owner != signer && r.tracker != signer {
            return Err(NetError::Forbidden(
                "the request must be signed by the reservation's owner or its tracker".into(),
            ));
        }
        if r.expires_ms < now_ms() {
            return Err(NetError::Precondition(
                "reservation expired; ask the tracker for a new one".into(),
            ));
        }
        if r.size > self.max_piece_bytes {
            return Err(NetError::BadRequest(format!(
                "piece of {} bytes exceeds this provider's limit of {}",
                r.size, self.max_piece_bytes
            )));
        }
        Ok(())
    }
}

#[async_trait]
impl ProviderApi for Provider {
    async fn store(
        &self,
        request: Signed<StorePiece>,
        data: PieceStream,
    ) -> Result<StoreReceipt, NetError> {
        let signer = request.auth().signer;
        let span = info_span!("store", signer = %signer);
        async move {
            // The signature covers the reservation, checked before any byte is taken; the
            // bytes are bound by the piece id, which the store checks as they arrive. Only a
            // request the reservation authorizes is recorded against replay.
            let checked = self.verifier.check(request)?;
            self.check_store(checked.signer(), checked.body())?;
            let (_, req) = self.verifier.accept(checked)?;
            let r = &req.reservation;
            let meta = PieceMeta {
                owner: r.owner,
                segment: r.segment,
                index: r.index,
                size: r.size,
            };
            match self.store.get(&r.piece)? {
                Some(existing) if existing.meta.owner == r.owner => {
                    debug!(piece = %r.piece, "piece already stored; receipt only");
                }
                Some(_) => {
                    return Err(NetError::Conflict(format!(
                        "piece {} is stored for another owner",
                        r.piece
                    )));
                }
                None => {
                    self.store.put(r.piece, meta, data).await?;
                    self.announce(r.segment);
                }
            }
            StoreReceipt::issue(req.reservation, &self.keys)
        }
        .instrument(span)
        .await
    }

    async fn read(&self, request: Signed<ReadPiece>) -> Result<PieceData, NetError> {
        let checked = self.verifier.check(request)?;
        let piece = checked.body().piece;
        let stored = self
            .store
            .get(&piece)?
            .ok_or_else(|| NetError::NotFound(format!("piece {piece} is not stored here")))?;
        let meta = stored.meta;
        let signer = checked.signer();
        if signer != meta.owner && !self.trackers.contains_key(&signer) {
            return Err(NetError::Forbidden(
                "only the piece's owner or a trusted tracker may read it".into(),
            ));
        }
        let (_, req) = self.verifier.accept(checked)?;
        let (offset, data, proof) = match req.range {
            None => (0, self.store.read_whole(&stored).await?, Bytes::new()),
            Some(range) if range.end() <= meta.size => {
                let (data, proof) = self
                    .store
                    .read_range(&stored, range.offset, range.len)
                    .await?;
                (range.offset, data, proof)
            }
            Some(range) => {
                return Err(NetError::BadRequest(format!(
                    "range {}..{} is past the end of the {}-byte piece",
                    range.offset,
                    range.end(),
                    meta.size
                )));
            }
        };
        debug!(piece = %req.piece, offset, len = data.len(), "piece read");
        Ok(PieceData {
            piece: req.piece,
            piece_size: meta.size,
            offset,
            data,
            proof,
        })
    }

    async fn challenge(&self, request: Signed<Challenge>) -> Result<ChallengeAnswer, NetError> {
        let checked = self.verifier.check(request)?;
        if !self.trackers.contains_key(&checked.signer()) {
            return Err(NetError::Forbidden(
                "only a trusted tracker may challenge this provider".into(),
            ));
        }
        let (signer, req) = self.verifier.accept(checked)?;
        let stored = self
            .store
            .get(&req.piece)?
            .ok_or_else(|| NetError::NotFound(format!("piece {} is not stored here", req.piece)))?;
        let meta = stored.meta;
        let (data, proof) = match req.kind {
            ChallengeKind::Sentinels(positions) => (
                self.store.read_positions(&stored, positions).await?,
                Bytes::new(),
            ),
            ChallengeKind::Chunk(range) if range.end() <= meta.size => {
                self.store
                    .read_range(&stored, range.offset, range.len)
                    .await?
            }
            ChallengeKind::Chunk(range) => {
                return Err(NetError::BadRequest(format!(
                    "chunk {}..{} is past the end of the {}-byte piece",
                    range.offset,
                    range.end(),
                    meta.size
                )));
            }
        };
        debug!(piece = %req.piece, tracker = %signer, "challenge answered");
        Ok(ChallengeAnswer {
            piece: req.piece,
            data,
            proof,
        })
    }

    async fn status(&self) -> Result<ProviderStatus, NetError> {
        let (used, pieces) = self.store.used()?;
        Ok(ProviderStatus {
            node: self.node_id(),
            zone: self.zone.clone(),
            capacity: self.store.capacity(),
            used,
            pieces,
        })
    }
}
