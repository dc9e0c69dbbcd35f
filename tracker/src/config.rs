//! The tracker's configuration.

use std::net::SocketAddr;
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
    /// Serve the operator's HTTP endpoint here: `/metrics` (Prometheus), `/health` and the
    /// dashboard at `/`; none if unset. Whoever starts the node binds it, into
    /// [`wwt_net::ops::Listeners::http`].
    pub http_listen: Option<SocketAddr>,
    /// Seed of the placement draws, for tests that replay a network: a segment's placement
    /// then follows from the seed, the segment and how often this tracker placed pieces of it
    /// before. Unset (the default), the draws also take in the time of the request.
    pub placement_seed: Option<u64>,
    /// Of a segment's two trackers, the second takes over its audits and repairs once the
    /// first has not answered its lease renewals for this long (audit clock, milliseconds).
    pub lease_ms: u64,
    /// Challenges, credit and repair.
    pub audit: AuditConfig,
    /// Which providers are admitted, vetted and placed on.
    pub admission: AdmissionConfig,
}

/// Admission: what a provider must prove before it is trusted with data (Storj's vetting).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdmissionConfig {
    /// Operator keys whose certified providers are vetted at once: the network's own
    /// operators, who vouch for their nodes (a devnet's providers are certified by its key).
    pub operators: Vec<NodeId>,
    /// Admit only providers certified by one of `operators`; heartbeats of others are refused.
    pub permissioned: bool,
    /// Challenges a provider must pass to be vetted...
    pub vetting_audits: u64,
    /// ...over at least this long since its first passed challenge (audit clock, milliseconds).
    pub vetting_ms: u64,
    /// Share of new pieces placed on unvetted providers while enough providers are vetted
    /// to place a whole segment; such a segment gets at most one unvetted piece.
    pub unvetted_share: f64,
    /// A condemned provider may start its vetting again this long after it was condemned
    /// (audit clock, milliseconds); until then it gets no pieces.
    pub readmit_after_ms: u64,
    /// Complaints one owner may file per hour; each triggers a challenge of that piece.
    pub complaints_per_hour: u32,
    /// Bytes one owner may keep under this tracker (its pieces mapped here, each copy
    /// counted); a reservation past it is refused. None: no quota.
    pub owner_quota_bytes: Option<u64>,
}

impl Default for AdmissionConfig {
    fn default() -> Self {
        AdmissionConfig {
            operators: Vec::new(),
            permissioned: false,
            vetting_audits: 20,
            vetting_ms: 24 * 3_600_000,
            unvetted_share: 0.05,
            readmit_after_ms: 7 * 24 * 3_600_000,
            complaints_per_hour: 30,
            owner_quota_bytes: None,
        }
    }
}

/// How a tracker audits the pieces entrusted to it and repairs lost ones.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuditConfig {
    /// Run the audit loop (challenges and repairs on the system clock). When false, audits run
    /// only when something calls [`crate::Tracker::audit_step`] (tests on a simulated clock).
    pub enabled: bool,
    /// Mean time between two challenges of one piece, in milliseconds; gaps are exponential
    /// (a Poisson process per piece), so a provider cannot predict the next one.
    pub mean_interval_ms: u64,
    /// Share of challenges that ask for a chunk with its Bao proof instead of sentinels.
    pub chunk_share: f64,
    /// Sentinels asked by one sentinel challenge (q); each sentinel is asked once.
    pub sentinels_per_challenge: u32,
    /// A piece is re-coded with fresh sentinels once fewer than this many remain unused.
    pub refresh_below: u32,
    /// How long a provider has to answer a challenge, in milliseconds of the audit clock:
    /// real time in a daemon; on a test's hand-driven clock, until the test moves it past.
    pub deadline_ms: u64,
    /// Wrong answers within the credit window after which a provider loses all its pieces to
    /// repair.
    pub max_failures: u64,
    /// Half-life of the counts credit is computed from (audit clock, milliseconds): results
    /// older than a few half-lives no longer count, so credit is a sliding window.
    pub credit_half_life_ms: u64,
    /// A provider that misses every challenge for this long (audit clock, milliseconds) loses
    /// all its pieces to repair.
    pub offline_threshold_ms: u64,
    /// Segments repaired per audit step at most (the repair rate limit).
    pub repairs_per_step: usize,
    /// Challenges in flight at once.
    pub concurrency: usize,
    /// Seed of the schedule and of the challenge draws; from the OS when unset.
    pub seed: Option<u64>,
    /// A segment with pieces confirmed here that is not entrusted this long after its first
    /// piece was mapped (audit clock, milliseconds) is an orphan (an upload abandoned before
    /// its entrust): it is forgotten as if its owner had deleted it, and its pieces deleted
    /// once the other tracker of its pair has forgotten it too (see [`crate::forget`]).
    pub orphan_grace_ms: u64,
}

impl Default for AuditConfig {
    fn default() -> Self {
        AuditConfig {
            enabled: true,
            mean_interval_ms: 3_600_000,
            chunk_share: 0.25,
            sentinels_per_challenge: 8,
            refresh_below: 16,
            deadline_ms: 5_000,
            max_failures: 2,
            credit_half_life_ms: 7 * 24 * 3_600_000,
            offline_threshold_ms: 30 * 60_000,
            repairs_per_step: 4,
            concurrency: 32,
            seed: None,
            orphan_grace_ms: 24 * 3_600_000,
        }
    }
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
            http_listen: None,
            placement_seed: None,
            lease_ms: 10_000,
            audit: AuditConfig::default(),
            admission: AdmissionConfig::default(),
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
