//! How things are printed at the prompt.

use infermesh_core::{InboundMessage, PeerInfo, Status, Via};

/// One received message, e.g. `[chat] 12D3KooW…: hello` or `[direct,
/// e2e L3] 12D3KooW…: hi`. When `from` is an agent name it is shown with
/// the node that sent it.
pub fn message(m: &InboundMessage) -> String {
    let mut channel = match &m.via {
        Via::Topic(topic) => topic.clone(),
        Via::Direct => "direct".to_owned(),
        Via::Mailbox(holder) => format!("held by {holder}"),
    };
    if let Some(level) = m.e2e {
        channel.push_str(&format!(", e2e L{}", level.number()));
    }
    let sender = m.sender.to_base58();
    let who = if m.envelope.from == sender { sender } else { format!("{} via {sender}", m.envelope.from) };
    let body = match &m.envelope.content {
        Some(text) => text.clone(),
        None => format!("<{} bytes, {}>", m.envelope.payload.len(), m.envelope.msg_type),
    };
    format!("[{channel}] {who}: {body}")
}

/// The `peers` listing.
pub fn peers(peers: &[PeerInfo]) -> String {
    let mut out = format!("{} peer{}", peers.len(), if peers.len() == 1 { "" } else { "s" });
    for p in peers {
        let rtt = p.rtt_ms.map(|ms| format!("{ms:.1} ms")).unwrap_or_else(|| "-".into());
        let addr = p.connections.first().map(String::as_str).unwrap_or("-");
        let agent = p.agent.as_deref().unwrap_or("-");
        out.push_str(&format!("\n  {}  {addr}  {rtt}  {}  {agent}", p.peer_id, e2e(p)));
    }
    out
}

/// A peer's end-to-end session: `e2e L3` (quantum-secure, at level 3) or
/// `no e2e`.
fn e2e(p: &PeerInfo) -> String {
    match p.kem_level {
        Some(level) if p.quantum_secure => format!("e2e L{level}"),
        _ => "no e2e".to_owned(),
    }
}

/// The `status` report, with each connected peer's end-to-end session.
/// The resource limits in force, one per line, and the peers banned now.
pub fn limits(s: &Status) -> String {
    let mut out = String::from("limits:\n");
    for (name, value) in &s.limits {
        out.push_str(&format!("           {name} = {value}\n"));
    }
    out.push_str(&format!("banned:    {} peer(s)\n", s.banned_peers));
    out
}

pub fn status(s: &Status, peers: &[PeerInfo]) -> String {
    let mut out = format!("node ID:   {}\n", s.peer_id);
    for (i, addr) in s.listen_addrs.iter().enumerate() {
        out.push_str(if i == 0 { "listening: " } else { "           " });
        out.push_str(addr);
        out.push('\n');
    }
    let roles: Vec<&str> = [(s.dht_server, "DHT server"), (s.relay_server, "relay")]
        .into_iter()
        .filter_map(|(on, name)| on.then_some(name))
        .collect();
    out.push_str(&format!(
        "roles:     {}\n",
        if roles.is_empty() { "client".into() } else { roles.join(", ") }
    ));
    out.push_str(&format!("peers:     {} / {}\n", s.connected_peers, s.max_peers));
    out.push_str(&if s.quantum_resistant {
        format!(
            "e2e:       on, hybrid ML-KEM + X25519 level {} ({} quantum-secure session{})\n",
            s.kem_level,
            s.metrics.e2e_sessions,
            if s.metrics.e2e_sessions == 1 { "" } else { "s" }
        )
    } else {
        "e2e:       off (quantum_resistant disabled: transport encryption only)\n".to_owned()
    });
    for p in peers {
        out.push_str(&format!("           {}  {}\n", p.peer_id, e2e(p)));
    }
    out.push_str(&format!(
        "topics:    {}\n",
        if s.topics.is_empty() { "-".to_owned() } else { s.topics.join(", ") }
    ));
    let m = &s.metrics;
    out.push_str(&format!(
        "messages:  in {}, out {}, dropped {}\n",
        m.messages_in, m.messages_out, m.messages_dropped
    ));
    let reasons: Vec<String> =
        m.dropped_by_reason.iter().filter(|(_, n)| **n > 0).map(|(r, n)| format!("{r}={n}")).collect();
    if !reasons.is_empty() {
        out.push_str(&format!("dropped:   {}\n", reasons.join(", ")));
    }
    if s.mailbox || m.mailbox_held > 0 {
        out.push_str(&format!(
            "mailbox:   {} held for offline peers, {} delivered\n",
            m.mailbox_held, m.mailbox_delivered
        ));
    }
    out.push_str(&format!("bytes:     in {}, out {}", m.bytes_in, m.bytes_out));
    out
}
