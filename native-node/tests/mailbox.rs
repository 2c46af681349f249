//! Held mail through the real binary: a node holding sealed messages for an
//! offline peer answers "held" only once a message is on its disk, so every
//! message it acknowledged survives `kill -9` and reaches its recipient
//! when it comes back.

mod common;

use common::*;

fn argv(head: &[&str], dir: &std::path::Path) -> Vec<String> {
    head.iter().map(|s| s.to_string()).chain(loopback_args(dir)).collect()
}

/// The state entries a node holds, from its `/api/status`.
fn state_entries(api: &str) -> u64 {
    let status: serde_json::Value = serde_json::from_str(&http_get(api, "/api/status")).unwrap_or_default();
    status["metrics"]["state_entries"].as_u64().unwrap_or(0)
}

#[test]
fn acknowledged_held_mail_survives_kill_9_and_reaches_its_recipient() {
    const MAIL: usize = 20;
    let (dir_h, dir_a, dir_b) =
        (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut holder = NodeProcess::start("holder", &argv(&["init"], dir_h.path()), dir_h.path());
    let at = holder.addrs();

    // Bob connects once (his signed KEM key reaches the holder's replica of
    // his namespace), then leaves.
    let mut bob = NodeProcess::start("bob", &argv(&["connect", &at.tcp], dir_b.path()), dir_b.path());
    let bob_id = bob.addrs().peer_id;
    let api = at.api.clone().expect("the holder serves its API");
    let start = std::time::Instant::now();
    // The holder's own key and bob's: two entries.
    while state_entries(&api) < 2 {
        assert!(start.elapsed() < DEADLINE, "bob's key never reached the holder\n{}", holder.transcript());
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    bob.send("exit");
    assert_eq!(bob.wait_exit(), 0);

    // Alice writes to him while he is away: each message is held.
    let mut alice = NodeProcess::start("alice", &argv(&["connect", &at.tcp], dir_a.path()), dir_a.path());
    alice.addrs();
    let held = |line: &str| line.contains("is offline: held for it by");
    let start = std::time::Instant::now();
    // The holder may not have bob's key (or know he left) yet: try again.
    while !held(&alice.ask(&format!("send {bob_id} mail 0"), &["held for it by", "delivered", "error:"])) {
        assert!(start.elapsed() < DEADLINE, "the first message was never held\n{}", alice.transcript());
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    for i in 1..MAIL {
        let answer =
            alice.ask(&format!("send {bob_id} mail {i}"), &["held for it by", "delivered", "error:"]);
        assert!(held(&answer), "mail {i}: {answer}");
    }
    assert!(alice.lines().iter().filter(|l| held(l)).all(|l| l.contains(&at.peer_id)));

    // Every acknowledgement meant "on disk": the holder dies without a
    // chance to save anything more, and comes back with all of it.
    holder.signal("KILL");
    holder.wait_exit();
    // It picks new ports: wait for its new addresses, not the old file's.
    std::fs::remove_file(dir_h.path().join("addrs.json")).unwrap();
    let mut holder = NodeProcess::start("holder again", &argv(&["init"], dir_h.path()), dir_h.path());
    let again = holder.addrs();
    let status = holder.ask("status", &["mailbox:"]);
    assert_eq!(status.trim(), format!("mailbox:   {MAIL} held for offline peers, 0 delivered"));

    // Bob comes back: each message arrives once, still sealed end to end.
    let bob = NodeProcess::start("bob again", &argv(&["connect", &again.tcp], dir_b.path()), dir_b.path());
    let from_holder = format!("[held by {}, e2e L3]", again.peer_id);
    bob.wait_nth(MAIL, "bob's mail", |l| l.starts_with(&from_holder));
    for i in 0..MAIL {
        let text = format!(": mail {i}");
        assert_eq!(bob.count(|l| l.starts_with(&from_holder) && l.ends_with(&text)), 1, "mail {i} once");
    }
}
