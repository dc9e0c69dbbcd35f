//! Identities and signed requests.
//!
//! A [`Signed`] request carries the encoded body and an [`Auth`]: the signer's public key, a
//! timestamp, a random nonce and an ed25519 signature over
//! `"wwt request v1\0" ‖ method ‖ "\0" ‖ public key ‖ timestamp (u64 LE) ‖ nonce ‖ BLAKE3(body)`.
//! The method name is signed so a body cannot be replayed against another endpoint. A
//! [`Verifier`] refuses unsigned, mis-signed and stale (outside its window) requests and
//! decodes and validates the body; once the service has authorized the signer, it records the
//! nonce and refuses a replay (nonce seen before within the window). Recording only
//! authorized requests, per signer, keeps strangers from filling the replay cache.
//!
//! Reservations and receipts, which only a tracker and one provider exchange, carry tags
//! instead of signatures: keyed BLAKE3 under a key the two share ([`PeerKeys`]), from X25519
//! between their ed25519 keys.
//!
//! A stored piece's bytes are not part of the body: they follow it in the same call, and the
//! body names them by hash (the reservation's piece id), which the receiver checks, as it
//! computes it anyway. Hashing a piece into the body's hash as well cost one more BLAKE3 pass
//! over every uploaded byte on each side.

use std::collections::{HashMap, HashSet, VecDeque};
use std::marker::PhantomData;
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use prost::Message;

use crate::types::NodeId;
use crate::{NetError, proto};

/// Milliseconds since the Unix epoch, by the local clock.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// A node's ed25519 key pair. Its public key is the [`NodeId`].
#[derive(Clone)]
pub struct Identity {
    key: SigningKey,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Identity({:?})", self.node_id())
    }
}

impl Identity {
    /// A fresh random identity.
    pub fn generate() -> Result<Identity, NetError> {
        let mut secret = [0u8; 32];
        getrandom::fill(&mut secret)
            .map_err(|e| NetError::Internal(format!("no randomness for a new identity: {e}")))?;
        Ok(Identity::from_secret(secret))
    }

    /// The identity with this 32-byte secret key (the same secret builds the libp2p keypair).
    pub fn from_secret(secret: [u8; 32]) -> Identity {
        Identity {
            key: SigningKey::from_bytes(&secret),
        }
    }

    /// The 32-byte secret key. Keep it out of logs.
    pub fn secret(&self) -> [u8; 32] {
        self.key.to_bytes()
    }

    /// Loads the identity from `path` (64 hex characters), or creates one there (mode 0600).
    pub fn load_or_create(path: &Path) -> Result<Identity, NetError> {
        Identity::load_or_create_with(path, Identity::generate)
    }

    /// Loads the identity from `path` (64 hex characters), or writes the one `fresh` makes
    /// there (mode 0600): a test network derives its nodes' keys from its seed this way.
    pub fn load_or_create_with(
        path: &Path,
        fresh: impl FnOnce() -> Result<Identity, NetError>,
    ) -> Result<Identity, NetError> {
        match std::fs::read_to_string(path) {
            Ok(text) => {
                let bytes = hex::decode(text.trim()).map_err(|_| {
                    NetError::BadRequest(format!("{} does not hold a hex key", path.display()))
                })?;
                let secret = <[u8; 32]>::try_from(bytes.as_slice()).map_err(|_| {
                    NetError::BadRequest(format!("{} does not hold 32 bytes", path.display()))
                })?;
                Ok(Identity::from_secret(secret))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let identity = fresh()?;
                write_private(path, hex::encode(identity.secret()).as_bytes()).map_err(|e| {
                    NetError::Internal(format!("cannot write {}: {e}", path.display()))
                })?;
                Ok(identity)
            }
            Err(e) => Err(NetError::Internal(format!(
                "cannot read {}: {e}",
                path.display()
            ))),
        }
    }

    /// The node id (public key).
    pub fn node_id(&self) -> NodeId {
        NodeId(self.key.verifying_key().to_bytes())
    }

    /// Signs arbitrary bytes (a request's signing bytes).
    pub(crate) fn sign_detached(&self, message: &[u8]) -> [u8; 64] {
        self.key.sign(message).to_bytes()
    }

    /// Signs a request body for its method, with the current time and a fresh nonce.
    pub fn sign<T: Body>(&self, body: T) -> Result<Signed<T>, NetError> {
        let mut nonce = [0u8; 16];
        getrandom::fill(&mut nonce)
            .map_err(|e| NetError::Internal(format!("no randomness for a nonce: {e}")))?;
        Ok(self.sign_with(body, now_ms(), nonce))
    }

    /// Signs with a given timestamp and nonce (tests of staleness and replay use this).
    pub fn sign_with<T: Body>(&self, body: T, timestamp_ms: u64, nonce: [u8; 16]) -> Signed<T> {
        let wire: T::Wire = body.into();
        self.sign_encoded(Bytes::from(wire.encode_to_vec()), timestamp_ms, nonce)
    }

    /// Signs an already-encoded body for `T`'s method, as is (the receiver decodes and
    /// validates it; tests use this to send garbage).
    pub fn sign_encoded<T: Body>(
        &self,
        body: Bytes,
        timestamp_ms: u64,
        nonce: [u8; 16],
    ) -> Signed<T> {
        let signer = self.node_id();
        let message = request_signing_bytes(T::METHOD, &signer, timestamp_ms, &nonce, &body);
        Signed {
            body,
            auth: Auth {
                signer,
                timestamp_ms,
                nonce,
                signature: self.sign_detached(&message),
            },
            _body: PhantomData,
        }
    }
}

/// The keys a node shares with the peers it deals with most (a tracker with its providers),
/// and one of its own, for tags on reservations and receipts: keyed BLAKE3, under a
/// microsecond, where an ed25519 signature costs about 18 µs and its check 41 µs (the upload
/// made and checked about 20 of each per segment for reservations and receipts alone).
///
/// The key shared with a peer is X25519 between the two ed25519 keys (each side's secret
/// scalar with the other's public key in Montgomery form), hashed with both node ids; it is
/// computed once per peer and kept. Only the two can make or check a tag under it. Using one
/// key pair for both Ed25519 and X25519 is the construction studied in "On using the same key
/// pair for Ed25519 and an X25519 based KEM" (ePrint 2021/509); the shared secret only ever
/// keys BLAKE3.
pub struct PeerKeys {
    node: NodeId,
    scalar: [u8; 32],
    own: [u8; 32],
    shared: Mutex<HashMap<NodeId, [u8; 32]>>,
}

impl std::fmt::Debug for PeerKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PeerKeys({:?})", self.node)
    }
}

impl PeerKeys {
    /// The keys of `identity`.
    pub fn new(identity: &Identity) -> PeerKeys {
        PeerKeys {
            node: identity.node_id(),
            scalar: identity.key.to_scalar_bytes(),
            own: blake3::derive_key("wwt 2026-12 own tag key", &identity.secret()),
            shared: Mutex::new(HashMap::new()),
        }
    }

    /// This node's id.
    pub fn node_id(&self) -> NodeId {
        self.node
    }

    /// The key of this node alone: tags under it are checked by this node only.
    pub fn own(&self) -> &[u8; 32] {
        &self.own
    }

    /// The key this node shares with `peer`. `Forbidden` if `peer` is not a usable public
    /// key (not a curve point, or one of small order, which would make the key public).
    pub fn shared(&self, peer: &NodeId) -> Result<[u8; 32], NetError> {
        let cache = || NetError::Internal("peer key cache poisoned".into());
        if let Some(key) = self.shared.lock().map_err(|_| cache())?.get(peer) {
            return Ok(*key);
        }
        let unusable = || NetError::Forbidden(format!("{peer} is not a usable public key"));
        let point = VerifyingKey::from_bytes(&peer.0)
            .map_err(|_| unusable())?
            .to_montgomery();
        let secret = point.mul_clamped(self.scalar);
        if secret.to_bytes() == [0; 32] {
            return Err(unusable());
        }
        let (low, high) = if self.node.0 <= peer.0 {
            (&self.node, peer)
        } else {
            (peer, &self.node)
        };
        let mut material = [0u8; 96];
        material[..32].copy_from_slice(&secret.to_bytes());
        material[32..64].copy_from_slice(&low.0);
        material[64..].copy_from_slice(&high.0);
        let key = blake3::derive_key("wwt 2026-12 peer key", &material);
        self.shared.lock().map_err(|_| cache())?.insert(*peer, key);
        Ok(key)
    }
}

#[cfg(unix)]
fn write_private(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(contents)?;
    file.sync_all()
}

#[cfg(not(unix))]
fn write_private(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(path, contents)
}

/// Whether `signature` is a valid ed25519 signature by `signer` over `message`.
pub fn verify_detached(signer: &NodeId, message: &[u8], signature: &[u8; 64]) -> bool {
    VerifyingKey::from_bytes(&signer.0).is_ok_and(|key| {
        key.verify_strict(message, &Signature::from_bytes(signature))
            .is_ok()
    })
}

/// Whether `request` is signed by its signer for `T`'s method; its time is not checked (a
/// stored log entry is checked long after it was signed).
pub fn check_signature<T: Body>(request: &Signed<T>) -> Result<(), NetError> {
    let auth = &request.auth;
    let message = request_signing_bytes(
        T::METHOD,
        &auth.signer,
        auth.timestamp_ms,
        &auth.nonce,
        &request.body,
    );
    if verify_detached(&auth.signer, &message, &auth.signature) {
        Ok(())
    } else {
        Err(NetError::Unauthenticated(format!(
            "signature by {} does not verify for {}",
            auth.signer,
            T::METHOD
        )))
    }
}

fn request_signing_bytes(
    method: &str,
    signer: &NodeId,
    timestamp_ms: u64,
    nonce: &[u8; 16],
    body: &[u8],
) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 + method.len() + 1 + 32 + 8 + 16 + 32);
    out.extend_from_slice(b"wwt request v1\0");
    out.extend_from_slice(method.as_bytes());
    out.push(0);
    out.extend_from_slice(&signer.0);
    out.extend_from_slice(&timestamp_ms.to_le_bytes());
    out.extend_from_slice(nonce);
    out.extend_from_slice(blake3::hash(body).as_bytes());
    out
}

/// A request body that travels signed: its wire message and the gRPC method it is sent to.
pub trait Body: Sized + Into<Self::Wire> + TryFrom<Self::Wire, Error = NetError> {
    /// The protobuf message on the wire.
    type Wire: Message + Default;
    /// The full gRPC method path, e.g. `/wwt.v1.Provider/Store`; part of what is signed.
    const METHOD: &'static str;
}

macro_rules! body {
    ($t:ty, $wire:ty, $method:literal) => {
        impl Body for $t {
            type Wire = $wire;
            const METHOD: &'static str = $method;
        }
    };
}

body!(
    crate::types::StorePiece,
    proto::StoreRequest,
    "/wwt.v1.Provider/Store"
);
body!(
    crate::types::ReadPiece,
    proto::ReadRequest,
    "/wwt.v1.Provider/Read"
);
body!(
    crate::types::Heartbeat,
    proto::Heartbeat,
    "/wwt.v1.Tracker/Heartbeat"
);
body!(
    crate::types::ReserveSegment,
    proto::ReserveRequest,
    "/wwt.v1.Tracker/Reserve"
);
body!(
    crate::types::ConfirmStored,
    proto::ConfirmRequest,
    "/wwt.v1.Tracker/Confirm"
);
body!(
    crate::types::Locate,
    proto::LocateRequest,
    "/wwt.v1.Tracker/Locate"
);
body!(
    crate::audit::Challenge,
    proto::ChallengeRequest,
    "/wwt.v1.Provider/Challenge"
);
body!(
    crate::audit::Entrust,
    proto::EntrustRequest,
    "/wwt.v1.Tracker/Entrust"
);
body!(
    crate::audit::Complaint,
    proto::ComplainRequest,
    "/wwt.v1.Tracker/Complain"
);

body!(
    crate::index::Append,
    proto::LogEntry,
    "/wwt.v1.Index/Append"
);
body!(
    crate::audit::Mirror,
    proto::MirrorRequest,
    "/wwt.v1.Tracker/Mirror"
);
body!(
    crate::types::DeletePieces,
    proto::DeleteRequest,
    "/wwt.v1.Provider/Delete"
);
body!(
    crate::types::Forget,
    proto::ForgetRequest,
    "/wwt.v1.Tracker/Forget"
);
body!(
    crate::audit::Lease,
    proto::LeaseRequest,
    "/wwt.v1.Tracker/Lease"
);
body!(
    crate::node::AddressRecord,
    proto::AddressRecord,
    "wwt.v1.AddressRecord"
);
body!(
    crate::index::HeadRecord,
    proto::HeadRecord,
    "wwt.v1.HeadRecord"
);
body!(
    crate::index::GetHead,
    proto::GetHeadRequest,
    "/wwt.v1.Index/Head"
);
body!(
    crate::index::GetEntries,
    proto::GetEntriesRequest,
    "/wwt.v1.Index/Entries"
);
body!(
    crate::index::QueryTable,
    proto::QueryRequest,
    "/wwt.v1.Index/Query"
);
body!(
    crate::index::GetCatalog,
    proto::GetCatalogRequest,
    "/wwt.v1.Index/GetCatalog"
);

/// Who signed a request, when, and the signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Auth {
    /// The signer's node id (public key).
    pub signer: NodeId,
    /// When it was signed, in milliseconds since the Unix epoch.
    pub timestamp_ms: u64,
    /// A random nonce, unique per request.
    pub nonce: [u8; 16],
    /// The signature.
    pub signature: [u8; 64],
}

/// A signed request whose body decodes to `T` (once verified).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signed<T> {
    body: Bytes,
    auth: Auth,
    _body: PhantomData<fn() -> T>,
}

impl<T> Signed<T> {
    /// Who claims to have signed it (not yet verified).
    pub fn auth(&self) -> &Auth {
        &self.auth
    }

    /// The encoded body.
    pub fn body(&self) -> &Bytes {
        &self.body
    }

    /// The request as it travels (an encoded `SignedRequest`), to keep it as signed.
    pub fn to_bytes(&self) -> Vec<u8> {
        proto::SignedRequest::from(Signed::<T> {
            body: self.body.clone(),
            auth: self.auth.clone(),
            _body: PhantomData,
        })
        .encode_to_vec()
    }

    /// A request kept with [`Signed::to_bytes`] (its signature is not checked here).
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, NetError> {
        Signed::try_from(proto::SignedRequest::decode(bytes)?)
    }
}

impl<T> TryFrom<proto::SignedRequest> for Signed<T> {
    type Error = NetError;
    fn try_from(w: proto::SignedRequest) -> Result<Self, NetError> {
        let auth = w
            .auth
            .ok_or_else(|| NetError::Unauthenticated("request is not signed".into()))?;
        let malformed = |what: &str| NetError::Unauthenticated(format!("malformed auth: {what}"));
        Ok(Signed {
            body: w.body,
            auth: Auth {
                signer: NodeId::from_slice(&auth.public_key)
                    .map_err(|_| malformed("public key is not 32 bytes"))?,
                timestamp_ms: auth.timestamp_ms,
                nonce: <[u8; 16]>::try_from(auth.nonce.as_ref())
                    .map_err(|_| malformed("nonce is not 16 bytes"))?,
                signature: <[u8; 64]>::try_from(auth.signature.as_ref())
                    .map_err(|_| malformed("signature is not 64 bytes"))?,
            },
            _body: PhantomData,
        })
    }
}

impl<T> From<Signed<T>> for proto::SignedRequest {
    fn from(s: Signed<T>) -> Self {
        proto::SignedRequest {
            body: s.body,
            auth: Some(proto::Auth {
                public_key: s.auth.signer.to_wire(),
                timestamp_ms: s.auth.timestamp_ms,
                nonce: Bytes::copy_from_slice(&s.auth.nonce),
                signature: Bytes::copy_from_slice(&s.auth.signature),
            }),
        }
    }
}

/// The most nonces a [`Verifier`] remembers in all: past this it refuses every signer until
/// some expire. About 80 bytes each, so at most some 80 MiB.
pub const MAX_REMEMBERED_NONCES: usize = 1 << 20;

/// The most nonces a [`Verifier`] remembers for one signer: past this it refuses that signer,
/// and no other, until some of its own expire. Over the default 120 s window that is about
/// 2,000 requests a second from one signer, more than a tracker auditing a provider of a
/// million pieces sends; a quarter of [`MAX_REMEMBERED_NONCES`], so one flooding signer
/// cannot fill the whole cache.
pub const MAX_NONCES_PER_SIGNER: usize = 1 << 18;

/// Checks signed requests in two steps, so that only signers a service serves take room in
/// its replay cache.
///
/// [`Verifier::check`] checks the signature and freshness and decodes the body, recording
/// nothing; the service then decides whether the signer may do what it asks (owns the piece,
/// is a trusted tracker, holds a reservation), and only then records the request with
/// [`Verifier::accept`], which refuses a replay. A stranger's refused requests thus cost the
/// node a signature check, never a slot that a real user's request needs.
///
/// Nonces are remembered per signer, at most [`MAX_NONCES_PER_SIGNER`] each and
/// [`MAX_REMEMBERED_NONCES`] in all, each until a request with its timestamp would be refused
/// as stale anyway.
#[derive(Debug)]
pub struct Verifier {
    window_ms: u64,
    per_signer: usize,
    total: usize,
    seen: Mutex<NonceCache>,
}

/// A request whose signature and freshness [`Verifier::check`] checked and whose body it
/// decoded, not yet recorded against replay: hand it to [`Verifier::accept`] once the signer
/// is authorized.
#[derive(Debug)]
#[must_use = "a checked request is not yet recorded against replay: pass it to Verifier::accept"]
pub struct Checked<T> {
    signer: NodeId,
    timestamp_ms: u64,
    nonce: [u8; 16],
    body: T,
}

impl<T> Checked<T> {
    /// The signer, whose signature was checked.
    pub fn signer(&self) -> NodeId {
        self.signer
    }

    /// The decoded, validated body, for the service's authorization.
    pub fn body(&self) -> &T {
        &self.body
    }
}

/// The nonces a verifier remembers.
#[derive(Debug, Default)]
struct NonceCache {
    /// Each signer's nonces within their window.
    by_signer: HashMap<NodeId, HashSet<[u8; 16]>>,
    /// Every remembered nonce with the time (ms) after which it may be forgotten, oldest first.
    by_expiry: VecDeque<(u64, NodeId, [u8; 16])>,
}

impl NonceCache {
    /// Forgets the nonces whose expiry passed before `now`. The queue is only roughly sorted
    /// (expiry depends on the timestamp), so pruning from the front may keep some entries a
    /// little longer, but never forgets one early.
    fn forget_expired(&mut self, now: u64) {
        while let Some(&(expiry, signer, nonce)) = self.by_expiry.front() {
            if expiry >= now {
                break;
            }
            self.by_expiry.pop_front();
            if let Some(nonces) = self.by_signer.get_mut(&signer) {
                nonces.remove(&nonce);
                if nonces.is_empty() {
                    self.by_signer.remove(&signer);
                }
            }
        }
    }
}

impl Default for Verifier {
    fn default() -> Self {
        Verifier::new(Duration::from_secs(120))
    }
}

impl Verifier {
    /// A verifier accepting timestamps within `window` of its clock, either way, remembering
    /// at most [`MAX_NONCES_PER_SIGNER`] nonces per signer and [`MAX_REMEMBERED_NONCES`] in
    /// all.
    pub fn new(window: Duration) -> Verifier {
        Verifier::with_limits(window, MAX_NONCES_PER_SIGNER, MAX_REMEMBERED_NONCES)
    }

    /// A verifier accepting timestamps within `window`, remembering at most `per_signer`
    /// nonces for one signer and `total` in all.
    pub fn with_limits(window: Duration, per_signer: usize, total: usize) -> Verifier {
        Verifier {
            window_ms: u64::try_from(window.as_millis()).unwrap_or(u64::MAX),
            per_signer,
            total,
            seen: Mutex::new(NonceCache::default()),
        }
    }

    /// Checks `request`'s signature and freshness and decodes its body, recording nothing:
    /// the service authorizes the signer, then records the request with [`Verifier::accept`].
    pub fn check<T: Body>(&self, request: Signed<T>) -> Result<Checked<T>, NetError> {
        check_signature(&request)?;
        let auth = request.auth;
        let now = now_ms();
        if auth.timestamp_ms.abs_diff(now) > self.window_ms {
            return Err(NetError::Unauthenticated(format!(
                "request is stale: signed at {} ms, now {now} ms, window ±{} ms; check the clock",
                auth.timestamp_ms, self.window_ms
            )));
        }
        let body = T::try_from(T::Wire::decode(request.body)?)?;
        Ok(Checked {
            signer: auth.signer,
            timestamp_ms: auth.timestamp_ms,
            nonce: auth.nonce,
            body,
        })
    }

    /// Records a checked request of an authorized signer and returns its signer and body;
    /// refuses it if its nonce was seen before within the window (a replay), or if the signer
    /// (or all signers together) sent more requests within the window than the verifier
    /// remembers.
    pub fn accept<T>(&self, checked: Checked<T>) -> Result<(NodeId, T), NetError> {
        let now = now_ms();
        let mut seen = self
            .seen
            .lock()
            .map_err(|_| NetError::Internal("nonce cache poisoned".into()))?;
        seen.forget_expired(now);
        let Checked {
            signer,
            timestamp_ms,
            nonce,
            body,
        } = checked;
        let held = match seen.by_signer.get(&signer) {
            Some(nonces) if nonces.contains(&nonce) => {
                return Err(NetError::Unauthenticated(
                    "request replayed: its nonce was already used; sign it again".into(),
                ));
            }
            Some(nonces) => nonces.len(),
            None => 0,
        };
        if held >= self.per_signer {
            return Err(NetError::Unavailable(format!(
                "{signer} sent {} requests within {} ms, the most this node takes from one \
                 signer; send fewer and retry shortly",
                self.per_signer, self.window_ms
            )));
        }
        if seen.by_expiry.len() >= self.total {
            return Err(NetError::Unavailable(
                "too many recent requests; retry shortly".into(),
            ));
        }
        seen.by_signer.entry(signer).or_default().insert(nonce);
        // A nonce may be forgotten once a request with its timestamp would be refused as stale
        // anyway: expiry ≥ timestamp + window.
        let expiry = timestamp_ms.max(now).saturating_add(self.window_ms);
        seen.by_expiry.push_back((expiry, signer, nonce));
        Ok((signer, body))
    }

    /// Checks and records `request` at once: for a service that serves every validly signed
    /// request (any owner may reserve at a tracker). A service that serves only some signers
    /// uses [`Verifier::check`], authorizes, then [`Verifier::accept`], so that strangers'
    /// requests take no room in the replay cache.
    pub fn verify<T: Body>(&self, request: Signed<T>) -> Result<(NodeId, T), NetError> {
        self.accept(self.check(request)?)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::types::{Locate, SegmentId};

    fn locate() -> Locate {
        Locate {
            segment: SegmentId([3; 32]),
        }
    }

    #[test]
    fn peers_share_a_key_that_no_third_party_has() {
        let [a, b, c] = [1u8, 2, 3].map(|n| Identity::from_secret([n; 32]));
        let (ka, kb, kc) = (PeerKeys::new(&a), PeerKeys::new(&b), PeerKeys::new(&c));
        let ab = ka.shared(&b.node_id()).unwrap();
        assert_eq!(ab, kb.shared(&a.node_id()).unwrap());
        assert_eq!(ab, ka.shared(&b.node_id()).unwrap(), "cached");
        assert_ne!(ab, kc.shared(&a.node_id()).unwrap());
        assert_ne!(ab, kc.shared(&b.node_id()).unwrap());
        assert_ne!(ka.own(), kb.own());
        assert_ne!(ka.own(), &ab);
        // A small-order point (here the identity, 1 then zeros) would make the key public.
        let mut small = [0u8; 32];
        small[0] = 1;
        let err = ka.shared(&NodeId(small)).unwrap_err();
        assert!(matches!(err, NetError::Forbidden(_)), "{err}");
    }

    proptest::proptest! {
        #[test]
        fn any_flipped_byte_breaks_the_signature(flip in 0usize..(32 + 64 + 16 + 8), bit in 0u8..8) {
            let id = Identity::from_secret([5; 32]);
            let signed = id.sign_with(locate(), now_ms(), [7; 16]);
            let mut wire = proto::SignedRequest::from(signed);
            let mut auth = wire.auth.take().unwrap();
            let mut body = wire.body.to_vec();
            let mut key = auth.public_key.to_vec();
            let mut sig = auth.signature.to_vec();
            let mut nonce = auth.nonce.to_vec();
            match flip {
                i if i < 32 => {
                    let n = body.len();
                    body[i % n] ^= 1 << bit;
                }
                i if i < 96 => sig[i - 32] ^= 1 << bit,
                i if i < 112 => nonce[i - 96] ^= 1 << bit,
                i => key[(i - 112) * 4] ^= 1 << bit,
            }
            auth.public_key = key.into();
            auth.signature = sig.into();
            auth.nonce = nonce.into();
            wire.auth = Some(auth);
            wire.body = body.into();
            let err = Signed::<Locate>::try_from(wire)
                .and_then(|s| Verifier::default().verify(s))
                .unwrap_err();
            proptest::prop_assert!(matches!(err, NetError::Unauthenticated(_)), "{}", err);
        }
    }

    #[test]
    fn a_signed_request_verifies_once() {
        let id = Identity::generate().unwrap();
        let verifier = Verifier::default();
        let req = id.sign(locate()).unwrap();
        let (signer, body) = verifier.verify(req.clone()).unwrap();
        assert_eq!((signer, body), (id.node_id(), locate()));
        let replay = verifier.verify(req).unwrap_err();
        assert!(replay.to_string().contains("replayed"), "{replay}");
    }

    #[test]
    fn a_request_checked_but_not_accepted_is_not_recorded() {
        let id = Identity::generate().unwrap();
        let verifier = Verifier::with_limits(Duration::from_secs(60), 1, 1);
        let req = id.sign(locate()).unwrap();
        // Refused by the service (say, as forbidden) as often as it is sent: no slot is taken.
        for _ in 0..10 {
            let checked = verifier.check(req.clone()).unwrap();
            assert_eq!(checked.signer(), id.node_id());
        }
        let (signer, body) = verifier
            .accept(verifier.check(req.clone()).unwrap())
            .unwrap();
        assert_eq!((signer, body), (id.node_id(), locate()));
        let replay = verifier.accept(verifier.check(req).unwrap()).unwrap_err();
        assert!(matches!(&replay, NetError::Unauthenticated(m) if m.contains("replayed")));
    }

    #[test]
    fn a_flooding_signer_is_refused_alone_until_the_cache_is_full() {
        let window = Duration::from_secs(60);
        let verifier = Verifier::with_limits(window, 3, 5);
        let [flooder, user, late] = [1u8, 2, 3].map(|n| Identity::from_secret([n; 32]));
        let accept = |id: &Identity| verifier.accept(verifier.check(id.sign(locate())?)?);
        for _ in 0..3 {
            accept(&flooder).unwrap();
        }
        let err = accept(&flooder).unwrap_err();
        assert!(
            matches!(&err, NetError::Unavailable(m) if m.contains(&flooder.node_id().to_string())),
            "{err}"
        );
        // Another signer is still served, up to the total.
        accept(&user).unwrap();
        accept(&user).unwrap();
        let err = accept(&late).unwrap_err();
        assert!(
            matches!(&err, NetError::Unavailable(m) if m.contains("too many")),
            "{err}"
        );
    }

    #[test]
    fn nonces_are_forgotten_once_their_requests_would_be_stale() {
        let id = Identity::generate().unwrap();
        let verifier = Verifier::with_limits(Duration::from_millis(50), 1, 1);
        let first = id.sign(locate()).unwrap();
        verifier.accept(verifier.check(first).unwrap()).unwrap();
        let start = std::time::Instant::now();
        // The nonce is kept for a window after it was recorded (a request signed in the future
        // stays fresh that long): then a fresh request is accepted although the cache holds
        // one nonce at most.
        loop {
            let fresh = id.sign(locate()).unwrap();
            match verifier.accept(verifier.check(fresh).unwrap()) {
                Ok(_) => break,
                Err(NetError::Unavailable(_)) if start.elapsed() < Duration::from_secs(5) => {
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err(e) => panic!("the expired nonce was never forgotten: {e}"),
            }
        }
    }

    #[test]
    fn stale_tampered_and_unsigned_requests_are_refused() {
        let id = Identity::generate().unwrap();
        let verifier = Verifier::new(Duration::from_secs(10));
        let stale = id.sign_with(locate(), now_ms() - 60_000, [1; 16]);
        let err = verifier.verify(stale).unwrap_err();
        assert!(err.to_string().contains("stale"), "{err}");

        let mut wire = proto::SignedRequest::from(id.sign(locate()).unwrap());
        wire.body = Bytes::from_static(b"\x0a\x20tampered-tampered-tampered-tamp");
        let err = verifier
            .verify(Signed::<Locate>::try_from(wire).unwrap())
            .unwrap_err();
        assert!(matches!(err, NetError::Unauthenticated(_)), "{err}");

        let unsigned = proto::SignedRequest {
            body: Bytes::new(),
            auth: None,
        };
        assert!(matches!(
            Signed::<Locate>::try_from(unsigned),
            Err(NetError::Unauthenticated(_))
        ));
    }

    #[test]
    fn a_body_signed_for_one_method_is_refused_by_another() {
        let id = Identity::generate().unwrap();
        let signed = id.sign(locate()).unwrap();
        let wire = proto::SignedRequest::from(signed);
        let as_read = Signed::<crate::types::ReadPiece>::try_from(wire).unwrap();
        assert!(matches!(
            Verifier::default().verify(as_read),
            Err(NetError::Unauthenticated(_))
        ));
    }

    #[test]
    fn identities_persist() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys").join("node.key");
        let a = Identity::load_or_create(&path).unwrap();
        let b = Identity::load_or_create(&path).unwrap();
        assert_eq!(a.node_id(), b.node_id());
    }
}
