//! The wwt client library and the `wwt` command-line tool.
//!
//! Layout:
//! - [`auditbench`]: `wwt bench-audit`, the cost of challenges and of repair against upload.
//! - [`audits`]: `wwt tracker audits`, a tracker's audit log and credit as text.
//! - [`home`]: where the keystore and local state live (`$WWT_HOME`, default `~/.wwt`).
//! - [`bench`]: `wwt bench`, the storage engine's throughput against raw AES-SIV.
//! - [`demo`]: `wwt demo`, rows through the engine onto provider folders and back.
//! - [`daemon`]: `wwt provider run` and `wwt tracker run`: flags and config files of the daemons.
//! - [`devnet`]: `wwt devnet`, a real local network of tracker and provider daemons on loopback.
//! - [`store`]: the storage path over the network: upload, resume, read from any k pieces.
//! - [`db`]: [`db::Client`], SQL over the network with only the owner's keys.
//! - [`sqlbench`]: `wwt bench-sql`, SQL on a local network against SQLite on the same rows.
//! - [`shell`]: `wwt sql`, the interactive shell and script runner over [`db::Client`].

pub mod auditbench;
pub mod audits;
pub mod bench;
pub mod daemon;
pub mod db;
pub mod demo;
pub mod devnet;
pub mod home;
pub mod netbench;
pub mod shell;
pub mod sqlbench;
pub mod store;
