//! Pooled compute with real processes: native nodes in one private
//! network share an embeddings job, survive a worker killed mid-job,
//! refuse a revoked member, refuse bad input with clear errors, and answer
//! the real `openai` client on /v1/embeddings.

mod common;

use std::{
    process::{Command, Stdio},
    time::Duration,
};

use common::{
    DEADLINE, http_post,
    pool::{
        balances, cli, cli_ok, compute_node, cosine, embedder, eventually, lines, read_output, short,
        summary, worker_count,
    },
};

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
