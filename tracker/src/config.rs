//! The tracker's configuration.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use wwt_net::node::NodeConfig;
use wwt_net::types::NodeId;

/// Another tracker of the same network (segments are split among trackers by rendezvous hashing).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerTracker {
    /// Its node id.
    pub id: NodeId,
    /// Its gRPC address.
    pub address: String,
}

/// Everything a tracker daemon needs to run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrackerConfig {
    /// Directory for the piece map and (by default) the identity key.
    pub data_dir: PathBuf,
    /// The identity key file; created if missing. Default: `<data_dir>/node.key`.
    pub identity_file: Option<PathBuf>,
    /// The other trackers of the network (not this one).
    pub peers: Vec<PeerTracker>,
    /// The interval providers are asked to heartbeat at, in milliseconds.
    pub heartbeat_interval_ms: u64,
    /// A provider is dead once its last heartbeat is older than this, in milliseconds.
    pub liveness_timeout_ms: u64,
    /// How long a reservation stays valid, in milliseconds.
    pub reservation_ttl_ms: u64,
    /// How far a request's timestamp may be from the local clock, in milliseconds.
    pub signature_window_ms: u64,
    /// A libp2p node serving the DHT (trackers make good bootstrap peers); none if unset.
    pub dht: Option<NodeConfig>,
}

impl Default for TrackerConfig {
    fn default() -> Self {
        TrackerConfig {
            data_dir: PathBuf::from("wwt-tracker"),
            identity_file: None,
            peers: Vec::new(),
            heartbeat_interval_ms: 5_000,
            liveness_timeout_ms: 20_000,
            reservation_ttl_ms: 10 * 60_000,
            signature_window_ms: 120_000,
            dht: None,
        }
    }
}

impl TrackerConfig {
    /// The identity key file in force.
    pub fn identity_path(&self) -> PathBuf {
        self.identity_file
            .clone()
            .unwrap_or_else(|| self.data_dir.join("node.key"))
    }
}
