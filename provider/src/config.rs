//! The provider's configuration.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use wwt_net::node::NodeConfig;
use wwt_net::types::{MAX_PIECE_SIZE, NodeId, OperatorCert};

/// A tracker this provider trusts: it accepts its reservations, serves it pieces, and sends it
/// heartbeats.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrackerEndpoint {
    /// The tracker's node id (hex of its ed25519 public key).
    pub id: NodeId,
    /// Its gRPC address, e.g. `http://127.0.0.1:7000`.
    pub address: String,
}

/// Everything a provider daemon needs to run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ProviderConfig {
    /// Directory for pieces, metadata and (by default) the identity key.
    pub data_dir: PathBuf,
    /// The identity key file (64 hex chars, mode 0600); created if missing.
    /// Default: `<data_dir>/node.key`.
    pub identity_file: Option<PathBuf>,
    /// The address announced to trackers and in the DHT; default `http://<listener address>`,
    /// which is only right when the listener is bound to a reachable IP (not `0.0.0.0`).
    pub advertise: Option<String>,
    /// The failure zone (rack, site) announced to trackers; "" if unknown.
    pub zone: String,
    /// The certificate of this provider's operator (hex, from `wwt operator certify`): its
    /// trackers then give a segment at most one piece of this operator's providers, and
    /// vet it at once if they list the operator's key.
    pub operator_certificate: Option<OperatorCert>,
    /// Bytes of piece data this provider offers.
    pub capacity_bytes: u64,
    /// The largest piece accepted, in bytes (at most the wire limit, 64 MiB).
    pub max_piece_bytes: u64,
    /// Trackers to trust and report to.
    pub trackers: Vec<TrackerEndpoint>,
    /// Milliseconds between heartbeats.
    pub heartbeat_interval_ms: u64,
    /// How far a request's timestamp may be from the local clock, in milliseconds.
    pub signature_window_ms: u64,
    /// The libp2p node announcing held segments in the DHT; none if unset.
    pub dht: Option<NodeConfig>,
    /// Serve the operator's HTTP endpoint here: `/metrics` (Prometheus), `/health` and the
    /// provider's page at `/`; none if unset. Whoever starts the node binds it, into
    /// [`wwt_net::ops::Listeners::http`].
    pub http_listen: Option<SocketAddr>,
    /// Also be an index provider: host owners' encrypted indexes and catalogs in
    /// `<data_dir>/index` and serve the `wwt.v1.Index` service.
    pub index: bool,
}

impl Default for ProviderConfig {
    fn default() -> Self {
        ProviderConfig {
            data_dir: PathBuf::from("wwt-provider"),
            identity_file: None,
            advertise: None,
            zone: String::new(),
            operator_certificate: None,
            capacity_bytes: 10 << 30,
            max_piece_bytes: 16 << 20,
            trackers: Vec::new(),
            heartbeat_interval_ms: 5_000,
            signature_window_ms: 120_000,
            dht: None,
            http_listen: None,
            index: false,
        }
    }
}

impl ProviderConfig {
    /// The identity key file in force.
    pub fn identity_path(&self) -> PathBuf {
        self.identity_file
            .clone()
            .unwrap_or_else(|| self.data_dir.join("node.key"))
    }

    /// Where the index store lives (when `index` is on).
    pub fn index_dir(&self) -> PathBuf {
        self.data_dir.join("index")
    }

    /// The heartbeat interval.
    pub fn heartbeat_interval(&self) -> Duration {
        Duration::from_millis(self.heartbeat_interval_ms.max(1))
    }

    pub(crate) fn validate(&self) -> Result<(), crate::ProviderError> {
        if self.max_piece_bytes == 0 || self.max_piece_bytes > MAX_PIECE_SIZE {
            return Err(crate::ProviderError::BadConfig(format!(
                "max_piece_bytes must be in 1..={MAX_PIECE_SIZE}"
            )));
        }
        Ok(())
    }
}
