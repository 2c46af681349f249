//! Convergence benchmark: 20 nodes in one process (libp2p memory
//! transport), each writing 1,000 keys of its own namespace; how long until
//! every node holds all 20,000 entries, and then a check that every node's
//! view of every namespace is the same. Prints the figures.
//!
//! `cargo bench -p infermesh-core --bench converge` (or `make bench`).

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use common::{TestNode, memory_config, wait_full_mesh};
use futures::StreamExt;
use infermesh_core::{Identity, MeshConfig, Timing, WriteMode};
use serde_json::json;

const NODES: usize = 20;
const WRITES: usize = 1_000;

/// `INFERMESH_CONVERGE=<nodes>x<writes>` runs a smaller (or larger) round.
fn shape() -> (usize, usize) {
    std::env::var("INFERMESH_CONVERGE")
        .ok()
        .and_then(|v| {
            let (n, w) = v.split_once('x')?;
            Some((n.parse().ok()?, w.parse().ok()?))
        })
        .unwrap_or((NODES, WRITES))
}
/// Writes each node keeps outstanding.
const IN_FLIGHT: usize = 64;
const DEADLINE: Duration = Duration::from_secs(300);

fn main() {
    if std::env::var_os("RUST_LOG").is_some() {
        tracing_subscriber::fmt().with_env_filter(tracing_subscriber::EnvFilter::from_default_env()).init();
    }
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    runtime.block_on(run());
}

async fn run() {
    let (nodes_n, writes) = shape();
    // The timing nodes run with (not the tests' fast one): entries travel
    // by live gossip, as they do in use.
    let config = |bootstrap| MeshConfig {
        timing: Timing::default(),
        ..memory_config(Identity::generate().expect("identity"), bootstrap)
    };
    let first = TestNode::start(config(vec![]), "/memory/0".parse().unwrap()).await;
    let bootstrap = vec![first.addr.clone()];
    let mut nodes = vec![first];
    for _ in 1..nodes_n {
        nodes.push(TestNode::start(config(bootstrap.clone()), "/memory/0".parse().unwrap()).await);
    }
    wait_full_mesh(&nodes, Duration::from_secs(120)).await;
    let before: Vec<u64> = nodes.iter().map(|n| n.mesh.metrics().state_entries_ingested).collect();

    let start = Instant::now();
    let writers = nodes.iter().enumerate().map(|(n, node)| {
        let mesh = node.mesh.clone();
        tokio::spawn(async move {
            // Up to IN_FLIGHT writes outstanding, as an application writing
            // many keys at once (`Promise.all`) has them.
            futures::stream::iter(0..writes)
                .map(|i| {
                    let mesh = mesh.clone();
                    async move {
                        let value = json!({ "node": n, "i": i, "name": format!("item-{i}") });
                        mesh.state_write(&format!("key-{i:04}"), Some(value), WriteMode::Update).await
                    }
                })
                .buffer_unordered(IN_FLIGHT)
                .for_each(|written| async move { written.expect("write") })
                .await;
        })
    });
    for writer in writers.collect::<Vec<_>>() {
        writer.await.expect("writer");
    }
    let written = start.elapsed();

    let expected = ((nodes_n - 1) * writes) as u64;
    loop {
        let behind = nodes
            .iter()
            .zip(&before)
            .filter(|(n, b)| n.mesh.metrics().state_entries_ingested - **b < expected)
            .count();
        if behind == 0 {
            break;
        }
        assert!(start.elapsed() < DEADLINE, "{behind} nodes still behind after {DEADLINE:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let converged = start.elapsed();

    // Every node's view of every namespace is the same.
    for owner in &nodes {
        let ns = owner.peer_id().to_base58();
        let reference = owner.mesh.state(None).await.expect("state").data;
        assert_eq!(reference.as_object().map(|o| o.len()), Some(writes));
        for node in &nodes {
            assert_eq!(node.mesh.state(Some(&ns)).await.expect("state").data, reference);
        }
    }

    println!("state convergence (release, {nodes_n} nodes in one process, memory transport)");
    println!(
        "  {nodes_n} nodes x {writes} writes, all written after      {:>8.0} ms",
        written.as_secs_f64() * 1e3
    );
    println!(
        "  every node holds all {} entries after   {:>8.0} ms   target <= 2000 ms",
        nodes_n * writes,
        converged.as_secs_f64() * 1e3
    );
    for node in &nodes {
        let _ = node.mesh.shutdown().await;
    }
}
