//! Pooled compute, as the application sees it: the [`Executor`] a home
//! plugs in to run work (natively on threads, in a browser in a Web
//! Worker), the models the mesh knows, and the values that networks, workers
//! and jobs are reported as. A leaf module.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

/// A model the mesh can run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ModelSpec {
    /// Its name, as jobs and workers give it.
    pub name: &'static str,
    /// Other names accepted for it (as OpenAI-style clients write it).
    pub aliases: &'static [&'static str],
    /// Floats per embedding.
    pub dimensions: usize,
}

/// The sentence-embedding model every worker runs today.
pub const EMBEDDING_MODEL: ModelSpec = ModelSpec {
    name: "all-MiniLM-L6-v2",
    aliases: &["sentence-transformers/all-MiniLM-L6-v2"],
    dimensions: 384,
};

/// Every model the mesh knows.
pub const MODELS: [ModelSpec; 1] = [EMBEDDING_MODEL];

/// The model called `name` (or one of its aliases).
pub fn model(name: &str) -> Option<ModelSpec> {
    MODELS.into_iter().find(|m| m.name == name || m.aliases.contains(&name))
}

/// Longest input text, in bytes (a model reads at most 256 tokens of it;
/// anything this long is almost certainly a mistake).
pub const MAX_INPUT_BYTES: usize = 64 * 1024;
/// Most inputs in one job.
pub const MAX_JOB_INPUTS: usize = 10_000;
/// Most bytes of input in one job.
pub const MAX_JOB_BYTES: usize = 32 * 1024 * 1024;

/// One piece of work for an [`Executor`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Task {
    /// The model (one the executor offers).
    pub model: String,
    /// The texts, in order.
    pub inputs: Vec<String>,
}

/// What a task produced.
#[derive(Clone, Debug, PartialEq)]
pub struct TaskOutput {
    /// One embedding per input, in order.
    pub vectors: Vec<Vec<f32>>,
    /// Tokens the model read, over all inputs.
    pub tokens: u64,
}

/// What an executor answers.
pub type TaskResult = Result<TaskOutput, String>;

/// What a node offers its networks.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ComputeOffer {
    /// Tasks run at once.
    pub threads: u16,
    /// Memory it may use, in MiB.
    pub memory_mb: u32,
    /// The models it has loaded.
    pub models: Vec<String>,
    /// `native` or `browser`.
    pub kind: String,
}

/// Runs tasks for the mesh: the home's part of pooled compute. The core
/// decides what runs (and hands out at most `offer().threads` tasks at
/// once); the executor runs each and answers on `done`.
pub trait Executor: Send + 'static {
    /// What it offers.
    fn offer(&self) -> ComputeOffer;
    /// Runs `task`; the answer goes to `done` (dropping it counts as a
    /// failure).
    fn run(&self, task: Task, done: oneshot::Sender<TaskResult>);
}

/// A network this node is in.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkInfo {
    /// Its ID (16 hex characters).
    pub id: String,
    /// Its name.
    pub name: String,
    /// The owner's node ID.
    pub owner: String,
    /// The person this node is a device of.
    pub person: String,
    /// `owner` or `member`.
    pub role: String,
    /// `active`, `pending` (the owner's records have not arrived yet),
    /// `revoked` or `expired`.
    pub status: String,
    /// Members, as far as this node knows.
    pub members: usize,
}

/// A member of a network.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberInfo {
    /// The person's node ID.
    pub person: String,
    /// Its devices' node IDs.
    pub devices: Vec<String>,
    /// Whether it owns the network.
    pub owner: bool,
    /// When it joined (ms since the epoch).
    pub joined_ms: u64,
    /// When its membership ends, if it does.
    pub expires_ms: Option<u64>,
}

/// A device that offers compute to a network.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WorkerInfo {
    /// The network.
    pub network: String,
    /// The device's node ID.
    pub device: String,
    /// The person it belongs to.
    pub person: String,
    /// What it offers.
    #[serde(flatten)]
    pub offer: ComputeOffer,
    /// Tasks it has waiting or running (as it last said).
    pub queue: u32,
    /// Milliseconds since it last announced itself.
    pub seen_ms_ago: u64,
    /// Measured milliseconds per input, from the chunks it ran for this node.
    pub ms_per_input: Option<f64>,
    /// Chunks it ran for this node.
    pub chunks: u64,
    /// Whether it is this node.
    pub local: bool,
    /// Its trust in the network's spot checks, 0 to 1 (0.5 when new).
    #[serde(default)]
    pub trust: f64,
    /// Spot checks its answer agreed in, and lost.
    #[serde(default)]
    pub checks_agreed: u64,
    /// Spot checks its answer lost.
    #[serde(default)]
    pub checks_lost: u64,
    /// Why it is given no work, if it is not.
    #[serde(default)]
    pub excluded: Option<String>,
}

/// A network's credits, as this node sums up the records it holds.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CreditsInfo {
    /// The network.
    pub network: String,
    /// Credits each person starts with.
    pub grant: u64,
    /// Credits per input token processed.
    pub price_per_token: u64,
    /// The share of chunks checked again (more for workers not trusted yet).
    pub check_rate: f64,
    /// This node's person in the network.
    pub me: String,
    /// Balances: this node's person first, then every other member (and
    /// anyone a receipt names).
    pub balances: Vec<BalanceInfo>,
    /// The latest receipts, newest first.
    pub receipts: Vec<ReceiptInfo>,
    /// Receipts and check outcomes this node holds.
    pub records: usize,
}

/// A person's credits.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BalanceInfo {
    /// The person.
    pub person: String,
    /// The owner's grant.
    pub granted: u64,
    /// Earned running chunks.
    pub earned: u64,
    /// Spent on jobs.
    pub spent: u64,
    /// What is left.
    pub available: i64,
}

/// One receipt: a chunk a worker ran for a requester, signed by both.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReceiptInfo {
    /// The job's ID (hex) and the chunk's number.
    pub job: String,
    /// The chunk.
    pub chunk: u32,
    /// Who paid.
    pub requester: String,
    /// Who earned, and on which device.
    pub worker: String,
    /// The worker's device.
    pub worker_device: String,
    /// Tokens the model read.
    pub tokens: u64,
    /// Credits.
    pub credits: u64,
    /// When the worker answered (ms since the epoch).
    pub at_ms: u64,
    /// Voided by a spot check the worker's answer lost.
    pub void: bool,
}

/// How far a job is.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Progress {
    /// The job.
    pub job: String,
    /// Inputs done.
    pub done: usize,
    /// Inputs in all.
    pub total: usize,
    /// Chunks done, and in all.
    pub chunks_done: usize,
    /// Chunks in all.
    pub chunks: usize,
}

/// A finished embeddings job.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Embeddings {
    /// The job's ID.
    pub job: String,
    /// The model.
    pub model: String,
    /// One unit-length embedding per input, in order.
    pub vectors: Vec<Vec<f32>>,
    /// Tokens the model read, over all inputs.
    pub tokens: u64,
    /// Chunks each worker ran (device node ID → chunks).
    pub workers: BTreeMap<String, usize>,
    /// Chunks that had to be run again elsewhere.
    pub reassigned: usize,
    /// The mean cost of a chunk run by another node beyond the worker's
    /// own time (sending, answering, both event loops), in µs.
    pub chunk_overhead_us: Option<u64>,
    /// Wall time, in milliseconds.
    pub elapsed_ms: u64,
}

/// A job this node asked for, as `jobs` lists it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobInfo {
    /// Its ID.
    pub id: String,
    /// The network.
    pub network: String,
    /// The model.
    pub model: String,
    /// `running`, `done` or `failed`.
    pub state: String,
    /// Inputs done, and in all.
    pub done: usize,
    /// Inputs in all.
    pub inputs: usize,
    /// Chunks each worker ran.
    pub workers: BTreeMap<String, usize>,
    /// Chunks run again elsewhere.
    pub reassigned: usize,
    /// The mean cost of a chunk run by another node beyond the worker's
    /// own time, in µs.
    pub chunk_overhead_us: Option<u64>,
    /// Milliseconds since it started (or that it took).
    pub elapsed_ms: u64,
    /// Why it failed.
    pub error: Option<String>,
}
