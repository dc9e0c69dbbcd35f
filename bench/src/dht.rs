//! `wwt bench-dht`: Kademlia lookups in swarms of real libp2p nodes (wwt's `Node`, the same
//! code the daemons run) on libp2p's in-process memory transport: hops and time per lookup,
//! for swarms of growing size, and the hops that growth extrapolates to for a large network.
//!
//! Each node joins through the first node and a random earlier one, as a node started by
//! hand with `--dht-bootstrap` does; once all have joined, each publishes its address record
//! (as the periodic republishing of a running network leaves records at the peers closest to
//! their key, not at those that were closest when the network was smaller). Lookups run with
//! Kademlia's α = 1, so the requests a lookup sends until the first record comes back are its
//! hops; then, beside them, the same lookups with α = 3 (the daemons' setting) give the time.
//! Figures are medians over the lookups: a random node looks up a random other's address.

use std::time::Duration;

use anyhow::{Result, ensure};
use rand::{Rng, SeedableRng};
use wwt_net::Identity;
use wwt_net::node::{Node, NodeConfig, Probe};

use crate::{median, percentile};

/// Options of `wwt bench-dht`.
#[derive(clap::Args, Debug, Clone)]
pub struct Options {
    /// Nodes in the largest swarm; smaller ones of a quarter and a half of it run first.
    #[arg(long, default_value_t = 500)]
    pub nodes: usize,
    /// Lookups timed in each swarm.
    #[arg(long, default_value_t = 300)]
    pub lookups: usize,
}

/// One swarm's lookups.
#[derive(Debug, Clone)]
pub struct Swarm {
    /// Nodes in it.
    pub nodes: usize,
    /// Lookups that found the record (α = 1), of those asked.
    pub found: usize,
    /// Hops (requests until the first record, α = 1): median, 90th percentile, most, mean.
    pub hops: [f64; 4],
    /// Milliseconds per lookup with α = 1, then α = 3: medians.
    pub ms: [f64; 2],
}

/// Memory-transport ports: each swarm's nodes take the next ones.
static NEXT_PORT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

/// Starts `n` nodes with lookups of parallelism `alpha`; returns them with their identities.
async fn swarm(
    n: usize,
    alpha: usize,
    rng: &mut rand::rngs::StdRng,
) -> Result<Vec<(Node, Identity)>> {
    let mut nodes: Vec<(Node, Identity, String)> = Vec::with_capacity(n);
    let started = std::time::Instant::now();
    for _ in 0..n {
        let port = NEXT_PORT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let listen = format!("/memory/{port}");
        let mut bootstrap = Vec::new();
        if let Some(first) = nodes.first() {
            bootstrap.push(first.2.clone());
            bootstrap.push(nodes[rng.random_range(0..nodes.len())].2.clone());
        }
        let identity = Identity::generate()?;
        let config = NodeConfig {
            listen: listen.clone(),
            bootstrap,
            parallelism: alpha,
            query_timeout_ms: 10_000,
            ..NodeConfig::default()
        };
        let (node, _task) = Node::start(&identity, config).await?;
        let peer = wwt_net::node::peer_id(&identity.node_id())?;
        nodes.push((node, identity, format!("{listen}/p2p/{peer}")));
    }
    let started = started.elapsed();
    let published = std::time::Instant::now();
    for chunk in nodes.chunks(32).enumerate() {
        let (c, chunk) = chunk;
        let puts = chunk
            .iter()
            .enumerate()
            .map(|(i, (node, identity, _))| async move {
                let address = format!("http://node-{}", c * 32 + i);
                node.publish_address(identity, &address).await
            });
        for put in futures::future::join_all(puts).await {
            put?;
        }
    }
    println!(
        "{n:>6} nodes (α = {alpha}) joined in {:.1} s, published their addresses in {:.1} s",
        started.as_secs_f64(),
        published.elapsed().as_secs_f64()
    );
    Ok(nodes.into_iter().map(|(node, id, _)| (node, id)).collect())
}

/// `lookups` lookups of a random node's address by a random other node.
async fn probes(
    nodes: &[(Node, Identity)],
    lookups: usize,
    rng: &mut rand::rngs::StdRng,
) -> Result<Vec<Probe>> {
    let mut out = Vec::with_capacity(lookups);
    for _ in 0..lookups {
        let from = rng.random_range(0..nodes.len());
        let mut to = rng.random_range(0..nodes.len() - 1);
        if to >= from {
            to += 1;
        }
        out.push(nodes[from].0.probe_address(&nodes[to].1.node_id()).await?);
    }
    Ok(out)
}

async fn stop(nodes: Vec<(Node, Identity)>) {
    for (node, _) in nodes {
        node.shutdown().await;
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Runs the benchmark and prints its figures.
pub async fn run(options: &Options) -> Result<()> {
    ensure!(options.nodes >= 8, "--nodes must be at least 8");
    let mut rng = rand::rngs::StdRng::seed_from_u64(0x0d47);
    let sizes = [options.nodes / 4, options.nodes / 2, options.nodes];
    let mut swarms = Vec::new();
    for &n in &sizes {
        let nodes = swarm(n, 1, &mut rng).await?;
        let one = probes(&nodes, options.lookups, &mut rng).await?;
        stop(nodes).await;
        let nodes = swarm(n, 3, &mut rng).await?;
        let three = probes(&nodes, options.lookups, &mut rng).await?;
        stop(nodes).await;
        let mut hops: Vec<f64> = one
            .iter()
            .filter(|p| p.found)
            .map(|p| f64::from(p.requests))
            .collect();
        hops.sort_by(f64::total_cmp);
        let s = Swarm {
            nodes: n,
            found: one.iter().filter(|p| p.found).count(),
            hops: [
                percentile(&hops, 0.5),
                percentile(&hops, 0.9),
                hops.last().copied().unwrap_or(f64::NAN),
                hops.iter().sum::<f64>() / hops.len().max(1) as f64,
            ],
            ms: [
                median(one.iter().map(|p| ms(p.duration)).collect()),
                median(three.iter().map(|p| ms(p.duration)).collect()),
            ],
        };
        println!(
            "{:>6} nodes: found {}/{}; hops median {:.0}, p90 {:.0}, max {:.0}, mean {:.2}; \
             lookup median {:.2} ms (α = 1), {:.2} ms (α = 3)",
            s.nodes,
            s.found,
            options.lookups,
            s.hops[0],
            s.hops[1],
            s.hops[2],
            s.hops[3],
            s.ms[0],
            s.ms[1]
        );
        swarms.push(s);
    }
    // Hops grow with log2 of the size: a least-squares line through the mean hops against
    // log2(nodes), extended to 30 million nodes.
    let points: Vec<(f64, f64)> = swarms
        .iter()
        .map(|s| ((s.nodes as f64).log2(), s.hops[3]))
        .collect();
    let n = points.len() as f64;
    let (mx, my) = (
        points.iter().map(|p| p.0).sum::<f64>() / n,
        points.iter().map(|p| p.1).sum::<f64>() / n,
    );
    let slope = points.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum::<f64>()
        / points.iter().map(|p| (p.0 - mx).powi(2)).sum::<f64>();
    let at = |nodes: f64| my + slope * (nodes.log2() - mx);
    println!(
        "mean hops grow {slope:.2} per doubling of the swarm: {:.1} at 30,000,000 nodes",
        at(30e6)
    );
    Ok(())
}
