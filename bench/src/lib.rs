//! wwt's benchmarks. Each measures a part of wwt beside a baseline measured in the same run on
//! the same bytes, and prints the ratio; figures are medians. The `wwt bench…` subcommands
//! call these.
//!
//! Layout:
//! - [`engine`]: `wwt bench`, the storage engine's encode and decode against raw AES-SIV.
//! - [`net`]: `wwt bench-net`, piece upload and download through the client against raw gRPC.
//! - [`sql`]: `wwt bench-sql`, SQL on a local network against SQLite on the same rows.
//! - [`audit`]: `wwt bench-audit`, challenges per second and repair against upload.
//! - [`dht`]: `wwt bench-dht`, Kademlia hops and lookup time in swarms of up to 500 nodes.
//! - [`index`]: `wwt bench-index`, the encrypted indexes against plain tantivy and sled.

pub mod audit;
pub mod dht;
pub mod engine;
pub mod index;
pub mod net;
pub mod sql;

/// The median of `xs`, nearest rank; NaN if there are none.
pub fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    percentile(&xs, 0.5)
}

/// The `p` quantile (0..=1) of sorted samples, nearest rank; NaN if there are none.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted.get(i).copied().unwrap_or(f64::NAN)
}
