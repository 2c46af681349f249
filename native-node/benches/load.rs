//! Load and hostile peers against the real `infermesh node` binary (a
//! release build, as a process on loopback):
//!
//! 1. Load: a client publishes 1,000 messages a second to a topic the
//!    node relays (gossip hub) to a subscriber: `LOAD_WARMUP_SECONDS`
//!    (default 180) to fill the node's duplicate caches, whose longest
//!    window is gossipsub's 120 s of delivery records (the heap's last
//!    growth comes at about 150 s), then `LOAD_SECONDS` (default 60)
//!    measured. Prints what arrived and the node's resident
//!    memory before the load, every ten seconds, and at the start and end
//!    of the measured window.
//! 2. Hostile peers: ten attackers, each on one exhaustion path at full
//!    speed for `HOSTILE_SECONDS` (default 30), while an honest peer sends
//!    the node a direct message every 20 ms; prints the honest peer's
//!    round trips (median, p99, worst) next to the same measurement with
//!    no attackers, in the same run.
//!
//! `cargo bench -p infermesh-node --bench load` (part of `make bench`).

use std::{
    io::{BufRead, BufReader, Read, Write},
    net::TcpStream,
    process::{Child, Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use futures::StreamExt;
use infermesh_core::{Identity, Mesh, MeshConfig, MeshEvent, MeshHandle, Multiaddr, WriteMode};

fn seconds(var: &str, default: u64) -> u64 {
    std::env::var(var).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// The node under test.
struct Node {
    child: Child,
    tcp: Multiaddr,
    ws_port: u16,
    api: String,
    _dir: tempfile::TempDir,
}

impl Node {
    fn start() -> Node {
        let dir = tempfile::tempdir().unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_infermesh"))
            .args(["node", "--data-dir", dir.path().to_str().unwrap(), "--listen-ip", "127.0.0.1"])
            .args(["--tcp-port", "0", "--quic-port", "0", "--ws-port", "0", "--webrtc-port", "0"])
            .args(["--api-port", "0", "--no-mdns"])
            .env("RUST_LOG", "error")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("the infermesh binary starts");
        // Its output (a line per message) is read and dropped.
        let stdout = child.stdout.take().unwrap();
        std::thread::spawn(move || for _ in BufReader::new(stdout).lines() {});
        let file = dir.path().join("addrs.json");
        let start = Instant::now();
        let json: serde_json::Value = loop {
            if let Some(json) = std::fs::read_to_string(&file)
                .ok()
                .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
                .filter(|j| j["addrs"].as_array().is_some_and(|a| a.len() >= 4) && j["api"].is_string())
            {
                break json;
            }
            assert!(start.elapsed() < Duration::from_secs(30), "the node did not start");
            std::thread::sleep(Duration::from_millis(20));
        };
        let addrs: Vec<String> =
            json["addrs"].as_array().unwrap().iter().map(|a| a.as_str().unwrap().to_owned()).collect();
        let tcp = addrs.iter().find(|a| a.contains("/tcp/") && !a.contains("/ws")).unwrap().parse().unwrap();
        let ws = addrs.iter().find(|a| a.contains("/ws")).unwrap();
        let ws_port = ws.split('/').nth(4).unwrap().parse().unwrap();
        Node { child, tcp, ws_port, api: json["api"].as_str().unwrap().to_owned(), _dir: dir }
    }

    fn rss_mb(&self) -> f64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap_or_default();
        let kb: f64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0.0);
        kb / 1024.0
    }

    fn cpu_seconds(&self) -> f64 {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id())).unwrap_or_default();
        let fields: Vec<&str> = stat.rsplit(") ").next().unwrap_or("").split_whitespace().collect();
        let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
        (ticks(11) + ticks(12)) / 100.0
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A client node (a light node's configuration on TCP) joined to `node`.
async fn client(node: &Node, quantum: bool) -> (MeshHandle, infermesh_core::MeshEvents) {
    let mut config = MeshConfig::client(Identity::generate().unwrap());
    config.bootstrap = vec![node.tcp.clone()];
    config.quantum_resistant = quantum;
    config.event_buffer = 65_536;
    let (mesh, events, event_loop) = Mesh::build(config).unwrap();
    tokio::spawn(event_loop.run());
    mesh.join(node.tcp.clone()).await.expect("joins the node");
    (mesh, events)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

// ---- 1. load ------------------------------------------------------------------

async fn load(node: &Node, warmup: u64, secs: u64) {
    println!(
        "\n== load: 1,000 messages/s for {warmup} s of warm-up then {secs} s measured, \
         publisher -> node (gossip hub) -> subscriber"
    );
    let (subscriber, mut events) = client(node, false).await;
    subscriber.subscribe("load").await.unwrap();
    let received = Arc::new(AtomicU64::new(0));
    let counter = received.clone();
    tokio::spawn(async move {
        while let Some(event) = events.next().await {
            if matches!(event, MeshEvent::Message(_)) {
                counter.fetch_add(1, Ordering::Relaxed);
            }
        }
    });
    let (publisher, _events) = client(node, false).await;
    // Wait until a message gets through (the node knows the subscriber).
    let start = Instant::now();
    while received.load(Ordering::Relaxed) == 0 {
        let _ = publisher.publish_text("load", "warm-up").await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(start.elapsed() < Duration::from_secs(30), "no message got through");
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    received.store(0, Ordering::Relaxed);

    let rss_fresh = node.rss_mb();
    println!("node RSS before the load: {rss_fresh:.1} MB");
    let total = warmup + secs;
    let mut sent = 0u64;
    let mut refused = 0u64;
    let mut rss_start = rss_fresh;
    let mut cpu_start = node.cpu_seconds();
    let begin = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    let mut next_report = 10;
    let mut measuring = warmup == 0;
    while begin.elapsed() < Duration::from_secs(total) {
        tick.tick().await;
        // Ten messages per 10 ms tick: 1,000 a second.
        let due = ((begin.elapsed().as_secs_f64() * 1000.0) as u64).min(total * 1000);
        while sent < due {
            match publisher.publish_text("load", &format!("message {sent}")).await {
                Ok(_) => {}
                Err(_) => refused += 1,
            }
            sent += 1;
        }
        if !measuring && begin.elapsed() >= Duration::from_secs(warmup) {
            measuring = true;
            rss_start = node.rss_mb();
            cpu_start = node.cpu_seconds();
            println!("  t={warmup:>3} s: warm-up over, node RSS {rss_start:.1} MB; measuring for {secs} s");
        }
        if begin.elapsed().as_secs() >= next_report {
            println!(
                "  t={:>3} s: sent {sent}, received {}, node RSS {:.1} MB",
                next_report,
                received.load(Ordering::Relaxed),
                node.rss_mb()
            );
            next_report += 10;
        }
    }
    let wall = begin.elapsed().as_secs_f64();
    let rss_end = node.rss_mb();
    let cpu = node.cpu_seconds() - cpu_start;
    let deadline = Instant::now() + Duration::from_secs(10);
    while received.load(Ordering::Relaxed) < sent - refused && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let got = received.load(Ordering::Relaxed);
    println!(
        "sent {sent} in {wall:.1} s ({:.0}/s), refused by the publisher's node {refused}, received {got}: lost {}",
        sent as f64 / wall,
        sent.saturating_sub(refused).saturating_sub(got)
    );
    println!(
        "node RSS over the {secs} s measured: {rss_start:.1} MB at start, {rss_end:.1} MB at end ({:+.1} MB); \
         {rss_fresh:.1} MB before the load; node CPU {cpu:.1} s for {secs} s",
        rss_end - rss_start,
    );
    let _ = publisher.shutdown().await;
    let _ = subscriber.shutdown().await;
}

// ---- 2. hostile peers --------------------------------------------------------

/// Round trips of direct messages from an honest client (connected
/// before the attack) to the node, one every 20 ms for `secs`.
async fn honest_rtts(honest: &MeshHandle, node: &Node, secs: u64) -> Vec<f64> {
    let target = node_peer(node).await;
    let mut rtts = Vec::new();
    let mut failures = 0;
    let begin = Instant::now();
    while begin.elapsed() < Duration::from_secs(secs) {
        let sent = Instant::now();
        match tokio::time::timeout(Duration::from_secs(5), honest.send_text(target, "honest")).await {
            Ok(Ok(_)) => rtts.push(sent.elapsed().as_secs_f64() * 1000.0),
            _ => failures += 1,
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    if failures > 0 {
        println!("  honest peer: {failures} message(s) failed or took over 5 s");
        rtts.extend(std::iter::repeat_n(5000.0, failures));
    }
    rtts.sort_by(f64::total_cmp);
    rtts
}

async fn node_peer(node: &Node) -> infermesh_core::PeerId {
    match node.tcp.iter().last() {
        Some(libp2p::multiaddr::Protocol::P2p(peer)) => peer,
        _ => panic!("no /p2p in {}", node.tcp),
    }
}

const ATTACKS: [&str; 10] = [
    "WebSocket frames announcing 256 MiB",
    "half-open TCP connections",
    "garbage before the handshake",
    "direct-message flood",
    "gossip flood on a hub topic",
    "state writes at full speed (replica growth)",
    "connection churn with new identities",
    "throwaway keys asking for replicas",
    "HTTP API requests",
    "direct messages to unknown peers (lookups)",
];

async fn attack(kind: usize, node: Arc<NodeInfo>, stop: Arc<AtomicBool>, work: Arc<AtomicU64>) {
    let running = || !stop.load(Ordering::Relaxed);
    let count = || work.fetch_add(1, Ordering::Relaxed);
    match kind {
        0..=2 => {
            let port = if kind == 0 { node.ws_port } else { node.tcp_port };
            tokio::task::spawn_blocking(move || {
                let mut open = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else { continue };
                    match kind {
                        0 => {
                            let _ = write!(
                                s,
                                "GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                                 Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
                            );
                            let mut header = vec![0x82, 0xFF];
                            header.extend_from_slice(&(256u64 << 20).to_be_bytes());
                            header.extend_from_slice(&[1, 2, 3, 4]);
                            let _ = s.write_all(&header);
                        }
                        2 => {
                            let _ = s.write_all(&[0xAB; 4096]);
                        }
                        _ => {}
                    }
                    open.push(s);
                    if open.len() > 200 {
                        open.remove(0);
                    }
                    work.fetch_add(1, Ordering::Relaxed);
                }
            })
            .await
            .unwrap();
        }
        3 | 4 | 5 | 9 => {
            // The other attackers keep the handshake slots busy: retry.
            let (mesh, _events) = loop {
                if !running() {
                    return;
                }
                if let Ok(joined) = join(&node, false).await {
                    break joined;
                }
            };
            let target = node.peer;
            if kind == 4 {
                // The node joins topics its peers subscribe to (a hub).
                let _ = mesh.subscribe("flood").await;
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            while running() {
                let ok = match kind {
                    3 => mesh.send_bytes(target, vec![0; 1024]).await.is_ok(),
                    4 => mesh.publish_bytes("flood", vec![0; 1024]).await.is_ok(),
                    5 => {
                        let key = format!("k{}", work.load(Ordering::Relaxed));
                        mesh.state_write(&key, Some(serde_json::json!("x".repeat(256))), WriteMode::Update)
                            .await
                            .is_ok()
                    }
                    _ => {
                        let stranger = Identity::generate().unwrap().peer_id();
                        let _ = tokio::time::timeout(
                            Duration::from_millis(500),
                            mesh.send_bytes(stranger, vec![1]),
                        )
                        .await;
                        true
                    }
                };
                if ok {
                    count();
                }
            }
            let _ = mesh.shutdown().await;
        }
        6 | 7 => {
            while running() {
                if let Ok((mesh, _events)) = join(&node, kind == 7).await {
                    if kind == 7 {
                        let _ = mesh.state_write("x", Some(serde_json::json!(1)), WriteMode::Update).await;
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                    let _ = mesh.shutdown().await;
                    count();
                }
            }
        }
        _ => {
            let api = node.api.trim_start_matches("http://").to_owned();
            tokio::task::spawn_blocking(move || {
                while !stop.load(Ordering::Relaxed) {
                    let Ok(mut s) = TcpStream::connect(&api) else { continue };
                    let _ = write!(s, "GET /metrics HTTP/1.1\r\nHost: {api}\r\nConnection: close\r\n\r\n");
                    let mut sink = Vec::new();
                    let _ = s.read_to_end(&mut sink);
                    work.fetch_add(1, Ordering::Relaxed);
                }
            })
            .await
            .unwrap();
        }
    }
}

/// What attackers need of the node.
struct NodeInfo {
    tcp: Multiaddr,
    tcp_port: u16,
    ws_port: u16,
    api: String,
    peer: infermesh_core::PeerId,
}

async fn join(node: &NodeInfo, replicas: bool) -> Result<(MeshHandle, infermesh_core::MeshEvents), String> {
    let mut config = MeshConfig::client(Identity::generate().map_err(|e| e.to_string())?);
    config.quantum_resistant = false;
    config.replication_factor = if replicas { 3 } else { 0 };
    let (mesh, events, event_loop) = Mesh::build(config).map_err(|e| e.to_string())?;
    tokio::spawn(event_loop.run());
    match tokio::time::timeout(Duration::from_secs(5), mesh.join(node.tcp.clone())).await {
        Ok(Ok(_)) => Ok((mesh, events)),
        _ => {
            let _ = mesh.shutdown().await;
            Err("could not join".into())
        }
    }
}

async fn hostile(node: &Node, secs: u64) {
    println!(
        "\n== hostile peers: ten attackers at full speed for {secs} s; an honest peer's direct messages meanwhile"
    );
    let (honest, _events) = client(node, true).await;
    let quiet = honest_rtts(&honest, node, secs.min(15)).await;
    println!(
        "  no attackers:   {} messages, round trip median {:.1} ms, p99 {:.1} ms, worst {:.1} ms",
        quiet.len(),
        percentile(&quiet, 0.5),
        percentile(&quiet, 0.99),
        quiet.last().copied().unwrap_or(f64::NAN)
    );
    let info = Arc::new(NodeInfo {
        tcp: node.tcp.clone(),
        tcp_port: node
            .tcp
            .iter()
            .find_map(|p| match p {
                libp2p::multiaddr::Protocol::Tcp(port) => Some(port),
                _ => None,
            })
            .unwrap(),
        ws_port: node.ws_port,
        api: node.api.clone(),
        peer: node_peer(node).await,
    });
    let stop = Arc::new(AtomicBool::new(false));
    let work: Vec<Arc<AtomicU64>> = (0..ATTACKS.len()).map(|_| Arc::new(AtomicU64::new(0))).collect();
    let rss_before = node.rss_mb();
    let cpu_before = node.cpu_seconds();
    let attackers: Vec<_> = (0..ATTACKS.len())
        .map(|kind| tokio::spawn(attack(kind, info.clone(), stop.clone(), work[kind].clone())))
        .collect();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let attacked = honest_rtts(&honest, node, secs).await;
    let rss_during = node.rss_mb();
    stop.store(true, Ordering::Relaxed);
    for attacker in attackers {
        let _ = tokio::time::timeout(Duration::from_secs(10), attacker).await;
    }
    println!(
        "  ten attackers:  {} messages, round trip median {:.1} ms, p99 {:.1} ms, worst {:.1} ms",
        attacked.len(),
        percentile(&attacked, 0.5),
        percentile(&attacked, 0.99),
        attacked.last().copied().unwrap_or(f64::NAN)
    );
    println!(
        "  p99 under attack / quiet: {:.2}x; node RSS {rss_before:.1} -> {rss_during:.1} MB; node CPU {:.1} s in {secs} s",
        percentile(&attacked, 0.99) / percentile(&quiet, 0.99),
        node.cpu_seconds() - cpu_before
    );
    for (kind, name) in ATTACKS.iter().enumerate() {
        println!("  attacker {kind}: {name}: {} attempts", work[kind].load(Ordering::Relaxed));
    }
    match ureq_status(&node.api) {
        Some(banned) => println!("  the node answers its API after the attack; peers banned: {banned}"),
        None => println!("  the node's API did not answer after the attack"),
    }
}

fn ureq_status(api: &str) -> Option<u64> {
    let host = api.trim_start_matches("http://");
    let mut s = TcpStream::connect(host).ok()?;
    write!(s, "GET /api/status HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").ok()?;
    let mut body = String::new();
    s.read_to_string(&mut body).ok()?;
    let json: serde_json::Value = serde_json::from_str(body.split_once("\r\n\r\n")?.1).ok()?;
    json["metrics"]["peers_banned"].as_u64()
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let node = Node::start();
        load(&node, seconds("LOAD_WARMUP_SECONDS", 180), seconds("LOAD_SECONDS", 60)).await;
        let node = Node::start();
        hostile(&node, seconds("HOSTILE_SECONDS", 30)).await;
    });
}
