//! Entry points for the fuzz targets in `fuzz/` (feature `fuzz`). Each
//! takes bytes as a peer could send them and runs them through the code
//! the node runs on them: the decoder, then the checks and the rules that
//! come after it. None may panic, loop or allocate without bound, whatever
//! the bytes. [`seeds`] makes a corpus of real encodings to start from.
//!
//! Where one target covers several decoders, its first byte picks which.

use libp2p::PeerId;
use serde_bytes::ByteBuf;
use serde_json::json;

use crate::{
    Envelope, Identity, MsgType,
    crypto::{E2e, Level, SignedKemKey, private::PrivateValues},
    messaging::{Limits, Validator},
    protocols::{
        credits::{
            ledger::Ledger,
            records::{Answer, CheckOutcome, Receipt, Terms, Work, result_hash},
            vrf,
        },
        direct::wire::{Ack, FrameCodec},
        jobs::wire::{JobRequest, JobResponse, Run, pack, unpack},
        networks::{
            records::{DeviceCert, Invite},
            wire::{NetRequest, NetResponse, Presence, presence_topic},
        },
        replication::wire::{SyncRequest, SyncResponse, decode_batch, encode_batch},
        sessions::wire::{E2eRequest, E2eResponse, HeldFrame},
    },
    state::{
        Entry, LocalState,
        reconcile::{self, Initiator},
    },
};

/// When the fuzzed messages are judged (a fixed time: runs repeat).
const NOW_MS: u64 = 1_767_225_600_000;

fn sender() -> Identity {
    Identity::from_seed([1; 32])
}

fn receiver() -> Identity {
    Identity::from_seed([2; 32])
}

fn cbor<T: serde::Serialize>(value: &T) -> Vec<u8> {
    let mut out = Vec::new();
    ciborium::into_writer(value, &mut out).expect("writing CBOR into a Vec cannot fail");
    out
}

/// An envelope, checked as a direct message and as a broadcast.
pub fn envelope(data: &[u8]) {
    let mut validator = Validator::new(Limits::default());
    let from = sender().peer_id();
    if let Ok(env) = validator.check(data, &from, &receiver().peer_id().to_base58(), NOW_MS) {
        let _ = env.encode();
    }
    let _ = validator.check(data, &from, "topic", NOW_MS);
    let _ = Envelope::decode(data);
}

/// The direct protocol's frames, requests and acknowledgements, fed in
/// pieces as a stream would deliver them.
pub fn direct_frames(data: &[u8]) {
    use asynchronous_codec::Decoder;
    let (split, data) = data.split_first().map_or((1, data), |(b, rest)| (usize::from(*b).max(1), rest));
    for mut codec in [FrameCodec::requests(64 * 1024), FrameCodec::acks()] {
        let mut buffer = bytes::BytesMut::new();
        'feed: for piece in data.chunks(split) {
            buffer.extend_from_slice(piece);
            loop {
                match codec.decode(&mut buffer) {
                    Ok(Some(crate::protocols::direct::wire::Frame::Body { body, .. })) => {
                        let _ = Ack::decode(&body);
                    }
                    Ok(Some(_)) => {}
                    Ok(None) => break,
                    Err(_) => break 'feed,
                }
            }
        }
    }
}

/// One state entry: decoded, verified, and applied to a replica.
pub fn state_entry(data: &[u8]) {
    let (mut state, _) = LocalState::open(receiver(), Vec::new());
    if let Ok(entry) = Entry::decode(data) {
        let _ = entry.verify();
        let _ = entry.json();
        let _ = state.ingest(entry, NOW_MS);
    }
}

/// A gossip batch: decoded, its entries decoded and merged as one batch.
pub fn state_batch(data: &[u8]) {
    let Ok(list) = decode_batch(data) else { return };
    let entries: Vec<Entry> = list.iter().filter_map(|bytes| Entry::decode(bytes).ok()).collect();
    let (mut state, _) = LocalState::open(receiver(), Vec::new());
    let ingested = state.ingest_all(entries, NOW_MS);
    let _ = state.take_purged();
    let _ = ingested.winners.len();
}

/// State sync: requests and responses as the codec decodes them, and
/// reconciliation messages answered and stepped.
pub fn state_sync(data: &[u8]) {
    let Some((which, data)) = data.split_first() else { return };
    match which % 4 {
        0 => {
            let _ = ciborium::from_reader::<SyncRequest, _>(data);
        }
        1 => {
            let _ = ciborium::from_reader::<SyncResponse, _>(data);
        }
        2 => {
            let (replica, ns) = small_replica();
            let _ = reconcile::respond(replica.replica(), &ns, data);
            let _ = reconcile::Responder::new(2).respond(replica.replica(), &ns, data);
        }
        _ => {
            let (replica, ns) = small_replica();
            if let Ok((mut initiator, _)) = Initiator::start(replica.replica(), &ns) {
                let _ = initiator.step(data);
            }
        }
    }
}

fn small_replica() -> (LocalState, String) {
    let owner = sender();
    let ns = owner.peer_id().to_base58();
    let entries: Vec<Entry> = (0..20u64)
        .filter_map(|i| {
            Entry::sign(&owner, &ns, &format!("k{i}"), Some(&json!(i)), (NOW_MS - 1000 + i) << 16).ok()
        })
        .collect();
    (LocalState::open(receiver(), entries).0, ns)
}

/// An envelope with an end-to-end sealed body (handshake and ciphertext),
/// opened as a live direct message and as held mail.
pub fn e2e(data: &[u8]) {
    let Ok(env) = Envelope::decode(data) else { return };
    let (from, to) = (sender(), receiver());
    let mut e2e = E2e::new(to, Level::L1);
    let mut live = env.clone();
    let _ = e2e.open(&from.peer_id(), &mut live);
    let mut held = env;
    let _ = e2e.open_once(&from.peer_id(), &mut held);
}

/// The mailbox: e2e requests and responses (deposits, mail, keys) and a
/// deposit's checks at a holder.
pub fn mailbox(data: &[u8]) {
    let Some((which, data)) = data.split_first() else { return };
    match which % 3 {
        0 => {
            if let Ok(E2eRequest::Deposit { frame }) = ciborium::from_reader::<E2eRequest, _>(data) {
                let holder = PeerId::from_bytes(&[0, 2, 8, 1]).unwrap_or(PeerId::random());
                let _ = crate::protocols::sessions::holder::check_deposit(
                    &Limits::default(),
                    &holder,
                    &sender().peer_id(),
                    &frame,
                    NOW_MS,
                );
            }
        }
        1 => {
            let _ = ciborium::from_reader::<E2eResponse, _>(data);
        }
        _ => {
            let _ = crate::protocols::sessions::holder::check_deposit(
                &Limits::default(),
                &receiver().peer_id(),
                &sender().peer_id(),
                data,
                NOW_MS,
            );
        }
    }
}

/// Private networks: join and leave, presence announcements, invite
/// tokens and device certificates.
pub fn networks(data: &[u8]) {
    let Some((which, data)) = data.split_first() else { return };
    match which % 5 {
        0 => {
            if let Ok(NetRequest::Join { token, cert }) = ciborium::from_reader::<NetRequest, _>(data) {
                let _ = Invite::verify(&token);
                if let Some(cert) = cert {
                    let _ = cert.verify();
                }
            }
        }
        1 => {
            let _ = ciborium::from_reader::<NetResponse, _>(data);
        }
        2 => {
            let _ = Presence::decode(&presence_topic("0123456789abcdef"), data);
        }
        3 => {
            if let Ok(invite) = Invite::verify(&String::from_utf8_lossy(data)) {
                let _ = invite.check_time(NOW_MS);
            }
        }
        _ => {
            if let Ok(cert) = DeviceCert::from_token(&String::from_utf8_lossy(data)) {
                let _ = cert.verify();
            }
        }
    }
}

/// Jobs: run requests and their answers, the answer's vectors unpacked
/// and checked.
pub fn jobs(data: &[u8]) {
    let Some((which, data)) = data.split_first() else { return };
    if which % 2 == 0 {
        let _ = ciborium::from_reader::<JobRequest, _>(data);
    } else if let Ok(JobResponse::Done { vectors, dims, .. }) = ciborium::from_reader::<JobResponse, _>(data)
    {
        let count = vectors.len() / 4 / (dims as usize).max(1);
        let _ = unpack(&vectors, dims, count, 384);
    }
}

/// Values from a namespace's JSON: a sealed private value opened, and a
/// published KEM key read and verified.
pub fn state_values(data: &[u8]) {
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(data) else { return };
    let owner = receiver();
    let ns = owner.peer_id().to_base58();
    let mut private = PrivateValues::new(owner.clone(), Level::L1);
    let _ = private.open(&ns, "k", &value);
    if let Some(key) = crate::protocols::sessions::keys::from_json(&value) {
        let _ = key.verify(&owner.peer_id());
    }
}

/// Credits: receipts and check outcomes read, verified and added to a
/// ledger; the owner's terms read and checked.
pub fn credits(data: &[u8]) {
    let Some((which, data)) = data.split_first() else { return };
    let Ok(text) = std::str::from_utf8(data) else { return };
    let anyone = |_: &str, _: &str| true;
    let mut ledger = Ledger::new(CREDITS_NET, Terms::default());
    match which % 3 {
        0 => {
            if let Ok(receipt) = Receipt::from_token(text) {
                let _ = ledger.add_receipt(receipt.clone(), &anyone);
                let _ = ledger.add_receipt(receipt, &anyone);
                let _ = ledger.balances();
            }
        }
        1 => {
            if let Ok(check) = CheckOutcome::from_token(text, 0.1) {
                let devices: Vec<String> =
                    check.answers.iter().map(|a| a.work.worker_device.clone()).collect();
                let _ = ledger.add_check(check, &anyone);
                for d in devices {
                    let _ = ledger.trust(&d).excluded();
                }
            }
        }
        _ => {
            if let Ok(terms) = serde_json::from_str::<Terms>(text) {
                let _ = terms.check();
            }
        }
    }
}

const CREDITS_NET: &str = "0123456789abcdef";

fn credit_work(requester: &Identity, worker: &Identity, chunk: u32, result: &[u8]) -> Work {
    Work {
        network: CREDITS_NET.into(),
        job: ByteBuf::from(vec![7; 16]),
        chunk,
        requester: requester.peer_id().to_base58(),
        requester_device: requester.peer_id().to_base58(),
        vrf_key: ByteBuf::from(vrf::public_key(requester).to_vec()),
        worker: worker.peer_id().to_base58(),
        worker_device: worker.peer_id().to_base58(),
        inputs: 2,
        tokens: 20,
        credits: 20,
        result: ByteBuf::from(result_hash(result).to_vec()),
        at_ms: NOW_MS,
    }
}

/// Real encodings of every kind of input, by target name.
pub fn seeds() -> Vec<(&'static str, Vec<u8>)> {
    let (from, to) = (sender(), receiver());
    let (pf, pt) = (from.peer_id(), to.peer_id());
    let mut out: Vec<(&'static str, Vec<u8>)> = Vec::new();

    let mut plain = Envelope::new(MsgType::Thought, pt.to_base58(), 5, 60)
        .with_payload(vec![1, 2, 3, 4])
        .with_content("hello");
    plain.from = pf.to_base58();
    plain.timestamp = NOW_MS;
    out.push(("envelope", plain.encode()));

    // Sealed: with a handshake (a first message) at each level.
    for level in [Level::L1, Level::L3] {
        let mut a = E2e::new(from.clone(), level);
        let key = SignedKemKey::new(&to, level);
        if a.learn_key(pt, key).is_ok() {
            let mut sealed = plain.clone();
            if a.seal(&pt, &mut sealed).is_ok() {
                out.push(("e2e", sealed.encode()));
                out.push(("envelope", sealed.encode()));
                out.push((
                    "mailbox",
                    [vec![0], cbor(&E2eRequest::Deposit { frame: ByteBuf::from(sealed.encode()) })].concat(),
                ));
                let held =
                    HeldFrame { author: ByteBuf::from(pf.to_bytes()), frame: ByteBuf::from(sealed.encode()) };
                out.push(("mailbox", [vec![0], cbor(&E2eRequest::Mail { held: vec![held] })].concat()));
            }
        }
    }
    out.push((
        "mailbox",
        [vec![1], cbor(&E2eResponse::Taken { accepted: 1, rejected: 0, later: vec![2] })].concat(),
    ));
    out.push((
        "mailbox",
        [vec![1], cbor(&E2eResponse::KemKey(Some(SignedKemKey::new(&to, Level::L3))))].concat(),
    ));

    // Direct frames: a request then an acknowledgement.
    let frame = |seq: u64, body: &[u8]| {
        let mut buf = unsigned_varint::encode::u64_buffer();
        let mut out = unsigned_varint::encode::u64(seq, &mut buf).to_vec();
        out.extend_from_slice(unsigned_varint::encode::u64(body.len() as u64, &mut buf));
        out.extend_from_slice(body);
        out
    };
    let ack = Ack { id: plain.id.clone(), rejected: None }.encode();
    out.push(("direct_frames", [vec![7], frame(1, &plain.encode()), frame(2, &ack)].concat()));

    // State: entries, a batch, sync messages.
    let ns = pf.to_base58();
    let entries: Vec<Entry> = [
        ("name", Some(json!("John"))),
        ("config", Some(json!({"theme": "dark", "size": 14}))),
        ("gone", None),
        (&format!("_acl/{pt}") as &str, Some(json!(true))),
    ]
    .iter()
    .enumerate()
    .filter_map(|(i, (key, value))| {
        Entry::sign(&from, &ns, key, value.as_ref(), (NOW_MS + i as u64) << 16).ok()
    })
    .collect();
    for entry in &entries {
        out.push(("state_entry", entry.encode()));
    }
    let encoded: Vec<ByteBuf> = entries.iter().map(|e| ByteBuf::from(e.encode())).collect();
    out.push(("state_batch", encode_batch(&encoded, 0)));
    let (replica, small_ns) = small_replica();
    let ids: Vec<ByteBuf> =
        replica.replica().sync_items(&small_ns).iter().map(|(_, id)| ByteBuf::from(id.to_vec())).collect();
    let requests = [
        SyncRequest::Namespaces,
        SyncRequest::Fetch { ns: small_ns.clone(), ids: ids.clone() },
        SyncRequest::Push { entries: encoded.clone() },
        SyncRequest::Replicate { ns: ns.clone() },
    ];
    for request in &requests {
        out.push(("state_sync", [vec![0], cbor(request)].concat()));
    }
    let responses = [
        SyncResponse::Namespaces(vec![(ns.clone(), ByteBuf::from(vec![0; 16]))]),
        SyncResponse::Entries(encoded),
        SyncResponse::Pushed { accepted: 3, rejected: 1 },
        SyncResponse::Refused("no".into()),
    ];
    for response in &responses {
        out.push(("state_sync", [vec![1], cbor(response)].concat()));
    }
    if let Ok((_, first)) = Initiator::start(LocalState::open(to.clone(), Vec::new()).0.replica(), &small_ns)
    {
        out.push(("state_sync", [vec![2], first.clone()].concat()));
        if let Ok(answer) = reconcile::respond(replica.replica(), &small_ns, &first) {
            out.push(("state_sync", [vec![3], answer].concat()));
        }
    }

    // Networks.
    let invite = Invite {
        network: "0123456789abcdef".into(),
        name: "lab".into(),
        owner: pf.to_base58(),
        addrs: vec!["/ip4/127.0.0.1/tcp/4001".into()],
        nonce: "00ff".into(),
        uses: 3,
        issued_ms: NOW_MS,
        expires_ms: NOW_MS + 3_600_000,
        member_for_ms: None,
    };
    if let Ok(token) = invite.sign(&from) {
        let cert = DeviceCert::issue(&to, &pf, "0123456789abcdef", NOW_MS + 3_600_000).ok();
        if let Some(cert) = &cert {
            out.push(("networks", [vec![4], cert.to_token().into_bytes()].concat()));
        }
        out.push(("networks", [vec![0], cbor(&NetRequest::Join { token: token.clone(), cert })].concat()));
        out.push(("networks", [vec![3], token.into_bytes()].concat()));
    }
    out.push((
        "networks",
        [vec![0], cbor(&NetRequest::Leave { network: "0123456789abcdef".into() })].concat(),
    ));
    let joined =
        NetResponse::Joined { network: "0123456789abcdef".into(), name: "lab".into(), person: ns.clone() };
    out.push(("networks", [vec![1], cbor(&joined)].concat()));
    let presence = Presence {
        network: "0123456789abcdef".into(),
        person: ns.clone(),
        at_ms: NOW_MS,
        offer: None,
        queue: 0,
        addrs: vec!["/ip4/127.0.0.1/tcp/4001".into()],
    };
    out.push(("networks", [vec![2], presence.encode()].concat()));

    // Jobs.
    let run = Run {
        job: ByteBuf::from(vec![7; 16]),
        chunk: 0,
        network: "0123456789abcdef".into(),
        person: ns.clone(),
        kind: "embed".into(),
        model: "all-MiniLM-L6-v2".into(),
        inputs: vec!["a sentence".into(), "another".into()],
        deadline_ms: NOW_MS + 60_000,
        vrf_key: ByteBuf::from(vrf::public_key(&from).to_vec()),
    };
    out.push(("jobs", [vec![0], cbor(&JobRequest::Run(run))].concat()));
    let mut unit = vec![0.0f32; 384];
    unit[0] = 1.0;
    let (vectors, dims) = pack(&[unit.clone(), unit]);
    out.push((
        "jobs",
        [
            vec![1],
            cbor(&JobResponse::Done {
                vectors,
                dims,
                tokens: 9,
                micros: 1200,
                credits: 9,
                at_ms: NOW_MS,
                claim: ByteBuf::from(vec![0; 64]),
            }),
        ]
        .concat(),
    ));
    out.push(("jobs", [vec![1], cbor(&JobResponse::Busy { queue: 3 })].concat()));

    // Values in a namespace: a sealed private value, a published KEM key.
    let mut private = PrivateValues::new(to.clone(), Level::L1);
    if let Ok(sealed) = private.seal(&to.peer_id().to_base58(), "k", &json!({"pin": 1234})) {
        out.push(("state_values", sealed.to_string().into_bytes()));
    }
    let key = crate::protocols::sessions::keys::to_json(&SignedKemKey::new(&to, Level::L3));
    out.push(("state_values", key.to_string().into_bytes()));

    // Credits: a receipt, a check outcome, terms.
    let work = credit_work(&from, &to, 0, b"vectors");
    if let Ok(sig) = work.claim(&to)
        && let Ok(receipt) = Receipt::countersign(work, sig, &from)
    {
        out.push(("credits", [vec![0], receipt.to_token().into_bytes()].concat()));
        out.push(("jobs", [vec![0], cbor(&JobRequest::Receipts(vec![receipt.to_token()]))].concat()));
    }
    let draw = vrf::draw(&from, CREDITS_NET, &[7; 16]);
    let third = Identity::from_seed([3; 32]);
    let answers: Vec<Answer> = [&to, &third]
        .iter()
        .filter_map(|w| {
            let work = credit_work(&from, w, 0, b"vectors");
            let sig = work.claim(w).ok()?;
            Some(Answer { work, worker_sig: ByteBuf::from(sig) })
        })
        .collect();
    let check = CheckOutcome {
        network: CREDITS_NET.into(),
        job: ByteBuf::from(vec![7; 16]),
        chunk: 0,
        requester_device: pf.to_base58(),
        vrf_output: ByteBuf::from(draw.output.to_vec()),
        vrf_proof: ByteBuf::from(draw.proof.to_vec()),
        rate: 1.0,
        answers,
        rejected: None,
        signature: ByteBuf::new(),
    };
    if let Ok(check) = check.sign(&from) {
        out.push(("credits", [vec![1], check.to_token().into_bytes()].concat()));
    }
    out.push(("credits", [vec![2], serde_json::to_vec(&Terms::default()).unwrap_or_default()].concat()));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    type Target = (&'static str, fn(&[u8]));

    /// Every seed runs through its target, and every target has seeds.
    #[test]
    fn seeds_run_through_their_targets() {
        let targets: [Target; 11] = [
            ("envelope", envelope),
            ("direct_frames", direct_frames),
            ("state_entry", state_entry),
            ("state_batch", state_batch),
            ("state_sync", state_sync),
            ("e2e", e2e),
            ("mailbox", mailbox),
            ("networks", networks),
            ("jobs", jobs),
            ("state_values", state_values),
            ("credits", credits),
        ];
        let seeds = seeds();
        for (name, target) in targets {
            let mine: Vec<&Vec<u8>> = seeds.iter().filter(|(n, _)| *n == name).map(|(_, s)| s).collect();
            assert!(!mine.is_empty(), "no seeds for {name}");
            for seed in mine {
                target(seed);
            }
        }
        assert!(seeds.iter().all(|(name, _)| targets.iter().any(|(t, _)| t == name)));
    }
}
