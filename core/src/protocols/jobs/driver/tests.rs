// Over 600 lines: both sides of the jobs driver, and its credits and spot checks, are tested through one fake roster.
#[cfg(target_arch = "wasm32")]
use wasm_bindgen_test::wasm_bindgen_test as test;

use std::{cell::RefCell, collections::HashSet};

use super::*;
use crate::{
    Identity,
    compute::{ComputeOffer, EMBEDDING_MODEL},
    credits::{
        ledger::Ledger,
        records::{CheckOutcome, Receipt, Terms},
    },
};

const NET: &str = "0123456789abcdef";
const T0: u64 = 1_700_000_000_000;

fn peer(n: u8) -> PeerId {
    Identity::from_seed([n; 32]).peer_id()
}

/// Members and workers, as a test says.
struct FakeRoster {
    members: RefCell<HashSet<PeerId>>,
    workers: Vec<PeerId>,
    /// Credit records, as the state would hold them.
    ledger: RefCell<Ledger>,
}

impl FakeRoster {
    fn new(workers: &[PeerId]) -> Self {
        let mut members: HashSet<PeerId> = workers.iter().copied().collect();
        members.insert(peer(1));
        let terms = Terms { check_rate: 0.0, ..Terms::default() };
        Self {
            members: RefCell::new(members),
            workers: workers.to_vec(),
            ledger: RefCell::new(Ledger::new(NET, terms)),
        }
    }

    /// The same, with checks at `rate`.
    fn checking(workers: &[PeerId], rate: f64) -> Self {
        let roster = Self::new(workers);
        *roster.ledger.borrow_mut() = Ledger::new(NET, Terms { check_rate: rate, ..Terms::default() });
        roster
    }
}

impl Roster for FakeRoster {
    fn authorize(&self, _network: &str, device: &PeerId, _person: &str) -> Result<(), String> {
        if self.members.borrow().contains(device) { Ok(()) } else { Err(format!("{device} is not a member")) }
    }

    fn candidates(&self, _network: &str, model: &str) -> Vec<Candidate> {
        self.workers
            .iter()
            .filter(|w| self.members.borrow().contains(w) && model == EMBEDDING_MODEL.name)
            .map(|w| Candidate {
                device: *w,
                person: w.to_base58(),
                offer: ComputeOffer {
                    threads: 1,
                    memory_mb: 100,
                    models: vec![model.into()],
                    kind: "native".into(),
                },
                queue: 0,
            })
            .collect()
    }

    fn person(&self, _network: &str) -> Option<String> {
        Some(peer(1).to_base58())
    }

    fn ledger(&self, _network: &str) -> Ledger {
        self.ledger.borrow().clone()
    }
}

fn jobs() -> Jobs<u32> {
    Jobs::new(Identity::from_seed([1; 32]), Arc::new(Metrics::new(|_, _| {})))
}

fn texts(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("text {i}")).collect()
}

/// The embedding a fake worker gives input `i`: unit vector, its index
/// readable from it.
fn fake_vector(i: usize) -> Vec<f32> {
    let mut v = vec![0.0; EMBEDDING_MODEL.dimensions];
    v[i % EMBEDDING_MODEL.dimensions] = 0.6;
    v[(i + 1) % EMBEDDING_MODEL.dimensions] = 0.8;
    v
}

fn index_of(text: &str) -> usize {
    text.trim_start_matches("text ").parse().unwrap()
}

/// The identity behind `peer(n)`.
fn identity_of(p: PeerId) -> Identity {
    (0..=255).map(|n| Identity::from_seed([n; 32])).find(|i| i.peer_id() == p).unwrap()
}

/// `worker`'s answer to `run`: these vectors, its signed claim.
fn answer_with(worker: PeerId, run: &Run, vectors: &[Vec<f32>], micros: u64) -> JobResponse {
    let (packed, dims) = pack(vectors);
    let tokens = run.inputs.len() as u64 * 3;
    let work = credit::work(
        &run.network,
        &run.job,
        run.chunk,
        (&run.person, &peer(1)),
        &run.vrf_key,
        (&worker.to_base58(), &worker),
        run.inputs.len(),
        tokens,
        1,
        &packed,
        T0,
    );
    let claim = ByteBuf::from(work.claim(&identity_of(worker)).unwrap());
    JobResponse::Done { vectors: packed, dims, tokens, micros, credits: work.credits, at_ms: T0, claim }
}

/// `worker`'s right answer to `run`.
fn done(worker: PeerId, run: &Run) -> JobResponse {
    let vectors: Vec<Vec<f32>> = run.inputs.iter().map(|t| fake_vector(index_of(t))).collect();
    answer_with(worker, run, &vectors, 1000)
}

fn requests(j: &mut Jobs<u32>) -> Vec<(PeerId, AskId, Run)> {
    std::iter::from_fn(|| j.poll_action())
        .filter_map(|a| match a {
            Action::Request { peer, ask, request: JobRequest::Run(run) } => Some((peer, ask, run)),
            _ => None,
        })
        .collect()
}

fn start(j: &mut Jobs<u32>, roster: &FakeRoster, n: usize) -> JobHandle {
    j.embed(NET.into(), EMBEDDING_MODEL, texts(n), roster, Instant::now(), T0).unwrap()
}

fn check_result(handle: &mut JobHandle, n: usize) -> Embeddings {
    let result = handle.result.try_recv().expect("finished").expect("succeeded");
    assert_eq!(result.vectors.len(), n);
    for (i, v) in result.vectors.iter().enumerate() {
        assert_eq!(*v, fake_vector(i), "input {i} in its place, once");
    }
    result
}

#[test]
fn a_job_is_spread_over_the_workers_and_put_back_in_order() {
    let (a, b, c) = (peer(2), peer(3), peer(4));
    let roster = FakeRoster::new(&[a, b, c]);
    let mut j = jobs();
    let mut handle = start(&mut j, &roster, 100);
    let now = Instant::now();
    let mut answered = 0;
    let mut seen_workers = HashSet::new();
    // Answer in reverse order of sending, round after round.
    loop {
        let mut sent = requests(&mut j);
        if sent.is_empty() {
            break;
        }
        // Each worker has at most threads + 1 chunks at a time.
        for w in [a, b, c] {
            assert!(sent.iter().filter(|(p, ..)| *p == w).count() <= 2);
        }
        sent.reverse();
        for (worker, ask, run) in sent {
            assert_eq!((run.network.as_str(), run.kind.as_str()), (NET, "embed"));
            seen_workers.insert(worker);
            j.on_response(ask, done(worker, &run), &roster, now);
            answered += 1;
        }
    }
    assert_eq!(seen_workers.len(), 3, "every worker took chunks");
    let result = check_result(&mut handle, 100);
    assert_eq!(result.workers.values().sum::<usize>(), answered);
    assert_eq!(result.tokens, 300);
    assert_eq!(result.reassigned, 0);
    let progress = handle.progress.borrow().clone();
    assert_eq!((progress.done, progress.total, progress.chunks_done), (100, 100, answered));
    assert_eq!(j.list(now)[0].state, "done");
}

#[test]
fn chunks_of_a_failed_slow_or_lying_worker_run_elsewhere() {
    let (a, b) = (peer(2), peer(3));
    let roster = FakeRoster::new(&[a, b]);
    let mut j = jobs();
    let mut handle = start(&mut j, &roster, 40);
    let now = Instant::now();
    let first = requests(&mut j);
    let (on_a, on_b): (Vec<_>, Vec<_>) = first.into_iter().partition(|(p, ..)| *p == a);
    assert!(!on_a.is_empty() && !on_b.is_empty());
    // a's connection drops (kill -9): its chunks go to b.
    for (_, ask, _) in &on_a {
        j.on_failure(*ask, "connection closed", &roster, now);
    }
    assert!(std::iter::from_fn(|| j.poll_action()).any(|x| matches!(x, Action::Unreachable(p) if p == a)));
    // b answers one chunk with garbage: refused and run again.
    let mut bad = true;
    let mut rounds = 0;
    let mut pending = on_b;
    pending.extend(requests(&mut j));
    assert!(pending.iter().all(|(w, ..)| *w == b), "a rests after failing");
    while !pending.is_empty() {
        rounds += 1;
        assert!(rounds < 50);
        for (w, ask, run) in pending {
            if bad {
                bad = false;
                j.on_response(ask, answer_with(w, &run, &[vec![1.0; 3]], 0), &roster, now);
            } else {
                j.on_response(ask, done(w, &run), &roster, now);
            }
        }
        pending = requests(&mut j);
        if pending.is_empty() {
            // b rests after its bad answer, a after its failure: time passes.
            j.on_tick(&roster, now + REST_AFTER_FAILURE + Duration::from_secs(1));
            pending = requests(&mut j);
        }
    }
    let result = check_result(&mut handle, 40);
    assert!(result.reassigned >= 2, "{result:?}");
    assert_eq!(j.metrics.snapshot().job_chunks_refused, 1);
}

#[test]
fn the_cost_of_a_remote_chunk_beyond_the_workers_time_is_measured() {
    let roster = FakeRoster::new(&[peer(2)]);
    let mut j = jobs();
    let mut handle = start(&mut j, &roster, 4);
    let (w, ask, run) = requests(&mut j).remove(0);
    // Sent when the job started; answered 50 ms later, 20 ms of it computing.
    let vectors: Vec<Vec<f32>> = run.inputs.iter().map(|t| fake_vector(index_of(t))).collect();
    let answer = answer_with(w, &run, &vectors, 20_000);
    let later = Instant::now() + Duration::from_millis(50);
    j.on_response(ask, answer, &roster, later);
    let result = check_result(&mut handle, 4);
    let overhead = result.chunk_overhead_us.expect("one remote chunk");
    assert!((30_000..40_000).contains(&overhead), "{overhead} µs");
}

#[test]
fn a_chunk_that_times_out_is_given_to_another_worker_and_a_late_answer_is_ignored() {
    let (a, b) = (peer(2), peer(3));
    let roster = FakeRoster::new(&[a, b]);
    let mut j = jobs();
    let mut handle = start(&mut j, &roster, 4);
    let now = Instant::now();
    let sent = requests(&mut j);
    assert_eq!(sent.len(), 1, "4 inputs: one chunk");
    let (worker, ask, run) = sent.into_iter().next().unwrap();
    j.on_tick(&roster, now + Duration::from_secs(30));
    let again = requests(&mut j);
    assert_eq!(again.len(), 1);
    assert_ne!(again[0].0, worker, "the other worker");
    // The first worker's late answer does not count twice.
    j.on_response(ask, done(worker, &run), &roster, now);
    assert!(handle.result.try_recv().is_err(), "not finished by the late answer");
    j.on_response(again[0].1, done(again[0].0, &again[0].2), &roster, now);
    let result = check_result(&mut handle, 4);
    assert_eq!(result.workers.len(), 1);
}

#[test]
fn the_answer_of_a_worker_revoked_meanwhile_is_refused() {
    let (a, b) = (peer(2), peer(3));
    let roster = FakeRoster::new(&[a, b]);
    let mut j = jobs();
    let mut handle = start(&mut j, &roster, 8);
    let now = Instant::now();
    let mut first = requests(&mut j);
    let (worker, ask, run) = first.remove(0);
    roster.members.borrow_mut().remove(&worker);
    j.on_response(ask, done(worker, &run), &roster, now);
    let mut rest = first;
    rest.extend(requests(&mut j));
    for (p, ask, run) in rest {
        if p == worker {
            // Sent before the revocation: its answer does not count either.
            j.on_response(ask, done(p, &run), &roster, now);
            continue;
        }
        j.on_response(ask, done(p, &run), &roster, now);
    }
    for (p, ask, run) in requests(&mut j) {
        j.on_response(ask, done(p, &run), &roster, now);
    }
    let result = check_result(&mut handle, 8);
    assert!(!result.workers.contains_key(&worker.to_base58()));
}

#[test]
fn a_job_of_a_requester_revoked_meanwhile_fails_at_once() {
    let a = peer(2);
    let roster = FakeRoster::new(&[a]);
    let mut j = jobs();
    let mut handle = start(&mut j, &roster, 4);
    let now = Instant::now();
    let (_, ask, _) = requests(&mut j).remove(0);
    // The worker already knows; this node learns a moment later.
    j.on_response(ask, JobResponse::Refused("not a member".into()), &roster, now);
    assert!(handle.result.try_recv().is_err(), "still a member here: waits for another worker");
    roster.members.borrow_mut().remove(&peer(1));
    j.on_tick(&roster, now + Duration::from_millis(500));
    let e = handle.result.try_recv().expect("finished").expect_err("failed");
    assert!(e.to_string().contains("is not a member"), "{e}");
    assert!(requests(&mut j).is_empty(), "nothing more sent");
}

#[test]
fn bad_jobs_are_refused_with_clear_errors() {
    let roster = FakeRoster::new(&[peer(2)]);
    let mut j = jobs();
    let refuse = |j: &mut Jobs<u32>, inputs: Vec<String>| {
        j.embed(NET.into(), EMBEDDING_MODEL, inputs, &roster, Instant::now(), T0).err().unwrap().to_string()
    };
    assert!(refuse(&mut j, vec![]).contains("no inputs"));
    assert!(refuse(&mut j, vec!["x".repeat(1 << 20)]).contains("input 0 is 1048576 bytes"));
    assert!(refuse(&mut j, texts(100_000)).contains("100000 inputs"));
    let nobody = FakeRoster::new(&[]);
    let e = j.embed(NET.into(), EMBEDDING_MODEL, texts(1), &nobody, Instant::now(), T0).err().unwrap();
    assert!(e.to_string().contains("no worker"), "{e}");
    assert!(std::iter::from_fn(|| j.poll_action()).next().is_none());
}

#[test]
fn a_job_fails_cleanly_when_its_workers_never_come_back() {
    let a = peer(2);
    let roster = FakeRoster::new(&[a]);
    let mut j = jobs();
    let mut handle = start(&mut j, &roster, 4);
    let now = Instant::now();
    let (_, ask, _) = requests(&mut j).remove(0);
    j.on_failure(ask, "gone", &roster, now);
    j.on_tick(&roster, now + Duration::from_secs(3600));
    let error = handle.result.try_recv().unwrap().unwrap_err().to_string();
    assert!(error.contains("ran out of time: 0 of 4"), "{error}");
    assert_eq!(j.list(now)[0].state, "failed");
}

/// A worker's side: `n` answers go back on channel numbers.
fn respond(j: &mut Jobs<u32>) -> Vec<(u32, JobResponse)> {
    std::iter::from_fn(|| j.poll_action())
        .filter_map(|a| match a {
            Action::Respond { channel, response } => Some((channel, response)),
            _ => None,
        })
        .collect()
}

fn run(inputs: usize, deadline_ms: u64) -> JobRequest {
    JobRequest::Run(Run {
        job: ByteBuf::from(vec![0; 16]),
        chunk: 0,
        network: NET.into(),
        person: peer(2).to_base58(),
        kind: "embed".into(),
        model: EMBEDDING_MODEL.name.into(),
        inputs: texts(inputs),
        deadline_ms,
        vrf_key: ByteBuf::from(vec![1; 32]),
    })
}

#[test]
fn a_worker_runs_members_chunks_within_its_threads_and_queue() {
    let member = peer(2);
    let roster = FakeRoster::new(&[member]);
    let mut j = jobs();
    let now = Instant::now();
    // Offering nothing: refused.
    j.on_request(member, run(2, T0 + 1000), 1, &roster, now, T0);
    assert!(matches!(&respond(&mut j)[..], [(1, JobResponse::Refused(r))] if r.contains("no compute")));
    j.set_threads(2);
    // A stranger, a bad model, an empty chunk, a late one: refused.
    j.on_request(peer(9), run(2, T0 + 1000), 2, &roster, now, T0);
    let mut bad_model = run(2, T0 + 1000);
    let JobRequest::Run(r) = &mut bad_model else { unreachable!() };
    r.model = "gpt-9".into();
    j.on_request(member, bad_model, 3, &roster, now, T0);
    j.on_request(member, run(0, T0 + 1000), 4, &roster, now, T0);
    j.on_request(member, run(1, T0 - 1), 5, &roster, now, T0);
    let refused = respond(&mut j);
    assert_eq!(refused.len(), 4);
    assert!(refused.iter().all(|(_, r)| matches!(r, JobResponse::Refused(_))));
    assert_eq!(j.metrics.snapshot().job_chunks_refused, 5);
    // Two run at once (two threads), the rest wait; past the per-peer
    // queue, busy.
    for channel in 10..(10 + 2 + MAX_QUEUED_PER_PEER as u32 + 1) {
        j.on_request(member, run(3, T0 + 1000), channel, &roster, now, T0);
    }
    let actions: Vec<_> = std::iter::from_fn(|| j.poll_action()).collect();
    let executing: Vec<TaskId> = actions
        .iter()
        .filter_map(|a| match a {
            Action::Execute { id, task } => {
                assert_eq!(task.inputs.len(), 3);
                Some(*id)
            }
            _ => None,
        })
        .collect();
    assert_eq!(executing.len(), 2);
    assert!(actions.iter().any(|a| matches!(a, Action::Respond { response: JobResponse::Busy { .. }, .. })));
    assert_eq!(j.queue_len(), 2 + MAX_QUEUED_PER_PEER as u32);
    // One finishes: its answer goes back, the next starts.
    let output = TaskOutput { vectors: (0..3).map(fake_vector).collect(), tokens: 9 };
    j.on_executed(executing[0], Ok(output), &roster, now, T0);
    let actions: Vec<_> = std::iter::from_fn(|| j.poll_action()).collect();
    assert!(actions.iter().any(|a| matches!(
        a,
        Action::Respond { channel: 10, response: JobResponse::Done { tokens: 9, .. } }
    )));
    assert_eq!(actions.iter().filter(|a| matches!(a, Action::Execute { .. })).count(), 1);
    // A failing task is answered as refused, with the reason.
    j.on_executed(executing[1], Err("out of memory".into()), &roster, now, T0);
    assert!(
        std::iter::from_fn(|| j.poll_action()).any(|a| matches!(a, Action::Respond { channel: 11, response: JobResponse::Refused(r) } if r.contains("out of memory")))
    );
    // Stopping: the waiting chunks are refused (and will run elsewhere).
    j.set_threads(0);
    let stopped = respond(&mut j);
    assert_eq!(stopped.len(), MAX_QUEUED_PER_PEER - 2, "two of the queued ones started meanwhile");
    assert!(stopped.iter().all(|(_, r)| matches!(r, JobResponse::Refused(_))));
}

#[test]
fn this_node_runs_its_own_chunks_first_when_it_offers_compute() {
    let me = peer(1);
    let roster = FakeRoster::new(&[me]);
    let mut j = jobs();
    j.set_threads(1);
    let now = Instant::now();
    // A peer's chunk is waiting already.
    j.on_request(me, run(2, T0 + 1000), 1, &roster, now, T0);
    j.on_request(me, run(2, T0 + 1000), 2, &roster, now, T0);
    let first: Vec<_> = std::iter::from_fn(|| j.poll_action()).collect();
    assert_eq!(first.len(), 1);
    let mut handle = start(&mut j, &roster, 4);
    assert!(requests(&mut j).is_empty(), "no request over the network to itself");
    // The running peer chunk finishes; this node's own chunk goes next.
    let Action::Execute { id, .. } = &first[0] else { panic!() };
    j.on_executed(
        *id,
        Ok(TaskOutput { vectors: (0..2).map(fake_vector).collect(), tokens: 2 }),
        &roster,
        now,
        T0,
    );
    let next = std::iter::from_fn(|| j.poll_action())
        .find_map(|a| match a {
            Action::Execute { id, task } => Some((id, task)),
            _ => None,
        })
        .unwrap();
    assert_eq!(next.1.inputs, texts(4));
    let vectors = next.1.inputs.iter().map(|t| fake_vector(index_of(t))).collect();
    j.on_executed(next.0, Ok(TaskOutput { vectors, tokens: 4 }), &roster, now, T0);
    let result = check_result(&mut handle, 4);
    assert_eq!(result.workers.get(&me.to_base58()), Some(&1));
}

// ---- credits and spot checks -------------------------------------------------

fn writes(actions: &[Action<u32>]) -> Vec<(String, String)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Write { key, token } => Some((key.clone(), token.clone())),
            _ => None,
        })
        .collect()
}

/// Plausible wrong vectors: unit length, each a little off the right one.
fn wrong(run: &Run) -> Vec<Vec<f32>> {
    run.inputs
        .iter()
        .map(|t| {
            let mut v = fake_vector(index_of(t));
            v[100] = 0.3;
            let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
            v.iter().map(|x| x / norm).collect()
        })
        .collect()
}

/// The answer of a worker that runs the inputs of the next chunk instead.
fn shifted(run: &Run) -> Vec<Vec<f32>> {
    run.inputs.iter().map(|t| fake_vector(index_of(t) + run.inputs.len())).collect()
}

type Lie = fn(&Run) -> Vec<Vec<f32>>;

/// Answers every request (`liar` wrongly) until nothing is asked; returns
/// every action seen that was not a request.
fn answer_all(
    j: &mut Jobs<u32>,
    roster: &FakeRoster,
    liar: Option<(PeerId, Lie)>,
) -> (Vec<Action<u32>>, Vec<PeerId>) {
    let now = Instant::now();
    let mut others = Vec::new();
    let mut asked = Vec::new();
    for _ in 0..100 {
        let actions: Vec<Action<u32>> = std::iter::from_fn(|| j.poll_action()).collect();
        let mut any = false;
        for action in actions {
            match action {
                Action::Request { peer, ask, request: JobRequest::Run(run) } => {
                    any = true;
                    asked.push(peer);
                    let response = match liar {
                        Some((l, lie)) if l == peer => answer_with(peer, &run, &lie(&run), 1000),
                        _ => done(peer, &run),
                    };
                    j.on_response(ask, response, roster, now);
                }
                other => others.push(other),
            }
        }
        if !any {
            return (others, asked);
        }
    }
    panic!("the job never settled");
}

#[test]
fn a_checked_chunk_runs_on_a_second_worker_and_both_agreeing_answers_are_paid() {
    let (a, b) = (peer(2), peer(3));
    let roster = FakeRoster::checking(&[a, b], 0.1);
    let mut j = jobs();
    let mut handle = start(&mut j, &roster, 4);
    let (actions, asked) = answer_all(&mut j, &roster, None);
    check_result(&mut handle, 4);
    // New workers: every chunk is checked, by the other one.
    assert_eq!(asked.len(), 2);
    assert_ne!(asked[0], asked[1]);
    let written = writes(&actions);
    let check = written.iter().find(|(k, _)| k.contains("/c/")).expect("the check's outcome is written");
    let outcome = CheckOutcome::from_token(&check.1, 0.1).expect("anyone can verify it");
    assert_eq!((outcome.answers.len(), outcome.rejected.as_ref()), (2, None));
    let receipts: Vec<Receipt> = written
        .iter()
        .filter(|(k, _)| k.contains("/r/"))
        .map(|(_, t)| Receipt::from_token(t).unwrap())
        .collect();
    assert_eq!(receipts.len(), 2, "both workers did the work");
    let sent: Vec<PeerId> = actions
        .iter()
        .filter_map(|a| match a {
            Action::Request { peer, request: JobRequest::Receipts(tokens), .. } => {
                assert_eq!(tokens.len(), 1);
                Some(*peer)
            }
            _ => None,
        })
        .collect();
    assert_eq!(sent.len(), 2);
    // Once known, the receipts put the credits where they belong.
    let mut ledger = Ledger::new(NET, Terms::default());
    let anyone = |_: &str, _: &str| true;
    for r in receipts {
        ledger.add_receipt(r, &anyone).unwrap();
    }
    assert_eq!(ledger.balance(&peer(1).to_base58()).spent, 24, "2 × 4 inputs × 3 tokens");
    assert_eq!(ledger.balance(&a.to_base58()).earned, 12);
    assert_eq!(j.metrics.snapshot().credit_checks, 1);
}

#[test]
fn a_lying_worker_is_outvoted_excluded_and_its_chunks_are_done_again() {
    let (liar, b, c) = (peer(2), peer(3), peer(4));
    let roster = FakeRoster::checking(&[liar, b, c], 0.1);
    let mut j = jobs();
    let mut handle = start(&mut j, &roster, 48);
    let (actions, asked) = answer_all(&mut j, &roster, Some((liar, wrong)));
    // Every vector is the right one: the liar's answers were all redone.
    let result = check_result(&mut handle, 48);
    assert!(result.workers.get(&liar.to_base58()).is_none_or(|n| *n == 0), "{result:?}");
    let written = writes(&actions);
    let outcomes: Vec<CheckOutcome> = written
        .iter()
        .filter(|(k, _)| k.contains("/c/"))
        .map(|(_, t)| CheckOutcome::from_token(t, 0.1).unwrap())
        .collect();
    assert!(outcomes.iter().any(|o| o.rejected == Some(liar.to_base58())), "the liar lost a check");
    // Nothing is paid to the liar, and it was asked nothing after it was caught.
    for (_, token) in written.iter().filter(|(k, _)| k.contains("/r/")) {
        assert_ne!(Receipt::from_token(token).unwrap().work.worker_device, liar.to_base58());
    }
    let caught_at = asked.iter().rposition(|p| *p == liar).unwrap();
    assert!(caught_at < asked.len() - 1);
    assert_eq!(j.metrics.snapshot().credit_caught, 1);
    // The next job does not use it at all.
    let mut next = start(&mut j, &roster, 16);
    let (_, asked) = answer_all(&mut j, &roster, Some((liar, wrong)));
    assert!(!asked.contains(&liar));
    check_result(&mut next, 16);
}

#[test]
fn a_job_beyond_the_balance_is_refused_with_the_balance() {
    let roster = FakeRoster::new(&[peer(2)]);
    *roster.ledger.borrow_mut() = Ledger::new(NET, Terms { grant: 30, ..Terms::default() });
    let mut j = jobs();
    let error = j
        .embed(NET.into(), EMBEDDING_MODEL, texts(4), &roster, Instant::now(), T0)
        .err()
        .expect("refused")
        .to_string();
    assert!(error.contains("has 30") && error.contains("may cost up to 32"), "{error}");
}

#[test]
fn a_worker_stops_serving_a_requester_that_never_pays_and_takes_only_its_own_receipts() {
    let requester = peer(2);
    let roster = FakeRoster::new(&[requester]);
    let mut j = jobs();
    j.set_threads(1);
    let now = Instant::now();
    let mut claims = Vec::new();
    for n in 0..credit::MAX_OWED as u32 {
        let mut request = run(2, T0 + 1000);
        let JobRequest::Run(r) = &mut request else { unreachable!() };
        r.chunk = n;
        let run = r.clone();
        j.on_request(requester, request, n, &roster, now, T0);
        let id = std::iter::from_fn(|| j.poll_action())
            .find_map(|a| match a {
                Action::Execute { id, .. } => Some(id),
                _ => None,
            })
            .unwrap();
        let output = TaskOutput { vectors: (0..2).map(fake_vector).collect(), tokens: 6 };
        j.on_executed(id, Ok(output), &roster, now, T0);
        let Some((_, JobResponse::Done { vectors, at_ms, credits, claim, .. })) = respond(&mut j).pop()
        else {
            panic!("answered")
        };
        let mut work = credit::work(
            NET,
            &run.job,
            n,
            (&run.person, &requester),
            &run.vrf_key,
            (&peer(1).to_base58(), &peer(1)),
            2,
            6,
            1,
            &vectors,
            at_ms,
        );
        work.credits = credits;
        work.verify_claim(&claim).expect("the worker's claim verifies");
        claims.push((work, claim));
    }
    // A minute later, nothing paid: refused.
    let later = now + credit::PAY_WITHIN;
    j.on_request(requester, run(2, T0 + 1000), 99, &roster, later, T0);
    assert!(
        matches!(&respond(&mut j)[..], [(99, JobResponse::Refused(r))] if r.contains("owes this worker receipts for 32"))
    );
    // A forged receipt, one for another worker, then the real ones.
    let payer = identity_of(requester);
    let (work, claim) = claims[0].clone();
    let forged = Receipt::countersign(work.clone(), claim.to_vec(), &identity_of(peer(9))).unwrap();
    let mut elsewhere = work.clone();
    elsewhere.worker_device = peer(5).to_base58();
    let not_mine = Receipt::countersign(elsewhere, claim.to_vec(), &payer).unwrap();
    let real: Vec<String> = claims
        .iter()
        .map(|(w, c)| Receipt::countersign(w.clone(), c.to_vec(), &payer).unwrap().to_token())
        .collect();
    let mut tokens = vec![forged.to_token(), not_mine.to_token()];
    tokens.extend(real.iter().cloned());
    tokens.push(real[0].clone());
    j.on_request(requester, JobRequest::Receipts(tokens), 100, &roster, later, T0);
    let actions: Vec<Action<u32>> = std::iter::from_fn(|| j.poll_action()).collect();
    assert_eq!(writes(&actions).len(), credit::MAX_OWED, "each real receipt kept once");
    assert!(
        actions
            .iter()
            .any(|a| matches!(a, Action::Respond { channel: 100, response: JobResponse::Stored(32) }))
    );
    assert_eq!(j.metrics.snapshot().credit_records_refused, 3, "forged, not this worker's, replayed");
    // Paid up: served again.
    j.on_request(requester, run(2, T0 + 1000), 101, &roster, later, T0);
    assert!(std::iter::from_fn(|| j.poll_action()).any(|a| matches!(a, Action::Execute { .. })));
}

#[test]
fn receipt_requests_are_rate_limited_per_peer() {
    let (a, b) = (peer(2), peer(3));
    let roster = FakeRoster::new(&[a, b]);
    let mut j = jobs();
    j.set_threads(1);
    let now = Instant::now();
    for n in 0..=credit::RECEIPT_REQUESTS_PER_MINUTE {
        j.on_request(a, JobRequest::Receipts(vec!["imrcpt1.forged".into()]), n, &roster, now, T0);
    }
    let answers = respond(&mut j);
    assert!(answers[..answers.len() - 1].iter().all(|(_, r)| matches!(r, JobResponse::Stored(0))));
    assert!(matches!(&answers.last().unwrap().1, JobResponse::Refused(r) if r.contains("in a minute")));
    // Another peer is not held back; the first one is heard again a minute later.
    j.on_request(b, JobRequest::Receipts(vec![]), 100, &roster, now, T0);
    j.on_request(a, JobRequest::Receipts(vec![]), 101, &roster, now + credit::PAY_WITHIN, T0);
    assert!(respond(&mut j).iter().all(|(_, r)| matches!(r, JobResponse::Stored(0))));
    assert_eq!(
        j.metrics.snapshot().credit_records_refused,
        u64::from(credit::RECEIPT_REQUESTS_PER_MINUTE) + 1,
        "each forged receipt and the refused request"
    );
}

#[test]
fn a_worker_answering_for_other_inputs_is_caught() {
    let (liar, b, c) = (peer(2), peer(3), peer(4));
    let roster = FakeRoster::checking(&[liar, b, c], 0.1);
    let mut j = jobs();
    let mut handle = start(&mut j, &roster, 48);
    let (actions, _) = answer_all(&mut j, &roster, Some((liar, shifted)));
    check_result(&mut handle, 48);
    assert!(writes(&actions).iter().any(|(k, t)| k.contains("/c/")
        && CheckOutcome::from_token(t, 0.1).unwrap().rejected == Some(liar.to_base58())));
}

#[test]
fn a_drawn_chunk_goes_to_two_workers_at_once_and_either_may_answer_first() {
    let (a, b) = (peer(2), peer(3));
    for second_first in [false, true] {
        let roster = FakeRoster::checking(&[a, b], 0.1);
        let mut j = jobs();
        let mut handle = start(&mut j, &roster, 4);
        let sent = requests(&mut j);
        // New workers: drawn at once, both runs out together.
        assert_eq!(sent.len(), 2, "{sent:?}");
        assert_ne!(sent[0].0, sent[1].0);
        assert_eq!(sent[0].2.chunk, sent[1].2.chunk);
        let now = Instant::now();
        let order: Vec<_> = if second_first { sent.into_iter().rev().collect() } else { sent };
        for (w, ask, run) in order {
            assert!(handle.result.try_recv().is_err(), "settled before both answered");
            j.on_response(ask, done(w, &run), &roster, now);
        }
        check_result(&mut handle, 4);
        assert!(requests(&mut j).is_empty(), "no third run");
    }
}
