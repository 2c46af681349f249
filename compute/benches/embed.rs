//! Sentences embedded per second on one thread, the way a node's compute
//! thread runs them (a one-thread rayon pool, chunks of `BENCH_BATCH`).
//!
//! `BENCH_SENTENCES` (a file, one sentence a line), `BENCH_BATCH` (32),
//! `BENCH_RUNS` (5); `BENCH_OUT` receives the embeddings as little-endian
//! f32 (for comparing with another implementation). The model comes from
//! `$INFERMESH_MODEL_DIR` (`scripts/ci/models.sh`). Prints one JSON line.

use std::{path::PathBuf, time::Instant};

use infermesh_compute::{Embedder, MODEL, ModelFiles};

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    // One core, as a node's compute thread runs it: candle's own pool of
    // a thread per core stays empty.
    if std::env::var_os("CANDLE_NUM_THREADS").is_none() {
        // SAFETY: still single-threaded here.
        unsafe { std::env::set_var("CANDLE_NUM_THREADS", "1") };
    }
    let var = |name: &str, default: &str| std::env::var(name).unwrap_or_else(|_| default.to_owned());
    let dir = PathBuf::from(var("INFERMESH_MODEL_DIR", ""));
    let read = |name: &str| std::fs::read(dir.join(name)).expect("the model files (scripts/ci/models.sh)");
    let embedder = Embedder::load(ModelFiles {
        weights: read(MODEL.weights.name),
        tokenizer: read(MODEL.tokenizer.name),
        config: read(MODEL.config.name),
    })
    .expect("the model loads");
    let sentences: Vec<String> = match std::env::var("BENCH_SENTENCES") {
        Ok(path) => {
            std::fs::read_to_string(path).expect("BENCH_SENTENCES").lines().map(str::to_owned).collect()
        }
        Err(_) => {
            (0..256).map(|i| format!("sentence number {i} about a peer-to-peer mesh that computes")).collect()
        }
    };
    let batch: usize = var("BENCH_BATCH", "32").parse().expect("BENCH_BATCH");
    let runs: usize = var("BENCH_RUNS", "5").parse().expect("BENCH_RUNS");
    let pool = rayon::ThreadPoolBuilder::new().num_threads(1).build().expect("a rayon pool");
    pool.install(|| {
        embedder.embed(&sentences[..batch.min(sentences.len())]).expect("warm-up");
        let mut rates = Vec::new();
        let mut vectors = Vec::new();
        for _ in 0..runs {
            let start = Instant::now();
            vectors = sentences.chunks(batch).flat_map(|c| embedder.embed(c).expect("embeds")).collect();
            rates.push(sentences.len() as f64 / start.elapsed().as_secs_f64());
        }
        if let Ok(out) = std::env::var("BENCH_OUT") {
            let bytes: Vec<u8> = vectors.iter().flatten().flat_map(|x| x.to_le_bytes()).collect();
            std::fs::write(out, bytes).expect("BENCH_OUT");
        }
        let mut sorted = rates.clone();
        sorted.sort_by(f64::total_cmp);
        println!(r#"{{"per_s": {}, "runs": {:?}}}"#, sorted[sorted.len() / 2], rates);
    });
}
