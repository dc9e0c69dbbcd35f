//! The tracker daemon: knows the providers from their heartbeats, places the pieces of each
//! segment on distinct providers, keeps the piece → providers map, audits the pieces entrusted
//! to it, keeps providers' credit and repairs lost pieces.
//!
//! Several trackers split the segments among themselves by rendezvous hashing
//! ([`wwt_net::rendezvous`]): the first two of a segment's ranking both keep it, the first
//! audits it and the second takes over when the first is gone (`pair`); a tracker refuses
//! segments it is not one of the two of, naming the first.
//!
//! Modules:
//! - [`config`]: the daemon's settings, [`TrackerConfig`] and [`AuditConfig`].
//! - [`audit`]: challenges on a Poisson schedule, credit, the repair queue and repair.
//! - [`forget`]: segments their owners deleted, orphans, and deleting the copies nothing maps.
//! - [`log`]: the append-only, hash-linked audit log.
//! - [`clock`]: the audit clock (system, or driven by hand in tests).
//! - [`dashboard`]: the operator's view: metrics and the dashboard page.
//! - [`registry`]: the provider registry (soft state from heartbeats) and placement.
//! - [`map`]: the piece map in sled.
//! - `pair`: a segment's two trackers: mirroring, the lease, taking over.
//! - [`service`]: [`Tracker`], the [`wwt_net::TrackerApi`] implementation.
//! - [`error`]: the crate's error type, [`TrackerError`].

pub mod audit;
pub mod clock;
pub mod config;
pub mod credit;
pub mod dashboard;
pub mod error;
pub mod forget;
pub mod log;
pub mod map;
mod pair;
pub mod registry;
pub mod service;

use std::future::Future;
use std::sync::Arc;

use tracing::info;
use wwt_net::node::Node;
use wwt_net::ops::{Http, Listeners, serve_node};
use wwt_net::{TrackerApi, grpc};

pub use config::{AdmissionConfig, AuditConfig, PeerTracker, TrackerConfig};
pub use error::TrackerError;
pub use service::Tracker;

/// Runs a tracker on `listeners` until `shutdown` resolves: [`Tracker::open`], then [`serve`].
pub async fn run(
    config: TrackerConfig,
    listeners: Listeners,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), TrackerError> {
    let tracker = Arc::new(Tracker::open(&config)?);
    serve(tracker, &config, listeners, shutdown).await
}

/// Serves an opened tracker on `listeners` until `shutdown` resolves: gRPC (and the operator
/// endpoint, if it has a listener), the audit loop when `config.audit.enabled`
/// ([`audit::spawn_audits`]), and with `config.dht` set a DHT node.
pub async fn serve(
    tracker: Arc<Tracker>,
    config: &TrackerConfig,
    listeners: Listeners,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), TrackerError> {
    listeners
        .serve_as(config.http_listen)
        .map_err(TrackerError::BadConfig)?;
    let Listeners { grpc, http } = listeners;
    info!(node = %tracker.node_id(), address = ?grpc.local_addr().ok(), "tracker listening");
    let node = match config.dht.clone() {
        Some(mut dht) => {
            dht.store_dir
                .get_or_insert_with(|| config.data_dir.join("dht"));
            Some(Node::start(&tracker.identity, dht).await?)
        }
        None => None,
    };
    let audits = config
        .audit
        .enabled
        .then(|| audit::spawn_audits(tracker.clone()));
    let (http, requests) = match http {
        Some(listener) => {
            let (registry, requests) = dashboard::metrics(&tracker);
            let site = dashboard::site(&tracker);
            let http = Http {
                listener,
                registry,
                site,
            };
            (Some(http), Some(requests))
        }
        None => (None, None),
    };
    let api: Arc<dyn TrackerApi> = tracker;
    let services = grpc::Services {
        tracker: Some(api),
        metrics: requests,
        ..Default::default()
    };
    let served = serve_node(services, grpc, http, shutdown).await;
    if let Some(audits) = audits {
        // Wait until the loop has dropped its handle, so the database is closed on return.
        audits.abort();
        let _ = audits.await;
    }
    // Wait for the node's task too: its records' database is closed when this returns.
    if let Some((node, task)) = node {
        node.shutdown().await;
        let _ = task.await;
    }
    Ok(served?)
}
