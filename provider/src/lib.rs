//! The provider daemon: holds coded pieces on disk under tracker reservations, serves them to
//! their owners and to trusted trackers, and reports to its trackers.
//!
//! Modules:
//! - [`config`]: [`ProviderConfig`], the daemon's settings.
//! - [`store`]: [`store::PieceStore`], pieces as records in a crash-safe log, committed in
//!   groups and indexed in sled.
//! - [`service`]: [`Provider`], the [`wwt_net::ProviderApi`] implementation.
//! - [`index`]: [`IndexService`], the [`wwt_net::IndexApi`] implementation: a replica of its
//!   owners' logs, applied to the encrypted index store (when the provider is also an index
//!   provider).
//! - [`log`]: [`log::Logs`], the owners' log entries as they signed them.
//! - [`page`]: [`ProviderSite`], the operator's view: metrics and the provider's page.
//! - [`error`]: the crate's error type, [`ProviderError`].
//!
//! [`run`] is the daemon: it opens the provider (and its index store, if configured), serves
//! them over gRPC and sends heartbeats.

pub mod config;
pub mod error;
pub mod index;
pub mod log;
pub mod page;
pub mod service;
pub mod store;

use std::future::Future;
use std::sync::Arc;

use tokio::task::JoinHandle;
use tracing::{info, warn};
use wwt_net::grpc::{self, GrpcConnector};
use wwt_net::node::Node;
use wwt_net::ops::{Http, Listeners, serve_node};
use wwt_net::{Connector, IndexApi, ProviderApi};

pub use config::{ProviderConfig, TrackerEndpoint};
pub use error::ProviderError;
pub use index::IndexService;
pub use page::ProviderSite;
pub use service::Provider;

/// Runs a provider on `listeners` until `shutdown` resolves: serves gRPC (and the operator
/// endpoint, if it has a listener), heartbeats to the configured trackers, and (with `dht`
/// set) announces held segments in the DHT.
pub async fn run(
    config: ProviderConfig,
    listeners: Listeners,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ProviderError> {
    run_with(config, listeners, shutdown, |api| api, |api| api).await
}

/// [`run`], with the services that gRPC serves passed through `layer` and `index_layer`
/// first (wrappers that log, limit, or, in tests, misbehave).
pub async fn run_with(
    config: ProviderConfig,
    listeners: Listeners,
    shutdown: impl Future<Output = ()> + Send,
    layer: impl FnOnce(Arc<dyn ProviderApi>) -> Arc<dyn ProviderApi>,
    index_layer: impl FnOnce(Arc<dyn IndexApi>) -> Arc<dyn IndexApi>,
) -> Result<(), ProviderError> {
    listeners
        .serve_as(config.http_listen)
        .map_err(ProviderError::BadConfig)?;
    let Listeners { grpc, http } = listeners;
    let local = grpc.local_addr().map_err(|source| ProviderError::Disk {
        path: "<listener>".into(),
        source,
    })?;
    let address = config
        .advertise
        .clone()
        .unwrap_or_else(|| format!("http://{local}"));
    let mut provider = Provider::open(&config)?;
    let node = match config.dht.clone() {
        Some(mut dht) => {
            dht.service_address.get_or_insert_with(|| address.clone());
            dht.store_dir
                .get_or_insert_with(|| config.data_dir.join("dht"));
            let (node, task) = Node::start(provider.identity(), dht).await?;
            provider = provider.with_discovery(Arc::new(node.clone()))?;
            Some((node, task))
        }
        None => None,
    };
    let provider = Arc::new(provider);
    info!(node = %provider.node_id(), %address, "provider listening");
    let connector: Arc<dyn Connector> = Arc::new(GrpcConnector::new());
    let beats = spawn_heartbeats(
        provider.clone(),
        connector.clone(),
        address,
        config.heartbeat_interval(),
    );
    let index = if config.index {
        Some(Arc::new(IndexService::open(&config, connector.clone())?))
    } else {
        None
    };
    let (http, requests) = match http {
        Some(listener) => {
            let site = ProviderSite::new(&provider, index.as_ref(), connector.clone());
            let (registry, requests) = site.metrics();
            let http = Http {
                listener,
                registry,
                site: Arc::new(site),
            };
            (Some(http), Some(requests))
        }
        None => (None, None),
    };
    let api: Arc<dyn ProviderApi> = provider;
    let services = grpc::Services {
        provider: Some(layer(api)),
        index: index.clone().map(|i| index_layer(i as Arc<dyn IndexApi>)),
        metrics: requests,
        ..Default::default()
    };
    let served = serve_node(services, grpc, http, shutdown).await;
    beats.abort();
    // Wait until the heartbeat task has dropped its handle on the provider, so the store is
    // closed (and its lock released) when this function returns.
    let _ = beats.await;
    // Wait for the node's task too: its records' database is closed when this returns.
    if let Some((node, task)) = node {
        node.shutdown().await;
        let _ = task.await;
    }
    // The server has dropped its handle: close the index store (flush, finish merges).
    if let Some(index) = index.and_then(Arc::into_inner) {
        index.close()?;
    }
    Ok(served?)
}

/// Sends a heartbeat to every trusted tracker now and then every `interval`, until aborted.
pub fn spawn_heartbeats(
    provider: Arc<Provider>,
    connector: Arc<dyn Connector>,
    address: String,
    interval: std::time::Duration,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            for (id, tracker_address) in provider.trackers() {
                let sent = match connector.tracker(tracker_address) {
                    Ok(tracker) => provider.heartbeat_once(tracker.as_ref(), &address).await,
                    Err(e) => Err(e),
                };
                if let Err(e) = sent {
                    warn!(tracker = %id, error = %e, "heartbeat failed");
                }
            }
        }
    })
}
