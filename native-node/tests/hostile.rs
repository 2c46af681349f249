//! A hostile client against the real binary: what it can reach without
//! forging anything (a socket, an HTTP request) must not exhaust the node
//! nor leak what it keeps.

mod common;

use std::{
    io::{Read, Write},
    net::TcpStream,
    time::{Duration, Instant},
};

use common::*;

fn argv(head: &str, dir: &std::path::Path) -> Vec<String> {
    std::iter::once(head.to_owned()).chain(loopback_args(dir)).collect()
}

/// Opens a WebSocket on `port` (the HTTP upgrade), then announces a
/// 256 MiB binary frame and sends nothing more.
fn announce_huge_frame(port: &str) -> TcpStream {
    let mut socket = TcpStream::connect(format!("127.0.0.1:{port}")).unwrap();
    write!(
        socket,
        "GET / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    .unwrap();
    let mut answer = Vec::new();
    let mut byte = [0u8; 1];
    while !answer.ends_with(b"\r\n\r\n") {
        socket.read_exact(&mut byte).expect("the upgrade is answered");
        answer.push(byte[0]);
    }
    assert!(answer.starts_with(b"HTTP/1.1 101"), "{}", String::from_utf8_lossy(&answer));
    // FIN + binary; masked, 64-bit length; the length; the mask key.
    let mut header = vec![0x82, 0xFF];
    header.extend_from_slice(&(256u64 << 20).to_be_bytes());
    header.extend_from_slice(&[1, 2, 3, 4]);
    socket.write_all(&header).unwrap();
    socket
}

/// Whether the node closed `socket` before `deadline`.
fn closed_by_peer(socket: &mut TcpStream, deadline: Instant) -> bool {
    let mut buf = [0u8; 1024];
    while Instant::now() < deadline {
        socket.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
        match socket.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
            Err(_) => return true,
        }
    }
    false
}

#[test]
fn websocket_frames_announcing_huge_lengths_are_refused_without_allocating() {
    let dir = tempfile::tempdir().unwrap();
    let node = NodeProcess::start("node", &argv("node", dir.path()), dir.path());
    let port = port_of(&node.addrs().ws);
    let before = node.rss();
    let mut sockets: Vec<TcpStream> = (0..8).map(|_| announce_huge_frame(&port)).collect();
    let deadline = Instant::now() + Duration::from_secs(10);
    for (i, socket) in sockets.iter_mut().enumerate() {
        assert!(closed_by_peer(socket, deadline), "socket {i} announced 256 MiB and was kept open");
    }
    let after = node.rss();
    eprintln!("resident memory: {} MB before, {} MB after 8 huge frame headers", before >> 20, after >> 20);
    assert!(after < before + (64 << 20), "resident memory grew from {before} to {after} bytes");
}

#[test]
fn the_http_api_answers_only_loopback_host_names_and_keeps_private_values_sealed() {
    let dir = tempfile::tempdir().unwrap();
    let mut node = NodeProcess::start("node", &argv("init", dir.path()), dir.path());
    let api = node.addrs().api.expect("the API runs");
    let host = api.trim_start_matches("http://").to_owned();

    // DNS rebinding: a page of attacker.example whose name now resolves to
    // 127.0.0.1 sends its own name as Host.
    for bad in ["Host: attacker.example\r\n", "Host: attacker.example:80\r\n", "Host: 127.0.0.1.nip.io\r\n"] {
        let (status, body) = http_raw(&api, "/api/status", bad);
        assert_eq!(status, 421, "{bad:?} got {status}: {body}");
    }
    let (status, _) = http_raw(&api, "/api/status", "");
    assert_ne!(status, 200, "a request without Host is refused");
    for good in [
        format!("Host: {host}\r\n"),
        format!("Host: localhost:{}\r\n", port_of(&format!("/tcp/{}", host.split(':').nth(1).unwrap()))),
    ] {
        let (status, body) = http_raw(&api, "/api/status", &good);
        assert_eq!(status, 200, "{good:?}: {body}");
    }

    // A private value: sealed for a request without the token, open with it.
    let answer = node.ask("update --private pin 4321", &["updated ", "error:"]);
    assert!(answer.starts_with("updated "), "{answer}");
    node.ask("update public 1", &["updated ", "error:"]);
    let (status, body) = http_raw(&api, "/api/state", &format!("Host: {host}\r\n"));
    assert_eq!(status, 200, "{body}");
    assert!(!body.contains("4321") && body.contains("$sealed"), "private value leaked: {body}");
    assert!(body.contains("\"public\":1"), "{body}");
    let token = std::fs::read_to_string(dir.path().join("api-token")).unwrap();
    let (status, body) =
        http_raw(&api, "/api/state", &format!("Host: {host}\r\nAuthorization: Bearer {}\r\n", token.trim()));
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"pin\":4321"), "the token opens it: {body}");
}

#[test]
fn connections_that_never_finish_their_handshake_are_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let node = NodeProcess::start("node", &argv("node", dir.path()), dir.path());
    let port = port_of(&node.addrs().tcp);
    // More idle sockets than the node sets up connections at once (64).
    let mut idle: Vec<TcpStream> =
        (0..70).map(|_| TcpStream::connect(format!("127.0.0.1:{port}")).unwrap()).collect();
    let deadline = Instant::now() + Duration::from_secs(20);
    for (i, socket) in idle.iter_mut().enumerate() {
        assert!(closed_by_peer(socket, deadline), "idle socket {i} was kept open");
    }
    // The slots are free again: a real peer gets in.
    let dir_b = tempfile::tempdir().unwrap();
    let mut args = argv("node", dir_b.path());
    args.extend(["--bootstrap".to_owned(), node.addrs().tcp.clone()]);
    let b = NodeProcess::start("b", &args, dir_b.path());
    b.wait_line("b to connect", |l| l.starts_with("connected "));
}
