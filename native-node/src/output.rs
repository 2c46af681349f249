//! How things are printed at the prompt.

use infermesh_core::{InboundMessage, PeerInfo, Status, Via};

/// One received message, e.g. `[chat] 12D3KooW…: hello`. When `from` is an
/// agent name it is shown with the node that sent it.
pub fn message(m: &InboundMessage) -> String {
    let channel = match &m.via {
        Via::Topic(topic) => topic.as_str(),
        Via::Direct => "direct",
    };
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
        out.push_str(&format!("\n  {}  {addr}  {rtt}  {agent}", p.peer_id));
    }
    out
}

/// The `status` report.
pub fn status(s: &Status) -> String {
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
    out.push_str(&format!("bytes:     in {}, out {}", m.bytes_in, m.bytes_out));
    out
}
