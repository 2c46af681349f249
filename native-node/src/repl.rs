//! The `infermesh>` prompt: parsing a line into a [`ReplCommand`] (pure)
//! and running it against the mesh and the node's state.

use infermesh_core::{MeshHandle, PeerId, Sent, WriteMode, state::parse_cli_value};
use serde_json::{Value, json};

use crate::output;

/// One prompt command.
#[derive(Debug, PartialEq)]
pub enum ReplCommand {
    /// Blank line.
    Nothing,
    /// `peers`
    Peers,
    /// `status`
    /// `status [--detailed]`: with the resource limits in force.
    Status { detailed: bool },
    /// `subscribe <topic>`
    Subscribe(String),
    /// `unsubscribe <topic>`
    Unsubscribe(String),
    /// `publish <topic> <text>`
    Publish {
        /// Topic.
        topic: String,
        /// Text.
        text: String,
    },
    /// `send <peer-id> <text>`
    Send {
        /// Recipient.
        peer: PeerId,
        /// Text.
        text: String,
    },
    /// `state [node-id]`
    State(Option<PeerId>),
    /// `get <key> [node-id]`
    Get {
        /// Key.
        key: String,
        /// Namespace (node ID); this node's own if absent.
        namespace: Option<PeerId>,
    },
    /// `update [--private] <key> <value>`: JSON when it parses, else text.
    Update {
        /// Key.
        key: String,
        /// Value.
        value: Value,
        /// Sealed to this node's own key (replicas hold ciphertext).
        private: bool,
    },
    /// `create [--private] <key> <value>`: like update, for a key with no
    /// value yet.
    Create {
        /// Key.
        key: String,
        /// Value.
        value: Value,
        /// Sealed to this node's own key.
        private: bool,
    },
    /// `delete <key>`
    Delete(String),
    /// `help`
    Help,
    /// `exit` / `quit`
    Exit,
}

/// The help text.
pub const HELP: &str = "\
commands:
  peers                      connected peers, with addresses and ping times
  status [--detailed]        node ID, addresses, topics and message counters (and every resource limit)
  subscribe <topic>          receive messages published on a topic
  unsubscribe <topic>        stop receiving them
  publish <topic> <text>     broadcast text to a topic's subscribers
  send <peer-id> <text>      send text directly to one node (acknowledged)
  state [node-id]            this node's state (or another namespace) as JSON
  get <key> [node-id]        one value
  update <key> <value>       set a value: JSON if it parses (25, true, {\"a\":1}), else text
  create <key> <value>       like update, for a key that has no value yet
  update --private <k> <v>   (also create) a value only your key can read: replicas hold ciphertext
  delete <key>               remove a key
  help                       this list
  exit                       stop the node (also Ctrl-D, Ctrl-C)";

fn split_first(rest: &str) -> (&str, &str) {
    match rest.split_once(char::is_whitespace) {
        Some((first, rest)) => (first, rest.trim()),
        None => (rest, ""),
    }
}

/// Parses one line; the error is a message for the user.
pub fn parse(line: &str) -> Result<ReplCommand, String> {
    let line = line.trim();
    if line.is_empty() {
        return Ok(ReplCommand::Nothing);
    }
    let (word, rest) = split_first(line);
    let need = |what: &str, usage: &str| -> Result<(), String> {
        if what.is_empty() { Err(format!("usage: {usage}")) } else { Ok(()) }
    };
    match word.to_ascii_lowercase().as_str() {
        "peers" => Ok(ReplCommand::Peers),
        "status" => match rest {
            "" => Ok(ReplCommand::Status { detailed: false }),
            "--detailed" | "-d" => Ok(ReplCommand::Status { detailed: true }),
            _ => Err("usage: status [--detailed]".into()),
        },
        "help" | "?" => Ok(ReplCommand::Help),
        "exit" | "quit" => Ok(ReplCommand::Exit),
        "subscribe" => {
            need(rest, "subscribe <topic>")?;
            Ok(ReplCommand::Subscribe(rest.to_owned()))
        }
        "unsubscribe" => {
            need(rest, "unsubscribe <topic>")?;
            Ok(ReplCommand::Unsubscribe(rest.to_owned()))
        }
        "publish" => {
            let (topic, text) = split_first(rest);
            need(text, "publish <topic> <text>")?;
            Ok(ReplCommand::Publish { topic: topic.to_owned(), text: text.to_owned() })
        }
        "send" => {
            let (peer, text) = split_first(rest);
            need(text, "send <peer-id> <text>")?;
            let peer =
                peer.parse().map_err(|_| format!("'{peer}' is not a node ID (they look like 12D3KooW…)"))?;
            Ok(ReplCommand::Send { peer, text: text.to_owned() })
        }
        "state" => Ok(ReplCommand::State(if rest.is_empty() { None } else { Some(node_id(rest)?) })),
        "get" => {
            let (key, namespace) = split_first(rest);
            need(key, "get <key> [node-id]")?;
            let namespace = if namespace.is_empty() { None } else { Some(node_id(namespace)?) };
            Ok(ReplCommand::Get { key: key.to_owned(), namespace })
        }
        "update" | "create" => {
            let (private, rest) = match split_first(rest) {
                ("--private", rest) => (true, rest),
                _ => (false, rest),
            };
            let (key, value) = split_first(rest);
            need(value, &format!("{word} [--private] <key> <value>"))?;
            let (key, value) = (key.to_owned(), parse_cli_value(value));
            Ok(if word.eq_ignore_ascii_case("create") {
                ReplCommand::Create { key, value, private }
            } else {
                ReplCommand::Update { key, value, private }
            })
        }
        "delete" => {
            need(rest, "delete <key>")?;
            Ok(ReplCommand::Delete(rest.to_owned()))
        }
        other => Err(format!("unknown command '{other}'; type 'help' for the list")),
    }
}

fn node_id(text: &str) -> Result<PeerId, String> {
    text.parse().map_err(|_| format!("'{text}' is not a node ID (they look like 12D3KooW…)"))
}

/// The `state` report: node ID, listen ports, connections, known replicas
/// and the data.
async fn state_report(mesh: &MeshHandle, namespace: Option<PeerId>) -> Result<String, String> {
    let status = mesh.status().await.map_err(|e| e.to_string())?;
    let mut ports: Vec<u16> = status
        .listen_addrs
        .iter()
        .filter_map(|a| a.parse::<infermesh_core::Multiaddr>().ok())
        .filter_map(|a| {
            a.iter().find_map(|p| match p {
                libp2p::multiaddr::Protocol::Tcp(port) | libp2p::multiaddr::Protocol::Udp(port) => Some(port),
                _ => None,
            })
        })
        .collect();
    ports.sort_unstable();
    ports.dedup();
    let namespace = namespace.map(|p| p.to_base58());
    let view = mesh.state(namespace.as_deref()).await.map_err(|e| e.to_string())?;
    let report = json!({
        "nodeId": status.peer_id,
        "namespace": view.namespace,
        "port": ports.first(),
        "ports": ports,
        "connections": status.connected_peers,
        // Peers known to hold a replica of this namespace.
        "replicas": view.replicas,
        "data": view.data,
    });
    serde_json::to_string_pretty(&report).map_err(|e| e.to_string())
}

/// Writes a value, sealed to this node's own key when `private`.
async fn write(
    mesh: &MeshHandle,
    key: &str,
    value: Value,
    mode: WriteMode,
    private: bool,
) -> Result<(), infermesh_core::MeshError> {
    if private {
        mesh.state_write_private(key, value, mode).await
    } else {
        mesh.state_write(key, Some(value), mode).await
    }
}

/// Runs a command; returns the text to print.
pub async fn execute(mesh: &MeshHandle, command: ReplCommand) -> String {
    let error = |e: infermesh_core::MeshError| e.to_string();
    let result: Result<String, String> = match command {
        ReplCommand::Nothing | ReplCommand::Exit => Ok(String::new()),
        ReplCommand::Help => Ok(HELP.to_owned()),
        ReplCommand::Peers => mesh.peers().await.map(|peers| output::peers(&peers)).map_err(error),
        ReplCommand::Status { detailed } => match (mesh.status().await, mesh.peers().await) {
            (Ok(status), Ok(peers)) if detailed => {
                Ok(format!("{}{}", output::status(&status, &peers), output::limits(&status)))
            }
            (Ok(status), Ok(peers)) => Ok(output::status(&status, &peers)),
            (Err(e), _) | (_, Err(e)) => Err(error(e)),
        },
        ReplCommand::Subscribe(topic) => mesh.subscribe(&topic).await.map_err(error).map(|fresh| {
            if fresh { format!("subscribed to {topic}") } else { format!("already subscribed to {topic}") }
        }),
        ReplCommand::Unsubscribe(topic) => mesh.unsubscribe(&topic).await.map_err(error).map(|was| {
            if was { format!("unsubscribed from {topic}") } else { format!("not subscribed to {topic}") }
        }),
        ReplCommand::Publish { topic, text } => {
            mesh.publish_text(&topic, &text).await.map_err(error).map(|sent| match sent {
                Sent::Broadcast { id, topic } => format!("published to {topic} (id {id})"),
                Sent::Direct(d) => format!("delivered (id {})", d.id),
            })
        }
        ReplCommand::Send { peer, text } => {
            mesh.send_text(peer, &text).await.map_err(error).map(|sent| match sent {
                Sent::Direct(d) => {
                    let sealed = if d.encrypted { ", end-to-end encrypted" } else { "" };
                    match d.held_by {
                        Some(holder) => {
                            format!("{peer} is offline: held for it by {holder}{sealed} (id {})", d.id)
                        }
                        None => format!(
                            "delivered to {peer} in {:.2} ms{sealed} (id {})",
                            d.rtt.as_secs_f64() * 1000.0,
                            d.id
                        ),
                    }
                }
                Sent::Broadcast { id, .. } => format!("published (id {id})"),
            })
        }
        ReplCommand::State(namespace) => state_report(mesh, namespace).await,
        ReplCommand::Get { key, namespace } => {
            let namespace = namespace.map(|p| p.to_base58());
            match mesh.state_get(namespace.as_deref(), &key).await.map_err(error) {
                Ok(Some(value)) => Ok(value.to_string()),
                Ok(None) => Err(format!("key '{key}' has no value")),
                Err(e) => Err(e),
            }
        }
        ReplCommand::Update { key, value, private } => {
            let shown = value.to_string();
            let done = write(mesh, &key, value, WriteMode::Update, private).await.map_err(error);
            done.map(|()| format!("updated {key} = {shown}{}", if private { " (private)" } else { "" }))
        }
        ReplCommand::Create { key, value, private } => {
            let shown = value.to_string();
            let done = write(mesh, &key, value, WriteMode::Create, private).await.map_err(error);
            done.map(|()| format!("created {key} = {shown}{}", if private { " (private)" } else { "" }))
        }
        ReplCommand::Delete(key) => {
            let done = mesh.state_write(&key, None, WriteMode::Delete).await.map_err(error);
            done.map(|()| format!("deleted {key}"))
        }
    };
    result.unwrap_or_else(|e| format!("error: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_command() {
        assert_eq!(parse("  ").unwrap(), ReplCommand::Nothing);
        assert_eq!(parse("peers").unwrap(), ReplCommand::Peers);
        assert_eq!(parse("STATUS").unwrap(), ReplCommand::Status { detailed: false });
        assert_eq!(parse("status --detailed").unwrap(), ReplCommand::Status { detailed: true });
        assert!(parse("status --verbose").is_err());
        assert_eq!(parse("subscribe swarm-alpha").unwrap(), ReplCommand::Subscribe("swarm-alpha".into()));
        assert_eq!(
            parse("publish chat hello   world ").unwrap(),
            ReplCommand::Publish { topic: "chat".into(), text: "hello   world".into() }
        );
        let peer = infermesh_core::Identity::from_seed([1; 32]).peer_id();
        assert_eq!(
            parse(&format!("send {peer} hi there")).unwrap(),
            ReplCommand::Send { peer, text: "hi there".into() }
        );
        assert_eq!(parse("exit").unwrap(), ReplCommand::Exit);
        assert_eq!(parse("quit").unwrap(), ReplCommand::Exit);
        assert_eq!(parse("state").unwrap(), ReplCommand::State(None));
        assert_eq!(parse(&format!("state {peer}")).unwrap(), ReplCommand::State(Some(peer)));
        assert_eq!(
            parse(&format!("get age {peer}")).unwrap(),
            ReplCommand::Get { key: "age".into(), namespace: Some(peer) }
        );
        assert_eq!(
            parse("update name John").unwrap(),
            ReplCommand::Update { key: "name".into(), value: "John".into(), private: false }
        );
        assert_eq!(
            parse("update age 25").unwrap(),
            ReplCommand::Update { key: "age".into(), value: 25.into(), private: false }
        );
        assert_eq!(
            parse(r#"create config {"theme":"dark","fontSize":14}"#).unwrap(),
            ReplCommand::Create {
                key: "config".into(),
                value: serde_json::json!({"theme": "dark", "fontSize": 14}),
                private: false
            }
        );
        assert_eq!(
            parse("update --private pin 1234").unwrap(),
            ReplCommand::Update { key: "pin".into(), value: 1234.into(), private: true }
        );
        assert_eq!(parse("delete name").unwrap(), ReplCommand::Delete("name".into()));
    }

    #[test]
    fn bad_lines_explain_themselves() {
        assert_eq!(parse("subscribe").unwrap_err(), "usage: subscribe <topic>");
        assert_eq!(parse("publish chat").unwrap_err(), "usage: publish <topic> <text>");
        assert!(parse("send bob hi").unwrap_err().contains("'bob' is not a node ID"));
        assert!(parse("frobnicate").unwrap_err().contains("unknown command 'frobnicate'"));
        assert_eq!(parse("update name").unwrap_err(), "usage: update [--private] <key> <value>");
        assert_eq!(parse("update --private pin").unwrap_err(), "usage: update [--private] <key> <value>");
        assert!(parse("state bob").unwrap_err().contains("'bob' is not a node ID"));
    }
}
