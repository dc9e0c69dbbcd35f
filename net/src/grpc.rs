//! gRPC adapters: servers that expose a [`ProviderApi`] / [`TrackerApi`] / [`IndexApi`] over
//! tonic (with reflection), and clients that implement the same traits over a channel.
//!
//! A server bounds what a caller can make it hold: each method takes request messages up to
//! its own cap ([`limits::request_cap`]), refused from their 5-byte header before the rest is read;
//! calls run at most [`REQUEST_TIMEOUT`]; at most [`MAX_CALLS`] run at once (and
//! [`MAX_CALLS_PER_CONNECTION`] per connection), the others waiting their turn.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use tokio::net::TcpListener;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::server::NamedService;
use tonic::transport::{Channel, Endpoint, Server};
use tonic::{Request, Response, Status, Streaming};
use tower::limit::GlobalConcurrencyLimitLayer;

mod limits;
mod metered;

use crate::api::{Connector, ProviderApi, TrackerApi};
use crate::audit::{
    AuditReport, Challenge, ChallengeAnswer, Complaint, Entrust, Entrusted, Lease, Mirror,
};
use crate::auth::Signed;
use crate::error::NOT_SERVED;
use crate::index::{
    Answer, Append, GetCatalog, GetEntries, GetHead, IndexApi, LogHead, QueryTable,
};
use crate::ops::RequestMetrics;
use crate::proto::index_client::IndexClient;
use crate::proto::index_server::{Index, IndexServer};
use crate::proto::provider_client::ProviderClient;
use crate::proto::provider_server::{Provider, ProviderServer};
use crate::proto::tracker_client::TrackerClient;
use crate::proto::tracker_server::{Tracker, TrackerServer};
use crate::types::{
    ConfirmStored, Confirmed, DeletePieces, Deleted, Forget, Heartbeat, HeartbeatAck, Locate,
    MAX_PIECE_SIZE, PieceData, PieceStream, Placement, ProviderRecord, ProviderStatus, ReadPiece,
    ReserveSegment, SegmentLocation, StorePiece, StoreReceipt,
};
use crate::{NetError, proto};

/// The largest gRPC message either side accepts: a maximal piece plus its envelope. A
/// `Store` part may be that large (the contract lets a piece travel in parts of any size, the
/// client sends 256 KiB); every other request takes far less ([`limits::request_cap`]).
const MAX_MESSAGE: usize = MAX_PIECE_SIZE as usize + (1 << 20);
/// How long a server gives one call, from its start to its answer: a maximal piece streamed
/// at 1 MB/s fits, and a caller that stalls frees its place after that.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(120);
/// Calls a server runs at once, over all connections; more wait their turn rather than being
/// refused, so a flood slows the other callers but does not fail them.
pub const MAX_CALLS: usize = 256;
/// Calls a server runs at once for one connection, so one caller cannot take every place.
pub const MAX_CALLS_PER_CONNECTION: usize = 64;
/// HTTP/2 streams a peer may open at once on one connection (tonic sets no limit by itself);
/// the calls of streams past [`MAX_CALLS_PER_CONNECTION`] wait, their bytes held back by
/// flow control.
const MAX_STREAMS_PER_CONNECTION: u32 = 256;
/// HTTP/2 flow-control windows: large enough that a piece streams without stalls on loopback.
const STREAM_WINDOW: u32 = 8 << 20;
const CONNECTION_WINDOW: u32 = 16 << 20;
/// HTTP/2 frames up to 1 MiB: pieces travel in few frames instead of many 16 KiB ones.
const MAX_FRAME: u32 = 1 << 20;

/// The reflection services' names, listed beside the node's own.
pub const REFLECTION_V1: &str = "grpc.reflection.v1.ServerReflection";
/// See [`REFLECTION_V1`]: current Python tooling asks this older version.
pub const REFLECTION_V1ALPHA: &str = "grpc.reflection.v1alpha.ServerReflection";

/// The services one gRPC server exposes (each optional).
#[derive(Default, Clone)]
pub struct Services {
    /// The storage provider service.
    pub provider: Option<Arc<dyn ProviderApi>>,
    /// The tracker service.
    pub tracker: Option<Arc<dyn TrackerApi>>,
    /// The index service.
    pub index: Option<Arc<dyn IndexApi>>,
    /// Where the requests are counted, if anywhere.
    pub metrics: Option<RequestMetrics>,
}

/// Serves `services` (and gRPC reflection) on `listener` until `shutdown`.
pub async fn serve(
    services: Services,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) -> Result<(), NetError> {
    let Services {
        provider,
        tracker,
        index,
        metrics,
    } = services;
    // Reflection lists only the services this node serves, in both versions clients ask.
    let served = [
        provider
            .as_ref()
            .map(|_| ProviderServer::<ProviderAdapter>::NAME),
        tracker
            .as_ref()
            .map(|_| TrackerServer::<TrackerAdapter>::NAME),
        index.as_ref().map(|_| IndexServer::<IndexAdapter>::NAME),
    ];
    let reflection = || {
        served.iter().flatten().fold(
            tonic_reflection::server::Builder::configure()
                .register_encoded_file_descriptor_set(proto::FILE_DESCRIPTOR_SET)
                .with_service_name(REFLECTION_V1)
                .with_service_name(REFLECTION_V1ALPHA),
            |builder, name| builder.with_service_name(*name),
        )
    };
    let reflection_failed = |e| NetError::Internal(format!("reflection service: {e}"));
    let reflection_v1 = reflection().build_v1().map_err(reflection_failed)?;
    let reflection_v1alpha = reflection().build_v1alpha().map_err(reflection_failed)?;
    // Each service decodes up to the largest cap among its methods; `CapRequests` holds each
    // method to its own before tonic buffers a message.
    let provider = provider.map(|api| {
        ProviderServer::new(ProviderAdapter(api))
            .max_decoding_message_size(MAX_MESSAGE)
            .max_encoding_message_size(MAX_MESSAGE)
    });
    let tracker = tracker.map(|api| {
        TrackerServer::new(TrackerAdapter(api))
            .max_decoding_message_size(limits::largest_cap(TrackerServer::<TrackerAdapter>::NAME))
            .max_encoding_message_size(MAX_MESSAGE)
    });
    let index = index.map(|api| {
        IndexServer::new(IndexAdapter(api))
            .max_decoding_message_size(limits::largest_cap(IndexServer::<IndexAdapter>::NAME))
            .max_encoding_message_size(MAX_MESSAGE)
    });
    // The builder's `tcp_nodelay` applies only to listeners tonic binds itself: set it on
    // each accepted socket, or Nagle's algorithm holds back small responses until the
    // peer's delayed ACK (about 40 ms per call).
    let incoming = TcpListenerStream::new(listener).map(|stream| {
        if let Ok(s) = &stream {
            s.set_nodelay(true).ok();
        }
        stream
    });
    Server::builder()
        .initial_stream_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW)
        .max_frame_size(MAX_FRAME)
        .tcp_nodelay(true)
        .max_concurrent_streams(MAX_STREAMS_PER_CONNECTION)
        .concurrency_limit_per_connection(MAX_CALLS_PER_CONNECTION)
        .timeout(REQUEST_TIMEOUT)
        .layer(GlobalConcurrencyLimitLayer::new(MAX_CALLS))
        .layer(metered::Metered(metrics))
        .layer(limits::CapRequests)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_optional_service(provider)
        .add_optional_service(tracker)
        .add_optional_service(index)
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await
        .map_err(|e| NetError::Internal(format!("gRPC server failed: {e}")))
}

/// Exposes a [`ProviderApi`] as the `wwt.v1.Provider` gRPC service.
struct ProviderAdapter(Arc<dyn ProviderApi>);

#[async_trait]
impl Provider for ProviderAdapter {
    async fn store(
        &self,
        request: Request<Streaming<proto::StorePart>>,
    ) -> Result<Response<proto::StoreReceipt>, Status> {
        let mut parts = request.into_inner();
        let first = parts.message().await?.ok_or_else(|| {
            Status::invalid_argument("empty Store stream: the first part carries the request")
        })?;
        let signed = Signed::try_from(first.request.ok_or_else(|| {
            Status::unauthenticated("the first Store part carries no signed request")
        })?)?;
        let head = (!first.data.is_empty()).then_some(Ok(first.data));
        let rest = parts.map(|part| match part {
            Ok(proto::StorePart {
                request: None,
                data,
            }) => Ok(data),
            Ok(_) => Err(NetError::BadRequest(
                "only the first Store part carries a request".into(),
            )),
            Err(status) => Err(NetError::from(status)),
        });
        let data = PieceStream::new(tokio_stream::iter(head).chain(rest));
        Ok(Response::new(self.0.store(signed, data).await?.into()))
    }

    async fn read(
        &self,
        request: Request<proto::SignedRequest>,
    ) -> Result<Response<proto::ReadResponse>, Status> {
        let signed = Signed::try_from(request.into_inner())?;
        Ok(Response::new(self.0.read(signed).await?.into()))
    }

    async fn status(
        &self,
        _request: Request<proto::StatusRequest>,
    ) -> Result<Response<proto::ProviderStatus>, Status> {
        Ok(Response::new(self.0.status().await?.into()))
    }

    async fn challenge(
        &self,
        request: Request<proto::SignedRequest>,
    ) -> Result<Response<proto::ChallengeResponse>, Status> {
        let signed = Signed::try_from(request.into_inner())?;
        Ok(Response::new(self.0.challenge(signed).await?.into()))
    }

    async fn delete(
        &self,
        request: Request<proto::SignedRequest>,
    ) -> Result<Response<proto::DeleteResponse>, Status> {
        let signed = Signed::try_from(request.into_inner())?;
        Ok(Response::new(self.0.delete(signed).await?.into()))
    }
}

/// Exposes a [`TrackerApi`] as the `wwt.v1.Tracker` gRPC service.
struct TrackerAdapter(Arc<dyn TrackerApi>);

#[async_trait]
impl Tracker for TrackerAdapter {
    async fn heartbeat(
        &self,
        request: Request<proto::SignedRequest>,
    ) -> Result<Response<proto::HeartbeatAck>, Status> {
        let signed = Signed::try_from(request.into_inner())?;
        Ok(Response::new(self.0.heartbeat(signed).await?.into()))
    }

    async fn reserve(
        &self,
        request: Request<proto::SignedRequest>,
    ) -> Result<Response<proto::Placement>, Status> {
        let signed = Signed::try_from(request.into_inner())?;
        Ok(Response::new(self.0.reserve(signed).await?.into()))
    }

    async fn confirm(
        &self,
        request: Request<proto::SignedRequest>,
    ) -> Result<Response<proto::ConfirmResponse>, Status> {
        let signed = Signed::try_from(request.into_inner())?;
        Ok(Response::new(self.0.confirm(signed).await?.into()))
    }

    async fn locate(
        &self,
        request: Request<proto::SignedRequest>,
    ) -> Result<Response<proto::SegmentLocation>, Status> {
        let signed = Signed::try_from(request.into_inner())?;
        Ok(Response::new(self.0.locate(signed).await?.into()))
    }

    async fn providers(
        &self,
        _request: Request<proto::ListProvidersRequest>,
    ) -> Result<Response<proto::ProviderList>, Status> {
        let providers = self.0.providers().await?;
        Ok(Response::new(proto::ProviderList {
            providers: providers.into_iter().map(Into::into).collect(),
        }))
    }

    async fn entrust(
        &self,
        request: Request<proto::SignedRequest>,
    ) -> Result<Response<proto::EntrustResponse>, Status> {
        let signed = Signed::try_from(request.into_inner())?;
        Ok(Response::new(self.0.entrust(signed).await?.into()))
    }

    async fn complain(
        &self,
        request: Request<proto::SignedRequest>,
    ) -> Result<Response<proto::ComplainResponse>, Status> {
        let signed = Signed::try_from(request.into_inner())?;
        self.0.complain(signed).await?;
        Ok(Response::new(proto::ComplainResponse {}))
    }

    async fn mirror(
        &self,
        request: Request<proto::SignedRequest>,
    ) -> Result<Response<proto::MirrorResponse>, Status> {
        let signed = Signed::try_from(request.into_inner())?;
        self.0.mirror(signed).await?;
        Ok(Response::new(proto::MirrorResponse {}))
    }

    async fn lease(
        &self,
        request: Request<proto::SignedRequest>,
    ) -> Result<Response<proto::LeaseResponse>, Status> {
        let signed = Signed::try_from(request.into_inner())?;
        self.0.lease(signed).await?;
        Ok(Response::new(proto::LeaseResponse {}))
    }

    async fn forget(
        &self,
        request: Request<proto::SignedRequest>,
    ) -> Result<Response<proto::ForgetResponse>, Status> {
        let signed = Signed::try_from(request.into_inner())?;
        let forgotten = self.0.forget(signed).await?;
        Ok(Response::new(proto::ForgetResponse { forgotten }))
    }

    async fn audits(
        &self,
        request: Request<proto::AuditsRequest>,
    ) -> Result<Response<proto::AuditReport>, Status> {
        let limit = request.into_inner().limit;
        Ok(Response::new(self.0.audits(limit).await?.into()))
    }
}

/// Exposes an [`IndexApi`] as the `wwt.v1.Index` gRPC service.
struct IndexAdapter(Arc<dyn IndexApi>);

#[async_trait]
impl Index for IndexAdapter {
    async fn append(
        &self,
        request: Request<proto::SignedRequest>,
    ) -> Result<Response<proto::LogHead>, Status> {
        let signed = Signed::try_from(request.into_inner())?;
        Ok(Response::new(self.0.append(signed).await?.into()))
    }

    async fn head(
        &self,
        request: Request<proto::SignedRequest>,
    ) -> Result<Response<proto::HeadResponse>, Status> {
        let signed = Signed::try_from(request.into_inner())?;
        let entry = self.0.head(signed).await?;
        Ok(Response::new(proto::HeadResponse {
            entry: entry.map(Into::into),
        }))
    }

    async fn entries(
        &self,
        request: Request<proto::SignedRequest>,
    ) -> Result<Response<proto::EntriesResponse>, Status> {
        let signed = Signed::try_from(request.into_inner())?;
        let entries = self.0.entries(signed).await?;
        Ok(Response::new(proto::EntriesResponse {
            entries: entries.into_iter().map(Into::into).collect(),
        }))
    }

    async fn query(
        &self,
        request: Request<proto::SignedRequest>,
    ) -> Result<Response<proto::QueryResponse>, Status> {
        let signed = Signed::try_from(request.into_inner())?;
        Ok(Response::new(self.0.query(signed).await?.into()))
    }

    async fn get_catalog(
        &self,
        request: Request<proto::SignedRequest>,
    ) -> Result<Response<proto::CatalogResponse>, Status> {
        let signed = Signed::try_from(request.into_inner())?;
        Ok(Response::new(self.0.catalog(signed).await?.into()))
    }
}

/// How long a client waits for a TCP connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a client waits for one call by default: a silent node counts as unavailable.
pub const DEFAULT_CALL_TIMEOUT: Duration = Duration::from_secs(60);

fn channel(address: &str, timeout: Duration) -> Result<Channel, NetError> {
    let endpoint = Endpoint::from_shared(address.to_string())
        .map_err(|e| NetError::BadRequest(format!("bad address {address:?}: {e}")))?;
    Ok(endpoint
        .initial_stream_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW)
        .max_frame_size(MAX_FRAME)
        .tcp_nodelay(true)
        .connect_timeout(CONNECT_TIMEOUT)
        .timeout(timeout)
        .connect_lazy())
}

/// A provider reached over gRPC.
#[derive(Debug, Clone)]
pub struct GrpcProvider {
    client: ProviderClient<Channel>,
}

impl GrpcProvider {
    /// A client for the provider at `address` (e.g. `http://127.0.0.1:7001`); connects on
    /// first use; each call fails as unavailable after `timeout`.
    pub fn connect_lazy(address: &str, timeout: Duration) -> Result<GrpcProvider, NetError> {
        Ok(GrpcProvider {
            client: ProviderClient::new(channel(address, timeout)?)
                .max_decoding_message_size(MAX_MESSAGE)
                .max_encoding_message_size(MAX_MESSAGE),
        })
    }
}

#[async_trait]
impl ProviderApi for GrpcProvider {
    async fn store(
        &self,
        request: Signed<StorePiece>,
        data: PieceStream,
    ) -> Result<StoreReceipt, NetError> {
        let head = proto::StorePart {
            request: Some(request.into()),
            data: Bytes::new(),
        };
        // A part that fails ends the stream (the provider then stores nothing, as the piece is
        // short) and is the call's error.
        let failed = Arc::new(Mutex::new(None));
        let seen = failed.clone();
        let parts = data.map_while(move |part| match part {
            Ok(data) => Some(proto::StorePart {
                request: None,
                data,
            }),
            Err(e) => {
                if let Ok(mut seen) = seen.lock() {
                    *seen = Some(e);
                }
                None
            }
        });
        let reply = self
            .client
            .clone()
            .store(tokio_stream::iter([head]).chain(parts))
            .await;
        if let Some(e) = failed.lock().ok().and_then(|mut f| f.take()) {
            return Err(e);
        }
        reply?.into_inner().try_into()
    }

    async fn read(&self, request: Signed<ReadPiece>) -> Result<PieceData, NetError> {
        let reply = self
            .client
            .clone()
            .read(proto::SignedRequest::from(request))
            .await?;
        reply.into_inner().try_into()
    }

    async fn status(&self) -> Result<ProviderStatus, NetError> {
        let reply = self.client.clone().status(proto::StatusRequest {}).await?;
        reply.into_inner().try_into()
    }

    async fn challenge(&self, request: Signed<Challenge>) -> Result<ChallengeAnswer, NetError> {
        let reply = self
            .client
            .clone()
            .challenge(proto::SignedRequest::from(request))
            .await?;
        reply.into_inner().try_into()
    }

    async fn delete(&self, request: Signed<DeletePieces>) -> Result<Deleted, NetError> {
        let reply = self
            .client
            .clone()
            .delete(proto::SignedRequest::from(request))
            .await?;
        reply.into_inner().try_into()
    }
}

/// A tracker reached over gRPC.
#[derive(Debug, Clone)]
pub struct GrpcTracker {
    client: TrackerClient<Channel>,
}

impl GrpcTracker {
    /// A client for the tracker at `address`; connects on first use; each call fails as
    /// unavailable after `timeout`.
    pub fn connect_lazy(address: &str, timeout: Duration) -> Result<GrpcTracker, NetError> {
        Ok(GrpcTracker {
            client: TrackerClient::new(channel(address, timeout)?)
                .max_decoding_message_size(MAX_MESSAGE)
                .max_encoding_message_size(MAX_MESSAGE),
        })
    }
}

#[async_trait]
impl TrackerApi for GrpcTracker {
    async fn heartbeat(&self, request: Signed<Heartbeat>) -> Result<HeartbeatAck, NetError> {
        let reply = self
            .client
            .clone()
            .heartbeat(proto::SignedRequest::from(request))
            .await?;
        reply.into_inner().try_into()
    }

    async fn reserve(&self, request: Signed<ReserveSegment>) -> Result<Placement, NetError> {
        let reply = self
            .client
            .clone()
            .reserve(proto::SignedRequest::from(request))
            .await?;
        reply.into_inner().try_into()
    }

    async fn confirm(&self, request: Signed<ConfirmStored>) -> Result<Confirmed, NetError> {
        let reply = self
            .client
            .clone()
            .confirm(proto::SignedRequest::from(request))
            .await?;
        Ok(reply.into_inner().into())
    }

    async fn locate(&self, request: Signed<Locate>) -> Result<SegmentLocation, NetError> {
        let reply = self
            .client
            .clone()
            .locate(proto::SignedRequest::from(request))
            .await?;
        reply.into_inner().try_into()
    }

    async fn providers(&self) -> Result<Vec<ProviderRecord>, NetError> {
        let reply = self
            .client
            .clone()
            .providers(proto::ListProvidersRequest {})
            .await?;
        reply
            .into_inner()
            .providers
            .into_iter()
            .map(ProviderRecord::try_from)
            .collect()
    }

    async fn entrust(&self, request: Signed<Entrust>) -> Result<Entrusted, NetError> {
        let reply = self
            .client
            .clone()
            .entrust(proto::SignedRequest::from(request))
            .await?;
        Ok(reply.into_inner().into())
    }

    async fn complain(&self, request: Signed<Complaint>) -> Result<(), NetError> {
        self.client
            .clone()
            .complain(proto::SignedRequest::from(request))
            .await?;
        Ok(())
    }

    async fn mirror(&self, request: Signed<Mirror>) -> Result<(), NetError> {
        self.client
            .clone()
            .mirror(proto::SignedRequest::from(request))
            .await?;
        Ok(())
    }

    async fn lease(&self, request: Signed<Lease>) -> Result<(), NetError> {
        self.client
            .clone()
            .lease(proto::SignedRequest::from(request))
            .await?;
        Ok(())
    }

    async fn forget(&self, request: Signed<Forget>) -> Result<u32, NetError> {
        let reply = self
            .client
            .clone()
            .forget(proto::SignedRequest::from(request))
            .await?;
        Ok(reply.into_inner().forgotten)
    }

    async fn audits(&self, limit: u32) -> Result<AuditReport, NetError> {
        let reply = self
            .client
            .clone()
            .audits(proto::AuditsRequest { limit })
            .await?;
        reply.into_inner().try_into()
    }
}

/// An index provider reached over gRPC.
#[derive(Debug, Clone)]
pub struct GrpcIndex {
    client: IndexClient<Channel>,
}

impl GrpcIndex {
    /// A client for the index service at `address`; connects on first use; each call fails
    /// as unavailable after `timeout`.
    pub fn connect_lazy(address: &str, timeout: Duration) -> Result<GrpcIndex, NetError> {
        Ok(GrpcIndex {
            client: IndexClient::new(channel(address, timeout)?)
                .max_decoding_message_size(MAX_MESSAGE)
                .max_encoding_message_size(MAX_MESSAGE),
        })
    }
}

/// An index call's refusal. A node that runs but serves no index service answers
/// UNIMPLEMENTED: say which node to start, since that is what the user can change.
fn index_status(status: tonic::Status) -> NetError {
    match NetError::from(status) {
        NetError::Unavailable(m) if m.starts_with(NOT_SERVED) => NetError::Unavailable(format!(
            "{m}: it is no index provider (an index provider is started with \
             `wwt provider run --index`)"
        )),
        other => other,
    }
}

#[async_trait]
impl IndexApi for GrpcIndex {
    async fn append(&self, entry: Signed<Append>) -> Result<LogHead, NetError> {
        let reply = self
            .client
            .clone()
            .append(proto::SignedRequest::from(entry))
            .await
            .map_err(index_status)?;
        reply.into_inner().try_into()
    }

    async fn head(&self, request: Signed<GetHead>) -> Result<Option<Signed<Append>>, NetError> {
        let reply = self
            .client
            .clone()
            .head(proto::SignedRequest::from(request))
            .await
            .map_err(index_status)?;
        reply.into_inner().entry.map(Signed::try_from).transpose()
    }

    async fn entries(&self, request: Signed<GetEntries>) -> Result<Vec<Signed<Append>>, NetError> {
        let reply = self
            .client
            .clone()
            .entries(proto::SignedRequest::from(request))
            .await
            .map_err(index_status)?;
        reply
            .into_inner()
            .entries
            .into_iter()
            .map(Signed::try_from)
            .collect()
    }

    async fn query(
        &self,
        request: Signed<QueryTable>,
    ) -> Result<Answer<wwt_index::QueryOutput>, NetError> {
        let reply = self
            .client
            .clone()
            .query(proto::SignedRequest::from(request))
            .await
            .map_err(index_status)?;
        reply.into_inner().try_into()
    }

    async fn catalog(
        &self,
        request: Signed<GetCatalog>,
    ) -> Result<Answer<wwt_index::CatalogBlob>, NetError> {
        let reply = self
            .client
            .clone()
            .get_catalog(proto::SignedRequest::from(request))
            .await
            .map_err(index_status)?;
        Ok(reply.into_inner().into())
    }
}

/// Connects to services over gRPC, keeping one channel per address.
#[derive(Debug)]
pub struct GrpcConnector {
    providers: Mutex<HashMap<String, Arc<GrpcProvider>>>,
    trackers: Mutex<HashMap<String, Arc<GrpcTracker>>>,
    indexes: Mutex<HashMap<String, Arc<GrpcIndex>>>,
    timeout: Duration,
}

impl Default for GrpcConnector {
    fn default() -> Self {
        GrpcConnector::with_timeout(DEFAULT_CALL_TIMEOUT)
    }
}

impl GrpcConnector {
    /// A connector with no channels open yet and the default call timeout.
    pub fn new() -> GrpcConnector {
        GrpcConnector::default()
    }

    /// A connector whose calls fail as unavailable after `timeout`.
    pub fn with_timeout(timeout: Duration) -> GrpcConnector {
        GrpcConnector {
            providers: Mutex::new(HashMap::new()),
            trackers: Mutex::new(HashMap::new()),
            indexes: Mutex::new(HashMap::new()),
            timeout,
        }
    }
}

fn cached<T>(
    map: &Mutex<HashMap<String, Arc<T>>>,
    address: &str,
    make: impl FnOnce(&str) -> Result<T, NetError>,
) -> Result<Arc<T>, NetError> {
    let mut map = map
        .lock()
        .map_err(|_| NetError::Internal("connector cache poisoned".into()))?;
    if let Some(found) = map.get(address) {
        return Ok(found.clone());
    }
    let made = Arc::new(make(address)?);
    map.insert(address.to_string(), made.clone());
    Ok(made)
}

impl Connector for GrpcConnector {
    fn provider(&self, address: &str) -> Result<Arc<dyn ProviderApi>, NetError> {
        Ok(cached(&self.providers, address, |a| {
            GrpcProvider::connect_lazy(a, self.timeout)
        })?)
    }

    fn tracker(&self, address: &str) -> Result<Arc<dyn TrackerApi>, NetError> {
        Ok(cached(&self.trackers, address, |a| {
            GrpcTracker::connect_lazy(a, self.timeout)
        })?)
    }

    fn index(&self, address: &str) -> Result<Arc<dyn IndexApi>, NetError> {
        Ok(cached(&self.indexes, address, |a| {
            GrpcIndex::connect_lazy(a, self.timeout)
        })?)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use prost::Message;

    use super::limits::{LARGE_REQUESTS, SMALL_REQUEST, largest_cap, request_cap};
    use super::*;
    use crate::Identity;
    use crate::auth::Body;
    use crate::index::MAX_REPLICAS;
    use crate::types::{MAX_DELETE, MAX_PIECES_PER_SEGMENT};

    /// `body` signed for `T`'s method, as it travels: what its method's cap must allow.
    fn signed_len<T: Body>(body: &impl Message) -> usize {
        let signer = Identity::from_secret([1; 32]);
        let signed = signer.sign_encoded::<T>(body.encode_to_vec().into(), u64::MAX, [0; 16]);
        proto::SignedRequest::from(signed).encoded_len()
    }

    fn fits<T: Body>(body: &impl Message) {
        let (len, cap) = (signed_len::<T>(body), request_cap(T::METHOD));
        assert!(
            len <= cap,
            "{}: {len} bytes over its {cap}-byte cap",
            T::METHOD
        );
    }

    fn bytes(n: usize) -> Bytes {
        Bytes::from(vec![0xff; n])
    }

    #[test]
    fn the_largest_valid_requests_fit_their_methods_caps() {
        // Every field at its longest encoding that validation lets through.
        let reservation = proto::Reservation {
            piece_id: bytes(32),
            size: MAX_PIECE_SIZE,
            segment_id: bytes(32),
            index: MAX_PIECES_PER_SEGMENT as u32 - 1,
            provider: bytes(32),
            owner: bytes(32),
            expires_ms: u64::MAX,
            tracker: bytes(32),
            tracker_tag: bytes(32),
            provider_tag: bytes(32),
        };
        let receipt = proto::StoreReceipt {
            reservation: Some(reservation),
            tag: bytes(32),
        };
        let mut confirm = proto::ConfirmRequest {
            receipts: vec![receipt; MAX_PIECES_PER_SEGMENT * 64],
        };
        ConfirmStored::try_from(confirm.clone()).unwrap();
        fits::<ConfirmStored>(&confirm);
        confirm.receipts.push(confirm.receipts[0].clone());
        assert!(ConfirmStored::try_from(confirm).is_err(), "not the largest");

        let mut mirror = proto::MirrorRequest {
            segment_id: bytes(32),
            owner: bytes(32),
            pieces: vec![
                proto::MirroredPiece {
                    index: MAX_PIECES_PER_SEGMENT as u32 - 1,
                    piece: bytes(32),
                    size: u64::MAX,
                    holders: vec![bytes(32); 256],
                };
                256
            ],
            manifest: bytes(64 + 40 * 256),
            audit_key: bytes(32),
            forgotten: false,
        };
        Mirror::try_from(mirror.clone()).unwrap();
        fits::<Mirror>(&mirror);
        mirror.pieces[0].holders.push(bytes(32));
        assert!(Mirror::try_from(mirror).is_err(), "not the largest");

        let mut delete = proto::DeleteRequest {
            piece_ids: vec![bytes(32); MAX_DELETE],
        };
        DeletePieces::try_from(delete.clone()).unwrap();
        fits::<DeletePieces>(&delete);
        delete.piece_ids.push(bytes(32));
        assert!(DeletePieces::try_from(delete).is_err(), "not the largest");
        let forget = proto::ForgetRequest {
            segment_ids: vec![bytes(32); MAX_DELETE],
        };
        Forget::try_from(forget.clone()).unwrap();
        fits::<Forget>(&forget);

        let catalog = proto::LogEntry {
            seq: u64::MAX,
            prev: bytes(32),
            replicas: vec![bytes(32); MAX_REPLICAS],
            op: Some(proto::log_entry::Op::Catalog(proto::CatalogRecord {
                version: u64::MAX,
                blob: bytes(wwt_index::MAX_CATALOG),
            })),
        };
        Append::try_from(catalog.clone()).unwrap();
        fits::<Append>(&catalog);

        // The most rows one query returns, asked for by id (the client's largest lookup).
        let lookup = proto::QueryRequest {
            table: bytes(16),
            query: Some(proto::query_request::Query::Get(proto::RowIds {
                rows: vec![bytes(16); wwt_index::MAX_LIMIT],
            })),
        };
        QueryTable::try_from(lookup.clone()).unwrap();
        fits::<QueryTable>(&lookup);

        let reserve = proto::ReserveRequest {
            segment_id: bytes(32),
            pieces: (0..MAX_PIECES_PER_SEGMENT as u32)
                .map(|index| proto::PieceSpec {
                    index,
                    piece_id: bytes(32),
                    size: MAX_PIECE_SIZE,
                })
                .collect(),
        };
        ReserveSegment::try_from(reserve.clone()).unwrap();
        fits::<ReserveSegment>(&reserve);

        let entrust = proto::EntrustRequest {
            segment_id: bytes(32),
            manifest: bytes(64 + 40 * 256),
            audit_key: bytes(32),
        };
        Entrust::try_from(entrust.clone()).unwrap();
        fits::<Entrust>(&entrust);

        let challenge = proto::ChallengeRequest {
            piece_id: bytes(32),
            positions: vec![MAX_PIECE_SIZE - 1; crate::audit::MAX_CHALLENGE_POSITIONS],
            offset: 0,
            len: 0,
        };
        Challenge::try_from(challenge.clone()).unwrap();
        fits::<Challenge>(&challenge);
    }

    #[test]
    fn each_service_decodes_what_its_methods_take() {
        let services = [
            ProviderServer::<ProviderAdapter>::NAME,
            TrackerServer::<TrackerAdapter>::NAME,
            IndexServer::<IndexAdapter>::NAME,
        ];
        for (method, cap) in LARGE_REQUESTS {
            let service = services
                .iter()
                .find(|s| method.starts_with(&format!("/{s}/")))
                .unwrap();
            assert!(largest_cap(service) >= cap, "{method}");
        }
        // Not a prefix of another service's name.
        assert_eq!(largest_cap("wwt.v1.Prov"), SMALL_REQUEST);
    }

    #[test]
    fn a_node_without_the_index_service_says_which_node_to_start() {
        let err = index_status(tonic::Status::unimplemented(""));
        assert!(
            matches!(&err, NetError::Unavailable(m) if m.contains("--index")),
            "{err}"
        );
        let other = index_status(tonic::Status::not_found("no table"));
        assert_eq!(other, NetError::NotFound("no table".into()));
    }
}
