//! The wwt client library and the `wwt` command-line tool.
//!
//! Layout:
//! - [`home`]: where the keystore and local state live (`$WWT_HOME`, default `~/.wwt`).
//! - [`bench`]: `wwt bench`, the storage engine's throughput against raw AES-SIV.
//! - [`demo`]: `wwt demo`, rows through the engine onto provider folders and back.
//! - [`daemon`]: `wwt provider run` and `wwt tracker run`: flags and config files of the daemons.
//! - [`devnet`]: `wwt devnet`, a real local network of tracker and provider daemons on loopback.
//! - [`store`]: the storage path over the network: upload, resume, read from any k pieces.
//!
//! The network client (providers, trackers, SQL) arrives with issues 3 and 5.

pub mod bench;
pub mod daemon;
pub mod demo;
pub mod devnet;
pub mod home;
pub mod store;
