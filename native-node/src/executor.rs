//! The native executor: the embeddings model, loaded once, run by a few
//! worker threads. Each thread runs one task at a time in a rayon pool of
//! its own with one thread, so `--compute-threads N` is N tasks side by
//! side, each on one core (the model's matrix products are not split
//! across threads that are all busy anyway).

use std::{
    path::{Path, PathBuf},
    sync::{Arc, Mutex, mpsc},
};

use anyhow::{Context, Result};
use infermesh_compute::{Embedder, MODEL, ModelFiles};
use infermesh_core::compute::{ComputeOffer, Executor, Task, TaskOutput, TaskResult};
use tokio::sync::oneshot;

type Work = (Task, oneshot::Sender<TaskResult>);

/// Makes each compute task run on one core: candle's matrix products
/// otherwise share one process-wide pool of a thread per core, whose
/// callers take turns, so `--compute-threads N` tasks would neither stay on
/// one core each nor run side by side. Call it first thing in `main`,
/// before any other thread exists (it sets `CANDLE_NUM_THREADS=1` unless
/// the environment already says otherwise).
pub fn one_core_per_task() {
    if std::env::var_os("CANDLE_NUM_THREADS").is_none() {
        // SAFETY: called at the start of `main`, while the process has one
        // thread: nothing reads the environment concurrently.
        unsafe { std::env::set_var("CANDLE_NUM_THREADS", "1") };
    }
}

/// Where the model files are unless `--model-dir` says otherwise:
/// `$INFERMESH_MODEL_DIR`, else `~/.cache/infermesh-models/all-MiniLM-L6-v2`
/// (where `scripts/ci/models.sh` puts them).
pub fn default_model_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("INFERMESH_MODEL_DIR") {
        return PathBuf::from(dir);
    }
    let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("."));
    home.join(".cache/infermesh-models").join(MODEL.name)
}

/// Reads the model's files from `dir` (their hashes are checked on load).
pub fn read_model(dir: &Path) -> Result<ModelFiles> {
    let read = |name: &str| {
        std::fs::read(dir.join(name)).with_context(|| {
            format!(
                "cannot read {} (the model files come from `bash scripts/ci/models.sh`, or say where they are with --model-dir)",
                dir.join(name).display()
            )
        })
    };
    Ok(ModelFiles {
        weights: read(MODEL.weights.name)?,
        tokenizer: read(MODEL.tokenizer.name)?,
        config: read(MODEL.config.name)?,
    })
}

/// Runs embedding tasks on `threads` threads.
pub struct NativeExecutor {
    work: mpsc::SyncSender<Work>,
    offer: ComputeOffer,
}

impl NativeExecutor {
    /// Loads the model from `dir` and starts the threads.
    pub fn start(dir: &Path, threads: usize) -> Result<Self> {
        let threads = threads.clamp(1, 256);
        let embedder = Arc::new(Embedder::load(read_model(dir)?).context("loading the embeddings model")?);
        // The core hands out at most `threads` tasks at once: the queue's size.
        let (work, queue) = mpsc::sync_channel::<Work>(threads);
        let queue = Arc::new(Mutex::new(queue));
        for n in 0..threads {
            let (queue, embedder) = (queue.clone(), embedder.clone());
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(1)
                .thread_name(move |_| format!("compute-{n}"))
                .build()
                .context("starting a compute thread")?;
            std::thread::Builder::new()
                .name(format!("compute-queue-{n}"))
                .spawn(move || {
                    loop {
                        // One thread takes the next task; the lock is held only to take it.
                        let next = queue.lock().unwrap_or_else(|p| p.into_inner()).recv();
                        let Ok((task, done)) = next else { return };
                        if done.is_closed() {
                            continue;
                        }
                        let result = pool.install(|| run(&embedder, &task));
                        let _ = done.send(result);
                    }
                })
                .context("starting a compute thread")?;
        }
        let offer = ComputeOffer {
            threads: threads as u16,
            memory_mb: available_memory_mb(),
            models: vec![MODEL.name.to_owned()],
            kind: "native".into(),
        };
        Ok(Self { work, offer })
    }
}

fn run(embedder: &Embedder, task: &Task) -> TaskResult {
    if task.model != MODEL.name {
        return Err(format!("this worker runs {}, not {}", MODEL.name, task.model));
    }
    let (vectors, tokens) = embedder.embed_counted(&task.inputs).map_err(|e| e.to_string())?;
    Ok(TaskOutput { vectors, tokens })
}

/// Memory the system has available, in MiB (0 if unknown).
fn available_memory_mb() -> u32 {
    let Ok(info) = std::fs::read_to_string("/proc/meminfo") else { return 0 };
    info.lines()
        .find_map(|l| l.strip_prefix("MemAvailable:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| (kb / 1024).min(u32::MAX as u64) as u32)
}

impl Executor for NativeExecutor {
    fn offer(&self) -> ComputeOffer {
        self.offer.clone()
    }

    fn run(&self, task: Task, done: oneshot::Sender<TaskResult>) {
        if let Err(refused) = self.work.try_send((task, done)) {
            let (reason, (_, done)) = match refused {
                mpsc::TrySendError::Full(work) => ("no compute thread is free", work),
                mpsc::TrySendError::Disconnected(work) => ("the compute threads have stopped", work),
            };
            let _ = done.send(Err(reason.into()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_model_files_are_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let error = NativeExecutor::start(dir.path(), 1).err().unwrap();
        let text = format!("{error:#}");
        assert!(text.contains("model.safetensors") && text.contains("models.sh"), "{text}");
        // Damaged files: refused by their hash.
        for file in MODEL.files() {
            std::fs::write(dir.path().join(file.name), b"not the model").unwrap();
        }
        let text = format!("{:#}", NativeExecutor::start(dir.path(), 1).err().unwrap());
        assert!(text.contains("SHA-256"), "{text}");
    }
}
