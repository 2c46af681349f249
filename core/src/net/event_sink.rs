//! The application's event stream, from the event loop's side. The stream
//! is bounded: when the application falls behind, events are not queued
//! without end, nor dropped without a trace. What could not be queued is
//! summed up, and a [`MeshEvent::Lagged`] saying what was missed (which
//! namespaces to re-read, how many messages) goes out as soon as there is
//! room, before anything newer.

use std::collections::BTreeSet;

use tokio::sync::mpsc;

use crate::MeshEvent;

/// The sending side of the event stream, with what it could not send.
pub(crate) struct EventSink {
    events: mpsc::Sender<MeshEvent>,
    /// Namespaces with changes not reported (bounded by those held).
    namespaces: BTreeSet<String>,
    messages: u64,
    other: u64,
}

impl EventSink {
    pub(crate) fn new(events: mpsc::Sender<MeshEvent>) -> Self {
        Self { events, namespaces: BTreeSet::new(), messages: 0, other: 0 }
    }

    /// Room left in the stream (0: the next event would be missed).
    pub(crate) fn room(&self) -> usize {
        self.events.capacity()
    }

    /// Queues `event`; when the stream is full it is counted instead (and
    /// `false` returned).
    pub(crate) fn emit(&mut self, event: MeshEvent) -> bool {
        if !self.flush() {
            self.missed(&event);
            return false;
        }
        match self.events.try_send(event) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(event)) => {
                self.missed(&event);
                false
            }
            // Nobody listens: nothing to tell.
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        }
    }

    /// Sends the summary of what was missed, if anything was and there is
    /// room; returns whether nothing is left to tell.
    pub(crate) fn flush(&mut self) -> bool {
        if self.namespaces.is_empty() && self.messages == 0 && self.other == 0 {
            return true;
        }
        let lagged = MeshEvent::Lagged {
            namespaces: self.namespaces.iter().cloned().collect(),
            messages: self.messages,
            other: self.other,
        };
        match self.events.try_send(lagged) {
            Ok(()) | Err(mpsc::error::TrySendError::Closed(_)) => {
                tracing::debug!(
                    namespaces = self.namespaces.len(),
                    messages = self.messages,
                    other = self.other,
                    "the application fell behind; told it what it missed"
                );
                self.namespaces.clear();
                self.messages = 0;
                self.other = 0;
                true
            }
            Err(mpsc::error::TrySendError::Full(_)) => false,
        }
    }

    fn missed(&mut self, event: &MeshEvent) {
        match event {
            MeshEvent::StateChanged { namespace, .. } => {
                if !self.namespaces.contains(namespace) {
                    self.namespaces.insert(namespace.clone());
                }
            }
            MeshEvent::Message(_) => self.messages += 1,
            MeshEvent::Lagged { namespaces, messages, other } => {
                self.namespaces.extend(namespaces.iter().cloned());
                self.messages += messages;
                self.other += other;
            }
            _ => self.other += 1,
        }
    }
}

#[cfg(test)]
mod tests {
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use super::*;

    fn change(ns: &str, key: &str) -> MeshEvent {
        MeshEvent::StateChanged { namespace: ns.into(), key: key.into(), value: None }
    }

    #[test]
    fn what_does_not_fit_is_summed_up_and_told_before_anything_newer() {
        let (tx, mut rx) = mpsc::channel(2);
        let mut sink = EventSink::new(tx);
        assert!(sink.emit(change("a", "1")));
        assert!(sink.emit(change("a", "2")));
        // Full: these are missed, and counted.
        assert!(!sink.emit(change("a", "3")));
        assert!(!sink.emit(change("b", "1")));
        assert!(!sink.emit(MeshEvent::PeerDisconnected { peer: libp2p::PeerId::random() }));
        assert!(!sink.flush(), "no room for the summary yet");
        // The application reads one: the summary goes first, then new
        // events as room allows.
        assert!(matches!(rx.try_recv(), Ok(MeshEvent::StateChanged { key, .. }) if key == "1"));
        assert!(!sink.emit(change("c", "1")), "the summary takes the room");
        assert!(matches!(rx.try_recv(), Ok(MeshEvent::StateChanged { key, .. }) if key == "2"));
        match rx.try_recv() {
            Ok(MeshEvent::Lagged { namespaces, messages, other }) => {
                assert_eq!(namespaces, ["a", "b"]);
                assert_eq!((messages, other), (0, 1));
            }
            other => panic!("expected the summary, got {other:?}"),
        }
        // `c` missed the room the summary took: it is in the next summary.
        assert!(sink.emit(change("d", "1")));
        match rx.try_recv() {
            Ok(MeshEvent::Lagged { namespaces, .. }) => assert_eq!(namespaces, ["c"]),
            other => panic!("expected the second summary, got {other:?}"),
        }
        assert!(matches!(rx.try_recv(), Ok(MeshEvent::StateChanged { namespace, .. }) if namespace == "d"));
        assert!(sink.flush());
    }
}
