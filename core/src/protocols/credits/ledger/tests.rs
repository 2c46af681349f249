use serde_bytes::ByteBuf;
#[cfg(target_arch = "wasm32")]
use wasm_bindgen_test::wasm_bindgen_test as test;

use super::*;
use crate::{
    Identity,
    protocols::credits::{
        records::{Answer, Work, result_hash},
        vrf,
    },
};

const NET: &str = "0123456789abcdef";

fn id(n: u8) -> Identity {
    Identity::from_seed([n; 32])
}

fn name(identity: &Identity) -> String {
    identity.peer_id().to_base58()
}

/// Everyone is their own only device.
fn own(person: &str, device: &str) -> bool {
    person == device
}

fn work(requester: &Identity, worker: &Identity, job: u8, chunk: u32, result: &[u8]) -> Work {
    Work {
        network: NET.into(),
        job: ByteBuf::from(vec![job; 16]),
        chunk,
        requester: name(requester),
        requester_device: name(requester),
        vrf_key: ByteBuf::from(vrf::public_key(requester).to_vec()),
        worker: name(worker),
        worker_device: name(worker),
        inputs: 4,
        tokens: 40,
        credits: 40,
        result: ByteBuf::from(result_hash(result).to_vec()),
        at_ms: 1_000 + u64::from(chunk),
    }
}

fn receipt(requester: &Identity, worker: &Identity, job: u8, chunk: u32) -> Receipt {
    let w = work(requester, worker, job, chunk, b"vectors");
    let sig = w.claim(worker).unwrap();
    Receipt::countersign(w, sig, requester).unwrap()
}

fn answer(requester: &Identity, worker: &Identity, job: u8, chunk: u32, result: &[u8]) -> Answer {
    let w = work(requester, worker, job, chunk, result);
    let sig = w.claim(worker).unwrap();
    Answer { work: w, worker_sig: ByteBuf::from(sig) }
}

/// A check of the first chunk job `job` draws at `rate`.
fn check(
    requester: &Identity,
    workers: &[&Identity],
    job: u8,
    rate: f64,
    rejected: Option<&Identity>,
) -> CheckOutcome {
    let draw = vrf::draw(requester, NET, &[job; 16]);
    let chunk = (0..).find(|c| vrf::is_checked(&draw, *c, rate)).unwrap();
    CheckOutcome {
        network: NET.into(),
        job: ByteBuf::from(vec![job; 16]),
        chunk,
        requester_device: name(requester),
        vrf_output: ByteBuf::from(draw.output.to_vec()),
        vrf_proof: ByteBuf::from(draw.proof.to_vec()),
        rate,
        answers: workers.iter().map(|w| answer(requester, w, job, chunk, name(w).as_bytes())).collect(),
        rejected: rejected.map(name),
        signature: ByteBuf::new(),
    }
    .sign(requester)
    .unwrap()
}

#[test]
fn balances_come_from_receipts_and_a_replay_counts_once() {
    let (alice, bob) = (id(1), id(2));
    let mut ledger = Ledger::new(NET, Terms { grant: 1_000, ..Terms::default() });
    let r = receipt(&alice, &bob, 1, 0);
    assert!(ledger.add_receipt(Receipt::from_token(&r.to_token()).unwrap(), &own).unwrap());
    // The same receipt again, from the worker's namespace or replayed.
    assert!(!ledger.add_receipt(r.clone(), &own).unwrap());
    assert!(ledger.add_receipt(receipt(&alice, &bob, 1, 1), &own).unwrap());
    assert_eq!(ledger.balance(&name(&alice)), Balance { granted: 1_000, earned: 0, spent: 80 });
    assert_eq!(ledger.balance(&name(&bob)), Balance { granted: 1_000, earned: 80, spent: 0 });
    assert_eq!(ledger.balance(&name(&bob)).available(), 1_080);
    assert_eq!(ledger.balances().len(), 2);
    // Working for oneself earns nothing and costs nothing.
    ledger.add_receipt(receipt(&alice, &alice, 2, 0), &own).unwrap();
    assert_eq!(ledger.balance(&name(&alice)).available(), 920);
}

#[test]
fn forged_receipts_and_receipts_of_other_networks_or_strangers_are_refused() {
    let (alice, bob, mallory) = (id(1), id(2), id(3));
    let r = receipt(&alice, &bob, 1, 0);
    // A worker cannot mint credits: the requester's signature is needed.
    let mut minted = r.clone();
    minted.requester_sig = ByteBuf::from(bob.keypair().sign(b"anything").unwrap());
    assert_eq!(Receipt::from_token(&minted.to_token()), Err(CreditError::BadSignature("receipt")));
    // Nor can it change what it did once signed.
    let mut inflated = r.clone();
    inflated.work.credits = 4_000;
    assert!(matches!(Receipt::from_token(&inflated.to_token()), Err(CreditError::BadSignature(_))));
    // A requester cannot credit a worker who did not sign.
    let w = work(&alice, &bob, 1, 2, b"x");
    let forged = Receipt::countersign(w, mallory.keypair().sign(b"x").unwrap(), &alice).unwrap();
    assert!(Receipt::from_token(&forged.to_token()).is_err());
    assert!(Receipt::from_token("imrcpt1.!!!").is_err());
    assert!(Receipt::from_token(&"a".repeat(10_000)).is_err());

    let mut ledger = Ledger::new("fedcba9876543210", Terms::default());
    assert_eq!(ledger.add_receipt(r.clone(), &own), Err(CreditError::OtherNetwork("receipt")));
    let mut ledger = Ledger::new(NET, Terms::default());
    let nobody = |_: &str, _: &str| false;
    assert!(matches!(ledger.add_receipt(r, &nobody), Err(CreditError::NotMember { .. })));
}

#[test]
fn every_order_of_the_same_records_gives_the_same_balances() {
    let (alice, bob, carol) = (id(1), id(2), id(3));
    let mut records =
        vec![receipt(&alice, &bob, 1, 0), receipt(&bob, &carol, 2, 0), receipt(&carol, &alice, 3, 1)];
    // The requester signed a second receipt for one chunk, for more.
    let mut greedy = work(&alice, &bob, 1, 0, b"vectors");
    greedy.credits = 400;
    let sig = greedy.claim(&bob).unwrap();
    records.push(Receipt::countersign(greedy, sig, &alice).unwrap());
    let mut seen = None;
    for rotation in 0..records.len() {
        for reversed in [false, true] {
            let mut order = records.clone();
            order.rotate_left(rotation);
            if reversed {
                order.reverse();
            }
            let mut ledger = Ledger::new(NET, Terms::default());
            for r in order {
                ledger.add_receipt(r, &own).unwrap();
            }
            let balances = ledger.balances();
            assert_eq!(balances[&name(&bob)].earned, 40, "the smaller of the two receipts counts");
            assert_eq!(*seen.get_or_insert(balances.clone()), balances);
        }
    }
}

#[test]
fn a_check_proves_its_draw_and_a_losing_answer_earns_nothing() {
    let (alice, bob, carol, liar) = (id(1), id(2), id(3), id(4));
    let agreed = check(&alice, &[&bob, &carol], 1, 0.1, None);
    CheckOutcome::from_token(&agreed.to_token(), 0.1).unwrap();
    // A new worker's chunks are all checked (rate 1).
    let caught = check(&alice, &[&liar, &bob, &carol], 2, 1.0, Some(&liar));
    caught.verify(0.1).unwrap();

    let mut ledger = Ledger::new(NET, Terms::default());
    // The liar's receipt for the chunk it lost (if the requester had
    // signed one) does not count once the check is known.
    let mut w = work(&alice, &liar, 2, caught.chunk, b"wrong");
    w.at_ms = 5;
    let sig = w.claim(&liar).unwrap();
    let liar_receipt = Receipt::countersign(w, sig, &alice).unwrap();
    ledger.add_receipt(liar_receipt.clone(), &own).unwrap();
    assert_eq!(ledger.balance(&name(&liar)).earned, 40);
    assert!(ledger.add_check(caught.clone(), &own).unwrap());
    assert!(!ledger.add_check(caught, &own).unwrap(), "one outcome per chunk");
    ledger.add_check(agreed, &own).unwrap();
    assert!(ledger.is_void(&liar_receipt));
    assert_eq!(ledger.balance(&name(&liar)).earned, 0);
    assert_eq!(ledger.balance(&name(&alice)).spent, 0);

    assert_eq!(ledger.trust(&name(&bob)), Trust { agreed: 2, disagreed: 0 });
    let liar_trust = ledger.trust(&name(&liar));
    assert_eq!(liar_trust, Trust { agreed: 0, disagreed: 1 });
    assert!(liar_trust.excluded().unwrap().contains("lost a spot check"));
    assert!(ledger.trust(&name(&bob)).excluded().is_none());
}

#[test]
fn checks_with_a_wrong_draw_or_tampered_answers_are_refused() {
    let (alice, bob, carol, dave) = (id(1), id(2), id(3), id(4));
    let good = check(&alice, &[&bob, &carol], 1, 0.1, None);
    // The network asks for more than the requester drew at.
    assert!(matches!(good.verify(0.5), Err(CreditError::BadDraw(_))));
    // A chunk the draw does not select.
    let draw = good.draw().unwrap();
    let unselected = (0..).find(|c| !vrf::is_checked(&draw, *c, 0.1)).unwrap();
    let mut other = good.clone();
    other.chunk = unselected;
    for a in &mut other.answers {
        a.work.chunk = unselected;
    }
    assert!(other.verify(0.1).is_err());
    // Signed again by the requester, the worker's claims no longer match.
    let resigned = other.clone().sign(&alice).unwrap();
    assert!(resigned.verify(0.1).is_err());
    // A draw for another job.
    let mut wrong_draw = good.clone();
    wrong_draw.vrf_output = ByteBuf::from(vrf::draw(&alice, NET, &[9; 16]).output.to_vec());
    let wrong_draw = wrong_draw.sign(&alice).unwrap();
    assert!(matches!(wrong_draw.verify(0.1), Err(CreditError::BadDraw(_))));
    // Someone else's signature.
    let mut impostor = good.clone();
    impostor.signature = ByteBuf::from(dave.keypair().sign(b"x").unwrap());
    assert!(matches!(impostor.verify(0.1), Err(CreditError::BadSignature(_))));
    // The same worker twice.
    let twice = check(&alice, &[&bob, &bob], 1, 0.1, None);
    assert!(matches!(twice.verify(0.1), Err(CreditError::Malformed(_))));
    // A loser with only two answers.
    let no_referee = check(&alice, &[&bob, &carol], 1, 0.1, Some(&bob));
    assert!(no_referee.verify(0.1).is_err());
}

#[test]
fn trust_rises_slowly_and_falls_sharply() {
    let new = Trust::default();
    assert_eq!(new.score(), 0.5);
    assert_eq!(new.check_rate(0.1), 1.0, "a new worker's chunks are all checked");
    assert_eq!(new.check_rate(0.0), 0.0, "unless the network checks nothing");
    assert_eq!(Trust { agreed: 17, disagreed: 0 }.check_rate(0.1), 1.0);
    let proven = Trust { agreed: 18, disagreed: 0 };
    assert!(proven.score() >= TRUSTED_FROM);
    assert_eq!(proven.check_rate(0.1), 0.1);
    let veteran_liar = Trust { agreed: 30, disagreed: 1 };
    assert!(veteran_liar.score() < 0.4);
    assert_eq!(veteran_liar.check_rate(0.1), 1.0);
    assert!(Trust { agreed: 30, disagreed: 2 }.excluded().is_some());
    assert!(Trust { agreed: 0, disagreed: 1 }.excluded().is_some());
}
