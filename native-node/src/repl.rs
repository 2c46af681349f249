//! The `infermesh>` prompt: parsing a line into a [`ReplCommand`] (pure)
//! and running it against the mesh.

use infermesh_core::{MeshHandle, PeerId, Sent};

use crate::output;

/// One prompt command.
#[derive(Debug, PartialEq, Eq)]
pub enum ReplCommand {
    /// Blank line.
    Nothing,
    /// `peers`
    Peers,
    /// `status`
    Status,
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
    /// `help`
    Help,
    /// `exit` / `quit`
    Exit,
}

/// The help text.
pub const HELP: &str = "\
commands:
  peers                      connected peers, with addresses and ping times
  status                     node ID, addresses, topics and message counters
  subscribe <topic>          receive messages published on a topic
  unsubscribe <topic>        stop receiving them
  publish <topic> <text>     broadcast text to a topic's subscribers
  send <peer-id> <text>      send text directly to one node (acknowledged)
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
        "status" => Ok(ReplCommand::Status),
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
        other => Err(format!("unknown command '{other}'; type 'help' for the list")),
    }
}

/// Runs a command; returns the text to print.
pub async fn execute(mesh: &MeshHandle, command: ReplCommand) -> String {
    let result = match command {
        ReplCommand::Nothing | ReplCommand::Exit => Ok(String::new()),
        ReplCommand::Help => Ok(HELP.to_owned()),
        ReplCommand::Peers => mesh.peers().await.map(|peers| output::peers(&peers)),
        ReplCommand::Status => mesh.status().await.map(|status| output::status(&status)),
        ReplCommand::Subscribe(topic) => mesh.subscribe(&topic).await.map(|fresh| {
            if fresh { format!("subscribed to {topic}") } else { format!("already subscribed to {topic}") }
        }),
        ReplCommand::Unsubscribe(topic) => mesh.unsubscribe(&topic).await.map(|was| {
            if was { format!("unsubscribed from {topic}") } else { format!("not subscribed to {topic}") }
        }),
        ReplCommand::Publish { topic, text } => {
            mesh.publish_text(&topic, &text).await.map(|sent| match sent {
                Sent::Broadcast { id, topic } => format!("published to {topic} (id {id})"),
                Sent::Direct(d) => format!("delivered (id {})", d.id),
            })
        }
        ReplCommand::Send { peer, text } => mesh.send_text(peer, &text).await.map(|sent| match sent {
            Sent::Direct(d) => {
                format!("delivered to {peer} in {:.2} ms (id {})", d.rtt.as_secs_f64() * 1000.0, d.id)
            }
            Sent::Broadcast { id, .. } => format!("published (id {id})"),
        }),
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
        assert_eq!(parse("STATUS").unwrap(), ReplCommand::Status);
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
    }

    #[test]
    fn bad_lines_explain_themselves() {
        assert_eq!(parse("subscribe").unwrap_err(), "usage: subscribe <topic>");
        assert_eq!(parse("publish chat").unwrap_err(), "usage: publish <topic> <text>");
        assert!(parse("send bob hi").unwrap_err().contains("'bob' is not a node ID"));
        assert!(parse("frobnicate").unwrap_err().contains("unknown command 'frobnicate'"));
    }
}
