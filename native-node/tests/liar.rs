//! Spot checks with real processes (build feature `liar`): three honest
//! nodes and one that answers 70% of its chunks with plausible wrong
//! vectors. The liar is caught by the checks and given no more work; every
//! job's results equal a single-node run; the liar earns nothing for what
//! it got wrong, and every node sums up the same balances.
//!
//! `cargo test -p infermesh-node --features liar --test liar`
#![cfg(feature = "liar")]

mod common;

use common::{
    DEADLINE,
    pool::{
        balances, cli, cli_ok, compute_node, compute_node_with, cosine, embedder, eventually, lines,
        read_output, short, summary, worker_count,
    },
};

/// Jobs within which the liar must be caught: a new worker's chunks are all
/// checked, so each of its answers is compared with another worker's; it
/// answers about six chunks of a 300-text job over four workers, and lies
/// on each with probability 0.7, so it goes through one job unnoticed with
/// probability 0.3^6 < 0.1%, and two with 0.3^12 < one in a million.
const CAUGHT_WITHIN: usize = 2;

#[test]
fn a_lying_worker_is_caught_excluded_and_unpaid_and_results_stay_right() {
    let dirs: Vec<tempfile::TempDir> = (0..4).map(|_| tempfile::tempdir().unwrap()).collect();
    let [da, db, dc, dl] = [&dirs[0], &dirs[1], &dirs[2], &dirs[3]].map(|d| d.path());
    let a = compute_node("A", da, None);
    let boot = a.addrs().tcp;
    let b = compute_node("B", db, Some(&boot));
    let _c = compute_node("C", dc, Some(&boot));
    let l = compute_node_with("L", dl, Some(&boot), &["--lie-rate", "0.7"]);
    let (liar, honest) = (l.addrs().peer_id, b.addrs().peer_id);
    cli_ok(da, &["network", "create", "lab"]);
    let token = cli_ok(da, &["network", "invite", "--uses", "3"]);
    for dir in [db, dc, dl] {
        cli_ok(dir, &["network", "join", &token]);
    }
    eventually("four workers", DEADLINE, || worker_count(da) == 4);

    let model = embedder();
    let mut caught_after = None;
    for job in 1..=CAUGHT_WITHIN + 1 {
        let texts = lines(300, job as u64);
        let input = da.join("texts.txt");
        std::fs::write(&input, texts.join("\n")).unwrap();
        let out = da.join("out.jsonl");
        let (ok, said, err) =
            cli(da, &["embed", "--file", input.to_str().unwrap(), "--out", out.to_str().unwrap()]);
        assert!(ok, "job {job}: {said}\n{err}");
        // Every vector is the honest one, whatever the liar answered.
        let got = read_output(&out, &texts);
        let want = model.embed(&texts).unwrap();
        let worst = got.iter().zip(&want).map(|(g, w)| cosine(g, w)).fold(1.0f32, f32::min);
        assert!(worst >= 0.9999, "job {job}: lowest cosine to a single-node run {worst}");
        let workers = cli_ok(da, &["workers"]);
        let row = workers.lines().find(|l| l.starts_with(&short(&liar))).unwrap_or_default().to_owned();
        if caught_after.is_none() && row.contains("no work") {
            caught_after = Some(job);
            assert!(row.contains("lost a spot check"), "{row}");
        } else if let Some(caught) = caught_after {
            // Excluded: the job after ran without it.
            let (by_worker, _) = summary(&said);
            assert_eq!(by_worker.get(&liar), None, "job {job}, after it was caught in job {caught}: {said}");
        }
    }
    let caught =
        caught_after.unwrap_or_else(|| panic!("the liar was not caught within {CAUGHT_WITHIN} jobs"));
    assert!(caught <= CAUGHT_WITHIN);
    println!("the liar was caught in job {caught}");

    // No credits for wrong answers: a lost answer is never paid, and
    // neither is anything the liar answered in the job it was caught in.
    let on_a = balances(da);
    if caught == 1 {
        assert_eq!(on_a.get(&short(&liar)).map_or(0, |b| b[1]), 0, "{on_a:?}");
    }
    assert!(on_a[&short(&honest)][1] > 0, "honest workers were paid: {on_a:?}");
    for dir in [db, dc, dl] {
        eventually("the same balances on every node", DEADLINE, || balances(dir) == on_a);
    }
}
