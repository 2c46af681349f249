//! The event loop: the only owner of the `Swarm`. It turns swarm events
//! and handle commands into calls on the protocol drivers ([`inbound`]),
//! and carries out what the drivers ask for: dial, send, answer, store,
//! tell the application ([`outbound`]). It holds no protocol rules of its
//! own; this file is the loop itself, its state and its timers.

mod inbound;
mod outbound;
mod pool;

use std::{collections::HashMap, sync::Arc, task::Poll, time::Duration};

use futures::{FutureExt, StreamExt, future::FusedFuture, stream::FuturesUnordered};
use libp2p::{PeerId, Swarm, gossipsub, request_response, swarm::SwarmEvent};
use tokio::sync::mpsc;

use super::{
    BATCH, Command, TICK,
    behaviour::{Behaviour, BehaviourEvent},
    event_sink::EventSink,
    persist::{Persistence, Stored},
};
use crate::{
    InboundMessage, MeshConfig, MeshEvent,
    compute::{Executor, TaskResult},
    messaging::{Held, RejectReason},
    metrics::Metrics,
    platform::{self, Instant},
    protocols::{
        AskId,
        connections::Connections,
        jobs::{self, Jobs, TaskId},
        networks::{self, Networks},
        outbox::Outbox,
        pubsub::Pubsub,
        replication::{self, Replication, wire::STATE_TOPIC},
        sessions::{self, Sessions},
    },
    state::{Entry, StateError},
    store::{MailStore, Store},
};

type SyncChannel = request_response::ResponseChannel<replication::wire::SyncResponse>;
type E2eChannel = request_response::ResponseChannel<sessions::wire::E2eResponse>;
type NetChannel = request_response::ResponseChannel<networks::wire::NetResponse>;
type JobChannel = request_response::ResponseChannel<jobs::wire::JobResponse>;

/// What `build` hands the event loop.
pub(crate) struct Parts {
    pub swarm: Swarm<Behaviour>,
    pub commands: mpsc::Receiver<Command>,
    pub events: mpsc::Sender<MeshEvent>,
    pub metrics: Arc<Metrics>,
    pub recorder: platform::EventRecorder,
    pub stored: Vec<Entry>,
    pub stored_mail: Vec<(PeerId, Held)>,
    pub store: Box<dyn Store>,
    pub mail: Box<dyn MailStore>,
}

// A transient value that lives for one loop iteration: its size is no
// concern, and boxing would allocate once per swarm event.
#[allow(clippy::large_enum_variant)]
enum Wake {
    Swarm(SwarmEvent<BehaviourEvent>),
    Command(Option<Command>),
    Stored(Stored<E2eChannel>),
    Executed(TaskId, TaskResult),
    Tick,
    Linger,
}

/// Drives one node. Obtain it from [`crate::Mesh::build`] and spawn
/// [`EventLoop::run`].
pub struct EventLoop {
    swarm: Swarm<Behaviour>,
    config: MeshConfig,
    commands: mpsc::Receiver<Command>,
    events: EventSink,
    metrics: Arc<Metrics>,
    recorder: platform::EventRecorder,
    connections: Connections,
    pubsub: Pubsub,
    outbox: Outbox,
    replication: Replication<SyncChannel>,
    sessions: Sessions<E2eChannel>,
    networks: Networks<NetChannel>,
    jobs: Jobs<JobChannel>,
    persist: Persistence<E2eChannel>,
    /// Runs tasks of jobs, when this node offers compute.
    executor: Option<Box<dyn Executor>>,
    /// Tasks the executor is running.
    running: FuturesUnordered<pool::Running>,
    /// libp2p's IDs of the drivers' outstanding requests.
    sync_asks: HashMap<request_response::OutboundRequestId, AskId>,
    e2e_asks: HashMap<request_response::OutboundRequestId, AskId>,
    net_asks: HashMap<request_response::OutboundRequestId, AskId>,
    job_asks: HashMap<request_response::OutboundRequestId, AskId>,
    /// Mail the store held, restored when the loop starts.
    stored_mail: Vec<(PeerId, Held)>,
}

fn random_u64() -> u64 {
    let mut bytes = [0u8; 8];
    // Jitter only: a failing random source degrades to no jitter.
    let _ = getrandom::fill(&mut bytes);
    u64::from_le_bytes(bytes)
}

impl EventLoop {
    pub(crate) fn new(config: MeshConfig, parts: Parts) -> Self {
        let now = Instant::now();
        let local = *parts.swarm.local_peer_id();
        let metrics = parts.metrics;
        let connections = Connections::new(local, (&config).into(), &config.bootstrap, now, random_u64());
        let (hub, limits) = (config.gossip_hub, config.limits.clone());
        let pubsub = Pubsub::new(hub, config.hub_topics, limits, metrics.clone());
        let outbox = Outbox::new(config.direct_window, config.direct_queue, metrics.clone());
        let identity = config.identity.clone();
        let (replication, skipped) =
            Replication::new(identity.clone(), parts.stored, (&config).into(), metrics.clone(), now);
        if skipped > 0 {
            tracing::warn!("{skipped} stored state entries no longer verify and were skipped");
        }
        let networks = Networks::new(identity.clone(), now);
        #[allow(unused_mut)]
        let mut jobs = Jobs::new(identity.clone(), metrics.clone());
        #[cfg(feature = "liar")]
        jobs.set_lie_rate(config.lie_rate);
        let sessions = Sessions::new(identity, (&config).into(), metrics.clone());
        Self {
            swarm: parts.swarm,
            commands: parts.commands,
            events: EventSink::new(parts.events),
            recorder: parts.recorder,
            metrics,
            connections,
            pubsub,
            outbox,
            replication,
            sessions,
            networks,
            jobs,
            persist: Persistence::new(parts.store, parts.mail),
            executor: None,
            running: FuturesUnordered::new(),
            sync_asks: HashMap::new(),
            e2e_asks: HashMap::new(),
            net_asks: HashMap::new(),
            job_asks: HashMap::new(),
            stored_mail: parts.stored_mail,
            config,
        }
    }

    /// Runs the node until [`crate::MeshHandle::shutdown`] is called or every
    /// handle is dropped.
    pub async fn run(mut self) {
        let topic = gossipsub::IdentTopic::new(STATE_TOPIC);
        if let Err(e) = self.swarm.behaviour_mut().state_gossip.subscribe(&topic) {
            tracing::warn!("cannot join the state topic: {e}");
        }
        self.sessions.start(std::mem::take(&mut self.stored_mail), platform::now_ms());
        self.networks.start(self.replication.state());
        self.connections.on_tick(Instant::now());
        self.drain();
        let mut tick = platform::sleep(TICK).fuse();
        let mut linger = futures::future::Fuse::terminated();
        let shutdown = loop {
            let now = Instant::now();
            if linger.is_terminated()
                && let Some(due) = self.replication.flush_due()
            {
                linger = platform::sleep(due.saturating_duration_since(now)).fuse();
            }
            self.persist.start(now);
            // Stores behind: callers wait (the command channel is bounded).
            let backlogged = self.persist.backlogged();
            let step = futures::select! {
                event = self.swarm.select_next_some() => Wake::Swarm(event),
                command = futures::future::poll_fn(|cx| {
                    if backlogged { Poll::Pending } else { self.commands.poll_recv(cx) }
                }).fuse() => Wake::Command(command),
                stored = futures::future::poll_fn(|cx| self.persist.poll(cx, now)).fuse() => {
                    Wake::Stored(stored)
                }
                (id, result) = self.running.select_next_some() => Wake::Executed(id, result),
                _ = tick => Wake::Tick,
                _ = linger => Wake::Linger,
            };
            match step {
                Wake::Swarm(event) => {
                    self.on_swarm_event(event);
                    // Under load many events are ready at once: take them
                    // here rather than one per trip through `select!`.
                    for _ in 0..BATCH {
                        self.drain();
                        let Some(Some(event)) = self.swarm.next().now_or_never() else { break };
                        self.on_swarm_event(event);
                    }
                }
                Wake::Command(None) => break None,
                Wake::Command(Some(command)) => {
                    let mut stop = self.on_command(command);
                    for _ in 0..BATCH {
                        self.drain();
                        if stop.is_some() || self.persist.backlogged() {
                            break;
                        }
                        let Ok(command) = self.commands.try_recv() else { break };
                        stop = self.on_command(command);
                    }
                    if stop.is_some() {
                        break stop;
                    }
                }
                Wake::Stored(stored) => self.on_stored(stored),
                Wake::Executed(id, result) => self.on_executed(id, result),
                Wake::Tick => {
                    tick = platform::sleep(TICK).fuse();
                    self.on_tick();
                }
                Wake::Linger => self.replication.flush(),
            }
            self.drain();
        };
        // Entries written in the last moments go out, and what is being
        // stored is finished, before the connections close.
        self.replication.flush();
        self.drain();
        self.finish_storing().await;
        // Close every listener and connection before saying we are done, so
        // the caller may reuse the addresses at once.
        for id in self.connections.take_listeners() {
            self.swarm.remove_listener(id);
        }
        drop(self);
        if let Some(reply) = shutdown {
            let _ = reply.send(());
        }
    }

    /// Waits (a few seconds at most) for what is staged to be stored.
    async fn finish_storing(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while self.persist.busy() && Instant::now() < deadline {
            self.persist.start(Instant::now());
            let mut pause = platform::sleep(Duration::from_millis(50)).fuse();
            let stored = futures::select! {
                stored = futures::future::poll_fn(|cx| self.persist.poll(cx, Instant::now())).fuse() => Some(stored),
                _ = pause => None,
            };
            if let Some(stored) = stored {
                self.on_stored(stored);
                self.drain();
            }
        }
    }

    fn emit(&mut self, event: MeshEvent) {
        self.events.emit(event);
    }

    /// Hands a validated message to the application (a broadcast one that
    /// does not fit is counted, and reported in the next `Lagged` event).
    fn deliver(&mut self, message: InboundMessage) {
        if !self.events.emit(MeshEvent::Message(message)) {
            self.metrics.dropped(RejectReason::QueueFull);
        }
    }

    fn on_tick(&mut self) {
        let now = Instant::now();
        self.events.flush();
        self.connections.on_tick(now);
        self.outbox.on_tick(now);
        self.replication.on_tick(now);
        self.sessions.on_tick(now);
        self.on_pool_tick();
    }

    /// A peer that sent gossip we rejected as invalid (on any topic, the
    /// state topic's included): gossipsub's score graylists it (an invalid
    /// message weighs -100, the threshold is -80); here it is also
    /// disconnected and kept out for `ban_duration`. (Its score does not
    /// decay while it is away; back after the ban, it is graylisted a
    /// second or two longer, until the score recovers.)
    fn ban(&mut self, peer: PeerId, why: &str) {
        if self.swarm.behaviour_mut().peer_limit.is_banned(&peer) {
            return;
        }
        tracing::warn!(%peer, "banned for {:?}: {why}", self.config.ban_duration);
        let until = Instant::now() + self.config.ban_duration;
        self.swarm.behaviour_mut().peer_limit.ban(peer, until);
        self.metrics.peer_banned();
        let _ = self.swarm.disconnect_peer_id(peer);
    }

    fn on_stored(&mut self, stored: Stored<E2eChannel>) {
        match stored {
            Stored::State(done) => {
                let result = done.failed.as_ref().map_or(Ok(()), |(e, _)| Err(e.clone()));
                for waiter in done.waiters {
                    let _ = waiter.send(result.clone().map_err(StateError::Store));
                }
                if let Some((e, keys)) = done.failed {
                    tracing::warn!("state not saved (retrying): {e}");
                    self.replication.on_not_stored(keys);
                }
            }
            Stored::Mail(done) => {
                let result = done.failed.map_or(Ok(()), |(e, _)| Err(e.to_string()));
                self.sessions.on_mail_stored(done.waiters, result);
            }
        }
    }

    // ---- actions --------------------------------------------------------

    /// Carries out what the drivers asked for, until none asks for more.
    fn drain(&mut self) {
        loop {
            let mut any = false;
            while let Some(action) = self.connections.poll_action() {
                any = true;
                self.on_connections_action(action);
            }
            while let Some(action) = self.pubsub.poll_action() {
                any = true;
                self.on_pubsub_action(action);
            }
            while let Some(action) = self.outbox.poll_action() {
                any = true;
                self.on_outbox_action(action);
            }
            while let Some(action) = self.sessions.poll_action() {
                any = true;
                self.on_sessions_action(action);
            }
            while let Some(action) = self.replication.poll_action() {
                any = true;
                self.on_replication_action(action);
            }
            while let Some(action) = self.networks.poll_action() {
                any = true;
                self.on_networks_action(action);
            }
            while let Some(action) = self.jobs.poll_action() {
                any = true;
                self.on_jobs_action(action);
            }
            if !any {
                return;
            }
        }
    }
}
