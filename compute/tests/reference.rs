//! Our embeddings against an independent reference: `scripts/reference/
//! embeddings.py`, a WordPiece tokenizer and a numpy forward pass written
//! without any of this crate's code, over the same model files. The token
//! IDs must be the same and every embedding within cosine 0.999.
//!
//! Needs the model files and a Python with numpy: `make setup` (part of
//! `make test`) puts both in `~/.cache`.

use std::{
    io::Write,
    path::PathBuf,
    process::{Command, Stdio},
};

use infermesh_compute::{DIMENSIONS, Embedder, MAX_TOKENS, MODEL, ModelFiles};

fn model_dir() -> PathBuf {
    std::env::var_os("INFERMESH_MODEL_DIR").map(PathBuf::from).unwrap_or_else(|| {
        PathBuf::from(std::env::var_os("HOME").expect("HOME"))
            .join(".cache/infermesh-models/all-MiniLM-L6-v2")
    })
}

fn python() -> PathBuf {
    std::env::var_os("INFERMESH_PYTHON").map(PathBuf::from).unwrap_or_else(|| {
        PathBuf::from(std::env::var_os("HOME").expect("HOME")).join(".cache/infermesh-py/bin/python")
    })
}

fn load() -> Embedder {
    let dir = model_dir();
    let read = |name: &str| {
        std::fs::read(dir.join(name))
            .unwrap_or_else(|e| panic!("{}/{name}: {e} (run `make setup` to fetch the model)", dir.display()))
    };
    let files = ModelFiles {
        weights: read(MODEL.weights.name),
        tokenizer: read(MODEL.tokenizer.name),
        config: read(MODEL.config.name),
    };
    Embedder::load(files).expect("the model loads")
}

fn texts() -> Vec<String> {
    let long = "Peer-to-peer networks let devices talk to each other directly, without a server in the \
                middle; each node both asks and answers. "
        .repeat(20);
    [
        "A man is eating food.",
        "A man is eating a piece of bread.",
        "The new movie is awesome.",
        "Der schnelle braune Fuchs springt über den faulen Hund.",
        "Je préfère le café au lait, s'il vous plaît — naïve résumé.",
        "我喜欢在公园里散步。",
        "東京は日本の首都です。",
        "Москва — столица России.",
        "القطط تحب النوم في الشمس",
        "I love pizza 🍕🍕 and rocket 🚀 launches!!",
        "",
        "   tabs\tand\nnew lines  ",
        &long,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

fn cosine(a: &[f32], b: &[f64]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(x, y)| f64::from(*x) * y).sum();
    let na: f64 = a.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt();
    let nb: f64 = b.iter().map(|y| y * y).sum::<f64>().sqrt();
    dot / (na * nb)
}

#[test]
fn embeddings_match_an_independent_numpy_reference() {
    let texts = texts();
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scripts/reference/embeddings.py");
    let mut child = Command::new(python())
        .arg(&script)
        .arg(model_dir())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("the reference runs (Python with numpy: `make setup`)");
    child.stdin.take().unwrap().write_all(serde_json::to_string(&texts).unwrap().as_bytes()).unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success(), "the reference failed");
    let reference: Vec<serde_json::Value> = serde_json::from_slice(&output.stdout).unwrap();

    let embedder = load();
    let ours = embedder.embed(&texts).unwrap();
    let mut worst = f64::MAX;
    for ((text, mine), theirs) in texts.iter().zip(&ours).zip(&reference) {
        let ids: Vec<u32> = serde_json::from_value(theirs["ids"].clone()).unwrap();
        assert_eq!(embedder.token_ids(text).unwrap(), ids, "token IDs of {text:?}");
        let embedding: Vec<f64> = serde_json::from_value(theirs["embedding"].clone()).unwrap();
        assert_eq!(mine.len(), DIMENSIONS);
        let cos = cosine(mine, &embedding);
        assert!(cos >= 0.999, "cosine {cos} for {text:?}");
        worst = worst.min(cos);
    }
    println!("lowest cosine to the reference over {} texts: {worst:.7}", texts.len());
    // The long text was cut at the limit, by both.
    assert_eq!(embedder.token_ids(texts.last().unwrap()).unwrap().len(), MAX_TOKENS);
}

#[test]
fn known_similarities_and_batches_that_do_not_change_results() {
    let embedder = load();
    let e = embedder
        .embed(&["A man is eating food.", "A man is eating a piece of bread.", "The new movie is awesome."])
        .unwrap();
    let cos = |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(x, y)| x * y).sum::<f32>();
    assert!((cos(&e[0], &e[1]) - 0.7553).abs() < 1e-3, "{}", cos(&e[0], &e[1]));
    assert!((cos(&e[0], &e[2]) + 0.0461).abs() < 1e-3, "{}", cos(&e[0], &e[2]));
    // Alone or padded in a batch with longer texts: the same vector.
    let alone = embedder.embed(&["A man is eating food."]).unwrap();
    let mixed = embedder.embed(&["A man is eating food.", &"a much longer text ".repeat(40)]).unwrap();
    assert!(cos(&alone[0], &mixed[0]) > 0.99999);
    assert!(embedder.embed::<&str>(&[]).unwrap().is_empty());
}
