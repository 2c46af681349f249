//! Jobs, the credits and checks: the requester draws which chunks are
//! run again by a second worker (VRF over the job, see
//! [`crate::credits::vrf`]), compares the answers, asks a third worker
//! when they disagree, and redoes every chunk of a worker whose answer
//! lost; once a job is settled it countersigns the claims of the answers
//! it kept and sends each worker its receipts. As a worker: every answer
//! carries a signed claim, and a requester that leaves too many claims
//! unpaid is served no more.

use std::{collections::HashMap, time::Duration};

use libp2p::PeerId;
use serde_bytes::ByteBuf;

use super::{
    Action, ChunkState, Held, Jobs, Roster,
    scheduler::{self, Slot},
};
use crate::{
    credits::{
        ledger::{Ledger, check_rate},
        records::{
            Answer, CheckOutcome, MAX_TOKENS_PER_INPUT, Receipt, Work, check_key, receipt_key, result_hash,
        },
        vrf,
    },
    platform::Instant,
    protocols::jobs::wire::{JobRequest, JobResponse, pack},
};

/// Two answers agree when every pair of vectors has at least this cosine.
pub(crate) const AGREE_COSINE: f32 = 0.999;
/// Claims a worker leaves unpaid by one requester before refusing it.
pub(crate) const MAX_OWED: usize = 32;
/// How long a claim may stay unpaid before it counts as owed.
pub(crate) const PAY_WITHIN: Duration = Duration::from_secs(60);
/// Receipts requests one peer may send a minute (a job's receipts come in
/// one or a few).
pub(crate) const RECEIPT_REQUESTS_PER_MINUTE: u32 = 30;

/// The most a job's inputs can cost: a token per byte (every WordPiece
/// token covers at least one) plus the two markers, at most the model's
/// 256 tokens per input.
pub(crate) fn estimate(inputs: &[String], price: u64) -> u64 {
    inputs.iter().map(|t| (t.len() as u64 + 2).min(MAX_TOKENS_PER_INPUT)).sum::<u64>().saturating_mul(price)
}

/// Whether two answers agree, vector by vector.
pub(crate) fn agree(a: &[Vec<f32>], b: &[Vec<f32>]) -> bool {
    a.len() == b.len()
        && a.iter().zip(b).all(|(x, y)| {
            let dot: f32 = x.iter().zip(y).map(|(p, q)| p * q).sum();
            let norms =
                x.iter().map(|p| p * p).sum::<f32>().sqrt() * y.iter().map(|q| q * q).sum::<f32>().sqrt();
            x.len() == y.len() && norms > 0.0 && dot / norms >= AGREE_COSINE
        })
}

/// The claim a worker makes for a chunk.
#[allow(clippy::too_many_arguments)]
pub(crate) fn work(
    network: &str,
    job: &[u8],
    chunk: u32,
    requester: (&str, &PeerId),
    vrf_key: &[u8],
    worker: (&str, &PeerId),
    inputs: usize,
    tokens: u64,
    price: u64,
    packed: &[u8],
    at_ms: u64,
) -> Work {
    Work {
        network: network.to_owned(),
        job: ByteBuf::from(job.to_vec()),
        chunk,
        requester: requester.0.to_owned(),
        requester_device: requester.1.to_base58(),
        vrf_key: ByteBuf::from(vrf_key.to_vec()),
        worker: worker.0.to_owned(),
        worker_device: worker.1.to_base58(),
        inputs: inputs as u32,
        tokens,
        credits: tokens.saturating_mul(price),
        result: ByteBuf::from(result_hash(packed).to_vec()),
        at_ms,
    }
}

impl<C> Jobs<C> {
    /// What this node's running jobs in `network` for `person` may still
    /// cost.
    pub(super) fn reserved(&self, network: &str, person: &str) -> u64 {
        self.jobs.iter().filter(|j| j.network == network && j.person == person).map(|j| j.estimate).sum()
    }

    /// Whether `device` may be given work in `network`, and why not.
    pub(super) fn excluded(&self, ledger: &Ledger, device: &PeerId) -> Option<String> {
        if self.caught.contains(device) {
            return Some("its answer lost a spot check of this node's".into());
        }
        ledger.trust(&device.to_base58()).excluded()
    }

    /// Chunk `c` of job `j` just went to `worker`: when the draw selects
    /// it for that worker, a second worker runs it at the same time (so a
    /// check adds no wait at the end of a job).
    pub(super) fn send_check(
        &mut self,
        j: usize,
        c: usize,
        worker: PeerId,
        slots: &[Slot],
        people: &HashMap<PeerId, String>,
        now: Instant,
    ) {
        let job = &self.jobs[j];
        if worker == self.local {
            return;
        }
        let trust = slots.iter().find(|s| s.device == worker).map_or(0.5, |s| s.trust);
        if !vrf::is_checked(&job.draw, c as u32, check_rate(trust, job.check_rate)) {
            return;
        }
        let others: Vec<Slot> = slots.iter().filter(|s| s.device != worker).cloned().collect();
        let inputs = job.chunks[c].range.len();
        let Some(second) = scheduler::pick(&others, &self.stats, inputs, &[], now) else { return };
        let person = people.get(&second).cloned().unwrap_or_default();
        let job = &mut self.jobs[j];
        job.chunks[c].needed = 2;
        job.checks += 1;
        self.metrics.credit_check();
        self.send(j, c, second, person, now, true);
    }

    /// A checked answer to chunk `c` of job `j` (`second`: from the second
    /// run of a drawn chunk): settle the chunk if it has what it needs, or
    /// ask for another answer.
    pub(super) fn answered(&mut self, j: usize, c: usize, held: Held, second: bool, roster: &impl Roster) {
        let local = self.local;
        let job = &mut self.jobs[j];
        let chunk = &mut job.chunks[c];
        if !chunk.tried.contains(&held.worker) {
            chunk.tried.push(held.worker);
        }
        chunk.answers.push(held);
        match chunk.answers.len() {
            // Drawn when it was sent: the other run's answer is awaited
            // (the first run may still be out when the second answers).
            1 if chunk.needed >= 2 => {
                if !second {
                    chunk.state = ChunkState::Pending;
                }
            }
            1 => {
                let worker = chunk.answers[0].worker;
                let drawn = worker != local && {
                    let ledger = roster.ledger(&job.network);
                    let rate = ledger.trust(&worker.to_base58()).check_rate(job.check_rate);
                    vrf::is_checked(&job.draw, c as u32, rate)
                };
                if drawn {
                    // (No second worker was free when it was sent.)
                    chunk.needed = 2;
                    chunk.state = ChunkState::Pending;
                    job.checks += 1;
                    self.metrics.credit_check();
                } else {
                    self.accept(j, c, 0, None);
                }
            }
            2 => {
                if agree(&chunk.answers[0].vectors, &chunk.answers[1].vectors) {
                    self.accept(j, c, 0, None);
                } else {
                    chunk.needed = 3;
                    chunk.state = ChunkState::Pending;
                }
            }
            _ => {
                let a = &chunk.answers;
                let (winner, loser) = if agree(&a[2].vectors, &a[0].vectors) {
                    (0, 1)
                } else if agree(&a[2].vectors, &a[1].vectors) {
                    (1, 0)
                } else {
                    // Three answers, no two alike: start the chunk over.
                    tracing::warn!(job = %job.id, chunk = c, "three answers to a checked chunk disagree");
                    chunk.answers.clear();
                    chunk.needed = 1;
                    chunk.state = ChunkState::Pending;
                    return;
                };
                let loser_device = chunk.answers[loser].worker;
                self.accept(j, c, winner, Some(loser));
                self.catch(loser_device);
            }
        }
    }

    /// Chunk `c` of job `j` takes answer `winner`; with a check, its
    /// outcome is signed and written (`loser`: the answer that lost).
    pub(super) fn accept(&mut self, j: usize, c: usize, winner: usize, loser: Option<usize>) {
        let job = &mut self.jobs[j];
        let chunk = &mut job.chunks[c];
        chunk.state = ChunkState::Done;
        chunk.accepted = Some(chunk.answers[winner].worker);
        if chunk.answers.len() >= 2 {
            let outcome = CheckOutcome {
                network: job.network.clone(),
                job: ByteBuf::from(job.raw_id.to_vec()),
                chunk: c as u32,
                requester_device: self.local.to_base58(),
                vrf_output: ByteBuf::from(job.draw.output.to_vec()),
                vrf_proof: ByteBuf::from(job.draw.proof.to_vec()),
                rate: if vrf::is_checked(&job.draw, c as u32, job.check_rate) { job.check_rate } else { 1.0 },
                answers: chunk.answers.iter().map(|h| h.answer.clone()).collect(),
                rejected: loser.map(|l| chunk.answers[l].worker.to_base58()),
                signature: ByteBuf::new(),
            };
            match outcome.sign(&self.identity) {
                Ok(outcome) => {
                    let key = check_key(&outcome);
                    self.actions.push_back(Action::Write { key, token: outcome.to_token() });
                }
                Err(e) => tracing::warn!("check outcome not signed: {e}"),
            }
        }
        let held = &chunk.answers[winner];
        for (slot, v) in job.vectors[chunk.range.clone()].iter_mut().zip(&held.vectors) {
            *slot = Some(v.clone());
        }
        job.done += chunk.range.len();
        job.chunks_done += 1;
        job.tokens += held.tokens;
        *job.workers.entry(held.worker.to_base58()).or_default() += 1;
        job.report();
    }

    /// `device`'s answer lost a check: it gets no more work from this node,
    /// and every chunk of a running job that took its answer is done again
    /// (its answers earn nothing).
    fn catch(&mut self, device: PeerId) {
        if self.caught.insert(device) {
            self.metrics.credit_caught();
        }
        tracing::warn!(%device, "a worker's answer lost a spot check: its chunks are done again");
        for job in &mut self.jobs {
            let mut touched = false;
            for chunk in &mut job.chunks {
                if !chunk.answers.iter().any(|h| h.worker == device) {
                    continue;
                }
                touched = true;
                if chunk.accepted == Some(device) {
                    for slot in &mut job.vectors[chunk.range.clone()] {
                        *slot = None;
                    }
                    job.done -= chunk.range.len();
                    job.chunks_done -= 1;
                    if let Some(held) = chunk.answers.iter().find(|h| h.worker == device) {
                        job.tokens = job.tokens.saturating_sub(held.tokens);
                    }
                    let name = device.to_base58();
                    if let Some(n) = job.workers.get_mut(&name) {
                        *n = n.saturating_sub(1);
                        if *n == 0 {
                            job.workers.remove(&name);
                        }
                    }
                    chunk.accepted = None;
                    chunk.state = ChunkState::Pending;
                    chunk.answers.clear();
                    job.reassigned += 1;
                } else if chunk.accepted.is_none() {
                    chunk.answers.retain(|h| h.worker != device);
                }
                if chunk.accepted.is_none() {
                    chunk.needed = if chunk.answers.is_empty() { 1 } else { chunk.answers.len() + 1 };
                }
            }
            if touched {
                job.caught += 1;
                job.report();
            }
        }
    }

    /// The receipts of a settled job: every answer kept (not one that
    /// lost a check, not this node's or its person's own), countersigned,
    /// written here and sent to its worker.
    pub(super) fn pay(&mut self, j: usize) {
        let job = &self.jobs[j];
        let mut by_worker: Vec<(PeerId, Vec<String>)> = Vec::new();
        for chunk in &job.chunks {
            if !matches!(chunk.state, ChunkState::Done) {
                continue;
            }
            for held in &chunk.answers {
                if held.worker == self.local
                    || self.caught.contains(&held.worker)
                    || held.answer.work.worker == job.person
                {
                    continue;
                }
                let receipt = match Receipt::countersign(
                    held.answer.work.clone(),
                    held.answer.worker_sig.to_vec(),
                    &self.identity,
                ) {
                    Ok(r) => r,
                    Err(e) => {
                        tracing::warn!("receipt not signed: {e}");
                        continue;
                    }
                };
                let token = receipt.to_token();
                self.actions
                    .push_back(Action::Write { key: receipt_key(&receipt.work), token: token.clone() });
                match by_worker.iter_mut().find(|(w, _)| *w == held.worker) {
                    Some((_, list)) => list.push(token),
                    None => by_worker.push((held.worker, vec![token])),
                }
            }
        }
        for (worker, tokens) in by_worker {
            for batch in tokens.chunks(crate::protocols::jobs::wire::MAX_RECEIPTS) {
                let ask = self.ask();
                self.actions.push_back(Action::Request {
                    peer: worker,
                    ask,
                    request: JobRequest::Receipts(batch.to_vec()),
                });
            }
        }
    }

    // ---- as a worker ---------------------------------------------------------

    /// Claims this node made to `person` that are unpaid past `PAY_WITHIN`.
    pub(super) fn owed_by(&self, person: &str, now: Instant) -> usize {
        self.owed
            .values()
            .filter(|(p, at)| p == person && now.saturating_duration_since(*at) >= PAY_WITHIN)
            .count()
    }

    /// Signs this node's claim for a chunk it ran and remembers it unpaid.
    /// `None` when it cannot sign.
    pub(super) fn claim(&mut self, work: &Work, requester: &str, now: Instant) -> Option<ByteBuf> {
        let signature = work.claim(&self.identity).ok()?;
        if work.worker != work.requester {
            // Oldest first when full: a requester that never pays is
            // refused long before.
            while self.owed.len() >= 4 * MAX_OWED * super::MAX_JOBS {
                self.owed.pop_first();
            }
            self.owed.insert(receipt_key(work), (requester.to_owned(), now));
        }
        Some(ByteBuf::from(signature))
    }

    /// Receipts from `peer`: the valid ones for claims of this node are
    /// written here and no longer owed. Answers how many were taken.
    pub(super) fn on_receipts(
        &mut self,
        peer: &PeerId,
        tokens: Vec<String>,
        roster: &impl Roster,
        now: Instant,
    ) -> JobResponse {
        // Each receipt costs two signature checks: a peer gets a few
        // requests a minute.
        if self.receipt_requests.len() >= 4096 {
            self.receipt_requests.retain(|_, (since, _)| now.saturating_duration_since(*since) < PAY_WITHIN);
        }
        let (since, count) = self.receipt_requests.entry(*peer).or_insert((now, 0));
        if now.saturating_duration_since(*since) >= PAY_WITHIN {
            (*since, *count) = (now, 0);
        }
        *count += 1;
        if *count > RECEIPT_REQUESTS_PER_MINUTE {
            self.metrics.credit_record_refused();
            return JobResponse::Refused(format!(
                "more than {RECEIPT_REQUESTS_PER_MINUTE} receipt requests in a minute; send them together"
            ));
        }
        let mut taken = 0;
        for token in tokens {
            let receipt = match Receipt::from_token(&token) {
                Ok(r) => r,
                Err(e) => {
                    self.metrics.credit_record_refused();
                    tracing::info!(%peer, "receipt refused: {e}");
                    continue;
                }
            };
            let w = &receipt.work;
            let key = receipt_key(w);
            let ours = w.worker_device == self.local.to_base58() && w.requester_device == peer.to_base58();
            let authorized = roster.authorize(&w.network, peer, &w.requester).is_ok();
            if !ours || !authorized || self.owed.remove(&key).is_none() {
                self.metrics.credit_record_refused();
                tracing::info!(%peer, "receipt refused: not for an unpaid claim of this node's");
                continue;
            }
            self.actions.push_back(Action::Write { key, token });
            taken += 1;
        }
        JobResponse::Stored(taken)
    }

    /// Test-only lying: a share of chunks answered with plausible wrong
    /// vectors (each moved away from the right one, still of unit length).
    pub(super) fn maybe_lie(&self, vectors: &mut [Vec<f32>]) {
        if self.lie_rate <= 0.0 {
            return;
        }
        let mut coin = [0u8; 8];
        if getrandom::fill(&mut coin).is_err()
            || (u64::from_le_bytes(coin) >> 11) as f64 / (1u64 << 53) as f64 >= self.lie_rate
        {
            return;
        }
        for v in vectors.iter_mut() {
            let mut noise = vec![0u8; v.len()];
            let _ = getrandom::fill(&mut noise);
            for (x, n) in v.iter_mut().zip(noise) {
                *x += (f32::from(n) / 255.0 - 0.5) * 0.1;
            }
            let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
            for x in v.iter_mut() {
                *x /= norm;
            }
        }
    }

    /// Makes this worker lie on `rate` of its chunks (tests of the spot
    /// checks only).
    #[cfg(feature = "liar")]
    pub(crate) fn set_lie_rate(&mut self, rate: f64) {
        self.lie_rate = rate;
    }
}

/// The packed vectors a claim's hash is over.
pub(crate) fn packed(vectors: &[Vec<f32>]) -> ByteBuf {
    pack(vectors).0
}

/// An answer: a claim and its signature.
pub(crate) fn answer(work: Work, signature: ByteBuf) -> Answer {
    Answer { work, worker_sig: signature }
}
