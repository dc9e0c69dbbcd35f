//! A server's bounds over real loopback gRPC: request messages over their method's cap are
//! refused from their header, without waiting for the rest, and the server serves on;
//! requests refused as forbidden take no room in the replay cache, and an authorized signer's
//! replay is still refused.
#![allow(clippy::unwrap_used)]

use std::collections::HashSet;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tonic::codegen::http;
use tonic::transport::Endpoint;
use wwt_net::audit::{Challenge, ChallengeAnswer};
use wwt_net::grpc::{GrpcProvider, Services, serve};
use wwt_net::proto::provider_client::ProviderClient;
use wwt_net::types::{
    DeletePieces, Deleted, NodeId, PieceData, PieceId, PieceStream, ProviderStatus, ReadPiece,
    StorePiece, StoreReceipt,
};
use wwt_net::{Identity, NetError, ProviderApi, Signed, Verifier, now_ms, proto};

/// A provider that serves reads to the signers it lets in, checking and recording requests as
/// the real one does: signature and freshness first, recorded against replay only once the
/// signer is let in. It counts the reads that reach it and the piece bytes stores bring.
struct Gate {
    verifier: Verifier,
    readers: Mutex<HashSet<NodeId>>,
    reads: AtomicUsize,
    stored: AtomicUsize,
}

impl Gate {
    fn new(verifier: Verifier) -> Gate {
        Gate {
            verifier,
            readers: Mutex::new(HashSet::new()),
            reads: AtomicUsize::new(0),
            stored: AtomicUsize::new(0),
        }
    }

    fn let_in(&self, reader: &Identity) {
        self.readers.lock().unwrap().insert(reader.node_id());
    }
}

#[async_trait]
impl ProviderApi for Gate {
    async fn store(
        &self,
        _request: Signed<StorePiece>,
        mut data: PieceStream,
    ) -> Result<StoreReceipt, NetError> {
        while let Some(part) = data.next().await {
            self.stored.fetch_add(part?.len(), Ordering::SeqCst);
        }
        Err(NetError::Precondition(
            "this test provider keeps nothing".into(),
        ))
    }

    async fn read(&self, request: Signed<ReadPiece>) -> Result<PieceData, NetError> {
        self.reads.fetch_add(1, Ordering::SeqCst);
        let checked = self.verifier.check(request)?;
        if !self.readers.lock().unwrap().contains(&checked.signer()) {
            return Err(NetError::Forbidden("not a reader of this provider".into()));
        }
        let (_, read) = self.verifier.accept(checked)?;
        Ok(PieceData {
            piece: read.piece,
            piece_size: 1,
            offset: 0,
            data: Bytes::from_static(b"x"),
            proof: Bytes::new(),
        })
    }

    async fn status(&self) -> Result<ProviderStatus, NetError> {
        Ok(ProviderStatus {
            node: NodeId([0; 32]),
            zone: "test".into(),
            capacity: 1,
            used: 0,
            pieces: 0,
            freed: 0,
        })
    }

    async fn challenge(&self, _request: Signed<Challenge>) -> Result<ChallengeAnswer, NetError> {
        Err(NetError::Forbidden(
            "no tracker audits this provider".into(),
        ))
    }

    async fn delete(&self, _request: Signed<DeletePieces>) -> Result<Deleted, NetError> {
        Err(NetError::Forbidden(
            "this test provider deletes nothing".into(),
        ))
    }
}

/// `gate` served on a loopback port until the returned sender is dropped; its address.
async fn start(gate: Arc<Gate>) -> (String, oneshot::Sender<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = oneshot::channel::<()>();
    let services = Services {
        provider: Some(gate),
        ..Services::default()
    };
    tokio::spawn(serve(services, listener, async {
        let _ = stopped.await;
    }));
    (address, stop)
}

fn read_of(piece: u8) -> ReadPiece {
    ReadPiece {
        piece: PieceId([piece; 32]),
        range: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_message_is_refused_from_its_header_and_the_server_serves_on() {
    let gate = Arc::new(Gate::new(Verifier::default()));
    let (address, _stop) = start(gate.clone()).await;
    let owner = Identity::generate().unwrap();
    gate.let_in(&owner);

    // A read request carrying 2 MiB: the Read method takes 64 KiB.
    let bloated = owner.sign_encoded::<ReadPiece>(Bytes::from(vec![7; 2 << 20]), now_ms(), [1; 16]);
    let mut raw = ProviderClient::connect(address.clone())
        .await
        .unwrap()
        .max_encoding_message_size(usize::MAX);
    let refused = raw
        .read(proto::SignedRequest::from(bloated))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::InvalidArgument, "{refused:?}");
    assert!(
        refused.message().contains("/wwt.v1.Provider/Read")
            && refused.message().contains("at most 65536 bytes"),
        "the refusal names the method and its cap: {}",
        refused.message()
    );
    assert_eq!(
        gate.reads.load(Ordering::SeqCst),
        0,
        "the service never saw it"
    );

    // The same connection, and a new one, are still served.
    raw.status(proto::StatusRequest {}).await.unwrap();
    let client = GrpcProvider::connect_lazy(&address, Duration::from_secs(30)).unwrap();
    let read = client.read(owner.sign(read_of(3)).unwrap()).await.unwrap();
    assert_eq!(read.piece, PieceId([3; 32]));

    // The cap is the method's: a piece's part of 2 MiB reaches the store.
    let request = owner.sign_encoded::<StorePiece>(Bytes::new(), now_ms(), [2; 16]);
    let part = PieceStream::new(futures::stream::iter([Ok(Bytes::from(vec![9; 2 << 20]))]));
    let err = client.store(request, part).await.unwrap_err();
    assert!(matches!(err, NetError::Precondition(_)), "{err}");
    assert_eq!(gate.stored.load(Ordering::SeqCst), 2 << 20);
}

/// A request body that sends `first` and then nothing more, never ending.
struct Stalled(Option<Bytes>);

impl http_body::Body for Stalled {
    type Data = Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, tonic::Status>>> {
        match self.0.take() {
            Some(first) => Poll::Ready(Some(Ok(http_body::Frame::data(first)))),
            None => Poll::Pending,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_message_is_refused_before_the_rest_of_it_is_sent() {
    let gate = Arc::new(Gate::new(Verifier::default()));
    let (address, _stop) = start(gate.clone()).await;
    let mut channel = Endpoint::from_shared(address)
        .unwrap()
        .connect()
        .await
        .unwrap();

    // A Read message declared 1 MiB long, of which 1,000 bytes are sent, the rest never.
    let mut first = vec![0u8];
    first.extend_from_slice(&(1u32 << 20).to_be_bytes());
    first.extend_from_slice(&[0; 1000]);
    let request = http::Request::builder()
        .method("POST")
        .uri("/wwt.v1.Provider/Read")
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(tonic::body::Body::new(Stalled(Some(Bytes::from(first)))))
        .unwrap();
    std::future::poll_fn(|cx| tower::Service::poll_ready(&mut channel, cx))
        .await
        .unwrap();
    let answer = tokio::time::timeout(
        Duration::from_secs(60),
        tower::Service::call(&mut channel, request),
    )
    .await
    .expect("the server waited for the rest of the message")
    .unwrap();
    let status = tonic::Status::from_header_map(answer.headers()).expect("a trailers-only answer");
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
    assert_eq!(
        gate.reads.load(Ordering::SeqCst),
        0,
        "the service never saw it"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forbidden_requests_take_no_replay_slot_and_replays_are_refused() {
    // Room for a single nonce: one recorded stranger would lock the reader out.
    let gate = Arc::new(Gate::new(Verifier::with_limits(
        Duration::from_secs(60),
        1,
        1,
    )));
    let (address, _stop) = start(gate.clone()).await;
    let client = GrpcProvider::connect_lazy(&address, Duration::from_secs(30)).unwrap();

    for n in 0..100u8 {
        let stranger = Identity::generate().unwrap();
        let err = client
            .read(stranger.sign(read_of(n)).unwrap())
            .await
            .unwrap_err();
        assert!(matches!(err, NetError::Forbidden(_)), "{err}");
    }

    // A request refused before its signer was let in, sent again once it is: still new.
    let reader = Identity::generate().unwrap();
    let request = reader.sign(read_of(1)).unwrap();
    let err = client.read(request.clone()).await.unwrap_err();
    assert!(matches!(err, NetError::Forbidden(_)), "{err}");
    gate.let_in(&reader);
    let read = client.read(request.clone()).await.unwrap();
    assert_eq!(read.piece, PieceId([1; 32]));

    let replay = client.read(request).await.unwrap_err();
    assert!(
        matches!(&replay, NetError::Unauthenticated(m) if m.contains("replayed")),
        "{replay}"
    );
}
