//! The tracker daemon: knows the providers from their heartbeats, places the pieces of each
//! segment on distinct providers, and keeps the piece → providers map.
//!
//! Several trackers split the segments among themselves by rendezvous hashing
//! ([`wwt_net::rendezvous`]); each refuses segments that are another's, naming it.
//!
//! Modules:
//! - [`config`]: the daemon's settings, [`TrackerConfig`].
//! - [`registry`]: the provider registry (soft state from heartbeats) and placement.
//! - [`map`]: the piece map in sled.
//! - [`service`]: [`Tracker`], the [`wwt_net::TrackerApi`] implementation.
//! - [`error`]: the crate's error type, [`TrackerError`].

pub mod config;
pub mod error;
pub mod map;
pub mod registry;
pub mod service;

use std::future::Future;
use std::sync::Arc;

use tokio::net::TcpListener;
use tracing::info;
use wwt_net::node::Node;
use wwt_net::{Identity, TrackerApi, grpc};

pub use config::{PeerTracker, TrackerConfig};
pub use error::TrackerError;
pub use service::Tracker;

/// Runs a tracker on `listener` until `shutdown` resolves (with `dht` set, also a DHT node).
pub async fn run(
    config: TrackerConfig,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), TrackerError> {
    let tracker = Arc::new(Tracker::open(&config)?);
    info!(node = %tracker.node_id(), address = ?listener.local_addr().ok(), "tracker listening");
    let node = match config.dht.clone() {
        Some(dht) => {
            let identity = Identity::load_or_create(&config.identity_path())?;
            Some(Node::start(&identity, dht).await?.0)
        }
        None => None,
    };
    let api: Arc<dyn TrackerApi> = tracker;
    let services = grpc::Services {
        tracker: Some(api),
        ..Default::default()
    };
    let served = grpc::serve(services, listener, shutdown).await;
    if let Some(node) = node {
        node.shutdown().await;
    }
    Ok(served?)
}
