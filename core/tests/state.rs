//! Replicated state without a network: merge properties (commutative,
//! associative, idempotent) as property tests, and a seeded, replayable
//! simulation of replicas whose live updates are reordered, duplicated and
//! dropped, healed by periodic reconciliation.
//!
//! Replay a simulation seed: `INFERMESH_SIM_SEED=1234 cargo test -p
//! infermesh-core --test state`.
#![cfg(not(target_arch = "wasm32"))]

use infermesh_core::{
    Identity,
    state::{Entry, Hlc, Replica, reconcile::sync_pair},
};
use proptest::prelude::*;
use serde_json::json;

const NOW: u64 = 1_700_000_000_000;

fn authors() -> Vec<Identity> {
    (1..=3u8).map(|i| Identity::from_seed([i; 32])).collect()
}

/// The owner (author 0) grants authors 1 and 2.
fn grants(authors: &[Identity]) -> Vec<Entry> {
    let ns = authors[0].peer_id().to_base58();
    authors[1..]
        .iter()
        .enumerate()
        .map(|(i, a)| {
            Entry::sign(&authors[0], &ns, &format!("_acl/{}", a.peer_id()), Some(&json!(true)), i as u64 + 1)
                .unwrap()
        })
        .collect()
}

/// A small deterministic generator (SplitMix64), so a seed replays exactly.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

/// What must be equal between converged replicas: the winning entries and
/// the values they give.
type Snapshot = (Vec<(u64, [u8; 32])>, serde_json::Map<String, serde_json::Value>);

fn state_of(r: &Replica, ns: &str) -> Snapshot {
    (r.sync_items(ns), r.to_json(ns))
}

#[derive(Clone, Debug)]
struct Write {
    author: usize,
    key: u8,
    value: Option<i64>,
    millis: u64,
}

fn write_strategy() -> impl Strategy<Value = Write> {
    (0usize..3, 0u8..4, proptest::option::weighted(0.8, -5i64..5), 0u64..4)
        .prop_map(|(author, key, value, millis)| Write { author, key, value, millis })
}

fn sign_all(writes: &[Write], authors: &[Identity]) -> Vec<Entry> {
    let ns = authors[0].peer_id().to_base58();
    writes
        .iter()
        .map(|w| {
            let value = w.value.map(|v| json!(v));
            // Few distinct times, so ties between authors are common.
            Entry::sign(
                &authors[w.author],
                &ns,
                &format!("k{}", w.key),
                value.as_ref(),
                Hlc::from_millis(NOW - 10 + w.millis),
            )
            .unwrap()
        })
        .collect()
}

fn replica_with(grants: &[Entry], entries: &[Entry]) -> Replica {
    let mut r = Replica::new();
    for e in grants.iter().chain(entries) {
        r.apply(e.clone(), NOW).unwrap();
    }
    r
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn merge_is_commutative_and_idempotent(writes in proptest::collection::vec(write_strategy(), 1..24), seed in any::<u64>()) {
        let authors = authors();
        let ns = authors[0].peer_id().to_base58();
        let grants = grants(&authors);
        let entries = sign_all(&writes, &authors);

        let forward = replica_with(&grants, &entries);
        let mut shuffled = entries.clone();
        let mut rng = Rng(seed);
        for i in (1..shuffled.len()).rev() {
            shuffled.swap(i, rng.below(i as u64 + 1) as usize);
        }
        let other_order = replica_with(&grants, &shuffled);
        prop_assert_eq!(state_of(&forward, &ns), state_of(&other_order, &ns));

        let mut twice = forward.clone();
        for e in &entries {
            twice.apply(e.clone(), NOW).unwrap();
        }
        prop_assert_eq!(state_of(&twice, &ns), state_of(&forward, &ns));
    }

    #[test]
    fn merge_is_associative(
        a in proptest::collection::vec(write_strategy(), 0..12),
        b in proptest::collection::vec(write_strategy(), 0..12),
        c in proptest::collection::vec(write_strategy(), 0..12),
    ) {
        let authors = authors();
        let ns = authors[0].peer_id().to_base58();
        let grants = grants(&authors);
        let (a, b, c) = (sign_all(&a, &authors), sign_all(&b, &authors), sign_all(&c, &authors));
        let merge = |x: &Replica, y: &Replica| {
            let mut out = x.clone();
            for e in y.entries(&ns) {
                out.apply(e.clone(), NOW).unwrap();
            }
            out
        };
        let (ra, rb, rc) = (replica_with(&grants, &a), replica_with(&grants, &b), replica_with(&grants, &c));
        let left = merge(&merge(&ra, &rb), &rc);
        let right = merge(&ra, &merge(&rb, &rc));
        prop_assert_eq!(state_of(&left, &ns), state_of(&right, &ns));
    }
}

/// One run: `replicas` replicas, random writes and deletes from three
/// authors, live updates through a network that reorders, duplicates and
/// drops, reconciliation of a random pair every few steps; at the end every
/// replica must hold exactly the same state.
fn simulate(seed: u64, replicas: usize, steps: usize) -> Result<(), String> {
    let mut rng = Rng(seed);
    let authors = authors();
    let ns = authors[0].peer_id().to_base58();
    let mut nodes: Vec<Replica> = (0..replicas).map(|_| Replica::new()).collect();
    // (deliver at step, to, entry)
    let mut in_flight: Vec<(usize, usize, Entry)> = Vec::new();
    let mut now = NOW;

    let broadcast =
        |rng: &mut Rng, in_flight: &mut Vec<(usize, usize, Entry)>, step: usize, from: usize, e: &Entry| {
            for to in 0..replicas {
                if to == from || rng.chance(20) {
                    continue; // dropped
                }
                let copies = if rng.chance(10) { 2 } else { 1 };
                for _ in 0..copies {
                    in_flight.push((step + 1 + rng.below(8) as usize, to, e.clone()));
                }
            }
        };

    for (i, grant) in grants(&authors).into_iter().enumerate() {
        let at = i % replicas;
        nodes[at].apply(grant.clone(), now).map_err(|e| e.to_string())?;
        broadcast(&mut rng, &mut in_flight, 0, at, &grant);
    }

    for step in 0..steps {
        now += rng.below(5);
        // Deliveries due now, in random order.
        let (mut due, rest): (Vec<_>, Vec<_>) = in_flight.drain(..).partition(|(at, _, _)| *at <= step);
        in_flight = rest;
        for i in (1..due.len()).rev() {
            due.swap(i, rng.below(i as u64 + 1) as usize);
        }
        for (_, to, e) in due {
            // A writer's entry may arrive before its grant: refused now,
            // fetched again by a later reconciliation.
            let _ = nodes[to].apply(e, now);
        }

        // A write or a delete by a random author on a random replica.
        let at = rng.below(replicas as u64) as usize;
        let author = &authors[rng.below(3) as usize];
        let key = format!("k{}", rng.below(6));
        let value = if rng.chance(15) { None } else { Some(json!({ "n": rng.below(1000), "by": step })) };
        let skew = rng.below(3);
        let ts = nodes[at].next_timestamp(now + skew);
        let entry = Entry::sign(author, &ns, &key, value.as_ref(), ts).map_err(|e| e.to_string())?;
        if nodes[at].apply(entry.clone(), now).is_ok() {
            broadcast(&mut rng, &mut in_flight, step, at, &entry);
        }

        if step % 10 == 9 {
            let x = rng.below(replicas as u64) as usize;
            let y = (x + 1 + rng.below(replicas as u64 - 1) as usize) % replicas;
            let (lo, hi) = (x.min(y), x.max(y));
            let (left, right) = nodes.split_at_mut(hi);
            sync_pair(&mut left[lo], &mut right[0], &ns, now).map_err(|e| e.to_string())?;
        }
    }

    // Whatever is still in flight arrives; then reconciliation rounds until
    // nothing moves (bounded).
    for (_, to, e) in in_flight {
        let _ = nodes[to].apply(e, now);
    }
    for round in 0.. {
        if round > 2 * replicas {
            return Err("reconciliation did not settle".into());
        }
        let mut moved = 0;
        for x in 0..replicas {
            let y = (x + 1) % replicas;
            let (lo, hi) = (x.min(y), x.max(y));
            let (left, right) = nodes.split_at_mut(hi);
            let report = sync_pair(&mut left[lo], &mut right[0], &ns, now).map_err(|e| e.to_string())?;
            moved += report.sent + report.received;
        }
        if moved == 0 {
            break;
        }
    }
    let first = state_of(&nodes[0], &ns);
    for (i, n) in nodes.iter().enumerate().skip(1) {
        if state_of(n, &ns) != first {
            return Err(format!("replica {i} differs from replica 0"));
        }
    }
    if first.0.is_empty() {
        return Err("nothing was written".into());
    }
    Ok(())
}

#[test]
fn replicas_converge_despite_reordering_duplication_and_loss() {
    let seeds: Vec<u64> = match std::env::var("INFERMESH_SIM_SEED") {
        Ok(seed) => vec![seed.parse().expect("INFERMESH_SIM_SEED must be a number")],
        Err(_) => (0..6).map(|i| 0x5eed_0000 + i).collect(),
    };
    for seed in seeds {
        if let Err(e) = simulate(seed, 5, 120) {
            panic!(
                "simulation with seed {seed} failed: {e}\nreplay: INFERMESH_SIM_SEED={seed} cargo test -p infermesh-core --test state"
            );
        }
    }
}
