//! The provider service: checks requests and reservations, then stores and serves pieces.
//!
//! A request is recorded against replay only once its signer is authorized (the piece's owner,
//! a trusted tracker, the holder of a valid reservation), so strangers' refused requests take
//! no room in the replay cache that the owners' and trackers' requests need.
//!
//! A delete frees pieces for good: a trusted tracker may delete any piece, an owner only its
//! own (a request naming a piece held for another owner deletes nothing).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use tracing::{Instrument, debug, info, info_span, warn};
use wwt_net::audit::{Challenge, ChallengeAnswer, ChallengeKind};
use wwt_net::types::{
    DeletePieces, Deleted, Heartbeat, HeartbeatAck, NodeId, OperatorCert, PieceData, PieceStream,
    ProviderStatus, ReadPiece, SegmentId, StorePiece, StoreReceipt,
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

    /// What it holds: pieces, bytes used of its capacity, bytes freed by deletes.
    pub fn holdings(&self) -> Result<ProviderStatus, NetError> {
        let (used, pieces) = self.store.used()?;
        Ok(ProviderStatus {
            node: self.node_id(),
            zone: self.zone.clone(),
            capacity: self.store.capacity(),
            used,
            pieces,
            freed: self.store.freed()?,
        })
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
        self.holdings()
    }

    async fn delete(&self, request: Signed<DeletePieces>) -> Result<Deleted, NetError> {
        let signer = request.auth().signer;
        let span = info_span!("delete", signer = %signer);
        async move {
            let checked = self.verifier.check(request)?;
            // A trusted tracker deletes any piece; anyone else only pieces held for them.
            let owner = (!self.trackers.contains_key(&checked.signer())).then(|| checked.signer());
            if let Some(owner) = owner {
                self.store.check_owner(&checked.body().pieces, owner)?;
            }
            // Naming nothing held here, it changes nothing, even replayed: answered without
            // being recorded, so strangers cannot fill the replay cache with such requests.
            let mut held = false;
            for piece in &checked.body().pieces {
                held |= self.store.get(piece)?.is_some();
            }
            if !held {
                return Ok(Deleted::default());
            }
            let (_, req) = self.verifier.accept(checked)?;
            // The store checks the owner again while it holds the pieces, so a piece stored
            // meanwhile for another owner is refused too.
            let deleted = self.store.delete(&req.pieces, owner).await?;
            info!(
                asked = req.pieces.len(),
                pieces = deleted.pieces,
                freed = deleted.freed,
                "pieces deleted"
            );
            Ok(deleted)
        }
        .instrument(span)
        .await
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::config::TrackerEndpoint;
    use wwt_net::types::{PieceId, Reservation};

    /// A provider trusting one tracker, and the peers that talk to it.
    struct Setup {
        provider: Provider,
        tracker: Identity,
        owner: Identity,
        stranger: Identity,
        _dir: tempfile::TempDir,
    }

    impl Setup {
        fn new() -> Setup {
            let dir = tempfile::tempdir().unwrap();
            let tracker = Identity::generate().unwrap();
            let config = ProviderConfig {
                data_dir: dir.path().to_path_buf(),
                trackers: vec![TrackerEndpoint {
                    id: tracker.node_id(),
                    address: "mem://tracker".into(),
                }],
                ..ProviderConfig::default()
            };
            Setup {
                provider: Provider::open(&config).unwrap(),
                tracker,
                owner: Identity::generate().unwrap(),
                stranger: Identity::generate().unwrap(),
                _dir: dir,
            }
        }

        /// Stores `data` for `owner` under a reservation of the trusted tracker.
        async fn store(&self, owner: &Identity, data: &'static [u8]) -> PieceId {
            let piece = PieceId::of(data);
            let reservation = Reservation {
                piece,
                size: data.len() as u64,
                segment: SegmentId([3; 32]),
                index: 0,
                provider: self.provider.node_id(),
                owner: owner.node_id(),
                expires_ms: now_ms() + 60_000,
                tracker: self.tracker.node_id(),
                tracker_tag: [0; 32],
                provider_tag: [0; 32],
            }
            .issue(&PeerKeys::new(&self.tracker))
            .unwrap();
            let request = owner.sign(StorePiece { reservation }).unwrap();
            let stream = PieceStream::whole(Bytes::from_static(data));
            self.provider.store(request, stream).await.unwrap();
            piece
        }

        async fn delete(&self, signer: &Identity, pieces: &[PieceId]) -> Result<Deleted, NetError> {
            let request = DeletePieces {
                pieces: pieces.to_vec(),
            };
            self.provider.delete(signer.sign(request).unwrap()).await
        }

        async fn read(&self, reader: &Identity, piece: PieceId) -> Result<Bytes, NetError> {
            let request = reader.sign(ReadPiece { piece, range: None }).unwrap();
            Ok(self.provider.read(request).await?.data)
        }
    }

    const MINE: &[u8] = b"a piece of the owner's";
    const MORE: &[u8] = b"another piece of the owner's, a little longer";
    const THEIRS: &[u8] = b"a piece of someone else's";

    #[tokio::test]
    async fn the_owner_deletes_its_own_pieces_and_a_retry_finds_them_gone() {
        let s = Setup::new();
        let mine = s.store(&s.owner, MINE).await;
        let more = s.store(&s.owner, MORE).await;
        let before = s.provider.status().await.unwrap();
        assert_eq!(before.used, (MINE.len() + MORE.len()) as u64);
        assert_eq!(before.freed, 0);

        let deleted = s.delete(&s.owner, &[mine]).await.unwrap();
        let size = MINE.len() as u64;
        assert_eq!(
            deleted,
            Deleted {
                pieces: 1,
                freed: size
            }
        );
        let after = s.provider.status().await.unwrap();
        assert_eq!(
            (after.used, after.pieces, after.freed),
            (before.used - size, 1, size)
        );
        let err = s.read(&s.owner, mine).await.unwrap_err();
        assert!(matches!(err, NetError::NotFound(_)), "{err}");
        assert_eq!(s.read(&s.owner, more).await.unwrap(), MORE);

        // A retry (a new signature) finds nothing more to delete.
        let again = s.delete(&s.owner, &[mine]).await.unwrap();
        assert_eq!(again, Deleted::default());
        assert_eq!(s.provider.status().await.unwrap().freed, size);
    }

    #[tokio::test]
    async fn a_stranger_may_delete_nothing() {
        let s = Setup::new();
        let mine = s.store(&s.owner, MINE).await;
        let err = s.delete(&s.stranger, &[mine]).await.unwrap_err();
        assert!(matches!(err, NetError::Forbidden(_)), "{err}");
        assert!(err.to_string().contains("owner"), "{err}");
        let status = s.provider.status().await.unwrap();
        assert_eq!((status.pieces, status.freed), (1, 0));
        assert_eq!(s.read(&s.owner, mine).await.unwrap(), MINE);
    }

    #[tokio::test]
    async fn a_request_naming_another_owners_piece_deletes_none() {
        let s = Setup::new();
        let mine = s.store(&s.owner, MINE).await;
        let theirs = s.store(&s.stranger, THEIRS).await;
        let err = s.delete(&s.owner, &[mine, theirs]).await.unwrap_err();
        assert!(matches!(err, NetError::Forbidden(_)), "{err}");
        assert!(err.to_string().contains("nothing was deleted"), "{err}");
        let status = s.provider.status().await.unwrap();
        assert_eq!((status.pieces, status.freed), (2, 0));
        assert_eq!(s.read(&s.owner, mine).await.unwrap(), MINE);
        assert_eq!(s.read(&s.stranger, theirs).await.unwrap(), THEIRS);
    }

    #[tokio::test]
    async fn a_trusted_tracker_deletes_any_owners_pieces() {
        let s = Setup::new();
        let mine = s.store(&s.owner, MINE).await;
        let theirs = s.store(&s.stranger, THEIRS).await;
        let never = PieceId::of(b"never stored here");
        let deleted = s.delete(&s.tracker, &[mine, theirs, never]).await.unwrap();
        let freed = (MINE.len() + THEIRS.len()) as u64;
        assert_eq!(deleted, Deleted { pieces: 2, freed });
        let status = s.provider.status().await.unwrap();
        assert_eq!((status.used, status.pieces, status.freed), (0, 0, freed));
        for (reader, piece) in [(&s.owner, mine), (&s.stranger, theirs)] {
            let err = s.read(reader, piece).await.unwrap_err();
            assert!(matches!(err, NetError::NotFound(_)), "{err}");
        }
        let challenge = Challenge {
            piece: mine,
            kind: ChallengeKind::Sentinels(vec![0, 1]),
        };
        let request = s.tracker.sign(challenge).unwrap();
        let err = s.provider.challenge(request).await.unwrap_err();
        assert!(matches!(err, NetError::NotFound(_)), "{err}");
    }
}
