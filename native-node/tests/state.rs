//! The node's state through the real binary's prompt: the seed's session
//! keeps every value's JSON type, survives a restart, and shows up typed on
//! a second node that connects; writes that were acknowledged survive
//! `kill -9`.

mod common;

use common::*;
use serde_json::{Value, json};

fn argv(head: &str, dir: &std::path::Path) -> Vec<String> {
    std::iter::once(head.to_owned()).chain(loopback_args(dir)).collect()
}

/// Types `command` (`state` or `state <node-id>`) and parses the JSON
/// report it prints.
fn report(node: &mut NodeProcess, command: &str) -> Value {
    let opened = node.count(|l| l == "{");
    let closed = node.count(|l| l == "}");
    node.send(command);
    node.wait_nth(closed + 1, "the end of the state report", |l| l == "}");
    let lines = node.lines();
    let start = lines.iter().enumerate().filter(|(_, l)| *l == "{").nth(opened).unwrap().0;
    let end = lines.iter().enumerate().filter(|(_, l)| *l == "}").nth(closed).unwrap().0;
    serde_json::from_str(&lines[start..=end].join("\n")).expect("state prints JSON")
}

fn state(node: &mut NodeProcess) -> Value {
    report(node, "state")
}

#[test]
fn the_seed_session_keeps_types_and_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut node = NodeProcess::start("a", &argv("init", dir.path()), dir.path());
    let addrs = node.addrs();

    for (line, answer) in [
        ("update name John", r#"updated name = "John""#),
        ("update age 25", "updated age = 25"),
        ("update active true", "updated active = true"),
        (
            r#"update config {"theme":"dark","fontSize":14}"#,
            r#"updated config = {"fontSize":14,"theme":"dark"}"#,
        ),
        (r#"update tags ["ai","p2p"]"#, r#"updated tags = ["ai","p2p"]"#),
        (r#"create user {"name":"Ann","address":{"city":"Paris","zip":"75001"}}"#, "created user = "),
        ("update note hello world", r#"updated note = "hello world""#),
    ] {
        let got = node.ask(line, &["updated ", "created ", "error:"]);
        assert!(got.starts_with(answer), "{line} → {got}");
    }
    assert_eq!(node.ask("get age", &["25", "error:"]), "25");
    assert_eq!(node.ask("get name", &["John", "error:"]), r#""John""#);
    assert!(node.ask("create age 26", &["error:"]).contains("already exists"));
    assert_eq!(node.ask("delete note", &["deleted", "error:"]), "deleted note");
    assert!(node.ask("get note", &["error:"]).contains("has no value"));
    assert!(node.ask("delete note", &["error:"]).contains("does not exist"));
    let long_key = "k".repeat(300);
    assert!(node.ask(&format!("update {long_key} 1"), &["error:"]).contains("key_too_long"));

    let expected = json!({
        "name": "John",
        "age": 25,
        "active": true,
        "config": {"theme": "dark", "fontSize": 14},
        "tags": ["ai", "p2p"],
        "user": {"name": "Ann", "address": {"city": "Paris", "zip": "75001"}},
    });
    let report = state(&mut node);
    assert_eq!(report["nodeId"], json!(addrs.peer_id));
    assert_eq!(report["data"], expected);
    assert!(report["ports"].as_array().is_some_and(|p| !p.is_empty()));
    assert!(report["connections"].is_number());
    assert!(report["replicas"].is_array());

    node.send("exit");
    assert_eq!(node.wait_exit(), 0);
    let mut again = NodeProcess::start("a again", &argv("init", dir.path()), dir.path());
    let report = state(&mut again);
    assert_eq!(report["nodeId"], json!(addrs.peer_id), "same identity");
    assert_eq!(report["data"], expected, "the state came back from disk");
}

#[test]
fn acknowledged_writes_survive_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let mut node = NodeProcess::start("writer", &argv("init", dir.path()), dir.path());
    node.addrs();
    for i in 0..400 {
        node.send(&format!("update k{i} {{\"i\":{i}}}"));
    }
    // Kill it in the middle of the stream, after some acknowledgements.
    node.wait_nth(60, "60 acknowledged writes", |l| l.starts_with("updated k"));
    node.signal("KILL");
    node.wait_exit();
    let acked: Vec<usize> = node
        .lines()
        .iter()
        .filter_map(|l| l.strip_prefix("updated k")?.split_once(' ').map(|(i, _)| i.parse().unwrap()))
        .collect();
    assert!(acked.len() >= 60 && acked.len() < 400, "killed mid-stream ({} acknowledged)", acked.len());

    let mut again = NodeProcess::start("writer again", &argv("init", dir.path()), dir.path());
    let data = state(&mut again)["data"].clone();
    for i in &acked {
        assert_eq!(data[format!("k{i}")], json!({"i": i}), "acknowledged write k{i} was lost");
    }
}

#[test]
fn the_seed_session_shows_up_typed_on_a_second_node() {
    let dir_a = tempfile::tempdir().unwrap();
    let dir_b = tempfile::tempdir().unwrap();
    let mut a = NodeProcess::start("a", &argv("init", dir_a.path()), dir_a.path());
    let addrs = a.addrs();
    for line in [
        "update name John",
        "update age 25",
        "update active true",
        r#"update config {"theme":"dark","fontSize":14}"#,
        r#"update tags ["ai","p2p"]"#,
        r#"update user {"name":"Ann","address":{"city":"Paris"}}"#,
    ] {
        assert!(a.ask(line, &["updated ", "error:"]).starts_with("updated "), "{line}");
    }
    let expected = json!({
        "name": "John",
        "age": 25,
        "active": true,
        "config": {"theme": "dark", "fontSize": 14},
        "tags": ["ai", "p2p"],
        "user": {"name": "Ann", "address": {"city": "Paris"}},
    });

    let mut args = vec!["connect".to_owned(), addrs.tcp.clone()];
    args.extend(loopback_args(dir_b.path()));
    let mut b = NodeProcess::start("b", &args, dir_b.path());
    // Each round waits for b's answer; b catches up in the background.
    let start = std::time::Instant::now();
    loop {
        let report = report(&mut b, &format!("state {}", addrs.peer_id));
        if report["data"] == expected {
            assert_eq!(report["namespace"], json!(addrs.peer_id));
            break;
        }
        assert!(start.elapsed() < DEADLINE, "b never got a's state: {report}\n{}", b.transcript());
    }
    assert_eq!(b.ask(&format!("get age {}", addrs.peer_id), &["25", "error:"]), "25");
    // b's own writes go to b's namespace, not a's.
    b.ask("update age 99", &["updated ", "error:"]);
    assert_eq!(b.ask(&format!("get age {}", addrs.peer_id), &["25", "99", "error:"]), "25");
}
