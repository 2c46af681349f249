// Over 600 lines: a job's two sides (asking and working) share the executor's slots and one book of workers.
//! Jobs, the rules. As a requester: a job is cut into chunks, each given
//! to the worker the [`scheduler`](super::scheduler) picks (this node
//! too, if it offers compute), run again elsewhere when its worker fails,
//! times out, refuses, answers with something malformed or stops being a
//! member; the answers are put back in order. As a worker: chunks from
//! members wait in a bounded queue (per peer and in all) and run on the
//! [`Executor`](crate::compute::Executor), as many at once as it has
//! threads. I/O-free: the event loop carries the [`Action`]s.

use std::{
    collections::{BTreeMap, HashMap, HashSet, VecDeque},
    ops::Range,
    sync::Arc,
    time::Duration,
};

use libp2p::PeerId;
use serde_bytes::ByteBuf;
use tokio::sync::watch;

use super::{
    scheduler::{self, Slot, WorkerStats},
    wire::{JobRequest, JobResponse, MAX_CHUNK_BYTES, MAX_CHUNK_INPUTS, Run, pack, unpack},
};
use crate::{
    Identity, MeshError,
    compute::{
        Embeddings, JobInfo, MAX_INPUT_BYTES, MAX_JOB_BYTES, MAX_JOB_INPUTS, ModelSpec, Progress, Task,
        TaskOutput, TaskResult, WorkerInfo,
    },
    metrics::Metrics,
    platform::Instant,
    protocols::{
        AskId,
        credits::{
            ledger::Ledger,
            records::{Answer, Work},
            vrf::Draw,
        },
        networks::Candidate,
    },
};

/// Jobs of this node running at once.
pub(crate) const MAX_JOBS: usize = 16;
/// Chunks waiting here from one peer.
const MAX_QUEUED_PER_PEER: usize = 8;
/// Chunks waiting here in all.
const MAX_QUEUED: usize = 64;
/// Times a chunk is tried before its job fails.
const MAX_ATTEMPTS: u32 = 8;
/// Finished jobs kept for `jobs`.
const KEEP_FINISHED: usize = 32;
/// How long a worker that failed is given nothing.
const REST_AFTER_FAILURE: Duration = Duration::from_secs(30);
/// How long a worker that answered badly is given nothing.
const REST_AFTER_BAD_ANSWER: Duration = Duration::from_secs(300);
/// How long a busy worker is given nothing.
const REST_WHEN_BUSY: Duration = Duration::from_millis(500);

/// What a job's caller gets back at once.
pub struct JobHandle {
    /// The job's ID.
    pub id: String,
    /// Its progress, updated as chunks come back.
    pub progress: watch::Receiver<Progress>,
    /// Its result.
    pub result: tokio::sync::oneshot::Receiver<Result<Embeddings, MeshError>>,
}

/// Who asks this driver about networks (the networks driver and the
/// state, through the event loop).
pub(crate) trait Roster {
    /// Whether `device`, of `person`, may take part in `network`'s jobs.
    fn authorize(&self, network: &str, device: &PeerId, person: &str) -> Result<(), String>;
    /// Workers of `network` that run `model`, heard from recently.
    fn candidates(&self, network: &str, model: &str) -> Vec<Candidate>;
    /// The person this node is in `network`.
    fn person(&self, network: &str) -> Option<String>;
    /// `network`'s credits: its terms, balances and trust, from the
    /// records in the replicated state.
    fn ledger(&self, network: &str) -> Ledger;
}

/// A task's number with the executor.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct TaskId(pub u64);

/// What the event loop does for this driver.
#[derive(Debug)]
pub(crate) enum Action<C> {
    /// Send a chunk; the answer comes back with `ask`.
    Request { peer: PeerId, ask: AskId, request: JobRequest },
    /// Answer an inbound chunk.
    Respond { channel: C, response: JobResponse },
    /// Run a task on the executor; its result comes back with `id`.
    Execute { id: TaskId, task: Task },
    /// Write a credit record (receipt or check outcome) into this node's
    /// own namespace.
    Write { key: String, token: String },
    /// A worker did not answer: it may be gone.
    Unreachable(PeerId),
}

#[derive(Debug)]
enum ChunkState {
    Pending,
    Running { worker: PeerId, person: String, ask: AskId, since: Instant, timeout: Instant },
    Done,
}

/// One worker's answer to a chunk, kept until the chunk settles.
pub(super) struct Held {
    pub worker: PeerId,
    pub vectors: Vec<Vec<f32>>,
    pub tokens: u64,
    /// Its signed claim.
    pub answer: Answer,
}

struct Chunk {
    range: Range<usize>,
    state: ChunkState,
    tried: Vec<PeerId>,
    attempts: u32,
    /// The answers it has had; the first accepted is in `Job::vectors`.
    answers: Vec<Held>,
    /// Answers it needs before it settles: 1; 2 when drawn for a check;
    /// 3 when the first two disagree.
    needed: usize,
    /// The worker whose answer it took.
    accepted: Option<PeerId>,
    /// A second run of a chunk drawn for a check, sent with the first.
    check: Option<InFlight>,
}

/// A run of a chunk on a worker, awaited.
#[derive(Debug)]
struct InFlight {
    worker: PeerId,
    person: String,
    ask: AskId,
    since: Instant,
    timeout: Instant,
}

/// An answered or failed run, no longer awaited.
pub(super) struct Taken {
    pub j: usize,
    pub c: usize,
    pub worker: PeerId,
    pub person: String,
    pub since: Instant,
    /// The second run of a drawn chunk (the first may still be running).
    pub second: bool,
}

struct Job {
    id: String,
    raw_id: [u8; 16],
    network: String,
    person: String,
    model: ModelSpec,
    inputs: Arc<Vec<String>>,
    chunks: Vec<Chunk>,
    vectors: Vec<Option<Vec<f32>>>,
    tokens: u64,
    done: usize,
    chunks_done: usize,
    workers: BTreeMap<String, usize>,
    reassigned: usize,
    /// Round trips of chunks run by other nodes, beyond the workers' time.
    overhead: Duration,
    remote_chunks: u32,
    started: Instant,
    deadline: Instant,
    deadline_ms: u64,
    /// The VRF draw of the chunks checked.
    draw: Draw,
    /// Credits per token, and the network's check rate, when it started.
    price: u64,
    check_rate: f64,
    /// The most it may cost.
    estimate: u64,
    /// Chunks checked, and answers that lost a check.
    checks: usize,
    caught: usize,
    progress: watch::Sender<Progress>,
    reply: Option<tokio::sync::oneshot::Sender<Result<Embeddings, MeshError>>>,
}

impl Job {
    fn info(&self, state: &str, error: Option<String>, now: Instant) -> JobInfo {
        JobInfo {
            id: self.id.clone(),
            network: self.network.clone(),
            model: self.model.name.into(),
            state: state.into(),
            done: self.done,
            inputs: self.inputs.len(),
            workers: self.workers.clone(),
            reassigned: self.reassigned,
            chunk_overhead_us: self.chunk_overhead_us(),
            elapsed_ms: now.saturating_duration_since(self.started).as_millis() as u64,
            error,
        }
    }

    /// The claim `worker` makes (or made) for chunk `c` of this job,
    /// asked by this node (`local`).
    fn claim(
        &self,
        c: usize,
        local: &PeerId,
        worker: (&str, &PeerId),
        tokens: u64,
        packed: &[u8],
        at_ms: u64,
    ) -> Work {
        let requester = (self.person.as_str(), local);
        let inputs = self.chunks[c].range.len();
        let (job, key) = (&self.raw_id, &self.draw.key);
        credit::work(
            &self.network,
            job,
            c as u32,
            requester,
            key,
            worker,
            inputs,
            tokens,
            self.price,
            packed,
            at_ms,
        )
    }

    /// The mean cost of sending a chunk to another node and getting its
    /// answer, beyond the worker's time (µs).
    fn chunk_overhead_us(&self) -> Option<u64> {
        (self.remote_chunks > 0).then(|| (self.overhead / self.remote_chunks).as_micros() as u64)
    }

    fn report(&self) {
        self.progress.send_replace(Progress {
            job: self.id.clone(),
            done: self.done,
            total: self.inputs.len(),
            chunks_done: self.chunks_done,
            chunks: self.chunks.len(),
        });
    }
}

/// Who waits for a task's result.
enum Waiter<C> {
    /// A peer's chunk: answer on its channel, with a claim made from
    /// `work` (its inputs, the requester, this worker; tokens and result
    /// to fill in) at `price` a token.
    Peer { peer: PeerId, channel: C, inputs: usize, started: Instant, work: Box<Work>, price: u64 },
    /// A chunk of this node's own job.
    Own { ask: AskId },
}

/// A chunk waiting for a free thread here.
struct Queued<C> {
    task: Task,
    waiter: Waiter<C>,
}

/// The driver; see the module documentation.
pub(crate) struct Jobs<C> {
    identity: Identity,
    local: PeerId,
    /// Devices whose answer lost a check of this node's: given no work.
    caught: HashSet<PeerId>,
    /// As a worker: claims not yet paid by a receipt (receipt key → the
    /// requester person and when).
    owed: BTreeMap<String, (String, Instant)>,
    /// A lying worker, for tests of the spot checks (see `set_lie_rate`).
    lie_rate: f64,
    /// Receipts requests per peer: since when counted, and how many.
    receipt_requests: HashMap<PeerId, (Instant, u32)>,
    jobs: Vec<Job>,
    /// Each outstanding chunk: its job (by ID) and its number.
    asks: HashMap<AskId, (String, usize)>,
    next_ask: u64,
    stats: HashMap<PeerId, WorkerStats>,
    finished: VecDeque<JobInfo>,
    /// This node's executor: threads (0 when it offers nothing).
    threads: usize,
    queue: VecDeque<Queued<C>>,
    running: HashMap<TaskId, Waiter<C>>,
    next_task: u64,
    metrics: Arc<Metrics>,
    actions: VecDeque<Action<C>>,
}

fn bad_request(text: impl Into<String>) -> MeshError {
    MeshError::BadRequest(text.into())
}

fn job_error(text: impl Into<String>) -> MeshError {
    MeshError::Job(text.into())
}

/// Checks a job's inputs against the limits; the error names the first
/// that breaks one.
pub(crate) fn check_inputs(inputs: &[String]) -> Result<(), MeshError> {
    if inputs.is_empty() {
        return Err(bad_request("no inputs: give at least one text"));
    }
    if inputs.len() > MAX_JOB_INPUTS {
        return Err(bad_request(format!(
            "{} inputs in one job; the most is {MAX_JOB_INPUTS} (split it into several jobs)",
            inputs.len()
        )));
    }
    let mut total = 0;
    for (i, text) in inputs.iter().enumerate() {
        if text.len() > MAX_INPUT_BYTES {
            return Err(bad_request(format!(
                "input {i} is {} bytes; the most is {MAX_INPUT_BYTES} (the model reads only its first 256 tokens)",
                text.len()
            )));
        }
        total += text.len();
    }
    if total > MAX_JOB_BYTES {
        return Err(bad_request(format!("{total} bytes of input in one job; the most is {MAX_JOB_BYTES}")));
    }
    Ok(())
}

impl<C> Jobs<C> {
    pub(crate) fn new(identity: Identity, metrics: Arc<Metrics>) -> Self {
        Self {
            local: identity.peer_id(),
            identity,
            caught: HashSet::new(),
            owed: BTreeMap::new(),
            lie_rate: 0.0,
            receipt_requests: HashMap::new(),
            jobs: Vec::new(),
            asks: HashMap::new(),
            next_ask: 0,
            stats: HashMap::new(),
            finished: VecDeque::new(),
            threads: 0,
            queue: VecDeque::new(),
            running: HashMap::new(),
            next_task: 0,
            metrics,
            actions: VecDeque::new(),
        }
    }

    /// The next thing to do, if any.
    pub(crate) fn poll_action(&mut self) -> Option<Action<C>> {
        self.actions.pop_front()
    }

    /// Tasks waiting or running here.
    pub(crate) fn queue_len(&self) -> u32 {
        (self.queue.len() + self.running.len()) as u32
    }

    /// This node's executor runs `threads` tasks at once (0: it offers
    /// nothing; chunks waiting here are refused).
    pub(crate) fn set_threads(&mut self, threads: usize) {
        self.threads = threads;
        if threads == 0 {
            for queued in std::mem::take(&mut self.queue) {
                self.fail_task(queued.waiter, "this worker stopped offering compute".into(), Instant::now());
            }
        }
        self.start_tasks();
    }

    // ---- as a requester --------------------------------------------------

    /// Starts a job embedding `inputs` with `model` in `network`.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn embed(
        &mut self,
        network: String,
        model: ModelSpec,
        inputs: Vec<String>,
        roster: &impl Roster,
        now: Instant,
        now_ms: u64,
    ) -> Result<JobHandle, MeshError> {
        check_inputs(&inputs)?;
        if self.jobs.len() >= MAX_JOBS {
            return Err(job_error(format!("{MAX_JOBS} jobs are running already; wait for one to finish")));
        }
        let person = roster
            .person(&network)
            .ok_or_else(|| job_error(format!("this node is not in network {network}")))?;
        roster.authorize(&network, &self.local, &person).map_err(job_error)?;
        let workers = roster.candidates(&network, model.name);
        if workers.is_empty() {
            return Err(job_error(format!(
                "no worker in network {network} offers {} right now (start one with `node --compute`, or contribute a tab)",
                model.name
            )));
        }
        let ledger = roster.ledger(&network);
        let terms = *ledger.terms();
        let estimate = credit::estimate(&inputs, terms.price_per_token);
        let available = ledger.balance(&person).available() - i128::from(self.reserved(&network, &person));
        if i128::from(estimate) > available {
            return Err(job_error(format!(
                "not enough credits in network {network}: {person} has {available}, and this job may cost up to \
                 {estimate} ({} inputs at {} a token)",
                inputs.len(),
                terms.price_per_token
            )));
        }
        let mut raw_id = [0u8; 16];
        getrandom::fill(&mut raw_id).map_err(|e| job_error(format!("no secure random source: {e}")))?;
        let id = hex::encode(&raw_id[..8]);
        let draw = crate::credits::vrf::draw(&self.identity, &network, &raw_id);
        let ranges = scheduler::chunks(&inputs, workers.len());
        // Long enough for a slow browser worker to do all of it alone.
        let budget = Duration::from_secs(60) + Duration::from_millis(200 * inputs.len() as u64);
        let (progress, progress_rx) = watch::channel(Progress::default());
        let (reply, result) = tokio::sync::oneshot::channel();
        let job = Job {
            id: id.clone(),
            raw_id,
            network,
            person,
            model,
            vectors: vec![None; inputs.len()],
            inputs: Arc::new(inputs),
            chunks: ranges
                .into_iter()
                .map(|range| Chunk {
                    range,
                    state: ChunkState::Pending,
                    tried: Vec::new(),
                    attempts: 0,
                    answers: Vec::new(),
                    needed: 1,
                    accepted: None,
                    check: None,
                })
                .collect(),
            tokens: 0,
            done: 0,
            chunks_done: 0,
            workers: BTreeMap::new(),
            reassigned: 0,
            overhead: Duration::ZERO,
            remote_chunks: 0,
            started: now,
            deadline: now + budget,
            deadline_ms: now_ms + budget.as_millis() as u64,
            draw,
            price: terms.price_per_token,
            check_rate: terms.check_rate,
            estimate,
            checks: 0,
            caught: 0,
            progress,
            reply: Some(reply),
        };
        job.report();
        tracing::info!(job = %id, inputs = job.inputs.len(), chunks = job.chunks.len(), "job started");
        self.jobs.push(job);
        self.schedule(roster, now);
        Ok(JobHandle { id, progress: progress_rx, result })
    }

    fn ask(&mut self) -> AskId {
        self.next_ask += 1;
        AskId(self.next_ask)
    }

    /// Gives pending chunks to workers with room, oldest job first; a
    /// chunk drawn for a check goes to a worker that has not answered it.
    /// Workers that lost a check, or whose trust is too low, get nothing.
    fn schedule(&mut self, roster: &impl Roster, now: Instant) {
        type Workers = (Vec<Slot>, HashMap<PeerId, String>);
        let mut slots_by_net: HashMap<(String, &'static str), Workers> = HashMap::new();
        let mut unchecked = Vec::new();
        for j in 0..self.jobs.len() {
            let key = (self.jobs[j].network.clone(), self.jobs[j].model.name);
            let (slots, people) = slots_by_net
                .entry(key)
                .or_insert_with(|| {
                    let ledger = roster.ledger(&self.jobs[j].network);
                    let candidates: Vec<Candidate> = roster
                        .candidates(&self.jobs[j].network, self.jobs[j].model.name)
                        .into_iter()
                        .filter(|c| c.device == self.local || self.excluded(&ledger, &c.device).is_none())
                        .collect();
                    let slots = candidates
                        .iter()
                        .map(|c| Slot {
                            device: c.device,
                            threads: c.offer.threads as usize,
                            queue: c.queue as usize,
                            trust: ledger.trust(&c.device.to_base58()).score(),
                        })
                        .collect();
                    (slots, candidates.into_iter().map(|c| (c.device, c.person)).collect())
                })
                .clone();
            for c in 0..self.jobs[j].chunks.len() {
                // (A chunk whose second run is out waits for it.)
                let chunk = &self.jobs[j].chunks[c];
                if !matches!(chunk.state, ChunkState::Pending) || chunk.check.is_some() {
                    continue;
                }
                let chunk = &self.jobs[j].chunks[c];
                let worker = if chunk.answers.is_empty() {
                    scheduler::pick(&slots, &self.stats, chunk.range.len(), &chunk.tried, now)
                } else {
                    let others: Vec<Slot> = slots
                        .iter()
                        .filter(|s| !chunk.answers.iter().any(|h| h.worker == s.device))
                        .cloned()
                        .collect();
                    if others.is_empty() {
                        unchecked.push((j, c));
                        continue;
                    }
                    scheduler::pick(&others, &self.stats, chunk.range.len(), &[], now)
                };
                let Some(worker) = worker else { continue };
                let person = people.get(&worker).cloned().unwrap_or_default();
                let fresh = self.jobs[j].chunks[c].answers.is_empty();
                self.send(j, c, worker, person, now, false);
                if fresh {
                    self.send_check(j, c, worker, &slots, &people, now);
                }
            }
        }
        // No other worker to check with: a first answer stands unchecked;
        // two that disagree with nobody to decide fail the chunk.
        for (j, c) in unchecked {
            let job = &mut self.jobs[j];
            if job.chunks[c].answers.len() == 1 {
                job.checks -= 1;
                self.accept(j, c, 0, None);
            } else {
                tracing::warn!(job = %job.id, chunk = c, "two answers disagree and no third worker can decide");
                let chunk = &mut job.chunks[c];
                chunk.answers.clear();
                chunk.needed = 1;
                chunk.attempts = MAX_ATTEMPTS;
            }
        }
    }

    /// Gives chunk `c` of job `j` to `worker` (`second`: as the second run
    /// of a drawn chunk, alongside the first).
    fn send(&mut self, j: usize, c: usize, worker: PeerId, person: String, now: Instant, second: bool) {
        let ask = self.ask();
        let stats = self.stats.entry(worker).or_default();
        stats.in_flight += 1;
        let job = &mut self.jobs[j];
        let chunk = &mut job.chunks[c];
        chunk.attempts += 1;
        let timeout = now + scheduler::timeout(Some(stats), chunk.range.len());
        if second {
            chunk.check = Some(InFlight { worker, person, ask, since: now, timeout });
        } else {
            chunk.state = ChunkState::Running { worker, person, ask, since: now, timeout };
        }
        let inputs: Vec<String> = job.inputs[chunk.range.clone()].to_vec();
        self.asks.insert(ask, (job.id.clone(), c));
        if worker == self.local {
            let task = Task { model: job.model.name.into(), inputs };
            self.enqueue(Queued { task, waiter: Waiter::Own { ask } });
            self.start_tasks();
        } else {
            let run = Run {
                job: ByteBuf::from(job.raw_id.to_vec()),
                chunk: c as u32,
                network: job.network.clone(),
                person: job.person.clone(),
                kind: "embed".into(),
                model: job.model.name.into(),
                inputs,
                deadline_ms: job.deadline_ms,
                vrf_key: ByteBuf::from(job.draw.key.to_vec()),
            };
            self.actions.push_back(Action::Request { peer: worker, ask, request: JobRequest::Run(run) });
        }
    }

    fn job_of(&self, ask: AskId) -> Option<Taken> {
        let (id, c) = self.asks.get(&ask)?;
        let (j, c) = (self.jobs.iter().position(|job| job.id == *id)?, *c);
        let chunk = &self.jobs[j].chunks[c];
        match (&chunk.state, &chunk.check) {
            (ChunkState::Running { worker, person, ask: running, since, .. }, _) if *running == ask => {
                Some(Taken { j, c, worker: *worker, person: person.clone(), since: *since, second: false })
            }
            (_, Some(run)) if run.ask == ask => Some(Taken {
                j,
                c,
                worker: run.worker,
                person: run.person.clone(),
                since: run.since,
                second: true,
            }),
            _ => None,
        }
    }

    /// The run `ask` was, no longer awaited. `None` when it was answered,
    /// moved or dropped already.
    fn take_running(&mut self, ask: AskId) -> Option<Taken> {
        let taken = self.job_of(ask);
        self.asks.remove(&ask);
        let taken = taken?;
        if let Some(stats) = self.stats.get_mut(&taken.worker) {
            stats.in_flight = stats.in_flight.saturating_sub(1);
        }
        if taken.second {
            self.jobs[taken.j].chunks[taken.c].check = None;
        }
        Some(taken)
    }

    /// A run that did not answer (well): the chunk goes back to pending,
    /// unless it was the second run of a drawn chunk (then the check goes
    /// to another worker once the first answers); the worker rests.
    fn give_up(&mut self, taken: &Taken, rest: Duration, now: Instant) {
        if taken.second {
            self.stats.entry(taken.worker).or_default().rest_until = Some(now + rest);
            let chunk = &mut self.jobs[taken.j].chunks[taken.c];
            if !chunk.tried.contains(&taken.worker) {
                chunk.tried.push(taken.worker);
            }
        } else {
            self.retry(taken.j, taken.c, taken.worker, Some(rest), now);
        }
    }

    /// A worker's answer to one of this node's chunks.
    pub(crate) fn on_response(
        &mut self,
        ask: AskId,
        response: JobResponse,
        roster: &impl Roster,
        now: Instant,
    ) {
        let Some(taken) = self.take_running(ask) else { return };
        let Taken { j, c, worker, since, second, .. } = taken;
        let inputs = self.jobs[j].chunks[c].range.len();
        match response {
            JobResponse::Done { vectors: packed, dims, tokens, micros, credits, at_ms, claim } => {
                let job = &self.jobs[j];
                let worker_person = taken.person.clone();
                // A worker revoked meanwhile: its answer does not count.
                let checked = roster
                    .authorize(&job.network, &worker, &worker_person)
                    .and_then(|()| match self.caught.contains(&worker) {
                        true => Err("its answer lost a spot check of this node's before".to_owned()),
                        false => Ok(()),
                    })
                    .and_then(|()| unpack(&packed, dims, inputs, job.model.dimensions))
                    .and_then(|vectors| {
                        let work =
                            job.claim(c, &self.local, (&worker_person, &worker), tokens, &packed, at_ms);
                        if work.credits != credits {
                            return Err(format!(
                                "it claims {credits} credits for {tokens} tokens at {} a token",
                                job.price
                            ));
                        }
                        work.verify_claim(&claim).map_err(|e| e.to_string())?;
                        Ok((vectors, credit::answer(work, claim)))
                    });
                match checked {
                    Ok((vectors, answer)) => {
                        // What the round trip cost beyond the worker's own time.
                        let worker_time = Duration::from_micros(micros);
                        let job = &mut self.jobs[j];
                        job.overhead += now.saturating_duration_since(since).saturating_sub(worker_time);
                        job.remote_chunks += 1;
                        self.stats
                            .entry(worker)
                            .or_default()
                            .answered(inputs, now.saturating_duration_since(since));
                        self.answered(j, c, Held { worker, vectors, tokens, answer }, second, roster);
                    }
                    Err(reason) => {
                        self.metrics.job_chunk_refused();
                        tracing::warn!(%worker, job = %self.jobs[j].id, "answer refused: {reason}");
                        self.give_up(&taken, REST_AFTER_BAD_ANSWER, now);
                    }
                }
            }
            JobResponse::Busy { .. } => self.give_up(&taken, REST_WHEN_BUSY, now),
            JobResponse::Stored(_) => self.give_up(&taken, REST_AFTER_BAD_ANSWER, now),
            JobResponse::Refused(reason) => {
                tracing::info!(%worker, job = %self.jobs[j].id, "chunk refused: {reason}");
                self.give_up(&taken, REST_AFTER_FAILURE, now);
            }
        }
        self.settle(roster, now);
    }

    /// One of this node's chunks could not be delivered or answered.
    pub(crate) fn on_failure(&mut self, ask: AskId, error: &str, roster: &impl Roster, now: Instant) {
        let Some(taken) = self.take_running(ask) else { return };
        tracing::info!(worker = %taken.worker, job = %self.jobs[taken.j].id, "chunk failed: {error}");
        self.actions.push_back(Action::Unreachable(taken.worker));
        self.give_up(&taken, REST_AFTER_FAILURE, now);
        self.settle(roster, now);
    }

    /// Chunk `c` of job `j` goes back to pending, `worker` rests.
    fn retry(&mut self, j: usize, c: usize, worker: PeerId, rest: Option<Duration>, now: Instant) {
        if let Some(rest) = rest {
            self.stats.entry(worker).or_default().rest_until = Some(now + rest);
        }
        let job = &mut self.jobs[j];
        let chunk = &mut job.chunks[c];
        chunk.state = ChunkState::Pending;
        if !chunk.tried.contains(&worker) {
            chunk.tried.push(worker);
        }
        job.reassigned += 1;
    }

    /// Finishes jobs that are done or cannot be, then schedules.
    fn settle(&mut self, roster: &impl Roster, now: Instant) {
        let mut j = 0;
        while j < self.jobs.len() {
            let job = &self.jobs[j];
            let outcome = if job.chunks_done == job.chunks.len() {
                Some(Ok(()))
            } else if let Some(chunk) = job
                .chunks
                .iter()
                .find(|c| c.attempts >= MAX_ATTEMPTS && matches!(c.state, ChunkState::Pending))
            {
                Some(Err(format!(
                    "inputs {}-{} failed on {} workers; the job is abandoned",
                    chunk.range.start,
                    chunk.range.end - 1,
                    chunk.tried.len()
                )))
            } else if let Err(reason) = roster.authorize(&job.network, &self.local, &job.person) {
                // Revoked or expired meanwhile: no member will run its chunks.
                Some(Err(reason))
            } else if now >= job.deadline {
                Some(Err(format!(
                    "the job ran out of time: {} of {} inputs done (are the workers still there?)",
                    job.done,
                    job.inputs.len()
                )))
            } else if job.reply.as_ref().is_some_and(|r| r.is_closed()) {
                Some(Err("its caller went away".to_owned()))
            } else {
                None
            };
            match outcome {
                Some(result) => self.finish_job(j, result, now),
                None => j += 1,
            }
        }
        self.schedule(roster, now);
    }

    fn finish_job(&mut self, j: usize, result: Result<(), String>, now: Instant) {
        // The answers it kept are paid for, whether or not the job as a
        // whole succeeded.
        self.pay(j);
        let mut job = self.jobs.remove(j);
        for chunk in &job.chunks {
            let main = match chunk.state {
                ChunkState::Running { ask, worker, .. } => Some((ask, worker)),
                _ => None,
            };
            for (ask, worker) in main.into_iter().chain(chunk.check.as_ref().map(|r| (r.ask, r.worker))) {
                self.asks.remove(&ask);
                if let Some(stats) = self.stats.get_mut(&worker) {
                    stats.in_flight = stats.in_flight.saturating_sub(1);
                }
            }
        }
        let elapsed_ms = now.saturating_duration_since(job.started).as_millis() as u64;
        let (info, answer) = match result {
            Ok(()) => {
                let vectors: Vec<Vec<f32>> =
                    std::mem::take(&mut job.vectors).into_iter().map(Option::unwrap_or_default).collect();
                tracing::info!(job = %job.id, inputs = vectors.len(), elapsed_ms, workers = ?job.workers, "job done");
                self.metrics.job_finished(true);
                let embeddings = Embeddings {
                    job: job.id.clone(),
                    model: job.model.name.into(),
                    vectors,
                    tokens: job.tokens,
                    workers: job.workers.clone(),
                    reassigned: job.reassigned,
                    chunk_overhead_us: job.chunk_overhead_us(),
                    elapsed_ms,
                };
                (job.info("done", None, now), Ok(embeddings))
            }
            Err(reason) => {
                tracing::warn!(job = %job.id, "job failed: {reason}");
                self.metrics.job_finished(false);
                (job.info("failed", Some(reason.clone()), now), Err(job_error(reason)))
            }
        };
        if let Some(reply) = job.reply.take() {
            let _ = reply.send(answer);
        }
        self.finished.push_back(info);
        while self.finished.len() > KEEP_FINISHED {
            self.finished.pop_front();
        }
    }

    /// Jobs running and recently finished, newest last.
    pub(crate) fn list(&self, now: Instant) -> Vec<JobInfo> {
        self.finished.iter().cloned().chain(self.jobs.iter().map(|j| j.info("running", None, now))).collect()
    }

    /// What this node measured of `worker`: ms per input and chunks run.
    pub(crate) fn worker_stats(&self, worker: &PeerId) -> (Option<f64>, u64) {
        self.stats.get(worker).map_or((None, 0), |s| (s.ms_per_input, s.chunks))
    }

    /// Adds what this node measured to a list of workers, and their
    /// standing in their network's spot checks.
    pub(crate) fn annotate(&self, workers: &mut [WorkerInfo], roster: &impl Roster) {
        let mut ledgers: HashMap<String, Ledger> = HashMap::new();
        for w in workers {
            let Ok(device) = w.device.parse::<PeerId>() else { continue };
            (w.ms_per_input, w.chunks) = self.worker_stats(&device);
            let ledger = ledgers.entry(w.network.clone()).or_insert_with(|| roster.ledger(&w.network));
            let trust = ledger.trust(&w.device);
            (w.trust, w.checks_agreed, w.checks_lost) = (trust.score(), trust.agreed, trust.disagreed);
            w.excluded = if w.local { None } else { self.excluded(ledger, &device) };
        }
    }

    /// Time passes: chunks past their timeout go elsewhere, jobs past
    /// their deadline fail.
    pub(crate) fn on_tick(&mut self, roster: &impl Roster, now: Instant) {
        let mut late = Vec::new();
        for job in &self.jobs {
            for chunk in &job.chunks {
                if let ChunkState::Running { ask, timeout, .. } = chunk.state
                    && now >= timeout
                {
                    late.push(ask);
                }
                if let Some(run) = &chunk.check
                    && now >= run.timeout
                {
                    late.push(run.ask);
                }
            }
        }
        for ask in late {
            if let Some(taken) = self.take_running(ask) {
                tracing::info!(worker = %taken.worker, job = %self.jobs[taken.j].id, "chunk timed out");
                self.give_up(&taken, REST_AFTER_FAILURE, now);
            }
        }
        self.settle(roster, now);
    }

    // ---- as a worker ---------------------------------------------------------

    /// A chunk from `peer`: queued if it may run here, refused otherwise.
    pub(crate) fn on_request(
        &mut self,
        peer: PeerId,
        request: JobRequest,
        channel: C,
        roster: &impl Roster,
        now: Instant,
        now_ms: u64,
    ) {
        let run = match request {
            JobRequest::Run(run) => run,
            JobRequest::Receipts(tokens) => {
                let response = self.on_receipts(&peer, tokens, roster, now);
                self.actions.push_back(Action::Respond { channel, response });
                return;
            }
        };
        let refuse = |reason: String| JobResponse::Refused(reason);
        let ledger = roster.ledger(&run.network);
        let price = ledger.terms().price_per_token;
        let cost = credit::estimate(&run.inputs, price);
        let balance = ledger.balance(&run.person).available();
        let owed = self.owed_by(&run.person, now);
        let verdict = if self.threads == 0 {
            Err(refuse("this node offers no compute".into()))
        } else if let Err(reason) = roster.authorize(&run.network, &peer, &run.person) {
            Err(refuse(reason))
        } else if run.kind != "embed" {
            Err(refuse(format!("unknown kind of job '{}'", run.kind)))
        } else if crate::compute::model(&run.model).is_none() {
            Err(refuse(format!("unknown model '{}'", run.model)))
        } else if run.inputs.is_empty()
            || run.inputs.len() > MAX_CHUNK_INPUTS
            || run.inputs.iter().any(|t| t.len() > MAX_INPUT_BYTES)
            || run.inputs.iter().map(String::len).sum::<usize>() > MAX_CHUNK_BYTES + MAX_INPUT_BYTES
        {
            Err(refuse("the chunk is empty or larger than allowed".into()))
        } else if now_ms >= run.deadline_ms {
            Err(refuse("its deadline has passed".into()))
        } else if run.vrf_key.len() != 32 {
            Err(refuse("the chunk carries no VRF key".into()))
        } else if owed >= credit::MAX_OWED {
            Err(refuse(format!(
                "{} owes this worker receipts for {owed} chunks; it is served again once they arrive",
                run.person
            )))
        } else if i128::from(cost) > balance && run.person != roster.person(&run.network).unwrap_or_default()
        {
            Err(refuse(format!(
                "not enough credits: {} has {balance} in network {}, and this chunk may cost up to {cost}",
                run.person, run.network
            )))
        } else if self.queue.len() >= MAX_QUEUED
            || self
                .queue
                .iter()
                .filter(|q| matches!(q.waiter, Waiter::Peer { peer: p, .. } if p == peer))
                .count()
                >= MAX_QUEUED_PER_PEER
        {
            Err(JobResponse::Busy { queue: self.queue_len() })
        } else {
            Ok(())
        };
        match verdict {
            Err(response) => {
                if let JobResponse::Refused(reason) = &response {
                    self.metrics.job_chunk_refused();
                    tracing::info!(%peer, "chunk refused: {reason}");
                }
                self.actions.push_back(Action::Respond { channel, response });
            }
            Ok(()) => {
                let model =
                    crate::compute::model(&run.model).map_or(run.model.clone(), |m| m.name.to_owned());
                let inputs = run.inputs.len();
                let me = roster.person(&run.network).unwrap_or_default();
                let work = Box::new(credit::work(
                    &run.network,
                    &run.job,
                    run.chunk,
                    (&run.person, &peer),
                    &run.vrf_key,
                    (&me, &self.local),
                    inputs,
                    0,
                    price,
                    &[],
                    0,
                ));
                let waiter = Waiter::Peer { peer, channel, inputs, started: now, work, price };
                self.enqueue(Queued { task: Task { model, inputs: run.inputs }, waiter });
                self.start_tasks();
            }
        }
    }

    fn enqueue(&mut self, queued: Queued<C>) {
        // This node's own chunks first: its user is waiting here.
        if matches!(queued.waiter, Waiter::Own { .. }) {
            let at = self
                .queue
                .iter()
                .position(|q| !matches!(q.waiter, Waiter::Own { .. }))
                .unwrap_or(self.queue.len());
            self.queue.insert(at, queued);
        } else {
            self.queue.push_back(queued);
        }
    }

    fn start_tasks(&mut self) {
        while self.running.len() < self.threads {
            let Some(queued) = self.queue.pop_front() else { return };
            self.next_task += 1;
            let id = TaskId(self.next_task);
            self.running.insert(id, queued.waiter);
            self.actions.push_back(Action::Execute { id, task: queued.task });
        }
    }

    /// The executor finished a task.
    pub(crate) fn on_executed(
        &mut self,
        id: TaskId,
        result: TaskResult,
        roster: &impl Roster,
        now: Instant,
        now_ms: u64,
    ) {
        if let Some(waiter) = self.running.remove(&id) {
            self.finish_task(waiter, result, roster, now, now_ms);
        }
        self.start_tasks();
        self.settle(roster, now);
    }

    fn finish_task(
        &mut self,
        waiter: Waiter<C>,
        result: TaskResult,
        roster: &impl Roster,
        now: Instant,
        now_ms: u64,
    ) {
        let output = match result {
            Ok(output) => output,
            Err(reason) => return self.fail_task(waiter, format!("the task failed here: {reason}"), now),
        };
        match waiter {
            Waiter::Peer { peer, channel, inputs, started, mut work, price } => {
                let TaskOutput { mut vectors, tokens } = output;
                if vectors.len() != inputs {
                    let reason =
                        format!("the executor answered {} embeddings for {inputs} inputs", vectors.len());
                    let waiter = Waiter::Peer { peer, channel, inputs, started, work, price };
                    return self.fail_task(waiter, reason, now);
                }
                self.maybe_lie(&mut vectors);
                self.metrics.job_chunk_served();
                let (vectors, dims) = pack(&vectors);
                let micros = now.saturating_duration_since(started).as_micros() as u64;
                work.tokens = tokens;
                work.credits = tokens.saturating_mul(price);
                work.result = ByteBuf::from(crate::credits::records::result_hash(&vectors).to_vec());
                work.at_ms = now_ms;
                let requester = work.requester.clone();
                let response = match self.claim(&work, &requester, now) {
                    Some(claim) => JobResponse::Done {
                        vectors,
                        dims,
                        tokens,
                        micros,
                        credits: work.credits,
                        at_ms: now_ms,
                        claim,
                    },
                    None => JobResponse::Refused("this worker cannot sign its claim".into()),
                };
                self.actions.push_back(Action::Respond { channel, response });
            }
            Waiter::Own { ask } => {
                let Some(taken) = self.take_running(ask) else { return };
                let Taken { j, c, worker, since, second, .. } = taken;
                let inputs = self.jobs[j].chunks[c].range.len();
                let TaskOutput { vectors, tokens } = output;
                if vectors.len() != inputs {
                    tracing::warn!(job = %self.jobs[j].id, "a chunk failed on this node: {} embeddings for {inputs} inputs", vectors.len());
                    self.give_up(&taken, REST_AFTER_FAILURE, now);
                    return;
                }
                self.stats.entry(worker).or_default().answered(inputs, now.saturating_duration_since(since));
                let job = &self.jobs[j];
                let packed = credit::packed(&vectors);
                let work = job.claim(c, &self.local, (&job.person, &self.local), tokens, &packed, now_ms);
                match work.claim(&self.identity) {
                    Ok(signature) => {
                        let answer = credit::answer(work, ByteBuf::from(signature));
                        self.answered(j, c, Held { worker, vectors, tokens, answer }, second, roster);
                    }
                    Err(e) => {
                        tracing::warn!("this node cannot sign its own claim: {e}");
                        self.give_up(&taken, REST_AFTER_FAILURE, now);
                    }
                }
            }
        }
    }

    /// A task that did not run (or not well): its peer is told why, this
    /// node's own chunk goes elsewhere.
    fn fail_task(&mut self, waiter: Waiter<C>, reason: String, now: Instant) {
        match waiter {
            Waiter::Peer { peer, channel, .. } => {
                tracing::warn!(%peer, "{reason}");
                self.actions.push_back(Action::Respond { channel, response: JobResponse::Refused(reason) });
            }
            Waiter::Own { ask } => {
                let Some(taken) = self.take_running(ask) else { return };
                tracing::warn!(job = %self.jobs[taken.j].id, "a chunk failed on this node: {reason}");
                self.give_up(&taken, REST_AFTER_FAILURE, now);
            }
        }
    }
}

mod credit;
#[cfg(test)]
mod tests;
