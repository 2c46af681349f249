//! Running a node: identity from the data directory, the mesh with the
//! native transports, listeners, the HTTP API, event printing, and the
//! prompt (a line editor on a terminal, plain lines when piped).

use std::{
    io::IsTerminal,
    net::IpAddr,
    path::PathBuf,
    sync::{Arc, Mutex},
    time::Duration,
};

use anyhow::{Context, Result, bail};
use futures::StreamExt;
use infermesh_core::{
    Identity, Mesh, MeshConfig, MeshEvent, MeshEvents, MeshHandle, Multiaddr, PeerId, TransportConfig,
    platform::TransportOptions,
};
use tokio::io::AsyncBufReadExt;

use crate::{
    api_pool,
    cli::{Cli, Command, NodeArgs},
    datadir::{self, AddrsFile, DataDir},
    executor::{self, NativeExecutor},
    http, output, pool, repl,
    store_redb::RedbStore,
};

/// Where printed lines go: stdout, or rustyline's external printer so that
/// asynchronous output does not mangle the line being edited.
#[derive(Clone)]
struct Printer(Arc<Mutex<PrintFn>>);

type PrintFn = Box<dyn FnMut(String) + Send>;

impl Printer {
    fn stdout() -> Self {
        Printer(Arc::new(Mutex::new(Box::new(|line| println!("{line}")))))
    }

    fn line(&self, line: impl Into<String>) {
        let mut print = self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        (print)(line.into());
    }
}

/// How the node interacts with its user.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Prompt,
    Headless,
}

/// Runs the command line.
pub async fn run(cli: Cli) -> Result<()> {
    let data_dir = cli.data_dir;
    match cli.command {
        Command::Init { private_key, node } => {
            let dir = data_dir.unwrap_or_else(|| datadir::default_dir(None));
            let data = DataDir::open(&dir)?;
            let identity = init_identity(&data, private_key.as_deref())?;
            start(node, data, identity, true, Mode::Prompt, None).await
        }
        Command::Node { node } => {
            let dir = data_dir.unwrap_or_else(|| datadir::default_dir(None));
            let data = DataDir::open(&dir)?;
            let (identity, created) = data.load_or_create_identity()?;
            if created {
                println!("created a new identity in {}", dir.display());
            }
            start(node, data, identity, true, Mode::Headless, None).await
        }
        Command::Connect { target, node } => {
            let target = parse_target(&target)?;
            let dir = data_dir.unwrap_or_else(|| datadir::default_dir(Some("connect")));
            let data = DataDir::open(&dir)?;
            let (identity, _) = data.load_or_create_identity()?;
            start(node, data, identity, false, Mode::Prompt, Some(target)).await
        }
        Command::Pool(command) => {
            let dir = data_dir.unwrap_or_else(|| datadir::default_dir(None));
            let api = pool::Api::from_data_dir(&dir).map_err(anyhow::Error::msg)?;
            let out = pool::execute(&api, command, &mut pool::ProgressBar::stderr()).await;
            println!("{}", out.map_err(anyhow::Error::msg)?);
            Ok(())
        }
    }
}

/// What `connect` joins through.
#[derive(Debug, Clone)]
enum Target {
    Addr(Multiaddr),
    Peer(PeerId),
}

fn parse_target(text: &str) -> Result<Target> {
    if let Ok(peer) = text.parse::<PeerId>() {
        return Ok(Target::Peer(peer));
    }
    match text.parse::<Multiaddr>() {
        Ok(addr) => Ok(Target::Addr(addr)),
        Err(e) => {
            bail!("'{text}' is neither a node ID (12D3KooW…) nor a multiaddr (/ip4/…/tcp/…/p2p/…): {e}")
        }
    }
}

fn init_identity(data: &DataDir, private_key: Option<&str>) -> Result<Identity> {
    let dir = data.path().display();
    match (data.load_identity()?, private_key) {
        (Some(existing), None) => {
            println!("using the existing identity in {dir} (its private key is not shown again)");
            Ok(existing)
        }
        (Some(existing), Some(key)) => {
            let given = Identity::from_hex(key).context("--private-key")?;
            if given.peer_id() != existing.peer_id() {
                bail!(
                    "{dir} already holds another identity ({}); use a different --data-dir",
                    existing.peer_id()
                );
            }
            Ok(existing)
        }
        (None, Some(key)) => {
            let identity = Identity::from_hex(key).context("--private-key")?;
            data.store_identity(&identity)?;
            println!("stored the given identity in {dir}");
            Ok(identity)
        }
        (None, None) => {
            let identity = Identity::generate()?;
            data.store_identity(&identity)?;
            println!("created a new identity in {dir}");
            println!("private key: {}", identity.to_hex());
            println!(
                "  keep it secret and safe: it is this node, and its data, on any device. It is not shown again."
            );
            Ok(identity)
        }
    }
}

fn listen_addrs(ip: IpAddr, args: &NodeArgs, fixed_defaults: bool) -> Vec<Multiaddr> {
    let ports = args.ports(fixed_defaults);
    let ip = match ip {
        IpAddr::V4(ip) => format!("/ip4/{ip}"),
        IpAddr::V6(ip) => format!("/ip6/{ip}"),
    };
    [
        format!("{ip}/tcp/{}", ports.tcp),
        format!("{ip}/udp/{}/quic-v1", ports.quic),
        format!("{ip}/tcp/{}/ws", ports.ws),
        format!("{ip}/udp/{}/webrtc-direct", ports.webrtc),
    ]
    .into_iter()
    .map(|a| a.parse().expect("well-formed multiaddr"))
    .collect()
}

async fn start(
    args: NodeArgs,
    data: DataDir,
    identity: Identity,
    fixed_defaults: bool,
    mode: Mode,
    target: Option<Target>,
) -> Result<()> {
    let mut config = MeshConfig::server(identity.clone());
    config.transport = TransportConfig::Platform(TransportOptions {
        webrtc_certificate_pem: Some(data.webrtc_certificate()?),
    });
    config.bootstrap = args.bootstrap.clone();
    if let Some(Target::Addr(addr)) = &target {
        config.bootstrap.push(addr.clone());
    }
    config.max_peers = args.max_peers;
    config.mdns = !args.no_mdns;
    config.replication_factor = args.replication_factor;
    config.replica_quota = args.replica_quota;
    config.replicate = args.replica_quota > 0;
    config.quantum_resistant = !args.no_quantum;
    config.kem_level = args.level;
    config.min_kem_level = args.min_level;
    #[cfg(feature = "liar")]
    {
        config.lie_rate = args.lie_rate;
    }
    for (name, value) in &args.limits {
        config.set_limit(name, *value).map_err(|e| anyhow::anyhow!("--limit {name}={value}: {e}"))?;
    }
    config.mailbox = !args.no_mailbox;

    let store = RedbStore::open(&data.path().join("state.redb"))?;
    let (mesh, events, event_loop) =
        Mesh::build_with_stores(config, Box::new(store.clone()), Box::new(store))?;
    let event_loop = tokio::spawn(event_loop.run());
    println!("node ID: {}", identity.peer_id());

    let interactive = mode == Mode::Prompt && std::io::stdin().is_terminal();
    let mut editor = if interactive { Some(rustyline::DefaultEditor::new()?) } else { None };
    let printer = match editor.as_mut().map(|e| e.create_external_printer()) {
        Some(Ok(mut external)) => {
            use rustyline::ExternalPrinter as _;
            Printer(Arc::new(Mutex::new(Box::new(move |line: String| {
                let _ = external.print(format!("{line}\n"));
            }))))
        }
        _ => Printer::stdout(),
    };

    for addr in listen_addrs(args.listen_ip, &args, fixed_defaults) {
        mesh.listen_on(addr.clone()).await.with_context(|| format!("cannot listen on {addr}"))?;
    }
    let model_dir = args.model_dir.clone().unwrap_or_else(executor::default_model_dir);
    if args.compute {
        let threads = args
            .compute_threads
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
        let dir = model_dir.clone();
        let executor = tokio::task::spawn_blocking(move || NativeExecutor::start(&dir, threads)).await??;
        let offer = mesh.offer_compute(Box::new(executor)).await?;
        println!("offering compute: {} on {} thread(s)", offer.models.join(", "), offer.threads);
    }
    let api = match args.ports(fixed_defaults).api {
        Some(port) => {
            let token: Arc<str> = data.api_token()?.into();
            let state = api_pool::PoolState { mesh: mesh.clone(), token: token.clone() };
            let served_models =
                model_dir.join(infermesh_compute::MODEL.weights.name).is_file().then_some(model_dir);
            let pool_routes = api_pool::routes(state, served_models);
            let addr = http::serve(mesh.clone(), token, port, args.www.as_deref(), pool_routes).await?;
            println!(
                "HTTP API on http://{addr} (token in {})",
                data.path().join(datadir::API_TOKEN_FILE).display()
            );
            if args.www.is_some() {
                println!("demo page on http://{addr}/");
            }
            Some(format!("http://{addr}"))
        }
        None => None,
    };
    let data = Arc::new(data);
    tokio::spawn(print_events(events, mesh.clone(), printer.clone(), data.clone(), identity.peer_id(), api));

    match &target {
        Some(Target::Addr(addr)) => println!("joining the mesh through {addr}"),
        Some(Target::Peer(peer)) => {
            let (mesh, printer, peer) = (mesh.clone(), printer.clone(), *peer);
            tokio::spawn(async move { find_and_connect(mesh, printer, peer).await });
        }
        None => {}
    }

    match (mode, editor) {
        (Mode::Headless, _) => wait_for_signal().await,
        (Mode::Prompt, Some(editor)) => {
            println!("type 'help' for commands");
            prompt_terminal(&mesh, editor).await
        }
        (Mode::Prompt, None) => prompt_lines(&mesh).await,
    }

    if tokio::time::timeout(Duration::from_secs(5), mesh.shutdown()).await.is_err() {
        tracing::warn!("the node did not stop within 5 s");
    }
    let _ = tokio::time::timeout(Duration::from_secs(5), event_loop).await;
    Ok(())
}

/// Looks a node up (DHT, mDNS) until it is connected, for up to a minute.
async fn find_and_connect(mesh: MeshHandle, printer: Printer, peer: PeerId) {
    printer.line(format!("looking for {peer}…"));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let mut last_error = String::new();
    while tokio::time::Instant::now() < deadline {
        match mesh.connect_peer(peer).await {
            Ok(()) => return,
            Err(e) => last_error = e.to_string(),
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    printer.line(format!("error: could not reach {peer}: {last_error}"));
}

async fn print_events(
    mut events: MeshEvents,
    mesh: MeshHandle,
    printer: Printer,
    data: Arc<DataDir>,
    peer_id: PeerId,
    api: Option<String>,
) {
    let mut addrs: Vec<String> = Vec::new();
    while let Some(event) = events.next().await {
        match event {
            MeshEvent::Message(m) => printer.line(output::message(&m)),
            MeshEvent::PeerConnected { peer, .. } => printer.line(format!("connected {peer}")),
            MeshEvent::PeerDisconnected { peer } => printer.line(format!("disconnected {peer}")),
            MeshEvent::NewListenAddr(addr) => {
                printer.line(format!("listening on {addr}"));
                addrs.push(addr.to_string());
                write_addrs(&data, peer_id, &addrs, &api);
            }
            // `state` shows the current values; changes are not echoed.
            MeshEvent::StateChanged { .. } => {}
            MeshEvent::ExpiredListenAddr(addr) => {
                addrs.retain(|a| *a != addr.to_string());
                write_addrs(&data, peer_id, &addrs, &api);
            }
            MeshEvent::Lagged { messages, other, .. } => {
                if messages > 0 {
                    printer.line(format!("(fell behind: {messages} broadcast message(s) not shown)"));
                }
                // Listen addresses may have been among what was missed.
                if other > 0
                    && let Ok(status) = mesh.status().await
                {
                    addrs = status.listen_addrs;
                    write_addrs(&data, peer_id, &addrs, &api);
                }
            }
        }
    }
}

fn write_addrs(data: &DataDir, peer_id: PeerId, addrs: &[String], api: &Option<String>) {
    let file = AddrsFile { peer_id: peer_id.to_base58(), addrs: addrs.to_vec(), api: api.clone() };
    if let Err(e) = data.write_addrs(&file) {
        tracing::warn!("cannot write addrs.json: {e:#}");
    }
}

async fn wait_for_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending().await } } => {}
    }
}

/// Runs one prompt line; `false` means stop.
async fn run_line(mesh: &MeshHandle, line: &str) -> bool {
    if let Some(parsed) = pool::parse_line(line) {
        let out = match parsed {
            Ok(command) => pool::execute(mesh, command, &mut pool::ProgressBar::stderr()).await,
            Err(usage) => Err(usage),
        };
        match out {
            Ok(text) => println!("{text}"),
            Err(e) => println!("error: {e}"),
        }
        return true;
    }
    match repl::parse(line) {
        Ok(repl::ReplCommand::Exit) => false,
        Ok(command) => {
            let out = repl::execute(mesh, command).await;
            if !out.is_empty() {
                println!("{out}");
            }
            true
        }
        Err(message) => {
            println!("error: {message}");
            true
        }
    }
}

/// Commands from piped stdin, one per line, until EOF, `exit` or a signal.
async fn prompt_lines(mesh: &MeshHandle) {
    let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    loop {
        tokio::select! {
            line = lines.next_line() => match line {
                Ok(Some(line)) => if !run_line(mesh, &line).await { break },
                Ok(None) => break,
                Err(e) => {
                    tracing::warn!("cannot read stdin: {e}");
                    break;
                }
            },
            _ = wait_for_signal() => break,
        }
    }
}

/// The interactive prompt: rustyline runs on its own thread; each line is
/// run to completion before the next prompt is shown.
async fn prompt_terminal(mesh: &MeshHandle, mut editor: rustyline::DefaultEditor) {
    let (lines_tx, mut lines_rx) = tokio::sync::mpsc::channel::<String>(1);
    let (done_tx, done_rx) = std::sync::mpsc::channel::<bool>();
    let history: Option<PathBuf> =
        std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".infermesh_history"));
    std::thread::spawn(move || {
        if let Some(h) = &history {
            let _ = editor.load_history(h);
        }
        // Ctrl-C, Ctrl-D or a broken terminal end the loop.
        while let Ok(line) = editor.readline("infermesh> ") {
            let _ = editor.add_history_entry(line.as_str());
            if lines_tx.blocking_send(line).is_err() || !done_rx.recv().unwrap_or(false) {
                break;
            }
        }
        if let Some(h) = &history {
            let _ = editor.save_history(h);
        }
    });
    loop {
        tokio::select! {
            line = lines_rx.recv() => match line {
                Some(line) => {
                    let go_on = run_line(mesh, &line).await;
                    let _ = done_tx.send(go_on);
                    if !go_on { break }
                }
                None => break,
            },
            _ = wait_for_signal() => break,
        }
    }
}
