//! Known-answer vectors for what the network signs, tags and routes by: request signatures
//! (and the bytes they cover), node and peer ids, the keys peers share, reservation and
//! receipt tags, and which tracker answers for a segment.
//!
//! Every input is a constant and every expected value was printed by this code when it was
//! committed. Nodes of different builds talk to each other and trackers keep receipts, so a
//! vector that fails means old peers or records are refused: version the protocol, never just
//! paste the new value.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use ed25519_dalek::{Signature, VerifyingKey};
use prost::Message;
use wwt_net::index::{Append, LogOp, PutCatalog, entry_hash, open_entry};
use wwt_net::types::{Locate, NodeId, PieceId, Reservation, SegmentId, StoreReceipt};
use wwt_net::{Identity, PeerKeys, Signed, Verifier, proto, rendezvous};

#[path = "../../tests/support/pin.rs"]
#[macro_use]
mod pin;

fn bytes32(hex_text: &str) -> [u8; 32] {
    pin::unhex(hex_text).try_into().unwrap()
}

/// The client, tracker and provider of the vectors.
fn client() -> Identity {
    Identity::from_secret([0xc1; 32])
}

fn tracker() -> Identity {
    Identity::from_secret([0x7a; 32])
}

fn provider() -> Identity {
    Identity::from_secret([0x9d; 32])
}

// Node ids (ed25519 public keys) of the client, tracker and provider secrets.
const CLIENT_ID: &str = "acdcc8494d458f44a7aaac1d6a84ec624daee88436db2ae26e67ba645a106228";
const TRACKER_ID: &str = "ba42458e83ba7926ba8b8f3e9ab9caaf0f1c4918dda8c551084f7aeb1065b74b";
const PROVIDER_ID: &str = "40b0f498a16f2b943d74dc4f9d4acc05d0de9c935dd569ae831cf8fcdd4e3feb";
// The client's libp2p peer id (identity multihash of its protobuf-encoded ed25519 key).
const CLIENT_PEER_ID: &str = "12D3KooWMT9Z5UaS1QWjzP9NMtTVmbZfv95aTVyDGQjP2TezQ8gF";

#[test]
fn node_and_peer_ids() {
    pin!(CLIENT_ID, client().node_id().0);
    pin!(TRACKER_ID, tracker().node_id().0);
    pin!(PROVIDER_ID, provider().node_id().0);
    let peer = wwt_net::node::peer_id(&client().node_id()).unwrap();
    pin_str!(CLIENT_PEER_ID, peer.to_string());
    assert_eq!(wwt_net::node::node_id(&peer), Some(client().node_id()));
}

/// When the signed vectors were signed: 2026-01-01T00:00:00Z.
const SIGNED_AT_MS: u64 = 1_767_225_600_000;
const NONCE: [u8; 16] = [0x4e; 16];

/// The bytes a request signature covers, as `auth.rs` documents them:
/// `"wwt request v1\0" ‖ method ‖ "\0" ‖ public key ‖ timestamp (u64 LE) ‖ nonce ‖ BLAKE3(body)`.
fn signing_bytes(method: &str, signer: &NodeId, body: &[u8]) -> Vec<u8> {
    [
        &b"wwt request v1\0"[..],
        method.as_bytes(),
        b"\0",
        &signer.0,
        &SIGNED_AT_MS.to_le_bytes(),
        &NONCE,
        blake3::hash(body).as_bytes(),
    ]
    .concat()
}

// A `Locate` of segment 0x33.. signed by the client: the encoded body (protobuf)…
const LOCATE_BODY: &str = "0a203333333333333333333333333333333333333333333333333333333333333333";
// … its signature over the signing bytes of `/wwt.v1.Tracker/Locate`…
const LOCATE_SIGNATURE: &str = concat!(
    "3eb446fd6453aa8f00ab121c288061b24a8155d7386214a93a080f2f5c1de8b8",
    "9adc4a6dd66d2426edec70d6871d43f56110008d7eec5421eb6c2b023232a308",
);
// … and the whole `SignedRequest` message on the wire.
const LOCATE_WIRE: &str = concat!(
    "0a220a2033333333333333333333333333333333333333333333333333333333",
    "33333333127d0a20acdcc8494d458f44a7aaac1d6a84ec624daee88436db2ae2",
    "6e67ba645a1062281080d0eab6b7331a104e4e4e4e4e4e4e4e4e4e4e4e4e4e4e",
    "4e22403eb446fd6453aa8f00ab121c288061b24a8155d7386214a93a080f2f5c",
    "1de8b89adc4a6dd66d2426edec70d6871d43f56110008d7eec5421eb6c2b0232",
    "32a308",
);
// Log entry 4 (prev 0x44…, the client as its one replica, the catalog at version 4) signed
// by the client for `/wwt.v1.Index/Append`: its body, signature and entry hash, which the
// next entry names and every replica keeps.
const LOG_ENTRY_BODY: &str = "0804122044444444444444444444444444444444444444444444444444444444444444441a20acdcc8494d458f44a7aaac1d6a84ec624daee88436db2ae26e67ba645a1062283a120804120e7365616c656420636174616c6f67";
const LOG_ENTRY_SIGNATURE: &str = "96c0c8a4d34942fbd277f8acb809720d4420ade2d76ca5cb331b121c8e87185f1b749f0ca82dc389b3b24fa997367ef495f4677e7d89145701ec4ff2a144ad08";
const LOG_ENTRY_HASH: &str = "db253f073a30e4ad2dd4c63ab023b383b0785b86d66de6897a9169df26e193c3";

#[test]
fn signed_requests() {
    let locate = Locate {
        segment: SegmentId([0x33; 32]),
    };
    let signed = client().sign_with(locate, SIGNED_AT_MS, NONCE);
    pin!(LOCATE_BODY, signed.body());
    pin!(LOCATE_SIGNATURE, signed.auth().signature);
    let wire = proto::SignedRequest::from(signed.clone()).encode_to_vec();
    pin!(LOCATE_WIRE, &wire);

    // The signature covers exactly the documented bytes (ed25519 is deterministic).
    let key = VerifyingKey::from_bytes(&client().node_id().0).unwrap();
    let message = signing_bytes(
        "/wwt.v1.Tracker/Locate",
        &client().node_id(),
        &pin::unhex(LOCATE_BODY),
    );
    let signature = Signature::from_bytes(&pin::unhex(LOCATE_SIGNATURE).try_into().unwrap());
    key.verify_strict(&message, &signature).unwrap();

    // The committed wire message still verifies and decodes (a verifier whose window spans
    // any clock, since the vector's timestamp is fixed).
    let committed = proto::SignedRequest::decode(&pin::unhex(LOCATE_WIRE)[..]).unwrap();
    let request: Signed<Locate> = committed.try_into().unwrap();
    let verifier = Verifier::new(Duration::MAX);
    assert_eq!(
        verifier.verify(request).unwrap(),
        (client().node_id(), locate)
    );

    let entry = Append {
        seq: 4,
        prev: [0x44; 32],
        replicas: vec![client().node_id()],
        op: LogOp::Catalog(PutCatalog {
            expected_version: 3,
            blob: b"sealed catalog".to_vec(),
        }),
    };
    let signed = client().sign_with(entry.clone(), SIGNED_AT_MS, NONCE);
    pin!(LOG_ENTRY_BODY, signed.body());
    pin!(LOG_ENTRY_SIGNATURE, signed.auth().signature);
    pin!(LOG_ENTRY_HASH, entry_hash(&signed));
    let message = signing_bytes("/wwt.v1.Index/Append", &client().node_id(), signed.body());
    let signature = Signature::from_bytes(&signed.auth().signature);
    key.verify_strict(&message, &signature).unwrap();
    assert_eq!(open_entry(&signed).unwrap(), (client().node_id(), entry));
}

// The tracker's own tag key (BLAKE3 derive-key "wwt 2026-12 own tag key" of its secret).
const TRACKER_OWN_KEY: &str = "8076c31424121a47fb9c7eae70f4b1cba70288500450c0fe1fbe0b24a254e749";
// The key the tracker and the provider share (X25519 of their ed25519 keys, hashed with both
// ids).
const SHARED_KEY: &str = "8e6735b64dc3e90e9777f52f640f7d718a8fda4d167251d232c6e64498c8acc3";

#[test]
fn peer_keys() {
    let (t, p) = (PeerKeys::new(&tracker()), PeerKeys::new(&provider()));
    pin!(TRACKER_OWN_KEY, t.own());
    pin!(SHARED_KEY, t.shared(&provider().node_id()).unwrap());
    assert_eq!(p.shared(&tracker().node_id()).unwrap(), bytes32(SHARED_KEY));
}

fn reservation() -> Reservation {
    Reservation {
        piece: PieceId::of(b"piece bytes"),
        size: 11,
        segment: SegmentId([0x33; 32]),
        index: 5,
        provider: provider().node_id(),
        owner: client().node_id(),
        expires_ms: SIGNED_AT_MS + 3_600_000,
        tracker: tracker().node_id(),
        tracker_tag: [0; 32],
        provider_tag: [0; 32],
    }
}

// The tracker's tags on the reservation: under its own key, and under the key it shares with
// the provider (keyed BLAKE3 of "wwt reservation v2\0" ‖ the fields).
const RESERVATION_TRACKER_TAG: &str =
    "81aa1f5b959056cd7801f7dcc9e019e8b4ee0b362a472642849ea52c7a9f9343";
const RESERVATION_PROVIDER_TAG: &str =
    "d8131e7e8ab0d7f150fb0b39f67e5a7f3c724e91084ed8dd1948c8c3e502089d";
// The provider's receipt tag for that reservation ("wwt receipt v2\0" ‖ fields ‖ both tags).
const RECEIPT_TAG: &str = "60a1139bcd6ca276bf84a48b85eb0357f6dc5d0f653a0550da3703dbbd4370ee";

#[test]
fn reservation_and_receipt_tags() {
    let (t, p) = (PeerKeys::new(&tracker()), PeerKeys::new(&provider()));
    let issued = reservation().issue(&t).unwrap();
    pin!(RESERVATION_TRACKER_TAG, issued.tracker_tag);
    pin!(RESERVATION_PROVIDER_TAG, issued.provider_tag);
    let receipt = StoreReceipt::issue(issued, &p).unwrap();
    pin!(RECEIPT_TAG, receipt.tag);

    // Committed tags still check on both sides.
    let committed = Reservation {
        tracker_tag: bytes32(RESERVATION_TRACKER_TAG),
        provider_tag: bytes32(RESERVATION_PROVIDER_TAG),
        ..reservation()
    };
    committed.check_for_provider(&p).unwrap();
    committed.check_issued_by(&t).unwrap();
    let receipt = StoreReceipt {
        reservation: committed,
        tag: bytes32(RECEIPT_TAG),
    };
    receipt.check(&t).unwrap();
}

// Which of four trackers (secrets 1, 2, 3, 4) answers for three segments: their ranks by
// BLAKE3(tracker id ‖ segment id), as tracker numbers, one group per segment.
const RENDEZVOUS: &str = "3,4,2,1 1,3,2,4 2,3,1,4";

#[test]
fn rendezvous_ranks() {
    let ids: Vec<NodeId> = (1..=4u8)
        .map(|n| Identity::from_secret([n; 32]).node_id())
        .collect();
    let groups: Vec<String> = [[0x33u8; 32], [0x00; 32], [0xff; 32]]
        .iter()
        .map(|segment| {
            rendezvous::rank(segment, &ids)
                .iter()
                .map(|id| (ids.iter().position(|i| i == id).unwrap() + 1).to_string())
                .collect::<Vec<_>>()
                .join(",")
        })
        .collect();
    pin_str!(RENDEZVOUS, groups.join(" "));
}
