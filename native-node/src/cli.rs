//! Command-line arguments.

use std::{net::IpAddr, path::PathBuf};

use clap::{Args, Parser, Subcommand};
use infermesh_core::Multiaddr;

/// InferMesh: a peer-to-peer mesh node (bootstrap, relay, replica) with an
/// interactive prompt.
#[derive(Debug, Parser)]
#[command(name = "infermesh", version, about, long_about = None)]
pub struct Cli {
    /// What to run.
    #[command(subcommand)]
    pub command: Command,
    /// The data directory: the identity, certificate, addresses and API
    /// token (the pooled-compute subcommands find the running node by it)
    /// [default: ~/.infermesh, or ~/.infermesh/connect for `connect`].
    #[arg(long, global = true, env = "INFERMESH_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create this node's identity (the private key is printed once), then run
    /// the node with the `infermesh>` prompt.
    Init {
        /// Use this private key (64 hex characters) instead of a new one.
        #[arg(long, env = "INFERMESH_PRIVATE_KEY", hide_env_values = true)]
        private_key: Option<String>,
        #[command(flatten)]
        node: NodeArgs,
    },
    /// Run a headless node: bootstrap, relay and replica for others.
    Node {
        #[command(flatten)]
        node: NodeArgs,
    },
    /// Start a node that joins the mesh through a peer, with the prompt.
    Connect {
        /// A multiaddr (`/ip4/…/tcp/…/p2p/<id>`) or a bare node ID, found
        /// through mDNS or the DHT of the `--bootstrap` peers.
        target: String,
        #[command(flatten)]
        node: NodeArgs,
    },
    #[command(flatten)]
    Pool(crate::pool::PoolCommand),
}

/// Options shared by every way of running a node.
#[derive(Debug, Args, Clone)]
pub struct NodeArgs {
    /// IP address to listen on.
    #[arg(long, default_value = "0.0.0.0")]
    pub listen_ip: IpAddr,
    /// TCP port (0 picks a free one) [default: 4001, or 0 for `connect`].
    #[arg(long)]
    pub tcp_port: Option<u16>,
    /// QUIC-v1 (UDP) port [default: 4001, or 0 for `connect`].
    #[arg(long)]
    pub quic_port: Option<u16>,
    /// WebSocket port [default: 4002, or 0 for `connect`].
    #[arg(long)]
    pub ws_port: Option<u16>,
    /// WebRTC-direct (UDP) port [default: 4003, or 0 for `connect`].
    #[arg(long)]
    pub webrtc_port: Option<u16>,
    /// Peer to join through; repeat for several.
    #[arg(long = "bootstrap", value_name = "MULTIADDR")]
    pub bootstrap: Vec<Multiaddr>,
    /// Port of the loopback HTTP API (status, peers, addresses, /metrics)
    /// [default: 5001, or 0 for `connect`].
    #[arg(long)]
    pub api_port: Option<u16>,
    /// Do not start the HTTP API.
    #[arg(long, conflicts_with = "www")]
    pub no_api: bool,
    /// Serve this directory (the demo page) from the HTTP API, at `/`.
    #[arg(long, value_name = "DIR")]
    pub www: Option<PathBuf>,
    /// Most peers connected at once.
    #[arg(long, default_value_t = 50)]
    pub max_peers: usize,
    /// Do not discover peers on the local network with mDNS.
    #[arg(long)]
    pub no_mdns: bool,
    /// How many other nodes should hold a replica of this node's state; it
    /// asks peers until that many are known (0: never asks).
    #[arg(long, default_value_t = 3)]
    pub replication_factor: usize,
    /// Most namespaces of others this node keeps replicas of (0: none).
    #[arg(long, default_value_t = 10_000)]
    pub replica_quota: usize,
    /// Security level of the end-to-end encryption's hybrid KEM: 1
    /// (ML-KEM-512), 3 (ML-KEM-768, X-Wing) or 5 (ML-KEM-1024), each with
    /// X25519.
    #[arg(long, default_value = "3", value_parser = parse_level)]
    pub level: infermesh_core::crypto::Level,
    /// Set a resource limit, `NAME=VALUE` (repeat for several); `status
    /// --detailed` lists them all with their values.
    #[arg(long = "limit", value_name = "NAME=VALUE", value_parser = parse_limit)]
    pub limits: Vec<(String, u64)>,
    /// Refuse direct messages that are not end-to-end encrypted at this
    /// level (1, 3 or 5) or above; without it any sender is taken.
    #[arg(long, value_parser = parse_level)]
    pub min_level: Option<infermesh_core::crypto::Level>,
    /// Tests of the spot checks only: answer this share of the chunks run
    /// for others with plausible wrong vectors.
    #[cfg(feature = "liar")]
    #[arg(long, hide = true, default_value_t = 0.0)]
    pub lie_rate: f64,
    /// Send direct messages with transport encryption only (no end-to-end
    /// post-quantum encryption).
    #[arg(long)]
    pub no_quantum: bool,
    /// Do not hold messages for offline peers.
    #[arg(long)]
    pub no_mailbox: bool,
    /// Offer this node's compute to its networks (runs all-MiniLM-L6-v2).
    #[arg(long)]
    pub compute: bool,
    /// Tasks run at once, each on one core [default: the cores available].
    #[arg(long, requires = "compute")]
    pub compute_threads: Option<usize>,
    /// Where the model files are [default: $INFERMESH_MODEL_DIR, or
    /// ~/.cache/infermesh-models/all-MiniLM-L6-v2]; also served to pages.
    #[arg(long, value_name = "DIR")]
    pub model_dir: Option<PathBuf>,
}

fn parse_limit(text: &str) -> Result<(String, u64), String> {
    let (name, value) = text.split_once('=').ok_or_else(|| format!("'{text}' is not NAME=VALUE"))?;
    let value = value.trim().parse::<u64>().map_err(|_| format!("'{value}' is not a whole number"))?;
    Ok((name.trim().to_owned(), value))
}

fn parse_level(text: &str) -> Result<infermesh_core::crypto::Level, String> {
    let level = text.parse::<u8>().map_err(|_| format!("'{text}' is not 1, 3 or 5"))?;
    infermesh_core::crypto::Level::try_from(level).map_err(|e| e.to_string())
}

/// Ports after defaults are applied.
#[derive(Debug, Clone, Copy)]
pub struct Ports {
    /// TCP.
    pub tcp: u16,
    /// QUIC.
    pub quic: u16,
    /// WebSocket.
    pub ws: u16,
    /// WebRTC-direct.
    pub webrtc: u16,
    /// HTTP API (`None` = off).
    pub api: Option<u16>,
}

impl NodeArgs {
    /// The ports, with the fixed defaults of a main node, or all-random ones
    /// for a second node started by `connect` on the same machine.
    pub fn ports(&self, fixed_defaults: bool) -> Ports {
        let pick =
            |given: Option<u16>, default: u16| given.unwrap_or(if fixed_defaults { default } else { 0 });
        Ports {
            tcp: pick(self.tcp_port, 4001),
            quic: pick(self.quic_port, 4001),
            ws: pick(self.ws_port, 4002),
            webrtc: pick(self.webrtc_port, 4003),
            api: (!self.no_api).then(|| pick(self.api_port, 5001)),
        }
    }
}
