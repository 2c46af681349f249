//! Range-based set reconciliation of one namespace between two replicas,
//! with the `negentropy` protocol: the initiator learns which entry IDs it
//! has that the other lacks and which it lacks, in a few round trips whose
//! size grows with the difference, not with the namespace.
//!
//! No I/O here: the caller carries the messages (request-response on the
//! network, a function call in tests) and then moves the entries.

use negentropy::{Id, Negentropy, NegentropyStorageVector};

use sha2::{Digest, Sha256};

use super::{Entry, Replica};

/// Largest reconciliation message either side sends (bytes).
pub const FRAME_LIMIT: u64 = 60_000;

/// Why a reconciliation step failed.
#[derive(Debug, thiserror::Error)]
#[error("reconciliation failed: {0}")]
pub struct SyncError(String);

fn storage(replica: &Replica, namespace: &str) -> Result<NegentropyStorageVector, SyncError> {
    let items = replica.sync_items(namespace);
    let mut storage = NegentropyStorageVector::with_capacity(items.len());
    for (timestamp, id) in items {
        storage.insert(timestamp, Id::from_byte_array(id)).map_err(|e| SyncError(e.to_string()))?;
    }
    storage.seal().map_err(|e| SyncError(e.to_string()))?;
    Ok(storage)
}

/// The side that starts a reconciliation and learns the differences.
pub struct Initiator {
    inner: Negentropy<'static, NegentropyStorageVector>,
    /// IDs this side has and the other lacks.
    pub have: Vec<[u8; 32]>,
    /// IDs the other side has and this side lacks.
    pub need: Vec<[u8; 32]>,
}

impl Initiator {
    /// Starts reconciling `namespace`; returns the first message to send.
    pub fn start(replica: &Replica, namespace: &str) -> Result<(Initiator, Vec<u8>), SyncError> {
        let mut inner = Negentropy::owned(storage(replica, namespace)?, FRAME_LIMIT)
            .map_err(|e| SyncError(e.to_string()))?;
        let first = inner.initiate().map_err(|e| SyncError(e.to_string()))?;
        Ok((Initiator { inner, have: Vec::new(), need: Vec::new() }, first))
    }

    /// Takes the responder's answer; returns the next message to send, or
    /// `None` once `have` and `need` are complete.
    pub fn step(&mut self, answer: &[u8]) -> Result<Option<Vec<u8>>, SyncError> {
        let (mut have, mut need) = (Vec::new(), Vec::new());
        let next = self
            .inner
            .reconcile_with_ids(answer, &mut have, &mut need)
            .map_err(|e| SyncError(e.to_string()))?;
        self.have.extend(have.iter().map(|id| id.to_bytes()));
        self.need.extend(need.iter().map(|id| id.to_bytes()));
        Ok(next)
    }
}

/// Answers one message of an initiator (the responder keeps no state
/// between messages).
pub fn respond(replica: &Replica, namespace: &str, message: &[u8]) -> Result<Vec<u8>, SyncError> {
    let mut inner =
        Negentropy::owned(storage(replica, namespace)?, FRAME_LIMIT).map_err(|e| SyncError(e.to_string()))?;
    inner.reconcile(message).map_err(|e| SyncError(e.to_string()))
}

/// The responder's side, with the sorted set of the last few namespaces
/// kept: a peer asking again and again about an unchanged namespace costs
/// a lookup, not a sort of the whole namespace each time.
pub struct Responder {
    /// (namespace, its digest when built, its storage), most recent last.
    cached: std::collections::VecDeque<(String, [u8; 16], NegentropyStorageVector)>,
    capacity: usize,
    /// How many storages were built (for tests and metrics).
    pub builds: u64,
}

impl Responder {
    /// Keeps the storages of up to `capacity` namespaces.
    pub fn new(capacity: usize) -> Self {
        Self { cached: std::collections::VecDeque::new(), capacity: capacity.max(1), builds: 0 }
    }

    /// Answers one message of an initiator about `namespace`.
    pub fn respond(
        &mut self,
        replica: &Replica,
        namespace: &str,
        message: &[u8],
    ) -> Result<Vec<u8>, SyncError> {
        let current = digest(replica, namespace);
        let at = self.cached.iter().position(|(ns, _, _)| ns == namespace);
        let fresh = at.is_some_and(|i| self.cached[i].1 == current);
        if let Some(i) = at {
            let hit = self.cached.remove(i).expect("position is in range");
            if fresh {
                self.cached.push_back(hit);
            }
        }
        if !fresh {
            self.builds += 1;
            let built = storage(replica, namespace)?;
            if self.cached.len() >= self.capacity {
                self.cached.pop_front();
            }
            self.cached.push_back((namespace.to_owned(), current, built));
        }
        let (_, _, storage) = self.cached.back().expect("just pushed");
        let mut inner = Negentropy::borrowed(storage, FRAME_LIMIT).map_err(|e| SyncError(e.to_string()))?;
        inner.reconcile(message).map_err(|e| SyncError(e.to_string()))
    }
}

/// A short digest of a namespace's set of winning entries: equal digests
/// mean equal sets (up to a 2^-128 chance), so two replicas skip
/// reconciling a namespace they already agree on. Like negentropy's own
/// fingerprint: SHA-256 of the sum of the IDs (mod 2^256) and the count.
/// The replica keeps the sum as it merges, so this is constant time.
pub fn digest(replica: &Replica, namespace: &str) -> [u8; 16] {
    let mut hasher = Sha256::new();
    hasher.update(replica.id_sum(namespace));
    hasher.update((replica.len(namespace) as u64).to_le_bytes());
    let hash: [u8; 32] = hasher.finalize().into();
    let mut out = [0; 16];
    out.copy_from_slice(&hash[..16]);
    out
}

/// What one in-process reconciliation moved.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SyncReport {
    /// Reconciliation messages exchanged, both ways.
    pub rounds: usize,
    /// Bytes of reconciliation messages, both ways.
    pub bytes: usize,
    /// Entries copied from `a` to `b`.
    pub sent: usize,
    /// Entries copied from `b` to `a`.
    pub received: usize,
}

/// Reconciles `namespace` between two replicas held in this process, then
/// copies the missing entries both ways (as the network code does after a
/// reconciliation over the wire). Used by tests, the simulation and the
/// benchmark.
pub fn sync_pair(
    a: &mut Replica,
    b: &mut Replica,
    namespace: &str,
    now_ms: u64,
) -> Result<SyncReport, SyncError> {
    let mut report = SyncReport::default();
    let (mut initiator, mut message) = Initiator::start(a, namespace)?;
    loop {
        report.rounds += 1;
        report.bytes += message.len();
        let answer = respond(b, namespace, &message)?;
        report.rounds += 1;
        report.bytes += answer.len();
        match initiator.step(&answer)? {
            Some(next) => message = next,
            None => break,
        }
    }
    let to_b: Vec<Entry> = initiator.have.iter().filter_map(|id| a.by_id(id).cloned()).collect();
    let to_a: Vec<Entry> = initiator.need.iter().filter_map(|id| b.by_id(id).cloned()).collect();
    report.sent = to_b.len();
    report.received = to_a.len();
    let _ = b.apply_all(to_b, Some(now_ms), |_| Ok::<_, ()>(()));
    let _ = a.apply_all(to_a, Some(now_ms), |_| Ok::<_, ()>(()));
    Ok(report)
}

#[cfg(test)]
mod tests {
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use serde_json::json;

    use super::*;
    use crate::Identity;

    const NOW: u64 = 1_700_000_000_000;

    #[test]
    fn two_replicas_that_differ_end_identical() {
        let owner = Identity::from_seed([4; 32]);
        let ns = owner.peer_id().to_base58();
        let (mut a, mut b) = (Replica::new(), Replica::new());
        for i in 0..200u64 {
            let e = Entry::sign(&owner, &ns, &format!("k{i}"), Some(&json!(i)), (NOW - 10_000 + i) << 16)
                .unwrap();
            a.apply(e.clone(), NOW).unwrap();
            if i % 17 != 0 {
                b.apply(e, NOW).unwrap();
            }
        }
        // b holds a later write of a key and one key a lacks.
        let newer = Entry::sign(&owner, &ns, "k1", Some(&json!("newer")), NOW << 16).unwrap();
        b.apply(newer, NOW).unwrap();
        b.apply(Entry::sign(&owner, &ns, "only-b", Some(&json!(true)), NOW << 16).unwrap(), NOW).unwrap();

        let report = sync_pair(&mut a, &mut b, &ns, NOW).unwrap();
        assert_eq!(report.sent, 200 / 17 + 1 + 1, "a's missing keys and a's k1 (which then loses)");
        assert_eq!(report.received, 2);
        assert_eq!(a.sync_items(&ns), b.sync_items(&ns));
        assert_eq!(a.get(&ns, "k1").unwrap().json().unwrap(), Some(json!("newer")));

        let again = sync_pair(&mut a, &mut b, &ns, NOW).unwrap();
        assert_eq!((again.sent, again.received), (0, 0));
        assert_eq!(digest(&a, &ns), digest(&b, &ns), "equal sets, equal digests");
        // The running sum (k1 was replaced in a) is the sum of the winners.
        let mut sum = [0u8; 32];
        for (_, id) in a.sync_items(&ns) {
            let mut carry = 0u16;
            for (acc, byte) in sum.iter_mut().zip(id) {
                let total = u16::from(*acc) + u16::from(byte) + carry;
                *acc = total as u8;
                carry = total >> 8;
            }
        }
        assert_eq!(a.id_sum(&ns), sum);
        b.apply(Entry::sign(&owner, &ns, "k2", Some(&json!(0)), (NOW << 16) + 1).unwrap(), NOW).unwrap();
        assert_ne!(digest(&a, &ns), digest(&b, &ns));
    }

    #[test]
    fn a_responder_sorts_an_unchanged_namespace_once() {
        let owner = Identity::from_seed([4; 32]);
        let ns = owner.peer_id().to_base58();
        let mut replica = Replica::new();
        for i in 0..1_000u64 {
            let e = Entry::sign(&owner, &ns, &format!("k{i}"), Some(&json!(i)), (NOW - 10_000 + i) << 16);
            replica.apply(e.unwrap(), NOW).unwrap();
        }
        let (_, first) = Initiator::start(&Replica::new(), &ns).unwrap();
        let mut responder = Responder::new(4);
        for _ in 0..100 {
            let cached = responder.respond(&replica, &ns, &first).unwrap();
            assert_eq!(cached, respond(&replica, &ns, &first).unwrap());
        }
        assert_eq!(responder.builds, 1, "100 identical questions, one sort");
        let e = Entry::sign(&owner, &ns, "new", Some(&json!(0)), NOW << 16).unwrap();
        replica.apply(e, NOW).unwrap();
        responder.respond(&replica, &ns, &first).unwrap();
        assert_eq!(responder.builds, 2, "a change is seen");
        // Other namespaces take turns within the capacity.
        for other in 0..4 {
            responder.respond(&replica, &format!("other{other}"), &first).unwrap();
        }
        responder.respond(&replica, &ns, &first).unwrap();
        assert_eq!(responder.builds, 7, "the oldest was let go");
    }

    #[test]
    fn garbage_from_a_peer_is_an_error_not_a_panic() {
        let r = Replica::new();
        for bad in [&[][..], &[0x61], &[0x61, 0xff, 0xff, 0xff], &[0x00; 40]] {
            let _ = respond(&r, "ns", bad);
        }
        let (mut init, _) = Initiator::start(&r, "ns").unwrap();
        assert!(init.step(&[0x61, 0x00, 0x00, 0x02, 0xc0, 0x80, 0x80, 0x80, 0x00]).is_err());
    }
}
