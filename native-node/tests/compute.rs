//! Pooled compute with real processes: native nodes in one private
//! network share an embeddings job, survive a worker killed mid-job,
//! refuse a revoked member, refuse bad input with clear errors, and answer
//! the real `openai` client on /v1/embeddings.

mod common;

use std::{
    collections::BTreeMap,
    path::Path,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use common::{DEADLINE, NodeProcess, http_post, loopback_args, model_dir};
use infermesh_compute::{Embedder, ModelFiles};

/// A node offering one thread of compute, joined through `bootstrap`.
fn compute_node(name: &str, dir: &Path, bootstrap: Option<&str>) -> NodeProcess {
    let mut args = vec!["node".to_owned()];
    args.extend(loopback_args(dir));
    args.extend(["--compute", "--compute-threads", "1", "--model-dir"].map(String::from));
    args.push(model_dir().to_str().unwrap().to_owned());
    if let Some(addr) = bootstrap {
        args.extend(["--bootstrap".to_owned(), addr.to_owned()]);
    }
    let node = NodeProcess::start(name, &args, dir);
    node.wait_line("compute offered", |l| l.contains("offering compute"));
    node
}

/// Runs `infermesh --data-dir <dir> <args…>` (a subcommand that asks the
/// running node); (success, stdout, stderr).
fn cli(dir: &Path, args: &[&str]) -> (bool, String, String) {
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

fn cli_ok(dir: &Path, args: &[&str]) -> String {
    let (ok, out, err) = cli(dir, args);
    assert!(ok, "infermesh {args:?} failed:\n{out}\n{err}");
    out.trim().to_owned()
}

/// Waits until `check` holds, polling.
fn eventually(what: &str, deadline: Duration, mut check: impl FnMut() -> bool) {
    let start = Instant::now();
    while !check() {
        assert!(start.elapsed() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn worker_count(dir: &Path) -> usize {
    cli_ok(dir, &["workers"]).lines().filter(|l| l.starts_with("12D3KooW")).count()
}

fn embedder() -> Embedder {
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

fn short(id: &str) -> String {
    format!("{}…{}", &id[..8], &id[id.len() - 6..])
}

/// `credits` as a node shows it: person (short) → [available, earned, spent].
fn balances(dir: &Path) -> BTreeMap<String, [i64; 3]> {
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

fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    dot / (a.iter().map(|x| x * x).sum::<f32>().sqrt() * b.iter().map(|x| x * x).sum::<f32>().sqrt())
}

fn lines(n: usize, seed: u64) -> Vec<String> {
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
fn read_output(path: &Path, texts: &[String]) -> Vec<Vec<f32>> {
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
fn summary(line: &str) -> (BTreeMap<String, usize>, usize) {
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

#[test]
fn a_network_of_native_nodes_shares_jobs_survives_a_kill_and_refuses_a_revoked_member() {
    let (da, db, dc) =
        (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = compute_node("a", da.path(), None);
    let bootstrap = a.addrs().tcp;
    let b = compute_node("b", db.path(), Some(&bootstrap));
    let c = compute_node("c", dc.path(), Some(&bootstrap));
    let (ida, idb, idc) = (a.addrs().peer_id, b.addrs().peer_id, c.addrs().peer_id);

    // A private network: A owns it, B and C join with one invite.
    assert!(cli_ok(da.path(), &["network", "create", "lab"]).contains("created network lab"));
    let token = cli_ok(da.path(), &["network", "invite", "--uses", "2"]);
    assert!(token.starts_with("imnet1."), "{token}");
    assert!(cli_ok(db.path(), &["network", "join", &token]).contains("joined network lab"));
    assert!(cli_ok(dc.path(), &["network", "join", &token]).contains("joined network lab"));
    let (ok, _, err) = cli(dc.path(), &["network", "join", &token]);
    assert!(!ok && err.contains("already"), "{err}");
    let members = cli_ok(da.path(), &["network", "members"]);
    for id in [&ida, &idb, &idc] {
        assert!(members.contains(id.as_str()), "{members}");
    }
    eventually("three workers seen by every node", DEADLINE, || {
        [da.path(), db.path(), dc.path()].iter().all(|d| worker_count(d) == 3)
    });

    // 500 texts from B, spread over all three, equal to one model run here.
    let texts = lines(500, 1);
    let input = db.path().join("texts.txt");
    std::fs::write(&input, texts.join("\n")).unwrap();
    let out = db.path().join("out.jsonl");
    let (ok, said, err) =
        cli(db.path(), &["embed", "--file", input.to_str().unwrap(), "--out", out.to_str().unwrap()]);
    assert!(ok, "{said}\n{err}");
    assert!(err.contains("500/500 texts"), "a progress bar: {err}");
    let (workers, _) = summary(&said);
    for id in [&ida, &idb, &idc] {
        assert!(workers.get(id.as_str()).is_some_and(|&n| n > 0), "{id} took no chunk: {said}");
    }
    let got = read_output(&out, &texts);
    let want = embedder().embed(&texts).unwrap();
    let worst = got.iter().zip(&want).map(|(g, w)| cosine(g, w)).fold(1.0f32, f32::min);
    assert!(worst >= 0.9999, "lowest cosine to a single-node run: {worst}");
    let jobs = cli_ok(db.path(), &["jobs"]);
    assert!(jobs.contains("done") && jobs.contains("500/500"), "{jobs}");

    // B paid A and C with receipts both signed; every node sums up the
    // same balances from them (each replicates the others' namespaces).
    let on_b = balances(db.path());
    let (b_spent, a_earned, c_earned) = (on_b[&short(&idb)][2], on_b[&short(&ida)][1], on_b[&short(&idc)][1]);
    assert!(b_spent > 0 && a_earned > 0 && c_earned > 0, "{on_b:?}");
    assert_eq!(b_spent, a_earned + c_earned, "what B spent, A and C earned: {on_b:?}");
    assert_eq!(on_b[&short(&idb)][0], 1_000_000 - b_spent, "{on_b:?}");
    for dir in [da.path(), dc.path()] {
        eventually("the same balances on every node", DEADLINE, || balances(dir) == on_b);
    }

    // kill -9 C while A's job runs: its chunks run elsewhere, nothing is lost.
    let texts = lines(1200, 2);
    let input = da.path().join("texts.txt");
    std::fs::write(&input, texts.join("\n")).unwrap();
    let out = da.path().join("out.jsonl");
    let mut job = Command::new(env!("CARGO_BIN_EXE_infermesh"))
        .arg("--data-dir")
        .arg(da.path())
        .args(["embed", "--file", input.to_str().unwrap(), "--out", out.to_str().unwrap()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The first progress line: chunks are out on every worker.
    let mut stderr = std::io::BufReader::new(job.stderr.take().unwrap());
    let mut first = String::new();
    std::io::BufRead::read_line(&mut stderr, &mut first).unwrap();
    assert!(first.contains("texts"), "{first}");
    c.signal("KILL");
    let outcome = job.wait_with_output().unwrap();
    let said = String::from_utf8_lossy(&outcome.stdout).into_owned();
    assert!(outcome.status.success(), "{said}");
    let (_, reruns) = summary(&said);
    assert!(reruns >= 1, "C's chunks were run again elsewhere: {said}");
    let got = read_output(&out, &texts);
    let sample: Vec<usize> = (0..texts.len()).step_by(7).collect();
    let want = embedder().embed(&sample.iter().map(|&i| texts[i].as_str()).collect::<Vec<_>>()).unwrap();
    for (k, &i) in sample.iter().enumerate() {
        assert!(cosine(&got[i], &want[k]) >= 0.9999, "text {i}");
    }
    eventually("C gone from the workers", Duration::from_secs(10), || worker_count(da.path()) == 2);

    // Revoke B: its next job is refused, and A stops giving it work.
    assert!(cli_ok(da.path(), &["network", "revoke", &idb]).contains("revoked"));
    eventually("B refused", Duration::from_secs(10), || {
        let (ok, _, err) = cli(db.path(), &["embed", "hello"]);
        !ok && err.contains("not an active member")
    });
    eventually("B gone from A's workers", Duration::from_secs(10), || worker_count(da.path()) == 1);
    let said = cli_ok(da.path(), &["embed", "one", "two", "three"]);
    let (workers, _) = summary(&said);
    assert_eq!(workers.keys().collect::<Vec<_>>(), [&ida], "{said}");
    drop(b);
}

#[test]
fn bad_input_gets_clear_errors_and_the_openai_client_gets_embeddings() {
    let dir = tempfile::tempdir().unwrap();
    let a = compute_node("a", dir.path(), None);
    let api = a.addrs().api.unwrap();
    let token = std::fs::read_to_string(dir.path().join("api-token")).unwrap().trim().to_owned();
    let post = |path: &str, body: &str| http_post(&api, path, Some(&token), body);

    // Before any network.
    let (status, body) = post("/api/embed", r#"{"inputs":["hi"]}"#);
    assert_eq!(status, 409, "{body}");
    assert!(body.contains("in no network"), "{body}");
    cli_ok(dir.path(), &["network", "create", "solo"]);
    eventually("its own worker", DEADLINE, || worker_count(dir.path()) == 1);

    let cases: [(&str, String, u16, &str); 6] = [
        ("empty", r#"{"inputs":[]}"#.into(), 400, "no inputs"),
        (
            "1 MB text",
            format!(r#"{{"inputs":["{}"]}}"#, "a".repeat(1 << 20)),
            400,
            "input 0 is 1048576 bytes",
        ),
        (
            "100k inputs",
            format!(r#"{{"inputs":[{}]}}"#, vec!["\"x\""; 100_000].join(",")),
            400,
            "100000 inputs in one job",
        ),
        (
            "unknown model",
            r#"{"inputs":["hi"],"model":"gpt-embed-9"}"#.into(),
            400,
            "unknown model 'gpt-embed-9'",
        ),
        (
            "not my network",
            r#"{"inputs":["hi"],"network":"elsewhere"}"#.into(),
            409,
            "no network 'elsewhere'",
        ),
        ("not JSON", "{".into(), 400, ""),
    ];
    for (what, body, want_status, want_text) in cases {
        let (status, answer) = post("/api/embed", &body);
        assert_eq!(status, want_status, "{what}: {answer}");
        assert!(answer.contains(want_text), "{what}: {answer}");
    }
    let (status, _) = http_post(&api, "/api/embed", None, r#"{"inputs":["hi"]}"#);
    assert_eq!(status, 401, "no token");
    let (status, answer) =
        http_post(&api, "/v1/embeddings", Some("wrong"), r#"{"input":"hi","model":"all-MiniLM-L6-v2"}"#);
    assert_eq!(status, 401);
    assert!(answer.contains("invalid_api_key"), "{answer}");
    let (status, answer) = post("/v1/embeddings", r#"{"input":[[101,2023]],"model":"all-MiniLM-L6-v2"}"#);
    assert_eq!(status, 400);
    assert!(answer.contains("token arrays are not supported"), "{answer}");
    let (status, answer) = post("/v1/embeddings", r#"{"input":"hi","model":"text-embedding-3-small"}"#);
    assert_eq!(status, 404);
    assert!(answer.contains("model_not_found"), "{answer}");

    // Still serving: a good job, streamed as progress and result lines.
    let (status, answer) = post("/api/embed", r#"{"inputs":["still here","and well"]}"#);
    assert_eq!(status, 200, "{answer}");
    let last: serde_json::Value = serde_json::from_str(answer.lines().last().unwrap()).unwrap();
    assert_eq!(last["result"]["vectors"].as_array().unwrap().len(), 2, "{answer}");

    // The real openai client (Python), pointed at the node.
    let python = std::env::var("INFERMESH_PYTHON")
        .unwrap_or_else(|_| format!("{}/.cache/infermesh-py/bin/python", std::env::var("HOME").unwrap()));
    let script = r#"
import json, sys
from openai import OpenAI
client = OpenAI(base_url=sys.argv[1] + "/v1", api_key=sys.argv[2])
texts = ["A man is eating food.", "Un homme mange.", "株式市場が下落した", "🚀 to the moon"]
floats = client.embeddings.create(model="all-MiniLM-L6-v2", input=texts, encoding_format="float")
default = client.embeddings.create(model="sentence-transformers/all-MiniLM-L6-v2", input=texts[0])
try:
    client.embeddings.create(model="text-embedding-3-small", input="x")
    refused = None
except Exception as e:
    refused = type(e).__name__
print(json.dumps({
    "floats": [d.embedding for d in floats.data],
    "default": default.data[0].embedding,
    "usage": floats.usage.prompt_tokens,
    "model": floats.model,
    "refused": refused,
}))
"#;
    let out = Command::new(&python)
        .arg("-c")
        .arg(script)
        .arg(&api)
        .arg(&token)
        .output()
        .unwrap_or_else(|e| panic!("{python}: {e} (scripts/ci/models.sh makes the Python environment)"));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let answer: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let texts = ["A man is eating food.", "Un homme mange.", "株式市場が下落した", "🚀 to the moon"];
    let want = embedder().embed(&texts).unwrap();
    let vector = |v: &serde_json::Value| -> Vec<f32> {
        v.as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32).collect()
    };
    for (got, want) in answer["floats"].as_array().unwrap().iter().zip(&want) {
        assert!(cosine(&vector(got), want) >= 0.9999);
    }
    // The client's default asks for base64: decoded, the same vector.
    assert!(cosine(&vector(&answer["default"]), &want[0]) >= 0.9999);
    assert!(answer["usage"].as_u64().unwrap() > 4);
    assert_eq!(answer["model"], "all-MiniLM-L6-v2");
    assert_eq!(answer["refused"], "NotFoundError");
}
