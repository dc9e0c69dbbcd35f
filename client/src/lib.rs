//! The wwt client library and the `wwt` command-line tool.
//!
//! Layout:
//! - [`home`]: where the keystore and local state live (`$WWT_HOME`, default `~/.wwt`).
//! - [`bench`]: `wwt bench`, the storage engine's throughput against raw AES-SIV.
//! - [`demo`]: `wwt demo`, rows through the engine onto provider folders and back.
//!
//! The network client (providers, trackers, SQL) arrives with issues 3 and 5.

pub mod bench;
pub mod demo;
pub mod home;
