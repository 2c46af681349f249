//! The real `infermesh` binary, as processes on loopback: two nodes talk
//! through their prompts (subscribe, publish, send), restart and rejoin;
//! a bare node ID is found through the DHT; bad command lines fail clearly.

mod common;

use std::os::unix::fs::PermissionsExt;

use common::*;

/// `head` (subcommand and target), then the loopback options for `dir`,
/// then `extra`.
fn argv(head: &[&str], dir: &std::path::Path, extra: &[&str]) -> Vec<String> {
    let head = head.iter().map(|s| s.to_string());
    let extra = extra.iter().map(|s| s.to_string());
    head.chain(loopback_args(dir)).chain(extra).collect()
}

/// Publishes until the topic has a subscriber on the other side (the
/// subscription takes a moment to propagate); returns the answer line.
fn publish_until_delivered(node: &mut NodeProcess, topic: &str, text: &str) -> String {
    let start = std::time::Instant::now();
    loop {
        let answer = node.ask(&format!("publish {topic} {text}"), &["published to", "error:"]);
        if answer.contains("published to") {
            return answer;
        }
        assert!(answer.contains("no peers are subscribed"), "unexpected answer: {answer}");
        assert!(start.elapsed() < DEADLINE, "{topic} never got a subscriber\n{}", node.transcript());
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

#[test]
fn two_nodes_talk_through_their_prompts_and_rejoin_after_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let (dir_a, dir_b) = (dir.path().join("a"), dir.path().join("b"));

    // A: `init` creates the identity and shows the private key once.
    let mut a = NodeProcess::start("A", &argv(&["init"], &dir_a, &[]), &dir_a);
    let key_line = a.wait_line("private key", |l| l.starts_with("private key: "));
    assert_eq!(key_line.trim_start_matches("private key: ").len(), 64);
    let a_addrs = a.addrs();
    let mode = std::fs::metadata(dir_a.join("identity.key")).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);

    // B joins through A's TCP address.
    let b_args = argv(&["connect", &a_addrs.tcp], &dir_b, &[]);
    let mut b = NodeProcess::start("B", &b_args, &dir_b);
    let b_addrs = b.addrs();
    b.wait_line("B connected to A", |l| l == format!("connected {}", a_addrs.peer_id));
    a.wait_line("A sees B", |l| l == format!("connected {}", b_addrs.peer_id));

    // Topic chat, both ways.
    assert_eq!(a.ask("subscribe chat", &["subscribed"]), "subscribed to chat");
    assert_eq!(b.ask("subscribe chat", &["subscribed"]), "subscribed to chat");
    publish_until_delivered(&mut b, "chat", "hello from b");
    a.wait_line("A receives B's broadcast", |l| l == format!("[chat] {}: hello from b", b_addrs.peer_id));
    publish_until_delivered(&mut a, "chat", "hello from a");
    b.wait_line("B receives A's broadcast", |l| l == format!("[chat] {}: hello from a", a_addrs.peer_id));

    // A direct message, acknowledged, end-to-end encrypted (hybrid KEM, level 3).
    let answer = b.ask(&format!("send {} just for you", a_addrs.peer_id), &["delivered to", "error:"]);
    assert!(answer.starts_with(&format!("delivered to {} in ", a_addrs.peer_id)), "{answer}");
    assert!(answer.contains(", end-to-end encrypted (id "), "{answer}");
    a.wait_line("A receives the direct message", |l| {
        l == format!("[direct, e2e L3] {}: just for you", b_addrs.peer_id)
    });

    // `peers` and `status` answer.
    let peers = a.ask("peers", &["peer"]);
    assert_eq!(peers, "1 peer");
    let status = a.ask("status", &["node ID:"]);
    assert_eq!(status, format!("node ID:   {}", a_addrs.peer_id));
    a.wait_line("the status shows the session", |l| l.trim() == format!("{}  e2e L3", b_addrs.peer_id));

    // B exits and comes back with the same identity; A sees it rejoin.
    let a_disconnects = a.count(|l| l == format!("disconnected {}", b_addrs.peer_id));
    b.send("exit");
    assert_eq!(b.wait_exit(), 0);
    a.wait_nth(a_disconnects + 1, "A notices B left", |l| l == format!("disconnected {}", b_addrs.peer_id));
    let a_connects = a.count(|l| l == format!("connected {}", b_addrs.peer_id));
    drop(b);
    let mut b = NodeProcess::start("B again", &b_args, &dir_b);
    b.wait_line("B keeps its node ID", |l| l == format!("node ID: {}", b_addrs.peer_id));
    a.wait_nth(a_connects + 1, "A sees B rejoin", |l| l == format!("connected {}", b_addrs.peer_id));

    // A is killed and restarted on the same ports: B, whose bootstrap it
    // is, reconnects by itself, and A keeps its node ID and certhash.
    let b_connects = b.count(|l| l == format!("connected {}", a_addrs.peer_id));
    a.signal("KILL");
    a.wait_exit();
    b.wait_line("B notices A died", |l| l == format!("disconnected {}", a_addrs.peer_id));
    drop(a);
    let mut a_args = argv(&["node"], &dir_a, &[]);
    set_arg(&mut a_args, "--tcp-port", &port_of(&a_addrs.tcp));
    set_arg(&mut a_args, "--quic-port", &port_of(&a_addrs.quic));
    set_arg(&mut a_args, "--ws-port", &port_of(&a_addrs.ws));
    set_arg(&mut a_args, "--webrtc-port", &port_of(&a_addrs.webrtc));
    std::fs::remove_file(dir_a.join("addrs.json")).unwrap();
    let a = NodeProcess::start("A restarted", &a_args, &dir_a);
    let again = a.addrs();
    assert_eq!(again.peer_id, a_addrs.peer_id);
    assert_eq!(again.webrtc, a_addrs.webrtc, "the WebRTC certhash survives a restart");
    b.wait_nth(b_connects + 1, "B reconnects to the restarted A", |l| {
        l == format!("connected {}", a_addrs.peer_id)
    });
    a.wait_line("A sees B", |l| l == format!("connected {}", b_addrs.peer_id));

    // The headless node stops cleanly on SIGTERM.
    a.signal("TERM");
    let mut a = a;
    assert_eq!(a.wait_exit(), 0);
    b.close_stdin();
    assert_eq!(b.wait_exit(), 0, "EOF on stdin ends the prompt");
}

#[test]
fn a_bare_node_id_is_found_through_the_dht() {
    let dir = tempfile::tempdir().unwrap();
    let (dir_a, dir_b, dir_c) = (dir.path().join("a"), dir.path().join("b"), dir.path().join("c"));
    let a = NodeProcess::start("A", &argv(&["node"], &dir_a, &[]), &dir_a);
    let a_addrs = a.addrs();
    let c = NodeProcess::start("C", &argv(&["node"], &dir_c, &["--bootstrap", &a_addrs.tcp]), &dir_c);
    let c_addrs = c.addrs();
    a.wait_line("A sees C", |l| l == format!("connected {}", c_addrs.peer_id));

    // B knows A's address and only C's node ID.
    let b_args = argv(&["connect", &c_addrs.peer_id], &dir_b, &["--bootstrap", &a_addrs.tcp]);
    let b = NodeProcess::start("B", &b_args, &dir_b);
    b.wait_line("B looks for C", |l| l == format!("looking for {}…", c_addrs.peer_id));
    b.wait_line("B connects to C", |l| l == format!("connected {}", c_addrs.peer_id));
}

#[test]
fn bad_command_lines_fail_with_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().join("n");
    let run = |head: &[&str]| run_to_end(&argv(head, &d, &[]));

    let (code, _, err) = run(&["init", "--private-key", "abc"]);
    assert_ne!(code, 0);
    assert!(err.contains("--private-key") && err.contains("64 hex characters"), "{err}");

    let (code, _, err) = run(&["connect", "not-an-address"]);
    assert_ne!(code, 0);
    assert!(err.contains("neither a node ID"), "{err}");

    std::fs::create_dir_all(&d).unwrap();
    std::fs::write(d.join("identity.key"), "this is not a key\n").unwrap();
    let (code, _, err) = run(&["node"]);
    assert_ne!(code, 0);
    assert!(err.contains("does not hold a valid private key"), "{err}");
    std::fs::remove_file(d.join("identity.key")).unwrap();

    // A known private key gives its known node ID; a second process cannot
    // share the data directory.
    let key = "5f".repeat(32);
    let expected = infermesh_core::Identity::from_hex(&key).unwrap().peer_id().to_base58();
    let mut first = NodeProcess::start("first", &argv(&["init", "--private-key", &key], &d, &[]), &d);
    first.wait_line("node ID", |l| l == format!("node ID: {expected}"));
    assert_eq!(first.count(|l| l.starts_with("private key:")), 0, "a given key is not echoed");
    let (code, _, err) = run(&["node"]);
    assert_ne!(code, 0);
    assert!(err.contains("another infermesh process is using the data directory"), "{err}");

    // Unknown commands and bad arguments at the prompt are explained.
    assert_eq!(
        first.ask("frobnicate", &["error:"]),
        "error: unknown command 'frobnicate'; type 'help' for the list"
    );
    assert_eq!(
        first.ask("send bob hi", &["error:"]),
        "error: 'bob' is not a node ID (they look like 12D3KooW…)"
    );
    assert!(first.ask("help", &["commands:"]).starts_with("commands:"));
    // Ctrl-C (SIGINT) at a piped prompt stops the node cleanly.
    first.signal("INT");
    assert_eq!(first.wait_exit(), 0);

    // `init` again: the same identity, and the key is not shown again.
    let (code, out, _) = run(&["init"]);
    assert_eq!(code, 0);
    assert!(out.contains(&format!("node ID: {expected}")), "{out}");
    assert!(!out.contains("private key:"), "{out}");
}
