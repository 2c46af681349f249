//! Out of the drivers: each action a driver asks for, carried out on the
//! swarm, the stores or the application's event stream.

use libp2p::{PeerId, gossipsub};

use super::{E2eChannel, EventLoop, SyncChannel};
use crate::{
    MeshEvent,
    net::behaviour::topic_score_params,
    platform::Instant,
    protocols::{connections, outbox, pubsub, replication, replication::wire::STATE_TOPIC, sessions},
};

impl EventLoop {
    pub(super) fn on_connections_action(&mut self, action: connections::Action) {
        use connections::Action;
        let swarm = &mut self.swarm;
        match action {
            Action::Dial(opts) => {
                let id = opts.connection_id();
                if let Err(e) = swarm.dial(opts) {
                    self.connections.on_dial_error(id, e.to_string(), Instant::now());
                }
            }
            Action::Reserve { relay, circuit } => {
                let listener = swarm.listen_on(circuit).map_err(|e| e.to_string());
                self.connections.on_reservation(relay, listener);
            }
            Action::RemoveListener(id) => {
                swarm.remove_listener(id);
            }
            Action::Close(id) => {
                swarm.close_connection(id);
            }
            Action::KadAddress { peer, addr } => {
                swarm.behaviour_mut().kad.add_address(&peer, addr);
            }
            Action::Lookup(peer) => {
                swarm.behaviour_mut().kad.get_closest_peers(peer);
            }
            Action::RandomWalk => {
                swarm.behaviour_mut().kad.get_closest_peers(PeerId::random());
            }
            Action::KadBootstrap => {
                let _ = swarm.behaviour_mut().kad.bootstrap();
            }
            Action::AddExternal(addr) => swarm.add_external_address(addr),
            Action::RemoveExternal(addr) => swarm.remove_external_address(&addr),
            Action::Connected { peer, address } => {
                self.metrics.set_peers(self.connections.count());
                self.replication.on_peer_up(peer);
                self.sessions.on_peer_up(peer);
                self.emit(MeshEvent::PeerConnected { peer, address });
            }
            Action::Disconnected { peer } => {
                self.metrics.set_peers(self.connections.count());
                self.replication.on_peer_down(&peer);
                self.sessions.on_peer_down(&peer);
                self.leave_unused_topics();
                self.emit(MeshEvent::PeerDisconnected { peer });
            }
            Action::Listening(addr) => self.emit(MeshEvent::NewListenAddr(addr)),
            Action::Expired(addr) => self.emit(MeshEvent::ExpiredListenAddr(addr)),
        }
    }

    pub(super) fn on_pubsub_action(&mut self, action: pubsub::Action) {
        let gossip = &mut self.swarm.behaviour_mut().gossipsub;
        match action {
            pubsub::Action::Join(topic) => {
                let ident = gossipsub::IdentTopic::new(topic);
                if let Err(e) = gossip.subscribe(&ident) {
                    tracing::warn!("cannot join topic {ident}: {e}");
                } else if let Err(e) = gossip.set_topic_params(ident, topic_score_params()) {
                    tracing::warn!("topic scoring not set: {e}");
                }
            }
            pubsub::Action::Leave(topic) => {
                gossip.unsubscribe(&gossipsub::IdentTopic::new(topic));
            }
        }
    }

    pub(super) fn on_outbox_action(&mut self, action: outbox::Action) {
        match action {
            outbox::Action::Transmit { peer, id, frame } => {
                let via = self.connections.circuit_addrs(peer);
                self.swarm.behaviour_mut().direct.send_request(&peer, id, frame, via);
            }
            outbox::Action::Undeliverable(undelivered) => {
                let holders = self.connections.native_peers(&undelivered.peer);
                self.sessions.deposit(undelivered, holders);
            }
            outbox::Action::Publish { topic, outbound, reply, deadline } => {
                self.publish(topic, outbound, reply, Some(deadline))
            }
        }
    }

    pub(super) fn on_sessions_action(&mut self, action: sessions::Action<E2eChannel>) {
        match action {
            sessions::Action::Request { peer, ask, request, via_relays } => {
                let via = if via_relays { self.connections.circuit_addrs(peer) } else { Vec::new() };
                let e2e = &mut self.swarm.behaviour_mut().e2e;
                let id = if via.is_empty() {
                    e2e.send_request(&peer, request)
                } else {
                    e2e.send_request_with_addresses(&peer, request, via)
                };
                self.e2e_asks.insert(id, ask);
            }
            sessions::Action::Respond { channel, response } => {
                let _ = self.swarm.behaviour_mut().e2e.send_response(channel, response);
            }
            sessions::Action::Deliver(message) => self.deliver(message),
            sessions::Action::Send { peer, queued } => {
                self.outbox.submit(peer, queued, Instant::now(), &mut self.sessions)
            }
            sessions::Action::PublishKey { key, value } => {
                self.replication.write_own(&key, value, Instant::now())
            }
            sessions::Action::StoreMail { changes, held } => {
                if let Some(held) = self.persist.mail(changes, held) {
                    self.sessions.on_mail_stored(vec![held], Ok(()));
                }
            }
        }
    }

    pub(super) fn on_replication_action(&mut self, action: replication::Action<SyncChannel>) {
        match action {
            replication::Action::Request { peer, ask, request } => {
                let id = self.swarm.behaviour_mut().state_sync.send_request(&peer, request);
                self.sync_asks.insert(id, ask);
            }
            replication::Action::Respond { channel, response } => {
                let _ = self.swarm.behaviour_mut().state_sync.send_response(channel, response);
            }
            replication::Action::Gossip(data) => {
                let topic = gossipsub::IdentTopic::new(STATE_TOPIC);
                // No peer yet is fine: reconciliation brings them up to date.
                if let Err(e) = self.swarm.behaviour_mut().state_gossip.publish(topic, data) {
                    tracing::debug!("state entries not gossiped now: {e}");
                }
            }
            replication::Action::Changed { namespace, key, value } => {
                self.emit(MeshEvent::StateChanged { namespace, key, value })
            }
            replication::Action::Persist { entries, ack } => self.persist.entries(entries, ack),
        }
    }
}
