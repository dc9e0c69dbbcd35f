//! The wire of wwt: the gRPC contract, the provider and tracker APIs as traits, and the ways to
//! reach them: over gRPC, in memory, or through injected faults.
//!
//! `net` knows nothing of tables' contents: a piece is opaque bytes named by its BLAKE3 hash,
//! and index requests carry only the opaque tokens and ciphertexts of `wwt-index`.
//!
//! Modules:
//! - [`proto`]: the code generated from `proto/wwt.proto`, the public contract.
//! - [`types`]: domain types (ids, reservations, requests, answers), validated on receipt with
//!   `TryFrom<proto::…>`.
//! - [`audit`]: domain types of audits: challenges, entrusted segments, complaints, the audit
//!   report.
//! - [`auth`]: ed25519 identities, signed requests and the verifier (staleness, replay).
//! - [`api`]: the seams: [`ProviderApi`], [`TrackerApi`], [`Connector`], [`Discovery`].
//! - [`index`]: the index provider's seam [`IndexApi`] and its signed request bodies.
//! - [`grpc`]: tonic server adapters (with reflection) and clients implementing the traits.
//! - [`ops`]: the operator's HTTP endpoint: Prometheus metrics, health, the node's page.
//! - [`memory`]: the in-memory network and DHT twin for whole-network tests in one process.
//! - [`faults`]: a connector wrapper that drops, delays, corrupts and partitions.
//! - [`node`]: the libp2p node (Kademlia + identify over TCP/noise/yamux) as one actor task;
//!   it implements [`Discovery`] with provider records per segment.
//! - [`rendezvous`]: which tracker answers for a segment.
//! - [`error`]: [`NetError`] and its single mapping to `tonic::Status`.

pub mod api;
pub mod audit;
pub mod auth;
pub mod error;
pub mod faults;
pub mod grpc;
pub mod index;
pub mod memory;
pub mod node;
pub mod ops;
mod provide;
mod records;
pub mod rendezvous;
pub mod types;

/// Code generated from `proto/wwt.proto` and `proto/index.proto` (package `wwt.v1`).
#[allow(missing_docs, clippy::all, clippy::unwrap_used)]
pub mod proto {
    tonic::include_proto!("wwt.v1");

    /// The encoded file descriptor set, served by gRPC reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("wwt_descriptor");
}

pub use api::{
    Connector, Discovery, FoundHolder, ProviderApi, TrackerApi, read_piece, read_whole_piece,
    store_piece,
};
pub use auth::{Checked, Identity, PeerKeys, Signed, Verifier, now_ms};
pub use error::NetError;
pub use index::IndexApi;
