//! Where work goes, pure: how a job is cut into chunks, and which worker
//! takes the next chunk — the one expected to finish it first, from what
//! it offers (threads), what it has waiting (its own report and what this
//! node gave it), how fast it has been (measured per input) and how well
//! it fared in spot checks (trusted workers first). A worker
//! that failed a chunk does not get that chunk again while another can
//! take it, and one that failed recently rests for a while.

use std::{collections::HashMap, ops::Range, time::Duration};

use libp2p::PeerId;

use super::wire::{MAX_CHUNK_BYTES, MAX_CHUNK_INPUTS};
use crate::platform::Instant;

/// Fewest inputs in a chunk (unless the job has fewer).
const MIN_CHUNK_INPUTS: usize = 4;
/// Chunks per worker a job is cut into, at least: enough that a slow
/// worker holds up little, few enough that a chunk's overhead stays small.
const CHUNKS_PER_WORKER: usize = 4;
/// Assumed time per input of a worker not measured yet.
pub(crate) const DEFAULT_MS_PER_INPUT: f64 = 40.0;
/// Weight of a new measurement in a worker's running average.
const EWMA: f64 = 0.3;

/// Cuts `inputs` into consecutive chunks, about `CHUNKS_PER_WORKER` per
/// worker, within the wire's limits of count and bytes.
pub(crate) fn chunks(inputs: &[String], workers: usize) -> Vec<Range<usize>> {
    let n = inputs.len();
    let per = n.div_ceil(CHUNKS_PER_WORKER * workers.max(1)).clamp(MIN_CHUNK_INPUTS, MAX_CHUNK_INPUTS);
    let mut out = Vec::with_capacity(n.div_ceil(per));
    let mut start = 0;
    while start < n {
        let mut end = start;
        let mut bytes = 0;
        while end < n && end - start < per && (end == start || bytes + inputs[end].len() <= MAX_CHUNK_BYTES) {
            bytes += inputs[end].len();
            end += 1;
        }
        out.push(start..end);
        start = end;
    }
    out
}

/// What this node knows of a worker, from the chunks it gave it.
#[derive(Clone, Debug, Default)]
pub(crate) struct WorkerStats {
    /// Running average of milliseconds per input, answer time included.
    pub ms_per_input: Option<f64>,
    /// Chunks it ran.
    pub chunks: u64,
    /// Chunks it has from this node now.
    pub in_flight: usize,
    /// Not given work before this.
    pub rest_until: Option<Instant>,
}

impl WorkerStats {
    /// A chunk of `inputs` came back after `took`.
    pub(crate) fn answered(&mut self, inputs: usize, took: Duration) {
        let sample = took.as_secs_f64() * 1000.0 / inputs.max(1) as f64;
        self.ms_per_input = Some(match self.ms_per_input {
            Some(avg) => avg + EWMA * (sample - avg),
            None => sample,
        });
        self.chunks += 1;
    }
}

/// A worker as the scheduler sees it.
#[derive(Clone, Debug)]
pub(crate) struct Slot {
    pub device: PeerId,
    /// Tasks it runs at once.
    pub threads: usize,
    /// Tasks it said it has (others' included).
    pub queue: usize,
    /// Its trust in the network's spot checks (0 to 1, 0.5 when new): a
    /// trusted worker is preferred as if it were up to twice as fast.
    pub trust: f64,
}

/// How long `worker` would take to finish a chunk of `inputs` given now.
fn expected_ms(slot: &Slot, stats: Option<&WorkerStats>, inputs: usize, default_ms: f64) -> f64 {
    let ms = stats.and_then(|s| s.ms_per_input).unwrap_or(default_ms);
    let ours = stats.map_or(0, |s| s.in_flight);
    // Its own report lags: count at least what we gave it.
    let ahead = slot.queue.max(ours);
    let threads = slot.threads.max(1) as f64;
    ms * inputs as f64 * (1.0 + (ahead as f64 / threads).floor())
}

/// The time per input to assume for workers not measured yet: the slowest
/// measured one (optimism about an unknown worker would pile work on it).
pub(crate) fn default_ms(stats: &HashMap<PeerId, WorkerStats>, slots: &[Slot]) -> f64 {
    slots
        .iter()
        .filter_map(|s| stats.get(&s.device).and_then(|w| w.ms_per_input))
        .fold(None, |max: Option<f64>, x| Some(max.map_or(x, |m| m.max(x))))
        .unwrap_or(DEFAULT_MS_PER_INPUT)
}

/// The worker to give a chunk of `inputs` to, if any has room: the one
/// expected to finish first. Workers in `tried` (they failed this chunk)
/// are passed over while another can take it; a worker has room for its
/// threads plus one waiting chunk.
pub(crate) fn pick(
    slots: &[Slot],
    stats: &HashMap<PeerId, WorkerStats>,
    inputs: usize,
    tried: &[PeerId],
    now: Instant,
) -> Option<PeerId> {
    let default = default_ms(stats, slots);
    let awake =
        |slot: &Slot| stats.get(&slot.device).is_none_or(|s| s.rest_until.is_none_or(|until| now >= until));
    let free = |slot: &&Slot| {
        awake(slot) && stats.get(&slot.device).is_none_or(|s| s.in_flight < slot.threads.max(1) + 1)
    };
    let best = |fresh_only: bool| {
        slots
            .iter()
            .filter(free)
            .filter(|slot| !fresh_only || !tried.contains(&slot.device))
            .map(|slot| {
                let ms = expected_ms(slot, stats.get(&slot.device), inputs, default);
                (ms * (1.5 - slot.trust.clamp(0.0, 1.0)), slot.device)
            })
            .min_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)))
            .map(|(_, device)| device)
    };
    best(true).or_else(|| {
        // Only workers that failed it before: one of them, unless another
        // worker that has not is merely busy (then wait for it; one that
        // rests after a failure of its own is not waited for).
        let untried_busy = slots.iter().any(|s| !tried.contains(&s.device) && awake(s));
        if untried_busy { None } else { best(false) }
    })
}

/// How long to wait for a chunk of `inputs` from a worker before giving it
/// to another.
pub(crate) fn timeout(stats: Option<&WorkerStats>, inputs: usize) -> Duration {
    let ms = stats.and_then(|s| s.ms_per_input).unwrap_or(DEFAULT_MS_PER_INPUT * 2.5);
    Duration::from_secs(10) + Duration::from_millis((ms * inputs as f64 * 4.0) as u64)
}

#[cfg(test)]
mod tests {
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use super::*;
    use crate::Identity;

    fn peer(n: u8) -> PeerId {
        Identity::from_seed([n; 32]).peer_id()
    }

    fn texts(n: usize, len: usize) -> Vec<String> {
        vec!["x".repeat(len); n]
    }

    #[test]
    fn chunks_cover_every_input_once_in_order() {
        for (n, workers) in [(0, 1), (1, 1), (3, 2), (500, 3), (2000, 2), (10_000, 1), (7, 0)] {
            let inputs = texts(n, 10);
            let ranges = chunks(&inputs, workers);
            let covered: Vec<usize> = ranges.iter().flat_map(|r| r.clone()).collect();
            assert_eq!(covered, (0..n).collect::<Vec<_>>(), "{n} inputs, {workers} workers");
            assert!(ranges.iter().all(|r| !r.is_empty() && r.len() <= MAX_CHUNK_INPUTS));
        }
        // About four chunks per worker, and never tiny ones.
        assert_eq!(chunks(&texts(500, 10), 3).len(), 12);
        assert_eq!(chunks(&texts(10, 10), 8).len(), 3);
        // Long inputs: cut by bytes too.
        let long = texts(40, 60 * 1024);
        let ranges = chunks(&long, 1);
        assert!(ranges.iter().all(|r| r.len() * 60 * 1024 <= MAX_CHUNK_BYTES), "{ranges:?}");
    }

    #[test]
    fn the_worker_expected_to_finish_first_gets_the_chunk() {
        let now = Instant::now();
        let (a, b, c) = (peer(1), peer(2), peer(3));
        let slots = vec![
            Slot { device: a, threads: 1, queue: 0, trust: 0.5 },
            Slot { device: b, threads: 4, queue: 0, trust: 0.5 },
            Slot { device: c, threads: 1, queue: 0, trust: 0.5 },
        ];
        let mut stats = HashMap::new();
        // Nothing measured: all alike, ties by node ID (deterministic).
        let first = pick(&slots, &stats, 16, &[], now).unwrap();
        assert_eq!(first, *[a, b, c].iter().min().unwrap());
        // a is fast, c slow: a first; once a has its threads+1 chunks, the
        // next-fastest with room.
        stats.insert(a, WorkerStats { ms_per_input: Some(5.0), ..Default::default() });
        stats.insert(b, WorkerStats { ms_per_input: Some(20.0), ..Default::default() });
        stats.insert(c, WorkerStats { ms_per_input: Some(50.0), ..Default::default() });
        assert_eq!(pick(&slots, &stats, 16, &[], now), Some(a));
        stats.get_mut(&a).unwrap().in_flight = 2;
        assert_eq!(pick(&slots, &stats, 16, &[], now), Some(b));
        // b's four threads take chunks side by side.
        stats.get_mut(&b).unwrap().in_flight = 3;
        assert_eq!(pick(&slots, &stats, 16, &[], now), Some(b));
        // A long queue of others' work counts against a worker.
        let busy = vec![Slot { device: b, threads: 4, queue: 40, trust: 0.5 }, slots[2].clone()];
        assert_eq!(pick(&busy, &stats, 16, &[], now), Some(c));
        // Of two alike, the one with a record of agreeing checks.
        let stats = HashMap::new();
        let trusted = vec![
            Slot { device: a, threads: 1, queue: 0, trust: 0.5 },
            Slot { device: c, threads: 1, queue: 0, trust: 0.96 },
        ];
        assert_eq!(pick(&trusted, &stats, 16, &[], now), Some(c));
    }

    #[test]
    fn failed_and_resting_workers_are_passed_over() {
        let now = Instant::now();
        let (a, b) = (peer(1), peer(2));
        let slots = vec![
            Slot { device: a, threads: 1, queue: 0, trust: 0.5 },
            Slot { device: b, threads: 1, queue: 0, trust: 0.5 },
        ];
        let mut stats = HashMap::new();
        stats.insert(a, WorkerStats { ms_per_input: Some(1.0), ..Default::default() });
        stats.insert(b, WorkerStats { ms_per_input: Some(100.0), ..Default::default() });
        assert_eq!(pick(&slots, &stats, 8, &[a], now), Some(b), "a failed this chunk");
        // b busy: wait for it rather than give a the chunk it failed.
        stats.get_mut(&b).unwrap().in_flight = 2;
        assert_eq!(pick(&slots, &stats, 8, &[a], now), None);
        // Everyone failed it: a again.
        assert_eq!(pick(&slots, &stats, 8, &[a, b], now), Some(a));
        // The only one that has not is resting: a again, rather than wait.
        stats.get_mut(&b).unwrap().rest_until = Some(now + Duration::from_secs(5));
        assert_eq!(pick(&slots, &stats, 8, &[a], now), Some(a));
        stats.get_mut(&b).unwrap().rest_until = None;
        // Resting: not picked until the rest is over.
        stats.get_mut(&a).unwrap().rest_until = Some(now + Duration::from_secs(5));
        assert_eq!(pick(&slots, &stats, 8, &[], now), None);
        assert_eq!(pick(&slots, &stats, 8, &[], now + Duration::from_secs(5)), Some(a));
    }

    #[test]
    fn measurements_average_and_set_the_timeout() {
        let mut s = WorkerStats::default();
        s.answered(10, Duration::from_millis(100));
        assert_eq!(s.ms_per_input, Some(10.0));
        s.answered(10, Duration::from_millis(200));
        assert!((s.ms_per_input.unwrap() - 13.0).abs() < 1e-9);
        assert_eq!(s.chunks, 2);
        assert!(timeout(Some(&s), 64) < timeout(None, 64));
        assert!(timeout(None, 1) >= Duration::from_secs(10));
    }
}
