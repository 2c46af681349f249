//! Replicated-state benchmark (no network): signed entries ingested per
//! second (signature check + merge), and what reconciling two replicas of
//! 100,000 entries that differ in 10 costs on the wire. Prints figures.
//!
//! `cargo bench -p infermesh-core --bench state` (or `make bench`).

use std::time::Instant;

use infermesh_core::{
    Identity,
    state::{Entry, Replica, reconcile::sync_pair},
};

#[path = "shared/ingest.rs"]
mod ingest;
use ingest::{NOW, ingest_rate, signed_entries};

fn main() {
    let owner = Identity::from_seed([9; 32]);
    let ns = owner.peer_id().to_base58();
    const N: usize = 100_000;
    let (entries, sign_rate) = signed_entries(&owner, N);

    // Ingest: decode from bytes, verify, merge (what a replica does with
    // entries from the network): in batches of up to 256, as reconciliation
    // fetches them, and one at a time, as live gossip brings them.
    let encoded: Vec<Vec<u8>> = entries.iter().map(Entry::encode).collect();
    let ingest_batched = ingest_rate(&encoded, 256);
    let ingest_single = ingest_rate(&encoded, 1);

    // Reconcile two replicas of 100,000 entries that differ in 10 (5 on
    // each side): spread across the history, 10,000 writes apart (each
    // difference in a range of its own), and among the latest writes
    // (a replica that was away for a while).
    let reconcile = |a_lacks: &dyn Fn(usize) -> bool, b_lacks: &dyn Fn(usize) -> bool| {
        let (mut a, mut b) = (Replica::new(), Replica::new());
        let (a_part, b_part) = (
            entries.iter().enumerate().filter(|(i, _)| !a_lacks(*i)).map(|(_, e)| e.clone()).collect(),
            entries.iter().enumerate().filter(|(i, _)| !b_lacks(*i)).map(|(_, e)| e.clone()).collect(),
        );
        a.apply_all(a_part, Some(NOW), |_| Ok::<_, ()>(())).unwrap();
        b.apply_all(b_part, Some(NOW), |_| Ok::<_, ()>(())).unwrap();
        let start = Instant::now();
        let report = sync_pair(&mut a, &mut b, &ns, NOW).unwrap();
        let took = start.elapsed();
        assert_eq!((report.sent, report.received), (5, 5));
        assert_eq!(a.sync_items(&ns), b.sync_items(&ns));
        (report, took)
    };
    let spread = reconcile(&|i| i % 20_000 == 7, &|i| i % 20_000 == 10_007);
    let recent = reconcile(&|i| i >= N - 10 && i % 2 == 0, &|i| i >= N - 10 && i % 2 == 1);

    println!("replicated state (native, release), {N} entries of ~60 bytes of JSON");
    println!("  signed (entries/s)                         {sign_rate:>10.0}");
    println!(
        "  ingested in batches of 256: decode + verify + merge (entries/s) {ingest_batched:>7.0}   target >= 40000"
    );
    println!("  ingested one at a time (entries/s)         {ingest_single:>10.0}");
    for (what, (report, took)) in [("spread over the history", spread), ("among the latest writes", recent)] {
        println!(
            "  reconcile 100k vs 100k, 10 differ {what}: {} bytes in {} messages, {:.1} ms   target <= 5 KB",
            report.bytes,
            report.rounds,
            took.as_secs_f64() * 1000.0
        );
    }
}
