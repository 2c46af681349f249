//! Pooled compute in the event loop: the commands of networks and jobs,
//! their protocols' events, their drivers' actions, and the executor's
//! results. Like the rest of the loop it only routes.

use futures::FutureExt;
use libp2p::{PeerId, gossipsub};
use tokio::sync::oneshot;

use super::{EventLoop, JobChannel, NetChannel};
use crate::{
    compute::{TaskResult, WorkerInfo},
    net::PoolCommand,
    platform::{self, Instant},
    protocols::{
        jobs::{self, Roster, TaskId},
        networks::{self, Candidate, Networks},
    },
    state::LocalState,
};

/// What the jobs driver may ask about networks: the networks driver's
/// rules over the current state.
pub(super) struct View<'a> {
    pub networks: &'a Networks<NetChannel>,
    pub state: &'a LocalState,
    pub now: Instant,
    pub now_ms: u64,
}

impl Roster for View<'_> {
    fn authorize(&self, network: &str, device: &PeerId, person: &str) -> Result<(), String> {
        self.networks.authorize(self.state, network, device, person, self.now_ms)
    }

    fn candidates(&self, network: &str, model: &str) -> Vec<Candidate> {
        self.networks.candidates(self.state, network, model, self.now, self.now_ms)
    }

    fn person(&self, network: &str) -> Option<String> {
        self.networks.person(network).map(str::to_owned)
    }

    fn ledger(&self, network: &str) -> crate::credits::ledger::Ledger {
        self.networks.ledger(self.state, network, self.now)
    }
}

/// A task running on the executor.
pub(super) type Running = futures::future::BoxFuture<'static, (TaskId, TaskResult)>;

impl EventLoop {
    fn view(&self) -> View<'_> {
        View {
            networks: &self.networks,
            state: self.replication.state(),
            now: Instant::now(),
            now_ms: platform::now_ms(),
        }
    }

    /// Addresses others may reach this node at, for invites and presence:
    /// relayed ones too (the only ones a browser has).
    fn reachable_addrs(&self) -> Vec<String> {
        let mut addrs: Vec<String> = self.swarm.external_addresses().map(|a| a.to_string()).collect();
        for addr in self.connections.listen_addrs() {
            let text = addr.to_string();
            if !addrs.contains(&text) {
                addrs.push(text);
            }
        }
        addrs.truncate(8);
        addrs
    }

    /// Serves a pooled-compute command.
    pub(super) fn on_pool_command(&mut self, command: PoolCommand) {
        let now_ms = platform::now_ms();
        match command {
            PoolCommand::NetworkCreate { name, reply } => {
                let _ = reply.send(self.networks.create(&name, now_ms));
            }
            PoolCommand::NetworkInvite { network, uses, valid_ms, member_for_ms, reply } => {
                let addrs = self.reachable_addrs();
                let answer = self
                    .networks
                    .resolve(network.as_deref())
                    .and_then(|id| self.networks.invite(&id, uses, valid_ms, member_for_ms, addrs, now_ms));
                let _ = reply.send(answer);
            }
            PoolCommand::NetworkCertify { network, device, valid_ms, reply } => {
                // A network not joined yet is named by its ID.
                let id = network
                    .clone()
                    .filter(|n| !self.networks.is_in(n))
                    .map_or_else(|| self.networks.resolve(network.as_deref()), Ok);
                let _ = reply.send(id.and_then(|id| self.networks.certify(&id, device, valid_ms, now_ms)));
            }
            PoolCommand::NetworkJoin { token, cert, reply } => {
                self.networks.join(&token, cert.as_deref(), now_ms, reply);
            }
            PoolCommand::NetworkLeave { network, reply } => match self.networks.resolve(network.as_deref()) {
                Ok(id) => self.networks.leave(&id, reply),
                Err(e) => drop(reply.send(Err(e))),
            },
            PoolCommand::NetworkRevoke { network, id, reply } => {
                let state = self.replication.state();
                let answer = self
                    .networks
                    .resolve(network.as_deref())
                    .and_then(|net| self.networks.revoke(&net, &id, state, now_ms));
                let _ = reply.send(answer);
            }
            PoolCommand::NetworkMembers { network, reply } => {
                let state = self.replication.state();
                let answer = self
                    .networks
                    .resolve(network.as_deref())
                    .and_then(|id| self.networks.members(state, &id, now_ms));
                let _ = reply.send(answer);
            }
            PoolCommand::Networks { reply } => {
                let _ = reply.send(self.networks.list(self.replication.state(), now_ms));
            }
            PoolCommand::Workers { network, reply } => {
                let answer = match network.as_deref().map(|n| self.networks.resolve(Some(n))).transpose() {
                    Ok(network) => Ok(self.workers(network.as_deref())),
                    Err(e) => Err(e),
                };
                let _ = reply.send(answer);
            }
            PoolCommand::Credits { network, reply } => {
                let answer = self
                    .networks
                    .resolve(network.as_deref())
                    .map(|id| self.networks.credits_info(self.replication.state(), &id, Instant::now()));
                let _ = reply.send(answer);
            }
            PoolCommand::SetTerms { network, terms, reply } => {
                let answer = self.networks.resolve(network.as_deref()).and_then(|id| {
                    let (key, value) = self.networks.terms_write(&id, &terms)?;
                    self.replication.write_internal(&key, Some(value), Instant::now());
                    Ok(self.networks.credits_info(self.replication.state(), &id, Instant::now()))
                });
                let _ = reply.send(answer);
            }
            PoolCommand::Embed { network, model, inputs, reply } => {
                let answer = match self.networks.resolve(network.as_deref()) {
                    Ok(id) => {
                        let view = View {
                            networks: &self.networks,
                            state: self.replication.state(),
                            now: Instant::now(),
                            now_ms,
                        };
                        self.jobs.embed(id, model, inputs, &view, view.now, now_ms)
                    }
                    Err(e) => Err(e),
                };
                let _ = reply.send(answer);
            }
            PoolCommand::Jobs { reply } => {
                let _ = reply.send(self.jobs.list(Instant::now()));
            }
            PoolCommand::Compute { executor, reply } => {
                let offer = executor.as_ref().map(|e| e.offer()).filter(|o| o.threads > 0);
                self.executor = executor.filter(|_| offer.is_some());
                self.jobs.set_threads(offer.as_ref().map_or(0, |o| o.threads as usize));
                self.networks.set_offer(offer.clone(), Instant::now());
                let _ = reply.send(offer);
            }
        }
    }

    /// The workers of a network (or of every network), this node included.
    fn workers(&self, network: Option<&str>) -> Vec<WorkerInfo> {
        let now = Instant::now();
        let mut out = Vec::new();
        if let Some((offer, queue)) = self.networks.own_offer() {
            for (net, person) in self.networks.memberships() {
                if network.is_none_or(|n| n == net) {
                    out.push(WorkerInfo {
                        network: net.to_owned(),
                        device: self.swarm.local_peer_id().to_base58(),
                        person: person.to_owned(),
                        offer: offer.clone(),
                        queue,
                        seen_ms_ago: 0,
                        ms_per_input: None,
                        chunks: 0,
                        local: true,
                        trust: 0.0,
                        checks_agreed: 0,
                        checks_lost: 0,
                        excluded: None,
                    });
                }
            }
        }
        let view = self.view();
        for (net, device, present) in self.networks.present(network) {
            let Some(offer) = &present.offer else { continue };
            if view.authorize(net, device, &present.person).is_err() {
                continue;
            }
            out.push(WorkerInfo {
                network: net.to_owned(),
                device: device.to_base58(),
                person: present.person.clone(),
                offer: offer.clone(),
                queue: present.queue,
                seen_ms_ago: now.saturating_duration_since(present.at).as_millis() as u64,
                ms_per_input: None,
                chunks: 0,
                local: false,
                trust: 0.0,
                checks_agreed: 0,
                checks_lost: 0,
                excluded: None,
            });
        }
        self.jobs.annotate(&mut out, &view);
        out
    }

    pub(super) fn on_pool_tick(&mut self) {
        let (now, now_ms) = (Instant::now(), platform::now_ms());
        let addrs = self.reachable_addrs();
        self.networks.set_queue(self.jobs.queue_len());
        self.networks.on_tick(self.replication.state(), || addrs, now, now_ms);
        let view = View { networks: &self.networks, state: self.replication.state(), now, now_ms };
        self.jobs.on_tick(&view, now);
    }

    /// An announcement on a network's presence topic.
    pub(super) fn on_presence(
        &mut self,
        source: Option<PeerId>,
        topic: &str,
        data: &[u8],
    ) -> gossipsub::MessageAcceptance {
        let state = self.replication.state();
        self.networks.on_presence(source, topic, data, state, Instant::now(), platform::now_ms())
    }

    pub(super) fn on_network_request(
        &mut self,
        peer: PeerId,
        request: networks::wire::NetRequest,
        channel: NetChannel,
    ) {
        let state = self.replication.state();
        self.networks.on_request(peer, request, channel, state, platform::now_ms());
    }

    pub(super) fn on_job_request(
        &mut self,
        peer: PeerId,
        request: jobs::wire::JobRequest,
        channel: JobChannel,
    ) {
        let (now, now_ms) = (Instant::now(), platform::now_ms());
        let view = View { networks: &self.networks, state: self.replication.state(), now, now_ms };
        self.jobs.on_request(peer, request, channel, &view, now, now_ms);
    }

    pub(super) fn on_job_response(
        &mut self,
        ask: crate::protocols::AskId,
        response: jobs::wire::JobResponse,
    ) {
        let (now, now_ms) = (Instant::now(), platform::now_ms());
        let view = View { networks: &self.networks, state: self.replication.state(), now, now_ms };
        self.jobs.on_response(ask, response, &view, now);
    }

    pub(super) fn on_job_failure(&mut self, ask: crate::protocols::AskId, error: &str) {
        let (now, now_ms) = (Instant::now(), platform::now_ms());
        let view = View { networks: &self.networks, state: self.replication.state(), now, now_ms };
        self.jobs.on_failure(ask, error, &view, now);
    }

    /// The executor finished a task.
    pub(super) fn on_executed(&mut self, id: TaskId, result: TaskResult) {
        let (now, now_ms) = (Instant::now(), platform::now_ms());
        let view = View { networks: &self.networks, state: self.replication.state(), now, now_ms };
        self.jobs.on_executed(id, result, &view, now, now_ms);
    }

    pub(super) fn on_networks_action(&mut self, action: networks::Action<NetChannel>) {
        use networks::Action;
        match action {
            Action::Write { key, value } => self.replication.write_internal(&key, value, Instant::now()),
            Action::Want(namespace) => self.replication.want(&namespace),
            Action::JoinTopic(topic) => self.pubsub.join_internal(&topic),
            Action::LeaveTopic(topic) => {
                let in_use = self.topic_has_peers(&topic);
                self.pubsub.leave_internal(&topic, in_use);
            }
            Action::Publish { topic, data } => {
                let gossip = &mut self.swarm.behaviour_mut().gossipsub;
                if let Err(e) = gossip.publish(gossipsub::IdentTopic::new(topic), data) {
                    tracing::trace!("presence not published now: {e}");
                }
            }
            Action::Request { peer, addrs, ask, request } => {
                for addr in addrs {
                    self.swarm.add_peer_address(peer, addr);
                }
                let id = self.swarm.behaviour_mut().networks.send_request(&peer, request);
                self.net_asks.insert(id, ask);
            }
            Action::Respond { channel, response } => {
                let _ = self.swarm.behaviour_mut().networks.send_response(channel, response);
            }
            Action::Addresses { peer, addrs } => {
                for addr in addrs {
                    self.swarm.add_peer_address(peer, addr);
                }
            }
        }
    }

    pub(super) fn on_jobs_action(&mut self, action: jobs::Action<JobChannel>) {
        use jobs::Action;
        match action {
            Action::Request { peer, ask, request } => {
                let via = self.connections.circuit_addrs(peer);
                let behaviour = &mut self.swarm.behaviour_mut().jobs;
                let id = if via.is_empty() {
                    behaviour.send_request(&peer, request)
                } else {
                    behaviour.send_request_with_addresses(&peer, request, via)
                };
                self.job_asks.insert(id, ask);
            }
            Action::Respond { channel, response } => {
                let _ = self.swarm.behaviour_mut().jobs.send_response(channel, response);
            }
            Action::Execute { id, task } => match &self.executor {
                Some(executor) => {
                    let (done, result) = oneshot::channel();
                    executor.run(task, done);
                    let running: Running = async move {
                        (id, result.await.unwrap_or_else(|_| Err("the executor dropped the task".into())))
                    }
                    .boxed();
                    self.running.push(running);
                }
                None => self.on_executed(id, Err("this node offers no compute".into())),
            },
            Action::Unreachable(peer) => self.networks.on_unreachable(&peer),
            Action::Write { key, token } => {
                self.replication.write_internal(&key, Some(serde_json::Value::String(token)), Instant::now());
            }
        }
    }
}
