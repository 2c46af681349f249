//! Pooled compute with real processes: compute nodes, the CLI that asks
//! them, and what their output says.

use std::{
    collections::BTreeMap,
    path::Path,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use infermesh_compute::{Embedder, ModelFiles};

use super::{NodeProcess, loopback_args, model_dir};

/// A node offering one thread of compute, joined through `bootstrap`.
pub fn compute_node(name: &str, dir: &Path, bootstrap: Option<&str>) -> NodeProcess {
    compute_node_with(name, dir, bootstrap, &[])
}

/// The same, with more arguments.
pub fn compute_node_with(name: &str, dir: &Path, bootstrap: Option<&str>, extra: &[&str]) -> NodeProcess {
    let mut args = vec!["node".to_owned()];
    args.extend(loopback_args(dir));
    args.extend(["--compute", "--compute-threads", "1", "--model-dir"].map(String::from));
    args.push(model_dir().to_str().unwrap().to_owned());
    if let Some(addr) = bootstrap {
        args.extend(["--bootstrap".to_owned(), addr.to_owned()]);
    }
    args.extend(extra.iter().map(|a| a.to_string()));
    let node = NodeProcess::start(name, &args, dir);
    node.wait_line("compute offered", |l| l.contains("offering compute"));
    node
}

/// Runs `infermesh --data-dir <dir> <args…>` (a subcommand that asks the
/// running node); (success, stdout, stderr).
pub fn cli(dir: &Path, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_infermesh"))
        .arg("--data-dir")
        .arg(dir)
        .args(args)
        .env_remove("INFERMESH_DATA_DIR")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

pub fn cli_ok(dir: &Path, args: &[&str]) -> String {
    let (ok, out, err) = cli(dir, args);
    assert!(ok, "infermesh {args:?} failed:\n{out}\n{err}");
    out.trim().to_owned()
}

/// Waits until `check` holds, polling.
pub fn eventually(what: &str, deadline: Duration, mut check: impl FnMut() -> bool) {
    let start = Instant::now();
    while !check() {
        assert!(start.elapsed() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

pub fn worker_count(dir: &Path) -> usize {
    cli_ok(dir, &["workers"]).lines().filter(|l| l.starts_with("12D3KooW")).count()
}

pub fn embedder() -> Embedder {
    let dir = model_dir();
    let read = |name: &str| {
        std::fs::read(dir.join(name))
            .unwrap_or_else(|e| panic!("{}: {e} (run scripts/ci/models.sh)", dir.display()))
    };
    Embedder::load(ModelFiles {
        weights: read("model.safetensors"),
        tokenizer: read("tokenizer.json"),
        config: read("config.json"),
    })
    .unwrap()
}

pub fn short(id: &str) -> String {
    format!("{}…{}", &id[..8], &id[id.len() - 6..])
}

/// `credits` as a node shows it: person (short) → [available, earned, spent].
pub fn balances(dir: &Path) -> BTreeMap<String, [i64; 3]> {
    cli_ok(dir, &["credits"])
        .lines()
        .skip_while(|l| !l.starts_with("person"))
        .skip(1)
        .take_while(|l| !l.trim().is_empty())
        .filter_map(|l| {
            let cols: Vec<&str> = l.split_whitespace().filter(|c| *c != "(you)").collect();
            let n = |i: usize| cols.get(i).and_then(|v| v.parse().ok());
            Some((cols.first()?.to_string(), [n(1)?, n(2)?, n(3)?]))
        })
        .collect()
}

pub fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    dot / (a.iter().map(|x| x * x).sum::<f32>().sqrt() * b.iter().map(|x| x * x).sum::<f32>().sqrt())
}

pub fn lines(n: usize, seed: u64) -> Vec<String> {
    let words = [
        "the",
        "quick",
        "brown",
        "fox",
        "mesh",
        "peer",
        "compute",
        "browser",
        "node",
        "worker",
        "job",
        "vector",
        "private",
        "network",
        "embedding",
        "über",
        "café",
        "网络",
        "🚀",
        "sentence",
    ];
    let mut state = seed;
    let mut next = || {
        state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (state >> 33) as usize
    };
    (0..n)
        .map(|i| {
            let len = 3 + next() % 18;
            let text: Vec<&str> = (0..len).map(|_| words[next() % words.len()]).collect();
            format!("{i}: {}", text.join(" "))
        })
        .collect()
}

/// Reads `embed --out` JSON lines; checks order and texts.
pub fn read_output(path: &Path, texts: &[String]) -> Vec<Vec<f32>> {
    let content = std::fs::read_to_string(path).unwrap();
    let rows: Vec<serde_json::Value> = content.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(rows.len(), texts.len(), "one line per text");
    rows.iter()
        .enumerate()
        .map(|(i, row)| {
            assert_eq!(row["index"], i, "in order");
            assert_eq!(row["text"], texts[i].as_str());
            row["embedding"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32).collect()
        })
        .collect()
}

/// "… chunks by worker: A: 4, B: 5; 0 rerun elsewhere…" → {A: 4, B: 5}, reruns.
pub fn summary(line: &str) -> (BTreeMap<String, usize>, usize) {
    let spread = line.split("chunks by worker: ").nth(1).unwrap().split(';').next().unwrap();
    let workers = spread
        .split(", ")
        .map(|w| {
            let (id, n) = w.split_once(": ").unwrap();
            (id.to_owned(), n.parse().unwrap())
        })
        .collect();
    let reruns = line.split("; ").nth(1).unwrap().split(' ').next().unwrap().parse().unwrap();
    (workers, reruns)
}
