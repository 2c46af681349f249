//! Requests to each peer, bounded: at most a few outstanding per peer, the
//! rest waiting their turn, each answer or failure letting the next one
//! go. Each outstanding request is known by its [`AskId`] and remembers
//! what it was for.

use std::collections::{HashMap, VecDeque};

use libp2p::PeerId;

use crate::protocols::AskId;

struct Flow<R, S> {
    in_flight: usize,
    waiting: VecDeque<(R, S)>,
}

/// A request that may go now, with its ID.
pub(super) type Ready<R> = (AskId, R);

/// What finished: the peer, what the request was for, and the next
/// request to that peer that may go now.
pub(super) type Done<R, S> = (PeerId, S, Option<Ready<R>>);

/// Outstanding and waiting requests `R`, each with what it is for, `S`.
pub(super) struct Flows<R, S> {
    limit: usize,
    peers: HashMap<PeerId, Flow<R, S>>,
    asks: HashMap<AskId, (PeerId, S)>,
    next: u64,
}

impl<R, S> Flows<R, S> {
    /// At most `limit` requests outstanding per peer.
    pub(super) fn new(limit: usize) -> Self {
        Self { limit, peers: HashMap::new(), asks: HashMap::new(), next: 0 }
    }

    /// A request to `peer`: handed back with its ID if it may go now,
    /// kept for later otherwise.
    pub(super) fn send(&mut self, peer: PeerId, request: R, step: S) -> Option<Ready<R>> {
        let flow = self.peers.entry(peer).or_insert_with(|| Flow { in_flight: 0, waiting: VecDeque::new() });
        if flow.in_flight >= self.limit {
            flow.waiting.push_back((request, step));
            return None;
        }
        flow.in_flight += 1;
        Some(self.dispatch(peer, request, step))
    }

    fn dispatch(&mut self, peer: PeerId, request: R, step: S) -> Ready<R> {
        let ask = AskId(self.next);
        self.next += 1;
        self.asks.insert(ask, (peer, step));
        (ask, request)
    }

    /// Request `ask` was answered or failed: its peer and purpose, and the
    /// next request to that peer that may go now, if one waits. `None` for
    /// a request this does not know (answered already).
    pub(super) fn finish(&mut self, ask: AskId) -> Option<Done<R, S>> {
        let (peer, step) = self.asks.remove(&ask)?;
        let flow = self.peers.get_mut(&peer)?;
        flow.in_flight = flow.in_flight.saturating_sub(1);
        let next = match flow.waiting.pop_front() {
            Some((request, next_step)) => {
                flow.in_flight += 1;
                Some(self.dispatch(peer, request, next_step))
            }
            None => {
                if flow.in_flight == 0 {
                    self.peers.remove(&peer);
                }
                None
            }
        };
        Some((peer, step, next))
    }

    /// `peer` is gone: what waited for it is dropped (what is outstanding
    /// fails on its own).
    pub(super) fn peer_gone(&mut self, peer: &PeerId) {
        if let Some(flow) = self.peers.get_mut(peer) {
            flow.waiting.clear();
        }
    }
}

#[cfg(test)]
mod tests {
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use super::*;

    #[test]
    fn a_peer_gets_a_bounded_number_at_once_and_the_rest_in_order() {
        let (a, b) = (PeerId::random(), PeerId::random());
        let mut flows = Flows::new(2);
        let sent: Vec<_> = (0..5).filter_map(|i| flows.send(a, i, i * 10)).collect();
        assert_eq!(sent.iter().map(|(_, r)| *r).collect::<Vec<_>>(), [0, 1], "two at once");
        assert!(flows.send(b, 9, 90).is_some(), "other peers are not held back");
        let (peer, step, next) = flows.finish(sent[0].0).unwrap();
        assert_eq!((peer, step, next.map(|(_, r)| r)), (a, 0, Some(2)), "the first waiting one goes");
        assert!(flows.finish(sent[0].0).is_none(), "answered twice: unknown");
        flows.peer_gone(&a);
        let (_, _, next) = flows.finish(sent[1].0).unwrap();
        assert!(next.is_none(), "what waited for a gone peer was dropped");
    }
}
