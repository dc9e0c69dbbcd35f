//! The wwt client library, what a dApp links: SQL over the network with only the owner's keys
//! on the machine. It starts no daemon; the network it talks to is reached through a
//! `wwt_net::Connector` (gRPC, or the in-memory network in tests).
//!
//! Layout:
//! - [`db`]: [`db::Client`], SQL over the network: catalog, writes, reads, streamed SELECTs.
//! - [`store`]: the storage path over the network: upload, resume, read from any k pieces.

pub mod db;
pub mod store;
