//! Whole-network tests of the provider and tracker services: trackers and providers of a
//! `LocalNet` over the in-memory network and over real loopback gRPC, with the same test
//! bodies, driven by hand (reserve, store, confirm, locate, read) rather than by the client's
//! storage path. Each test prints its seed (node keys, placement and faults derive from it);
//! `WWT_TEST_SEED=0x…` replays one.
#![allow(clippy::unwrap_used)]

use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::future::try_join_all;
use wwt_devnet::{LocalNet, Shape, Transport};
use wwt_net::faults::{Fault, Faults, FaultyConnector};
use wwt_net::types::{
    ByteRange, ConfirmStored, Locate, NodeId, PieceId, PieceSpec, PieceStream, Placement,
    ReadPiece, Reservation, ReserveSegment, SegmentId, StorePiece, StoreReceipt,
};
use wwt_net::{Connector, Identity, NetError, PeerKeys, TrackerApi, now_ms, rendezvous};

/// Runs one test body over both transports.
macro_rules! on_both_transports {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn memory() {
                super::within_deadline(super::$name(super::Transport::Memory)).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn grpc() {
                super::within_deadline(super::$name(super::Transport::Grpc)).await;
            }
        }
    )*};
}

on_both_transports!(
    segments_survive_two_dead_providers_not_three,
    bad_input_is_refused_and_changes_nothing,
    faulty_providers_are_detected,
    trackers_pair_segments_by_rendezvous,
    the_dht_alone_finds_a_segments_holders,
);

/// Runs a test body, failing it (instead of hanging the run) after two minutes.
async fn within_deadline(body: impl std::future::Future<Output = ()>) {
    tokio::time::timeout(Duration::from_secs(120), body)
        .await
        .expect("test timed out");
}

/// The largest piece the providers take.
const MAX_PIECE: u64 = 1 << 20;

/// The seed these tests run with unless `WWT_TEST_SEED` replays another.
const SEED: u64 = 0x4e7_2026;

/// A network of `trackers` trackers and `providers` providers, heartbeating every 100 ms,
/// their keys and placement drawn from the test seed (printed; also returned).
async fn start(
    transport: Transport,
    trackers: usize,
    providers: usize,
) -> (tempfile::TempDir, LocalNet, u64) {
    let seed = wwt_tests::seed(SEED);
    let dir = tempfile::tempdir().unwrap();
    let shape = Shape {
        trackers,
        providers,
        index_providers: providers.min(Shape::default().index_providers),
        capacity: 64 << 20,
        max_piece_bytes: MAX_PIECE,
        heartbeat_ms: 100,
        transport,
        http: false,
        seed: Some(seed),
    };
    let net = LocalNet::start(dir.path(), shape).await.unwrap();
    (dir, net, seed)
}

/// Tracker `t`, through the network's transport.
fn tracker(net: &LocalNet, t: usize) -> Arc<dyn TrackerApi> {
    net.connector()
        .tracker(&net.endpoints.trackers[t].address)
        .unwrap()
}

/// The trackers' node ids, in order.
fn tracker_ids(net: &LocalNet) -> Vec<NodeId> {
    net.endpoints
        .tracker_list()
        .unwrap()
        .into_iter()
        .map(|(id, _)| id)
        .collect()
}

/// The tracker responsible for `segment`.
fn tracker_for(net: &LocalNet, segment: &SegmentId) -> Arc<dyn TrackerApi> {
    let ids = tracker_ids(net);
    let owner = rendezvous::responsible(&segment.0, &ids).unwrap();
    tracker(net, ids.iter().position(|id| *id == owner).unwrap())
}

/// Deterministic pseudo-random bytes.
fn bytes_from(seed: &[u8], len: usize) -> Bytes {
    let mut out = vec![0u8; len];
    blake3::Hasher::new()
        .update(seed)
        .finalize_xof()
        .fill(&mut out);
    Bytes::from(out)
}

/// A segment id and its `n` pieces of `len` bytes, derived from `seed`.
fn segment(seed: u64, n: usize, len: usize) -> (SegmentId, Vec<Bytes>) {
    let id = SegmentId(*blake3::hash(&seed.to_le_bytes()).as_bytes());
    let pieces = (0..n)
        .map(|i| bytes_from(&[&seed.to_le_bytes()[..], &[i as u8]].concat(), len))
        .collect();
    (id, pieces)
}

fn specs(pieces: &[Bytes]) -> Vec<PieceSpec> {
    pieces
        .iter()
        .enumerate()
        .map(|(i, data)| PieceSpec {
            index: i as u32,
            piece: PieceId::of(data),
            size: data.len() as u64,
        })
        .collect()
}

/// Reserves at the responsible tracker.
async fn reserve(
    net: &LocalNet,
    client: &Identity,
    segment: SegmentId,
    pieces: &[Bytes],
) -> Result<Placement, NetError> {
    let req = ReserveSegment {
        segment,
        pieces: specs(pieces),
    };
    tracker_for(net, &segment).reserve(client.sign(req)?).await
}

/// What a client does to put a segment: reserve, store all pieces in parallel, confirm.
async fn put_segment(
    net: &LocalNet,
    client: &Identity,
    segment: SegmentId,
    pieces: &[Bytes],
) -> Result<Vec<StoreReceipt>, NetError> {
    let placement = reserve(net, client, segment, pieces).await?;
    let connector = net.connector();
    let stores = placement.pieces.iter().zip(pieces).map(|(placed, data)| {
        let provider = connector.provider(&placed.address);
        let req = client.sign(StorePiece {
            reservation: placed.reservation.clone(),
        });
        let data = PieceStream::whole(data.clone());
        async move { provider?.store(req?, data).await }
    });
    let receipts = try_join_all(stores).await?;
    tracker_for(net, &segment)
        .confirm(client.sign(ConfirmStored {
            receipts: receipts.clone(),
        })?)
        .await?;
    Ok(receipts)
}

/// How many of a segment's pieces can be read back intact from some holder.
async fn readable_pieces(
    net: &LocalNet,
    connector: &dyn Connector,
    client: &Identity,
    segment: SegmentId,
) -> usize {
    let location = tracker_for(net, &segment)
        .locate(client.sign(Locate { segment }).unwrap())
        .await
        .unwrap();
    let mut good = 0;
    for piece in &location.pieces {
        for holder in &piece.holders {
            let Ok(provider) = connector.provider(&holder.address) else {
                continue;
            };
            let req = client
                .sign(ReadPiece {
                    piece: piece.piece,
                    range: None,
                })
                .unwrap();
            if let Ok(data) = provider.read(req).await
                && data.verify_whole().is_ok()
            {
                good += 1;
                break;
            }
        }
    }
    good
}

const SEGMENTS: u64 = 40;
const K: usize = 4;
const M: usize = 2;

async fn segments_survive_two_dead_providers_not_three(transport: Transport) {
    let (_dir, mut net, _) = start(transport, 1, 6).await;
    let client = Identity::generate().unwrap();
    for s in 0..SEGMENTS {
        let (id, pieces) = segment(s, K + M, 2048);
        let receipts = put_segment(&net, &client, id, &pieces).await.unwrap();
        let holders: HashSet<NodeId> = receipts.iter().map(|r| r.reservation.provider).collect();
        assert_eq!(holders.len(), K + M, "segment {s}: pieces share a provider");
    }

    // A ranged read returns exactly the requested bytes.
    let (id, pieces) = segment(0, K + M, 2048);
    let location = tracker_for(&net, &id)
        .locate(client.sign(Locate { segment: id }).unwrap())
        .await
        .unwrap();
    assert_eq!(location.pieces.len(), K + M);
    let piece = &location.pieces[1];
    let provider = net.connector().provider(&piece.holders[0].address).unwrap();
    let range = ByteRange {
        offset: 100,
        len: 500,
    };
    let read = provider
        .read(
            client
                .sign(ReadPiece {
                    piece: piece.piece,
                    range: Some(range),
                })
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(read.data, pieces[1].slice(100..600));
    // The range comes with a Bao slice proving it against the piece id.
    let proven = wwt_engine::proof::verify(
        &wwt_engine::PieceHash(piece.piece.0),
        range.offset,
        range.len,
        &read.proof,
    )
    .unwrap();
    assert_eq!(proven, read.data);

    net.stop_provider(0).await.unwrap();
    net.stop_provider(1).await.unwrap();
    for s in 0..SEGMENTS {
        let (id, _) = segment(s, K + M, 2048);
        let good = readable_pieces(&net, net.connector().as_ref(), &client, id).await;
        assert_eq!(
            good, K,
            "segment {s}: {good} readable pieces after 2 deaths"
        );
    }
    net.stop_provider(2).await.unwrap();
    for s in 0..SEGMENTS {
        let (id, _) = segment(s, K + M, 2048);
        let good = readable_pieces(&net, net.connector().as_ref(), &client, id).await;
        assert!(
            good < K,
            "segment {s}: still {good} readable pieces after 3 deaths"
        );
    }
}

/// Asserts that `result` is an error that `want` accepts.
fn expect<T>(result: Result<T, NetError>, what: &str, want: impl Fn(&NetError) -> bool) {
    let err = result.err().unwrap_or_else(|| panic!("{what}: accepted"));
    assert!(want(&err), "{what}: wrong error {err}");
}

/// Bytes a provider's piece log takes on disk (the holes of refused pieces take none).
fn log_on_disk(dir: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::read_dir(dir.join("log"))
        .map(|files| {
            files
                .flatten()
                .filter_map(|f| f.metadata().ok())
                .map(|m| m.blocks() * 512)
                .sum()
        })
        .unwrap_or(0)
}

async fn bad_input_is_refused_and_changes_nothing(transport: Transport) {
    let (_dir, net, _) = start(transport, 1, 1).await;
    let client = Identity::generate().unwrap();
    let stranger = Identity::generate().unwrap();
    let provider = net
        .connector()
        .provider(&net.endpoints.providers[0].address)
        .unwrap();
    let (id, pieces) = segment(7, 1, 1000);
    let placed = reserve(&net, &client, id, &pieces).await.unwrap().pieces[0].clone();
    let good = placed.reservation.clone();
    let store = |who: &Identity, reservation: Reservation, data: Bytes| {
        let request = who.sign(StorePiece { reservation }).unwrap();
        provider.store(request, PieceStream::whole(data))
    };

    // The signature covers the reservation, not the bytes beside it: bytes swapped under a
    // valid signature are caught by the piece id.
    let mut wrong = pieces[0].to_vec();
    wrong[0] ^= 1;
    expect(
        store(&client, good.clone(), Bytes::from(wrong)).await,
        "wrong hash",
        |e| matches!(e, NetError::BadRequest(m) if m.contains("hash")),
    );
    expect(
        store(&client, good.clone(), pieces[0].slice(..999)).await,
        "short piece",
        |e| matches!(e, NetError::BadRequest(_)),
    );
    let mut long = pieces[0].to_vec();
    long.push(0);
    expect(
        store(&client, good.clone(), Bytes::from(long)).await,
        "long piece",
        |e| matches!(e, NetError::BadRequest(m) if m.contains("more bytes")),
    );
    // The sender fails midway (its disk, say): the upload ends with its error, nothing kept.
    let half = pieces[0].slice(..500);
    let broken = PieceStream::new(futures::stream::iter([
        Ok(half),
        Err(NetError::Unavailable("the sender gave up".into())),
    ]));
    let request = client.sign(StorePiece {
        reservation: good.clone(),
    });
    expect(
        provider.store(request.unwrap(), broken).await,
        "upload interrupted",
        |e| matches!(e, NetError::Unavailable(m) if m.contains("gave up")),
    );
    let rogue = Identity::generate().unwrap();
    let forged = Reservation {
        tracker: rogue.node_id(),
        ..good.clone()
    }
    .issue(&PeerKeys::new(&rogue))
    .unwrap();
    expect(
        store(&client, forged, pieces[0].clone()).await,
        "reservation from an unknown tracker",
        |e| matches!(e, NetError::Forbidden(m) if m.contains("not a tracker")),
    );
    let mut tampered = good.clone();
    tampered.expires_ms += 1;
    expect(
        store(&client, tampered, pieces[0].clone()).await,
        "tampered reservation",
        |e| matches!(e, NetError::Forbidden(m) if m.contains("tag does not verify")),
    );
    expect(
        store(&stranger, good.clone(), pieces[0].clone()).await,
        "someone else's reservation",
        |e| matches!(e, NetError::Forbidden(_)),
    );
    let garbage = client.sign_encoded::<StorePiece>(
        Bytes::from_static(b"\xff\xff\xff\xff not protobuf"),
        now_ms(),
        [9; 16],
    );
    let piece = || PieceStream::whole(pieces[0].clone());
    expect(
        provider.store(garbage, piece()).await,
        "garbage protobuf",
        |e| matches!(e, NetError::BadRequest(_)),
    );
    let stale = client.sign_with(
        StorePiece {
            reservation: good.clone(),
        },
        now_ms() - 3_600_000,
        [8; 16],
    );
    expect(
        provider.store(stale, piece()).await,
        "stale request",
        |e| matches!(e, NetError::Unauthenticated(m) if m.contains("stale")),
    );
    // A piece larger than the provider's limit (the tracker does not know the limit).
    let (big_id, big) = segment(8, 1, MAX_PIECE as usize + 1);
    let big_placed = reserve(&net, &client, big_id, &big).await.unwrap().pieces[0].clone();
    expect(
        store(&client, big_placed.reservation, big[0].clone()).await,
        "oversize piece",
        |e| matches!(e, NetError::BadRequest(m) if m.contains("limit")),
    );

    let status = provider.status().await.unwrap();
    assert_eq!((status.used, status.pieces), (0, 0));
    assert_eq!(log_on_disk(&net.endpoints.providers[0].dir), 0);

    // The good request is stored once; a replay is refused; a fresh request for the same
    // piece (a resumed upload) gets a receipt without a second copy.
    let request = client
        .sign(StorePiece {
            reservation: good.clone(),
        })
        .unwrap();
    provider.store(request.clone(), piece()).await.unwrap();
    let once = log_on_disk(&net.endpoints.providers[0].dir);
    assert!(once >= 1000, "{once} bytes on disk");
    expect(
        provider.store(request, piece()).await,
        "replayed request",
        |e| matches!(e, NetError::Unauthenticated(m) if m.contains("replayed")),
    );
    let receipt = store(&client, good.clone(), pieces[0].clone())
        .await
        .unwrap();
    // The tracker takes the provider's receipt, and no receipt the provider did not tag.
    let tracker = tracker_for(&net, &id);
    let confirm = |receipt: StoreReceipt| {
        let request = client.sign(ConfirmStored {
            receipts: vec![receipt],
        });
        let tracker = tracker.clone();
        async move { tracker.confirm(request?).await }
    };
    let mut forged_receipt = receipt.clone();
    forged_receipt.tag[0] ^= 1;
    expect(
        confirm(forged_receipt).await,
        "receipt with a wrong tag",
        |e| matches!(e, NetError::Forbidden(m) if m.contains("receipt tag")),
    );
    confirm(receipt.clone()).await.unwrap();
    let status = provider.status().await.unwrap();
    assert_eq!((status.used, status.pieces), (1000, 1));
    assert_eq!(
        log_on_disk(&net.endpoints.providers[0].dir),
        once,
        "one copy of the piece"
    );

    let read = |who: &Identity, range| {
        who.sign(ReadPiece {
            piece: PieceId::of(&pieces[0]),
            range,
        })
        .unwrap()
    };
    expect(
        provider.read(read(&stranger, None)).await,
        "stranger read",
        |e| matches!(e, NetError::Forbidden(_)),
    );
    expect(
        provider
            .read(read(
                &client,
                Some(ByteRange {
                    offset: 900,
                    len: 101,
                }),
            ))
            .await,
        "range past the end",
        |e| matches!(e, NetError::BadRequest(_)),
    );
    let whole = provider.read(read(&client, None)).await.unwrap();
    whole.verify_whole().unwrap();
    let unknown = client
        .sign(ReadPiece {
            piece: PieceId([0; 32]),
            range: None,
        })
        .unwrap();
    expect(provider.read(unknown).await, "unknown piece", |e| {
        matches!(e, NetError::NotFound(_))
    });
}

async fn faulty_providers_are_detected(transport: Transport) {
    let (_dir, net, seed) = start(transport, 1, 6).await;
    let providers = &net.endpoints.providers;
    let client = Identity::generate().unwrap();
    for s in 0..5 {
        let (id, pieces) = segment(100 + s, K + M, 4096);
        put_segment(&net, &client, id, &pieces).await.unwrap();
    }
    let faults = Faults::new(seed);
    let faulty = FaultyConnector::new(net.connector(), faults.clone());
    faults.set(
        &providers[0].address,
        Fault {
            corrupt_reads: true,
            ..Fault::default()
        },
    );
    faults.set(
        &providers[1].address,
        Fault {
            partitioned: true,
            ..Fault::default()
        },
    );
    faults.set(
        &providers[2].address,
        Fault {
            drop_rate: 1.0,
            ..Fault::default()
        },
    );
    faults.set(
        &providers[3].address,
        Fault {
            delay: Duration::from_millis(5),
            ..Fault::default()
        },
    );
    for s in 0..5 {
        let (id, _) = segment(100 + s, K + M, 4096);
        assert_eq!(readable_pieces(&net, &faulty, &client, id).await, 3);
    }
    // A corrupted read is caught by the hash, not trusted.
    let (id, pieces) = segment(100, K + M, 4096);
    let p0 = faulty.provider(&providers[0].address).unwrap();
    let honest = net.connector().provider(&providers[0].address).unwrap();
    let mut held = None;
    for piece in pieces.iter().map(|data| PieceId::of(data)) {
        let read = ReadPiece { piece, range: None };
        if honest.read(client.sign(read).unwrap()).await.is_ok() {
            held = Some(piece);
            break;
        }
    }
    let held = held.unwrap();
    let data = p0
        .read(
            client
                .sign(ReadPiece {
                    piece: held,
                    range: None,
                })
                .unwrap(),
        )
        .await
        .unwrap();
    assert!(matches!(data.verify_whole(), Err(NetError::Conflict(_))));
    faults.heal_all();
    assert_eq!(readable_pieces(&net, &faulty, &client, id).await, K + M);
}

async fn trackers_pair_segments_by_rendezvous(transport: Transport) {
    let (_dir, mut net, _) = start(transport, 3, 3).await;
    let client = Arc::new(Identity::generate().unwrap());
    let ids = tracker_ids(&net);
    let at = |id: &NodeId| ids.iter().position(|i| i == id).unwrap();
    let mut left_out = [0usize; 3];
    let mut segments = Vec::new();
    for s in 0..20 {
        let (id, pieces) = segment(200 + s, 3, 512);
        let pair = rendezvous::pair(&id.0, &ids);
        let client = client.clone();
        let req = move || {
            client
                .sign(ReserveSegment {
                    segment: id,
                    pieces: specs(&pieces),
                })
                .unwrap()
        };
        // The first places; the second only once the first is down; others never.
        for (t, tracker_id) in ids.iter().enumerate() {
            let answer = tracker(&net, t).reserve(req()).await;
            if *tracker_id == pair[0] {
                answer.unwrap();
                continue;
            }
            left_out[t] += usize::from(!pair.contains(tracker_id));
            let err = answer.unwrap_err();
            assert!(
                matches!(&err, NetError::Precondition(m) if m.contains(&pair[0].to_string())),
                "{err}"
            );
        }
        segments.push((pair, req));
    }
    assert!(left_out.iter().all(|n| *n > 0), "{left_out:?}");
    // Tracker 0 stops: the second of each segment it led places it once it sees that.
    net.stop_tracker(0).await.unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    for (pair, req) in segments.iter().filter(|(pair, _)| pair[0] == ids[0]) {
        loop {
            match tracker(&net, at(&pair[1])).reserve(req()).await {
                Ok(_) => break,
                Err(NetError::Precondition(_)) if std::time::Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => panic!("the second did not take over placing: {e}"),
            }
        }
    }
}

async fn the_dht_alone_finds_a_segments_holders(transport: Transport) {
    let (_dir, net, _) = start(transport, 1, 6).await;
    let discovery = net.discovery();
    let client = Identity::generate().unwrap();
    for s in 0..5 {
        let (id, pieces) = segment(400 + s, K + M, 1024);
        put_segment(&net, &client, id, &pieces).await.unwrap();
    }
    for s in 0..5 {
        let (id, pieces) = segment(400 + s, K + M, 1024);
        // Provider records are published in the background: poll until all six are there.
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        let holders = loop {
            let holders = discovery.holders(id).await.unwrap();
            if holders.len() == K + M && holders.iter().all(|h| h.address.is_some()) {
                break holders;
            }
            assert!(std::time::Instant::now() < deadline, "{holders:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        // Without the tracker: ask each holder for each piece; every piece is found intact.
        let mut found = 0;
        for data in &pieces {
            let piece = PieceId::of(data);
            for holder in &holders {
                let provider = net
                    .connector()
                    .provider(holder.address.as_deref().unwrap())
                    .unwrap();
                let req = client.sign(ReadPiece { piece, range: None }).unwrap();
                if let Ok(read) = provider.read(req).await {
                    read.verify_whole().unwrap();
                    found += 1;
                    break;
                }
            }
        }
        assert_eq!(found, K + M, "segment {s}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_providers_die_and_are_not_placed_on() {
    within_deadline(silent_providers_body()).await;
}

async fn silent_providers_body() {
    // Heartbeats every 100 ms: a provider is dead after 500 ms of silence.
    let (_dir, mut net, _) = start(Transport::Memory, 1, 3).await;
    let client = Identity::generate().unwrap();
    net.stop_provider(0).await.unwrap();
    net.wait_alive(2).await.unwrap();
    let dead = net.endpoints.providers[0].node_id().unwrap();
    let (id, pieces) = segment(300, 3, 100);
    let err = reserve(&net, &client, id, &pieces).await.unwrap_err();
    assert!(matches!(err, NetError::NoCapacity(_)), "{err}");
    let (id, pieces) = segment(301, 2, 100);
    let placement = reserve(&net, &client, id, &pieces).await.unwrap();
    assert!(
        placement
            .pieces
            .iter()
            .all(|p| p.reservation.provider != dead)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_serves_reflection_and_refuses_unsigned_or_garbage_requests() {
    within_deadline(reflection_body()).await;
}

/// A gRPC codec that sends and receives raw bytes, to send what no generated client would.
struct RawCodec;

struct RawCoder;

impl tonic::codec::Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = RawCoder;
    type Decoder = RawCoder;

    fn encoder(&mut self) -> RawCoder {
        RawCoder
    }

    fn decoder(&mut self) -> RawCoder {
        RawCoder
    }
}

impl tonic::codec::Encoder for RawCoder {
    type Item = Vec<u8>;
    type Error = tonic::Status;

    fn encode(
        &mut self,
        item: Vec<u8>,
        dst: &mut tonic::codec::EncodeBuf<'_>,
    ) -> Result<(), tonic::Status> {
        bytes::BufMut::put_slice(dst, &item);
        Ok(())
    }
}

impl tonic::codec::Decoder for RawCoder {
    type Item = Vec<u8>;
    type Error = tonic::Status;

    fn decode(
        &mut self,
        src: &mut tonic::codec::DecodeBuf<'_>,
    ) -> Result<Option<Vec<u8>>, tonic::Status> {
        let n = bytes::Buf::remaining(src);
        Ok(Some(bytes::Buf::copy_to_bytes(src, n).to_vec()))
    }
}

/// The services `address` lists through reflection, asked in v1 and in v1alpha.
async fn reflected(address: &str) -> [Vec<String>; 2] {
    let channel = || async {
        tonic::transport::Channel::from_shared(address.to_owned())
            .unwrap()
            .connect()
            .await
            .unwrap()
    };
    // The two versions are the same messages in two packages.
    macro_rules! list {
        ($v:ident) => {{
            use tonic_reflection::pb::$v::ServerReflectionRequest;
            use tonic_reflection::pb::$v::server_reflection_client::ServerReflectionClient;
            use tonic_reflection::pb::$v::server_reflection_request::MessageRequest;
            use tonic_reflection::pb::$v::server_reflection_response::MessageResponse;
            let request = ServerReflectionRequest {
                host: String::new(),
                message_request: Some(MessageRequest::ListServices(String::new())),
            };
            let mut replies = ServerReflectionClient::new(channel().await)
                .server_reflection_info(tokio_stream::iter([request]))
                .await
                .unwrap()
                .into_inner();
            let reply = replies.message().await.unwrap().unwrap();
            let Some(MessageResponse::ListServicesResponse(list)) = reply.message_response else {
                panic!("unexpected reflection reply");
            };
            let mut names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
            names.sort();
            names
        }};
    }
    [list!(v1), list!(v1alpha)]
}

async fn reflection_body() {
    use wwt_net::grpc::{REFLECTION_V1, REFLECTION_V1ALPHA};

    // Four providers: the first three host indexes, the fourth only stores pieces.
    let (_dir, net, _) = start(Transport::Grpc, 1, 4).await;
    let providers = &net.endpoints.providers;
    for (address, services) in [
        (
            &providers[0].address,
            &["wwt.v1.Index", "wwt.v1.Provider"][..],
        ),
        (&providers[3].address, &["wwt.v1.Provider"][..]),
        (&net.endpoints.trackers[0].address, &["wwt.v1.Tracker"][..]),
    ] {
        let mut expected: Vec<&str> = [REFLECTION_V1, REFLECTION_V1ALPHA]
            .into_iter()
            .chain(services.iter().copied())
            .collect();
        expected.sort();
        for names in reflected(address).await {
            assert_eq!(names, expected, "{address}");
        }
    }

    let mut raw =
        wwt_net::proto::provider_client::ProviderClient::connect(providers[0].address.clone())
            .await
            .unwrap();
    let part = |request, data: &'static [u8]| wwt_net::proto::StorePart {
        request,
        data: Bytes::from_static(data),
    };
    let unsigned = wwt_net::proto::SignedRequest {
        body: Bytes::from_static(b"anything"),
        auth: None,
    };
    for (parts, why) in [
        (vec![part(Some(unsigned), b"bytes")], "not signed"),
        (vec![part(None, b"bytes")], "no signed request"),
        (vec![], "empty Store stream"),
    ] {
        let status = raw.store(futures::stream::iter(parts)).await.unwrap_err();
        assert!(status.message().contains(why), "{why}: {status}");
        assert!(
            matches!(
                status.code(),
                tonic::Code::Unauthenticated | tonic::Code::InvalidArgument
            ),
            "{status}"
        );
    }

    // Bytes that are not a protobuf message at all are refused by the gRPC layer.
    let channel = tonic::transport::Channel::from_shared(providers[0].address.clone())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.unwrap();
    let status = grpc
        .unary::<_, Vec<u8>, _>(
            tonic::Request::new(b"\xff\xff\xff\xff garbage".to_vec()),
            tonic::codegen::http::uri::PathAndQuery::from_static("/wwt.v1.Provider/Store"),
            RawCodec,
        )
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::Internal, "{status}");
    assert!(status.message().contains("decode"), "{status}");
    assert_eq!(log_on_disk(&providers[0].dir), 0);
}
