//! Piece upload and download through a real provider over loopback gRPC, beside the same bytes
//! through a provider that does nothing (no checks, no disk): the cost of verification,
//! hashing, fsync and metadata on top of raw gRPC transfer.
//!
//! `cargo bench -p wwt-provider --bench loopback` (release profile). Prints MB/s and ratios.
#![allow(clippy::unwrap_used, missing_docs)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::{self, StreamExt};
use tokio::net::TcpListener;
use wwt_net::grpc::{self, GrpcProvider};
use wwt_net::types::{
    PieceData, PieceId, ProviderStatus, ReadPiece, Reservation, SegmentId, StorePiece, StoreReceipt,
};
use wwt_net::{Identity, NetError, ProviderApi, Signed, now_ms};
use wwt_provider::{Provider, ProviderConfig, TrackerEndpoint};

const PIECES: usize = 64;
const PIECE_SIZE: usize = 1 << 20;
const IN_FLIGHT: usize = 4;

/// A provider that accepts everything and stores nothing: raw gRPC transfer.
struct NullProvider {
    piece: Bytes,
    /// The piece's id, computed once: the real provider does not hash on reads either.
    id: PieceId,
}

#[async_trait]
impl ProviderApi for NullProvider {
    async fn store(&self, request: Signed<StorePiece>) -> Result<StoreReceipt, NetError> {
        // Decode only, as any server must.
        let wire =
            <wwt_net::proto::StoreRequest as prost::Message>::decode(request.body().clone())?;
        let reservation = Reservation::try_from(wire.reservation.unwrap_or_default())?;
        Ok(StoreReceipt {
            reservation,
            signature: [0; 64],
        })
    }

    async fn read(&self, _request: Signed<ReadPiece>) -> Result<PieceData, NetError> {
        Ok(PieceData {
            piece: self.id,
            piece_size: self.piece.len() as u64,
            offset: 0,
            data: self.piece.clone(),
            proof: Bytes::new(),
        })
    }

    async fn status(&self) -> Result<ProviderStatus, NetError> {
        Err(NetError::NotFound("no status".into()))
    }

    async fn challenge(
        &self,
        _request: Signed<wwt_net::audit::Challenge>,
    ) -> Result<wwt_net::audit::ChallengeAnswer, NetError> {
        Err(NetError::NotFound("no challenges".into()))
    }
}

async fn serve(api: Arc<dyn ProviderApi>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = format!("http://{}", listener.local_addr().unwrap());
    let services = grpc::Services {
        provider: Some(api),
        ..Default::default()
    };
    tokio::spawn(grpc::serve(services, listener, std::future::pending()));
    address
}

fn mb_per_s(bytes: usize, elapsed: Duration) -> f64 {
    bytes as f64 / 1e6 / elapsed.as_secs_f64()
}

/// Uploads then downloads every piece, `IN_FLIGHT` at a time; returns (upload, download) MB/s.
async fn run(
    client: &dyn ProviderApi,
    owner: &Identity,
    tracker: &Identity,
    provider: wwt_net::types::NodeId,
    pieces: &[Bytes],
) -> (f64, f64) {
    let stores: Vec<Signed<StorePiece>> = pieces
        .iter()
        .enumerate()
        .map(|(i, data)| {
            let mut reservation = Reservation {
                piece: PieceId::of(data),
                size: data.len() as u64,
                segment: SegmentId([i as u8; 32]),
                index: 0,
                provider,
                owner: owner.node_id(),
                expires_ms: now_ms() + 600_000,
                tracker: tracker.node_id(),
                signature: [0; 64],
            };
            reservation.signature = tracker.sign_detached(&reservation.signing_bytes());
            owner
                .sign(StorePiece {
                    reservation,
                    data: data.clone(),
                })
                .unwrap()
        })
        .collect();
    let reads: Vec<Signed<ReadPiece>> = pieces
        .iter()
        .map(|data| {
            owner
                .sign(ReadPiece {
                    piece: PieceId::of(data),
                    range: None,
                })
                .unwrap()
        })
        .collect();
    let total = pieces.len() * PIECE_SIZE;

    let start = Instant::now();
    let results: Vec<_> = stream::iter(stores)
        .map(|req| client.store(req))
        .buffer_unordered(IN_FLIGHT)
        .collect()
        .await;
    let upload = mb_per_s(total, start.elapsed());
    assert!(
        results.iter().all(Result::is_ok),
        "{:?}",
        results.iter().find(|r| r.is_err())
    );

    let start = Instant::now();
    let results: Vec<_> = stream::iter(reads)
        .map(|req| client.read(req))
        .buffer_unordered(IN_FLIGHT)
        .collect()
        .await;
    let download = mb_per_s(total, start.elapsed());
    assert!(
        results
            .iter()
            .all(|r| r.as_ref().is_ok_and(|d| d.data.len() == PIECE_SIZE))
    );
    (upload, download)
}

#[tokio::main]
async fn main() {
    let owner = Identity::generate().unwrap();
    let tracker = Identity::generate().unwrap();
    let pieces: Vec<Bytes> = (0..PIECES)
        .map(|i| {
            let mut data = vec![0u8; PIECE_SIZE];
            blake3::Hasher::new()
                .update(&(i as u64).to_le_bytes())
                .finalize_xof()
                .fill(&mut data);
            Bytes::from(data)
        })
        .collect();
    let timeout = Duration::from_secs(60);

    let null = serve(Arc::new(NullProvider {
        piece: pieces[0].clone(),
        id: PieceId::of(&pieces[0]),
    }))
    .await;
    let null_client = GrpcProvider::connect_lazy(&null, timeout).unwrap();
    let (raw_up, raw_down) = run(&null_client, &owner, &tracker, owner.node_id(), &pieces).await;

    let dir = tempfile::tempdir().unwrap();
    let config = ProviderConfig {
        data_dir: dir.path().to_path_buf(),
        capacity_bytes: 1 << 30,
        max_piece_bytes: PIECE_SIZE as u64,
        trackers: vec![TrackerEndpoint {
            id: tracker.node_id(),
            address: "http://unused".into(),
        }],
        ..ProviderConfig::default()
    };
    let provider = Arc::new(Provider::open(&config).unwrap());
    let provider_id = provider.node_id();
    let real = serve(provider.clone()).await;
    let real_client = GrpcProvider::connect_lazy(&real, timeout).unwrap();
    let (up, down) = run(&real_client, &owner, &tracker, provider_id, &pieces).await;

    // The same work without gRPC, on a fresh store: the provider's own cost.
    let dir2 = tempfile::tempdir().unwrap();
    let local = Provider::open(&ProviderConfig {
        data_dir: dir2.path().to_path_buf(),
        ..config.clone()
    })
    .unwrap();
    let local_id = local.node_id();
    let (local_up, local_down) = run(&local, &owner, &tracker, local_id, &pieces).await;

    println!(
        "{PIECES} pieces of {} KiB, {IN_FLIGHT} in flight, loopback gRPC",
        PIECE_SIZE >> 10
    );
    println!(
        "upload:   provider {up:8.1} MB/s   raw gRPC {raw_up:8.1} MB/s   ratio {:.2}",
        up / raw_up
    );
    println!(
        "download: provider {down:8.1} MB/s   raw gRPC {raw_down:8.1} MB/s   ratio {:.2}",
        down / raw_down
    );
    println!(
        "in-process provider, no gRPC: upload {local_up:8.1} MB/s   download {local_down:8.1} MB/s"
    );
}
