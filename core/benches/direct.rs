//! Direct-message benchmark: throughput (1 KiB and 64 KiB payloads) and
//! latency between two nodes on loopback over TCP and over QUIC, for an
//! InferMesh node pair with end-to-end encryption (the default) and without
//! it, and, in the same run, for a bare rust-libp2p request-response pair on
//! the same transport. Prints medians of several rounds and the ratios.
//!
//! `cargo bench --workspace --bench direct` (or `make bench`).

use std::{
    io,
    time::{Duration, Instant},
};

use futures::{AsyncReadExt, AsyncWriteExt, StreamExt, TryStreamExt, channel::oneshot};
use infermesh_core::{Envelope, Identity, Mesh, MeshConfig, MeshHandle, MsgType, Multiaddr, PeerId};
use libp2p::{
    StreamProtocol, SwarmBuilder, Transport,
    core::{muxing::StreamMuxerBox, upgrade},
    noise, quic, request_response,
    swarm::{Swarm, SwarmEvent},
    tcp, yamux,
};

const WINDOW: usize = 64;
const ROUNDS: usize = 5;
const LATENCY_SAMPLES: usize = 1000;

#[derive(Clone, Copy, Debug)]
enum Net {
    Tcp,
    Quic,
}

impl Net {
    fn listen(self) -> Multiaddr {
        match self {
            Net::Tcp => "/ip4/127.0.0.1/tcp/0".parse().unwrap(),
            Net::Quic => "/ip4/127.0.0.1/udp/0/quic-v1".parse().unwrap(),
        }
    }
    fn name(self) -> &'static str {
        match self {
            Net::Tcp => "tcp",
            Net::Quic => "quic",
        }
    }
}

// ---- InferMesh pair -------------------------------------------------------

struct OursPair {
    a: MeshHandle,
    b_id: PeerId,
    _b: MeshHandle,
}

/// An InferMesh pair; `e2e` on is the default (direct messages sealed with
/// the hybrid post-quantum KEM), off sends with transport encryption only.
async fn ours(net: Net, e2e: bool) -> OursPair {
    let node = || {
        let mut config = MeshConfig::server(Identity::generate().unwrap());
        config.quantum_resistant = e2e;
        config.mdns = false;
        config.autonat = false;
        config.dcutr = false;
        let (handle, events, event_loop) = Mesh::build(config).unwrap();
        tokio::spawn(event_loop.run());
        // Consume (and drop) events, as an application would.
        tokio::spawn(events.for_each(|_| async {}));
        handle
    };
    let (a, b) = (node(), node());
    let b_addr = b.listen_on(net.listen()).await.unwrap();
    a.dial(b_addr).await.unwrap();
    OursPair { b_id: b.peer_id(), a, _b: b }
}

// Both pairs run their workload in a task on the runtime's workers (not on
// the thread that called `block_on`), so neither pays extra thread hops.
impl OursPair {
    async fn throughput(&self, payload: &[u8], n: usize) -> Duration {
        let (a, to, payload) = (self.a.clone(), self.b_id.to_base58(), payload.to_vec());
        tokio::spawn(async move {
            let start = Instant::now();
            futures::stream::iter(0..n)
                .map(|_| {
                    a.send(Envelope::new(MsgType::Thought, to.clone(), 5, 60).with_payload(payload.clone()))
                })
                .buffer_unordered(WINDOW)
                .try_for_each(|_| async { Ok(()) })
                .await
                .unwrap();
            start.elapsed()
        })
        .await
        .unwrap()
    }

    async fn latencies(&self, payload: &[u8], n: usize) -> Vec<Duration> {
        let (a, to, payload) = (self.a.clone(), self.b_id.to_base58(), payload.to_vec());
        tokio::spawn(async move {
            let mut out = Vec::with_capacity(n);
            for _ in 0..n {
                let envelope =
                    Envelope::new(MsgType::Thought, to.clone(), 5, 60).with_payload(payload.clone());
                let start = Instant::now();
                a.send(envelope).await.unwrap();
                out.push(start.elapsed());
            }
            out
        })
        .await
        .unwrap()
    }
}

// ---- bare rust-libp2p request-response pair --------------------------------

const BARE: StreamProtocol = StreamProtocol::new("/bench/rr/1.0.0");

/// Length-prefixed bytes both ways: the same framing as InferMesh's direct
/// protocol, without the envelope.
#[derive(Clone, Default)]
struct BytesCodec;

async fn read_frame<T: futures::AsyncRead + Unpin + Send>(io: &mut T) -> io::Result<Vec<u8>> {
    let len = unsigned_varint::aio::read_u64(&mut *io).await.map_err(io::Error::other)?;
    let mut body = vec![0; len as usize];
    io.read_exact(&mut body).await?;
    Ok(body)
}

async fn write_frame<T: futures::AsyncWrite + Unpin + Send>(io: &mut T, body: Vec<u8>) -> io::Result<()> {
    let mut buf = unsigned_varint::encode::u64_buffer();
    io.write_all(unsigned_varint::encode::u64(body.len() as u64, &mut buf)).await?;
    io.write_all(&body).await?;
    io.close().await
}

impl request_response::Codec for BytesCodec {
    type Protocol = StreamProtocol;
    type Request = Vec<u8>;
    type Response = Vec<u8>;
    async fn read_request<T: futures::AsyncRead + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
    ) -> io::Result<Vec<u8>> {
        read_frame(io).await
    }
    async fn read_response<T: futures::AsyncRead + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
    ) -> io::Result<Vec<u8>> {
        read_frame(io).await
    }
    async fn write_request<T: futures::AsyncWrite + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        r: Vec<u8>,
    ) -> io::Result<()> {
        write_frame(io, r).await
    }
    async fn write_response<T: futures::AsyncWrite + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        r: Vec<u8>,
    ) -> io::Result<()> {
        write_frame(io, r).await
    }
}

#[derive(libp2p::swarm::NetworkBehaviour)]
struct Stack {
    rr: request_response::Behaviour<BytesCodec>,
    extra: libp2p::swarm::behaviour::toggle::Toggle<Extra>,
}

#[derive(libp2p::swarm::NetworkBehaviour)]
struct Extra {
    limits: libp2p::connection_limits::Behaviour,
    identify: libp2p::identify::Behaviour,
    ping: libp2p::ping::Behaviour,
    kad: libp2p::kad::Behaviour<libp2p::kad::store::MemoryStore>,
    gossipsub: libp2p::gossipsub::Behaviour,
    relay: libp2p::relay::Behaviour,
    autonat: libp2p::autonat::Behaviour,
    dcutr: libp2p::dcutr::Behaviour,
}

type BareSwarm = Swarm<Stack>;

/// A bare swarm: request-response only, or (`stack`) request-response next
/// to the other protocols an InferMesh node runs, in their default
/// configuration and with none of InferMesh's code.
fn bare_swarm(net: Net, stack: bool) -> BareSwarm {
    let behaviour = |kp: &libp2p::identity::Keypair| {
        let id = kp.public().to_peer_id();
        let extra = stack.then(|| Extra {
            limits: libp2p::connection_limits::Behaviour::new(Default::default()),
            identify: libp2p::identify::Behaviour::new(libp2p::identify::Config::new(
                "/x".into(),
                kp.public(),
            )),
            ping: libp2p::ping::Behaviour::default(),
            kad: libp2p::kad::Behaviour::new(id, libp2p::kad::store::MemoryStore::new(id)),
            gossipsub: libp2p::gossipsub::Behaviour::new(
                libp2p::gossipsub::MessageAuthenticity::Signed(kp.clone()),
                Default::default(),
            )
            .unwrap(),
            relay: libp2p::relay::Behaviour::new(id, Default::default()),
            autonat: libp2p::autonat::Behaviour::new(id, Default::default()),
            dcutr: libp2p::dcutr::Behaviour::new(id),
        });
        Stack {
            rr: request_response::Behaviour::<BytesCodec>::new(
                [(BARE, request_response::ProtocolSupport::Full)],
                request_response::Config::default().with_max_concurrent_streams(WINDOW * 4),
            ),
            extra: extra.into(),
        }
    };
    let builder =
        SwarmBuilder::with_existing_identity(Identity::generate().unwrap().keypair().clone()).with_tokio();
    match net {
        Net::Tcp => builder
            .with_other_transport(|kp| {
                Ok(tcp::tokio::Transport::new(tcp::Config::default().nodelay(true))
                    .upgrade(upgrade::Version::V1Lazy)
                    .authenticate(noise::Config::new(kp)?)
                    .multiplex(yamux::Config::default())
                    .map(|(p, m), _| (p, StreamMuxerBox::new(m))))
            })
            .unwrap()
            .with_behaviour(behaviour)
            .unwrap()
            .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(3600)))
            .build(),
        Net::Quic => builder
            .with_other_transport(|kp| {
                Ok(quic::tokio::Transport::new(quic::Config::new(kp))
                    .map(|(p, c), _| (p, StreamMuxerBox::new(c))))
            })
            .unwrap()
            .with_behaviour(behaviour)
            .unwrap()
            .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(3600)))
            .build(),
    }
}

/// Work for the client swarm: `n` requests with at most `window` in flight;
/// replies with the time of each request.
struct Job {
    payload: Vec<u8>,
    n: usize,
    window: usize,
    done: oneshot::Sender<Vec<Duration>>,
}

struct BarePair {
    jobs: futures::channel::mpsc::Sender<Job>,
}

async fn bare(net: Net, stack: bool) -> BarePair {
    let mut server = bare_swarm(net, stack);
    server.listen_on(net.listen()).unwrap();
    let addr = loop {
        if let SwarmEvent::NewListenAddr { address, .. } = server.select_next_some().await {
            break address;
        }
    };
    let server_id = *server.local_peer_id();
    tokio::spawn(async move {
        loop {
            if let SwarmEvent::Behaviour(StackEvent::Rr(request_response::Event::Message {
                message: request_response::Message::Request { channel, .. },
                ..
            })) = server.select_next_some().await
            {
                // An acknowledgement of about the size of InferMesh's.
                let _ = server.behaviour_mut().rr.send_response(channel, vec![0u8; 40]);
            }
        }
    });

    let mut client = bare_swarm(net, stack);
    client.dial(addr).unwrap();
    loop {
        if let SwarmEvent::ConnectionEstablished { .. } = client.select_next_some().await {
            break;
        }
    }
    let (jobs, mut job_rx) = futures::channel::mpsc::channel::<Job>(1);
    tokio::spawn(async move {
        while let Some(job) = job_rx.next().await {
            let mut started = std::collections::HashMap::new();
            let mut times = Vec::with_capacity(job.n);
            let mut sent = 0;
            while times.len() < job.n {
                while sent < job.n && started.len() < job.window {
                    let id = client.behaviour_mut().rr.send_request(&server_id, job.payload.clone());
                    started.insert(id, Instant::now());
                    sent += 1;
                }
                match client.select_next_some().await {
                    SwarmEvent::Behaviour(StackEvent::Rr(request_response::Event::Message {
                        message: request_response::Message::Response { request_id, .. },
                        ..
                    })) => {
                        times.push(started.remove(&request_id).unwrap().elapsed());
                    }
                    SwarmEvent::Behaviour(StackEvent::Rr(request_response::Event::OutboundFailure {
                        error,
                        ..
                    })) => {
                        panic!("baseline request failed: {error}")
                    }
                    _ => {}
                }
            }
            let _ = job.done.send(times);
        }
    });
    BarePair { jobs }
}

impl BarePair {
    async fn run(&self, payload: &[u8], n: usize, window: usize) -> Vec<Duration> {
        use futures::SinkExt;
        let (done, rx) = oneshot::channel();
        self.jobs.clone().send(Job { payload: payload.to_vec(), n, window, done }).await.unwrap();
        rx.await.unwrap()
    }

    async fn throughput(&self, payload: &[u8], n: usize) -> Duration {
        let start = Instant::now();
        self.run(payload, n, WINDOW).await;
        start.elapsed()
    }

    async fn latencies(&self, payload: &[u8], n: usize) -> Vec<Duration> {
        self.run(payload, n, 1).await
    }
}

// ---- reporting --------------------------------------------------------------

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1e6
}

/// One figure for each pair, and the ratios: e2e / plain (what end-to-end
/// encryption costs), plain / bare and plain / stack (what InferMesh's
/// messaging costs over rust-libp2p).
fn row(net: Net, what: &str, [e2e, plain, bare, stack]: [f64; 4], higher_is_better: bool) {
    let ratio = |ours: f64, base: f64| if higher_is_better { ours / base } else { base / ours };
    println!(
        "{:<5} {:<24} {:>9.1} {:>9.1} {:>9.1} {:>9.1} {:>8.2}x {:>8.2}x {:>8.2}x",
        net.name(),
        what,
        e2e,
        plain,
        bare,
        stack,
        ratio(e2e, plain),
        ratio(plain, bare),
        ratio(plain, stack)
    );
}

/// `INFERMESH_BENCH_PROFILE=1`: only InferMesh's 1 KiB throughput, for a
/// profiler to look at (`INFERMESH_BENCH_PAYLOAD=65536`: another size).
async fn profile(net: Net) {
    let size = std::env::var("INFERMESH_BENCH_PAYLOAD").ok().and_then(|s| s.parse().ok()).unwrap_or(1024);
    let payload = vec![0x5a; size];
    let n = if size > 4096 { 4_000 } else { 40_000 };
    let mode = std::env::var("INFERMESH_BENCH_PROFILE").unwrap_or_default();
    let start = Instant::now();
    match mode.as_str() {
        "ours-latency" => drop(ours(net, true).await.latencies(&payload, 10_000).await),
        "plain" => drop(ours(net, false).await.throughput(&payload, n).await),
        "bare-latency" => drop(bare(net, false).await.latencies(&payload, 10_000).await),
        "bare" => drop(bare(net, false).await.throughput(&payload, n).await),
        "stack" => drop(bare(net, true).await.throughput(&payload, n).await),
        _ => drop(ours(net, true).await.throughput(&payload, n).await),
    }
    println!("{mode}: {:?}", start.elapsed());
}

async fn bench(net: Net) {
    if std::env::var_os("INFERMESH_BENCH_PROFILE").is_some() {
        return profile(net).await;
    }
    let e2e = ours(net, true).await;
    let plain = ours(net, false).await;
    let base = bare(net, false).await;
    let stacked = bare(net, true).await;
    for (label, size, n) in [("1 KiB", 1024usize, 4000usize), ("64 KiB", 64 * 1024, 600)] {
        let payload = vec![0x5a; size];
        // Warm up every path (connections, sessions, allocators, yamux windows).
        e2e.throughput(&payload, n / 4).await;
        plain.throughput(&payload, n / 4).await;
        base.throughput(&payload, n / 4).await;
        stacked.throughput(&payload, n / 4).await;
        let mut rates: [Vec<f64>; 4] = Default::default();
        // Interleaved rounds, so that load from elsewhere on the machine
        // hits all four alike.
        for _ in 0..ROUNDS {
            rates[0].push(n as f64 / e2e.throughput(&payload, n).await.as_secs_f64());
            rates[1].push(n as f64 / plain.throughput(&payload, n).await.as_secs_f64());
            rates[2].push(n as f64 / base.throughput(&payload, n).await.as_secs_f64());
            rates[3].push(n as f64 / stacked.throughput(&payload, n).await.as_secs_f64());
        }
        let rates = rates.map(median);
        row(net, &format!("{label} msgs/s"), rates, true);
        let mb = size as f64 / 1e6;
        row(net, &format!("{label} MB/s"), rates.map(|r| r * mb), true);
    }
    let payload = vec![0x5a; 1024];
    let mut p50: [Vec<f64>; 4] = Default::default();
    let mut p99: [Vec<f64>; 4] = Default::default();
    for _ in 0..ROUNDS {
        let runs = [
            e2e.latencies(&payload, LATENCY_SAMPLES).await,
            plain.latencies(&payload, LATENCY_SAMPLES).await,
            base.latencies(&payload, LATENCY_SAMPLES).await,
            stacked.latencies(&payload, LATENCY_SAMPLES).await,
        ];
        for (k, mut run) in runs.into_iter().enumerate() {
            run.sort();
            p50[k].push(percentile(&run, 0.50));
            p99[k].push(percentile(&run, 0.99));
        }
    }
    row(net, "1 KiB p50 latency (us)", p50.map(median), false);
    row(net, "1 KiB p99 latency (us)", p99.map(median), false);
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` passes nothing
    // special but should not spend minutes here.
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    println!(
        "direct messages between two nodes on loopback; window {WINDOW}; median of {ROUNDS} interleaved rounds"
    );
    println!(
        "  e2e:       two InferMesh nodes, MeshHandle::send with acknowledgement, end-to-end encrypted (default)"
    );
    println!("  plain:     the same with quantum_resistant off (transport encryption only)");
    println!(
        "  bare:      two bare rust-libp2p swarms with request-response only (a stream per message, same transport)"
    );
    println!(
        "  stack:     bare, plus the protocols an InferMesh node runs (identify, ping, kad, gossipsub, relay,"
    );
    println!("             autonat, dcutr, connection limits) at their defaults, none of InferMesh's code");
    println!("  ratios: rates ours/theirs, latencies theirs/ours (>= 1 means at least as good)");
    println!(
        "{:<5} {:<24} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}",
        "net", "metric", "e2e", "plain", "bare", "stack", "e2e/plain", "vs bare", "vs stack"
    );
    // INFERMESH_BENCH_NET=tcp (or quic) runs one transport only.
    let only = std::env::var("INFERMESH_BENCH_NET").ok();
    runtime.block_on(async {
        for net in [Net::Tcp, Net::Quic] {
            if only.as_deref().is_none_or(|o| o == net.name()) {
                bench(net).await;
            }
        }
    });
}
