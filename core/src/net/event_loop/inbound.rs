//! Into the drivers: each command from a handle and each swarm event
//! becomes a call on the driver it concerns.

use std::collections::HashMap;

use libp2p::{
    PeerId, gossipsub, identify,
    kad::{self, QueryResult},
    ping, relay, request_response,
    swarm::SwarmEvent,
};
use tokio::sync::oneshot;

use super::EventLoop;
use crate::{
    MeshError, Status,
    messaging::Rejection,
    metrics::Route,
    net::{
        Command,
        behaviour::{BehaviourEvent, KAD_PROTOCOL},
    },
    platform::{self, Instant},
    protocols::{
        AskId, connections,
        direct::{self, Ack, DirectRequest},
        networks::wire::PRESENCE_PREFIX,
        outbox::{Body, Outbound, PUBLISH_GRACE, Queued},
        pubsub::Verdict,
        replication::{self, wire::STATE_TOPIC},
    },
};

/// A request-response event, with libp2p's request IDs turned back into
/// the asking driver's.
enum Exchange<Req, Resp> {
    Request { peer: PeerId, request: Req, channel: request_response::ResponseChannel<Resp> },
    Response { ask: AskId, response: Resp },
    Failed { ask: AskId, error: String },
}

fn answer_to<Req, Resp>(
    event: request_response::Event<Req, Resp>,
    asks: &mut HashMap<request_response::OutboundRequestId, AskId>,
) -> Option<Exchange<Req, Resp>> {
    use request_response::{Event, Message};
    match event {
        Event::Message { peer, message: Message::Request { request, channel, .. }, .. } => {
            Some(Exchange::Request { peer, request, channel })
        }
        Event::Message { message: Message::Response { request_id, response }, .. } => {
            asks.remove(&request_id).map(|ask| Exchange::Response { ask, response })
        }
        Event::OutboundFailure { request_id, error, peer, .. } => {
            // Peers that do not speak the protocol (other libp2p nodes) land here too.
            tracing::debug!(%peer, "request failed: {error}");
            asks.remove(&request_id).map(|ask| Exchange::Failed { ask, error: error.to_string() })
        }
        Event::InboundFailure { peer, error, .. } => {
            tracing::debug!(%peer, "inbound request failed: {error}");
            None
        }
        Event::ResponseSent { .. } => None,
    }
}

impl EventLoop {
    // ---- commands -------------------------------------------------------

    /// Serves a command; returns the reply channel when it asks to shut down.
    pub(super) fn on_command(&mut self, command: Command) -> Option<oneshot::Sender<()>> {
        match command {
            Command::Listen { addr, reply } => match self.swarm.listen_on(addr.clone()) {
                Ok(id) => self.connections.on_listen_started(id, addr, reply),
                Err(e) => {
                    let reason = match e.to_string() {
                        text if text.is_empty() => format!("{e:?}"),
                        text => text,
                    };
                    let _ = reply.send(Err(MeshError::Listen { addr, reason }));
                }
            },
            Command::Dial { addr, reply } => self.connections.dial_user(addr, reply),
            Command::Join { addr, reply } => self.connections.join(addr, reply),
            Command::FindPeer { peer, reply } => self.connections.find(peer, reply),
            Command::Peers { reply } => {
                let sessions = &self.sessions;
                let _ = reply.send(self.connections.peer_infos(|peer| sessions.session_level(peer)));
            }
            Command::Status { reply } => {
                let _ = reply.send(self.status());
            }
            Command::Subscribe { topic, reply } => {
                let _ = reply.send(self.pubsub.subscribe(topic));
            }
            Command::Unsubscribe { topic, reply } => {
                let in_use = self.topic_has_peers(&topic);
                let _ = reply.send(self.pubsub.unsubscribe(&topic, in_use));
            }
            Command::TopicPeers { topic, reply } => {
                let hash = gossipsub::IdentTopic::new(topic).hash();
                let gossip = &self.swarm.behaviour().gossipsub;
                let _ = reply
                    .send(gossip.all_peers().filter(|(_, t)| t.contains(&&hash)).map(|(p, _)| *p).collect());
            }
            Command::Publish { topic, outbound, reply } => {
                let now = Instant::now();
                let deadline = self.connections.has_new_connection(now).then(|| now + PUBLISH_GRACE);
                self.publish(topic, outbound, reply, deadline);
            }
            Command::SendDirect { peer, outbound, reply } => {
                if peer == *self.swarm.local_peer_id() {
                    let _ = reply.send(Err(MeshError::Delivery { peer, reason: "that is this node".into() }));
                } else if let Some(queued) =
                    self.sessions.ready(peer, Queued { outbound, reply }, self.replication.state())
                {
                    self.outbox.submit(peer, queued, Instant::now(), &mut self.sessions);
                }
            }
            Command::StateWrite { namespace, key, value, mode, private, reply } => {
                let write = replication::Write { namespace, key, value, mode, private };
                self.replication.write(write, reply, Instant::now())
            }
            Command::StateGet { namespace, key, reply } => {
                let _ = reply.send(self.replication.get(namespace, &key));
            }
            Command::StateView { namespace, reveal, reply } => {
                let _ = reply.send(self.replication.view(namespace, reveal));
            }
            Command::HeldMail { reply } => {
                let _ = reply.send(self.sessions.held_frames());
            }
            Command::Shutdown { reply } => {
                tracing::info!("shutting down");
                return Some(reply);
            }
            Command::Pool(command) => self.on_pool_command(command),
        }
        None
    }

    /// Publishes on a user topic; with a `deadline`, a topic without
    /// subscribers waits for one until then.
    pub(super) fn publish(
        &mut self,
        topic: String,
        outbound: Outbound,
        reply: oneshot::Sender<Result<(), MeshError>>,
        deadline: Option<Instant>,
    ) {
        if let Err(e) = self.pubsub.check_publish(&topic) {
            let _ = reply.send(Err(e));
            return;
        }
        let now = Instant::now();
        let waits = deadline.is_some_and(|d| now < d);
        // Copied only when it may have to wait.
        let (data, kept) = match outbound.body {
            Body::Encoded(ref bytes) if waits => (bytes.clone(), Some(outbound)),
            Body::Encoded(bytes) => (bytes, None),
            Body::ToSeal(_) => {
                let reason = "a broadcast cannot be end-to-end encrypted".to_owned();
                let _ = reply.send(Err(MeshError::Publish { topic, reason }));
                return;
            }
        };
        let result = self.swarm.behaviour_mut().gossipsub.publish(gossipsub::IdentTopic::new(&topic), data);
        let answer = match result {
            Ok(_) => {
                self.metrics.message_out(Route::Gossip);
                Ok(())
            }
            Err(gossipsub::PublishError::NoPeersSubscribedToTopic) => match (kept, deadline) {
                (Some(outbound), Some(deadline)) => {
                    self.outbox.wait_for_subscribers(topic, outbound, reply, deadline);
                    return;
                }
                _ => Err(MeshError::NoSubscribers(topic)),
            },
            Err(gossipsub::PublishError::Duplicate) => {
                Err(MeshError::Publish { topic, reason: "this message was already published".into() })
            }
            Err(e) => Err(MeshError::Publish { topic, reason: e.to_string() }),
        };
        let _ = reply.send(answer);
    }

    pub(super) fn topic_has_peers(&self, topic: &str) -> bool {
        let hash = gossipsub::IdentTopic::new(topic).hash();
        self.swarm.behaviour().gossipsub.all_peers().any(|(_, topics)| topics.contains(&&hash))
    }

    fn status(&mut self) -> Status {
        Status {
            peer_id: self.swarm.local_peer_id().to_base58(),
            listen_addrs: self.connections.listen_addrs().iter().map(|a| a.to_string()).collect(),
            external_addrs: self.swarm.external_addresses().map(|a| a.to_string()).collect(),
            connected_peers: self.connections.count(),
            max_peers: self.config.max_peers,
            topics: self.pubsub.topics(),
            hub_topics: self.pubsub.hub_topics(),
            dht_server: self.config.kad_server,
            relay_server: self.config.relay_server,
            quantum_resistant: self.config.quantum_resistant,
            kem_level: self.config.kem_level.number(),
            mailbox: self.config.mailbox,
            limits: self.config.limits_report(),
            banned_peers: self.swarm.behaviour_mut().peer_limit.banned_count(),
            metrics: self.metrics.snapshot(),
        }
    }

    // ---- swarm events ---------------------------------------------------

    pub(super) fn on_swarm_event(&mut self, event: SwarmEvent<BehaviourEvent>) {
        self.recorder.record(&event);
        let event = match event {
            SwarmEvent::Behaviour(event) => return self.on_behaviour_event(event),
            other => other,
        };
        let now = Instant::now();
        match event {
            SwarmEvent::NewListenAddr { listener_id, address } => {
                self.connections.on_new_listen_addr(listener_id, address)
            }
            SwarmEvent::ExpiredListenAddr { address, .. } => self.connections.on_expired_listen_addr(address),
            SwarmEvent::ListenerClosed { listener_id, reason, addresses } => {
                // A closed listener's addresses are gone too (libp2p reports
                // them here, not as expired addresses): a reservation on a
                // relay that died must not stay advertised.
                for address in addresses {
                    self.connections.on_expired_listen_addr(address);
                }
                self.connections.on_listener_closed(listener_id, reason.err().map(|e| e.to_string()))
            }
            SwarmEvent::ListenerError { listener_id, error } => {
                self.connections.on_listener_error(listener_id, error.to_string())
            }
            SwarmEvent::ConnectionEstablished {
                peer_id, connection_id, endpoint, num_established, ..
            } => {
                let first = num_established.get() == 1;
                self.connections.on_established(peer_id, connection_id, &endpoint, first, now)
            }
            SwarmEvent::ConnectionClosed { peer_id, connection_id, num_established, cause, .. } => {
                let cause = cause.map(|c| c.to_string());
                self.connections.on_closed(peer_id, connection_id, num_established == 0, cause, now)
            }
            SwarmEvent::OutgoingConnectionError { connection_id, peer_id, error } => {
                self.connections.on_outgoing_error(connection_id, peer_id, error.to_string(), now)
            }
            SwarmEvent::IncomingConnectionError { send_back_addr, error, .. } => {
                tracing::debug!(%send_back_addr, "incoming connection failed: {error}");
            }
            SwarmEvent::ExternalAddrConfirmed { address } => {
                tracing::info!("external address confirmed: {address}");
            }
            _ => {}
        }
    }

    fn on_behaviour_event(&mut self, event: BehaviourEvent) {
        match event {
            BehaviourEvent::Gossipsub(event) => {
                self.recorder.record(&event);
                self.on_gossip(event);
            }
            BehaviourEvent::StateGossip(event) => self.on_state_gossip(event),
            BehaviourEvent::Direct(event) => self.on_direct(event),
            BehaviourEvent::StateSync(event) => match answer_to(event, &mut self.sync_asks) {
                Some(Exchange::Request { peer, request, channel }) => {
                    self.replication.on_request(peer, request, channel, Instant::now())
                }
                Some(Exchange::Response { ask, response }) => self.replication.on_response(ask, response),
                Some(Exchange::Failed { ask, error }) => self.replication.on_failure(ask, &error),
                None => {}
            },
            BehaviourEvent::E2e(event) => match answer_to(event, &mut self.e2e_asks) {
                Some(Exchange::Request { peer, request, channel }) => {
                    let (state, room) = (self.replication.state(), self.events.room());
                    self.sessions.on_request(peer, request, channel, state, room)
                }
                Some(Exchange::Response { ask, response }) => {
                    self.sessions.on_response(ask, response, Instant::now())
                }
                Some(Exchange::Failed { ask, error }) => self.sessions.on_failure(ask, error, Instant::now()),
                None => {}
            },
            BehaviourEvent::Networks(event) => match answer_to(event, &mut self.net_asks) {
                Some(Exchange::Request { peer, request, channel }) => {
                    self.on_network_request(peer, request, channel)
                }
                Some(Exchange::Response { ask, response }) => {
                    self.networks.on_response(ask, response, platform::now_ms())
                }
                Some(Exchange::Failed { ask, error }) => self.networks.on_failure(ask, &error),
                None => {}
            },
            BehaviourEvent::Jobs(event) => match answer_to(event, &mut self.job_asks) {
                Some(Exchange::Request { peer, request, channel }) => {
                    self.on_job_request(peer, request, channel)
                }
                Some(Exchange::Response { ask, response }) => self.on_job_response(ask, response),
                Some(Exchange::Failed { ask, error }) => self.on_job_failure(ask, &error),
                None => {}
            },
            BehaviourEvent::Identify(event) => {
                self.recorder.record(&event);
                if let identify::Event::Received { peer_id, info, .. } = event {
                    let identified = connections::Identified {
                        kad_server: info.protocols.contains(&KAD_PROTOCOL),
                        relay: info.protocols.contains(&relay::HOP_PROTOCOL_NAME),
                        agent: info.agent_version,
                        listen_addrs: info.listen_addrs,
                    };
                    self.connections.on_identify(peer_id, identified);
                }
            }
            BehaviourEvent::Kad(event) => {
                self.recorder.record(&event);
                self.on_kad(event);
            }
            BehaviourEvent::Ping(event) => {
                self.recorder.record(&event);
                let outcome = match event.result {
                    Ok(rtt) => connections::Ping::Answered(rtt),
                    Err(ping::Failure::Unsupported) => connections::Ping::Unsupported,
                    Err(e) => connections::Ping::Failed(e.to_string()),
                };
                self.connections.on_ping(event.peer, event.connection, outcome, Instant::now());
            }
            BehaviourEvent::Mdns(event) => {
                for (peer, addr) in platform::mdns_discovered(event) {
                    tracing::debug!(%peer, %addr, "found on the local network");
                    self.swarm.behaviour_mut().kad.add_address(&peer, addr.clone());
                    self.connections.on_discovered(peer, vec![addr]);
                }
            }
            BehaviourEvent::RelayClient(event) => match event {
                relay::client::Event::ReservationReqAccepted { relay_peer_id, renewal: false, .. } => {
                    tracing::info!(relay = %relay_peer_id, "relay reservation accepted");
                }
                other => tracing::debug!("relay client: {other:?}"),
            },
            BehaviourEvent::RelayServer(event) => {
                tracing::debug!("relay: {event:?}");
                let (reservations, circuits) = platform::relay_change(&event);
                self.metrics.relay_changed(reservations, circuits);
            }
            BehaviourEvent::Autonat(event) => {
                if let Some(status) = platform::autonat_status(event) {
                    tracing::info!("reachability: {status}");
                }
            }
            BehaviourEvent::Dcutr(event) => tracing::debug!("dcutr: {event:?}"),
            BehaviourEvent::Limits(never) | BehaviourEvent::PeerLimit(never) => match never {},
        }
    }

    fn on_gossip(&mut self, event: gossipsub::Event) {
        match event {
            gossipsub::Event::Subscribed { topic, .. } => {
                self.pubsub.on_peer_subscribed(topic.as_str());
                self.outbox.on_subscribed(topic.as_str());
            }
            gossipsub::Event::Unsubscribed { .. } => self.leave_unused_topics(),
            gossipsub::Event::Message { propagation_source, message_id, message }
                if message.topic.as_str().starts_with(PRESENCE_PREFIX) =>
            {
                let acceptance = self.on_presence(message.source, message.topic.as_str(), &message.data);
                if acceptance == gossipsub::MessageAcceptance::Reject {
                    self.ban(propagation_source, "invalid presence gossip");
                }
                let gossip = &mut self.swarm.behaviour_mut().gossipsub;
                gossip.report_message_validation_result(&message_id, &propagation_source, acceptance);
            }
            gossipsub::Event::Message { propagation_source, message_id, message } => {
                let topic = message.topic.as_str();
                let verdict =
                    self.pubsub.on_message(message.source, topic, &message.data, platform::now_ms());
                let acceptance = match verdict {
                    Verdict::Accept(deliver) => {
                        if let Some(message) = deliver {
                            self.deliver(*message);
                        }
                        gossipsub::MessageAcceptance::Accept
                    }
                    Verdict::Ignore(rejection) => {
                        self.refused(message.source, &rejection);
                        gossipsub::MessageAcceptance::Ignore
                    }
                    Verdict::Reject(rejection) => {
                        self.refused(message.source, &rejection);
                        self.ban(
                            propagation_source,
                            &format!("invalid gossip ({})", rejection.reason.as_str()),
                        );
                        gossipsub::MessageAcceptance::Reject
                    }
                };
                let gossip = &mut self.swarm.behaviour_mut().gossipsub;
                gossip.report_message_validation_result(&message_id, &propagation_source, acceptance);
            }
            _ => {}
        }
    }

    /// Counts and logs a refused broadcast.
    fn refused(&mut self, from: Option<PeerId>, rejection: &Rejection) {
        self.metrics.dropped(rejection.reason);
        tracing::debug!(?from, "dropped message: {rejection}");
    }

    pub(super) fn leave_unused_topics(&mut self) {
        let gossip = &self.swarm.behaviour().gossipsub;
        self.pubsub.leave_unused(|topic| {
            let hash = gossipsub::IdentTopic::new(topic).hash();
            gossip.all_peers().any(|(_, topics)| topics.contains(&&hash))
        });
    }

    fn on_state_gossip(&mut self, event: gossipsub::Event) {
        match event {
            gossipsub::Event::Subscribed { peer_id, topic } if topic.as_str() == STATE_TOPIC => {
                self.replication.on_subscribed(peer_id)
            }
            gossipsub::Event::Unsubscribed { peer_id, .. } => self.replication.on_unsubscribed(&peer_id),
            gossipsub::Event::Message { propagation_source, message_id, message } => {
                let acceptance = self.replication.on_gossip(propagation_source, &message.data);
                if acceptance == gossipsub::MessageAcceptance::Reject {
                    self.ban(propagation_source, "invalid state gossip");
                }
                let gossip = &mut self.swarm.behaviour_mut().state_gossip;
                gossip.report_message_validation_result(&message_id, &propagation_source, acceptance);
            }
            gossipsub::Event::SlowPeer { peer_id, failed_messages } => {
                tracing::debug!(peer = %peer_id, ?failed_messages, "state gossip dropped");
                self.replication.on_gossip_dropped(peer_id);
            }
            _ => {}
        }
    }

    fn on_direct(&mut self, event: direct::Event) {
        match event {
            direct::Event::Request { peer, request, channel } => {
                let accepted = match request {
                    DirectRequest::Oversize(len) => Err(self.sessions.oversize(&peer, len)),
                    DirectRequest::Frame(bytes) => {
                        self.sessions.accept_direct(&peer, &bytes, self.events.room())
                    }
                };
                let ack = match accepted {
                    Ok(message) => {
                        let id = message.envelope.id.clone();
                        self.deliver(message);
                        Ack { id, rejected: None }
                    }
                    Err(rejection) => {
                        Ack { id: String::new(), rejected: Some(rejection.reason.as_str().to_owned()) }
                    }
                };
                self.swarm.behaviour_mut().direct.send_response(channel, ack);
            }
            direct::Event::Response { request_id, response } => {
                self.outbox.on_ack(request_id, response, Instant::now(), &mut self.sessions)
            }
            direct::Event::OutboundFailure { request_id, error } => {
                self.outbox.on_failure(request_id, error, Instant::now(), &mut self.sessions)
            }
        }
    }

    fn on_kad(&mut self, event: kad::Event) {
        match event {
            kad::Event::RoutingUpdated { peer, addresses, is_new_peer: true, .. } => {
                self.connections.on_discovered(peer, addresses.into_vec());
            }
            kad::Event::OutboundQueryProgressed {
                result: QueryResult::GetClosestPeers(result),
                step,
                ..
            } => {
                let (key, found) = match result {
                    Ok(ok) => (ok.key, ok.peers),
                    Err(kad::GetClosestPeersError::Timeout { key, peers }) => (key, peers),
                };
                let Ok(target) = PeerId::from_bytes(&key) else { return };
                let addrs = found.into_iter().filter(|p| p.peer_id == target).flat_map(|p| p.addrs).collect();
                self.connections.on_lookup(target, addrs, step.last);
            }
            _ => {}
        }
    }
}
