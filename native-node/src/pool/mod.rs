// Over 600 lines: every pooled-compute command shares one parser, one `Node` trait and the tables they print.
//! Pooled compute from the command line: `network …`, `workers`, `embed …`,
//! `jobs`, `credits`. The same commands run at the `infermesh>` prompt (on the node
//! itself) and as subcommands (`infermesh network create lab`), which talk
//! to a running node through its HTTP API with the token in its data
//! directory, the way `tailscale` talks to `tailscaled`.

mod client;

pub use client::{Api, EmbedLine};

use std::{
    collections::BTreeMap,
    io::{IsTerminal, Write},
    path::{Path, PathBuf},
    time::Duration,
};

use clap::{Parser, Subcommand};
use infermesh_core::{
    InviteOptions, MeshHandle, PeerId,
    compute::{
        CreditsInfo, Embeddings, JobInfo, MAX_JOB_INPUTS, MemberInfo, NetworkInfo, Progress, WorkerInfo,
    },
};
use serde_json::json;

/// The pooled-compute commands.
#[derive(Debug, Subcommand, PartialEq, Eq, Clone)]
pub enum PoolCommand {
    /// Private networks: create, invite, join, members, revoke, leave.
    Network {
        #[command(subcommand)]
        command: NetworkCommand,
    },
    /// The devices offering compute, with what they offer and how fast
    /// they have been.
    Workers {
        /// The network (its name or ID) [default: every network].
        #[arg(long)]
        network: Option<String>,
    },
    /// Embed texts across the network (all-MiniLM-L6-v2): one JSON line
    /// per text, with its embedding.
    Embed {
        /// The texts (or use --file).
        texts: Vec<String>,
        /// Read the texts from this file, one a line (blank lines skipped).
        #[arg(long, conflicts_with = "texts")]
        file: Option<PathBuf>,
        /// Write the JSON lines here instead of to the output.
        #[arg(long)]
        out: Option<PathBuf>,
        /// The network (its name or ID) [default: the only one].
        #[arg(long)]
        network: Option<String>,
        /// The model.
        #[arg(long)]
        model: Option<String>,
    },
    /// Jobs this node asked for: running and recently finished.
    Jobs,
    /// A network's credits: the terms, everyone's balance, the latest
    /// receipts (each signed by requester and worker).
    Credits {
        /// The network (its name or ID) [default: the only one].
        #[arg(long)]
        network: Option<String>,
    },
}

/// `network …`
#[derive(Debug, Subcommand, PartialEq, Eq, Clone)]
pub enum NetworkCommand {
    /// Create a network owned by this node.
    Create {
        /// Its name.
        name: String,
    },
    /// Print an invite token to a network this node owns.
    Invite {
        /// How many people may join with it.
        #[arg(long, default_value_t = 1)]
        uses: u32,
        /// How long it can be used (30m, 24h, 7d…).
        #[arg(long, default_value = "24h", value_parser = parse_duration)]
        expires: Duration,
        /// How long a membership it grants lasts [default: until revoked].
        #[arg(long, value_parser = parse_duration)]
        member_for: Option<Duration>,
        /// The network [default: the only one].
        #[arg(long)]
        network: Option<String>,
    },
    /// Join the network of an invite token (its owner must be reachable).
    Join {
        /// The token (imnet1.…).
        token: String,
        /// Join as a device of the person who signed this certificate.
        #[arg(long)]
        device_cert: Option<String>,
    },
    /// Certify another node (with its own key) as one of your devices.
    Certify {
        /// The device's node ID.
        device: String,
        /// How long the certificate is valid.
        #[arg(long, default_value = "7d", value_parser = parse_duration)]
        expires: Duration,
        /// The network (name or ID; a network not joined yet by its ID).
        #[arg(long)]
        network: Option<String>,
    },
    /// The members of a network.
    Members {
        /// The network [default: the only one].
        #[arg(long)]
        network: Option<String>,
    },
    /// Revoke a member (its node ID: all its devices) or one device.
    Revoke {
        /// The person's or the device's node ID.
        id: String,
        /// The network [default: the only one].
        #[arg(long)]
        network: Option<String>,
    },
    /// Leave a network.
    Leave {
        /// The network [default: the only one].
        #[arg(long)]
        network: Option<String>,
    },
    /// The networks this node is in.
    List,
    /// Set the credit terms of a network this node owns (what is left
    /// out stays as it is).
    Terms {
        /// Credits each person starts with.
        #[arg(long)]
        grant: Option<u64>,
        /// Credits per input token processed.
        #[arg(long)]
        price: Option<u64>,
        /// Percent of chunks checked again by another worker (workers
        /// not trusted yet: all of them).
        #[arg(long, value_parser = clap::value_parser!(u8).range(0..=100))]
        check_percent: Option<u8>,
        /// The network [default: the only one].
        #[arg(long)]
        network: Option<String>,
    },
}

/// Reads `30s`, `10m`, `24h`, `7d` or plain seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (number, unit) = text.split_at(text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len()));
    let n: u64 = number.parse().map_err(|_| format!("'{text}' is not a duration (30s, 10m, 24h, 7d)"))?;
    let seconds = match unit {
        "" | "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        "d" => n * 86_400,
        _ => return Err(format!("'{text}' is not a duration (30s, 10m, 24h, 7d)")),
    };
    if seconds == 0 {
        return Err("a duration must be longer than 0".into());
    }
    Ok(Duration::from_secs(seconds))
}

/// A prompt line, parsed with the subcommands' own definitions.
#[derive(Debug, Parser)]
#[command(no_binary_name = true, disable_help_flag = false, disable_version_flag = true)]
struct PromptLine {
    #[command(subcommand)]
    command: PoolCommand,
}

/// Parses a prompt line that starts with `network`, `workers`, `embed` or
/// `jobs`; `None` for other lines.
pub fn parse_line(line: &str) -> Option<Result<PoolCommand, String>> {
    let first = line.split_whitespace().next()?.to_ascii_lowercase();
    if !["network", "workers", "embed", "jobs", "credits"].contains(&first.as_str()) {
        return None;
    }
    let Some(words) = shlex::split(line) else {
        return Some(Err("unbalanced quotes".into()));
    };
    Some(
        PromptLine::try_parse_from(words)
            .map(|l| l.command)
            .map_err(|e| e.render().to_string().trim().to_owned()),
    )
}

/// What the commands need of a node.
#[allow(async_fn_in_trait)]
pub trait Node {
    /// See [`MeshHandle::networks`].
    async fn networks(&self) -> Result<Vec<NetworkInfo>, String>;
    /// See [`MeshHandle::network_create`].
    async fn create(&self, name: &str) -> Result<NetworkInfo, String>;
    /// See [`MeshHandle::network_invite`].
    async fn invite(&self, network: Option<&str>, options: InviteOptions) -> Result<String, String>;
    /// See [`MeshHandle::network_join`].
    async fn join(&self, token: &str, cert: Option<&str>) -> Result<NetworkInfo, String>;
    /// See [`MeshHandle::network_certify`].
    async fn certify(
        &self,
        network: Option<&str>,
        device: &str,
        valid_for: Duration,
    ) -> Result<String, String>;
    /// See [`MeshHandle::network_members`].
    async fn members(&self, network: Option<&str>) -> Result<Vec<MemberInfo>, String>;
    /// See [`MeshHandle::network_revoke`].
    async fn revoke(&self, network: Option<&str>, id: &str) -> Result<String, String>;
    /// See [`MeshHandle::network_leave`].
    async fn leave(&self, network: Option<&str>) -> Result<bool, String>;
    /// See [`MeshHandle::workers`].
    async fn workers(&self, network: Option<&str>) -> Result<Vec<WorkerInfo>, String>;
    /// See [`MeshHandle::jobs`].
    async fn jobs(&self) -> Result<Vec<JobInfo>, String>;
    /// See [`MeshHandle::credits`].
    async fn credits(&self, network: Option<&str>) -> Result<CreditsInfo, String>;
    /// See [`MeshHandle::set_credit_terms`]: `None`s stay as they are.
    async fn set_terms(
        &self,
        network: Option<&str>,
        grant: Option<u64>,
        price: Option<u64>,
        check_rate: Option<f64>,
    ) -> Result<CreditsInfo, String>;
    /// Runs a job, reporting its progress.
    async fn embed(
        &self,
        network: Option<&str>,
        model: Option<&str>,
        inputs: Vec<String>,
        progress: &mut (dyn FnMut(&Progress) + Send),
    ) -> Result<Embeddings, String>;
}

fn text(e: impl std::fmt::Display) -> String {
    e.to_string()
}

impl Node for MeshHandle {
    async fn networks(&self) -> Result<Vec<NetworkInfo>, String> {
        MeshHandle::networks(self).await.map_err(text)
    }
    async fn create(&self, name: &str) -> Result<NetworkInfo, String> {
        self.network_create(name).await.map_err(text)
    }
    async fn invite(&self, network: Option<&str>, options: InviteOptions) -> Result<String, String> {
        self.network_invite(network, options).await.map_err(text)
    }
    async fn join(&self, token: &str, cert: Option<&str>) -> Result<NetworkInfo, String> {
        self.network_join(token, cert).await.map_err(text)
    }
    async fn certify(
        &self,
        network: Option<&str>,
        device: &str,
        valid_for: Duration,
    ) -> Result<String, String> {
        let device: PeerId = device.parse().map_err(|_| format!("'{device}' is not a node ID"))?;
        self.network_certify(network, device, valid_for).await.map_err(text)
    }
    async fn members(&self, network: Option<&str>) -> Result<Vec<MemberInfo>, String> {
        self.network_members(network).await.map_err(text)
    }
    async fn revoke(&self, network: Option<&str>, id: &str) -> Result<String, String> {
        self.network_revoke(network, id).await.map_err(text)
    }
    async fn leave(&self, network: Option<&str>) -> Result<bool, String> {
        self.network_leave(network).await.map_err(text)
    }
    async fn workers(&self, network: Option<&str>) -> Result<Vec<WorkerInfo>, String> {
        MeshHandle::workers(self, network).await.map_err(text)
    }
    async fn jobs(&self) -> Result<Vec<JobInfo>, String> {
        MeshHandle::jobs(self).await.map_err(text)
    }
    async fn credits(&self, network: Option<&str>) -> Result<CreditsInfo, String> {
        MeshHandle::credits(self, network).await.map_err(text)
    }
    async fn set_terms(
        &self,
        network: Option<&str>,
        grant: Option<u64>,
        price: Option<u64>,
        check_rate: Option<f64>,
    ) -> Result<CreditsInfo, String> {
        self.update_credit_terms(network, grant, price, check_rate).await.map_err(text)
    }
    async fn embed(
        &self,
        network: Option<&str>,
        model: Option<&str>,
        inputs: Vec<String>,
        progress: &mut (dyn FnMut(&Progress) + Send),
    ) -> Result<Embeddings, String> {
        let mut job = self.start_embed(network, model, inputs).await.map_err(text)?;
        let mut result = job.result;
        loop {
            tokio::select! {
                biased;
                changed = job.progress.changed() => {
                    if changed.is_err() {
                        return result.await.map_err(text)?.map_err(text);
                    }
                    let now = job.progress.borrow_and_update().clone();
                    progress(&now);
                }
                done = &mut result => return done.map_err(text)?.map_err(text),
            }
        }
    }
}

/// Where an `embed`'s progress goes.
pub struct ProgressBar {
    terminal: bool,
    last_tenth: usize,
    last_done: Option<usize>,
    out: Box<dyn Write + Send>,
}

impl ProgressBar {
    /// A bar on standard error: redrawn in place on a terminal, one line
    /// per tenth otherwise.
    pub fn stderr() -> Self {
        Self {
            terminal: std::io::stderr().is_terminal(),
            last_tenth: 0,
            last_done: None,
            out: Box::new(std::io::stderr()),
        }
    }

    fn show(&mut self, done: usize, total: usize) {
        if self.last_done.replace(done) == Some(done) {
            return;
        }
        let total = total.max(1);
        let filled = done * 30 / total;
        let bar = format!("[{}{}] {done}/{total} texts", "#".repeat(filled), ".".repeat(30 - filled));
        if self.terminal {
            let _ = write!(self.out, "\r{bar}");
        } else if done * 10 / total > self.last_tenth || done == total {
            self.last_tenth = done * 10 / total;
            let _ = writeln!(self.out, "{bar}");
        }
        let _ = self.out.flush();
    }

    fn end(&mut self) {
        if self.terminal {
            let _ = writeln!(self.out);
        }
    }
}

fn table(rows: Vec<Vec<String>>) -> String {
    let widths: Vec<usize> =
        (0..rows[0].len()).map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0)).collect();
    rows.iter()
        .map(|r| {
            r.iter()
                .zip(&widths)
                .map(|(cell, w)| format!("{cell:<w$}"))
                .collect::<Vec<_>>()
                .join("  ")
                .trim_end()
                .to_owned()
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn short(id: &str) -> String {
    if id.len() > 16 { format!("{}…{}", &id[..8], &id[id.len() - 6..]) } else { id.to_owned() }
}

fn ago(ms: u64) -> String {
    if ms < 1000 { "now".into() } else { format!("{}s ago", ms / 1000) }
}

/// Reads an `embed`'s texts: the arguments, or the file's non-blank lines.
fn embed_inputs(texts: Vec<String>, file: Option<&Path>) -> Result<Vec<String>, String> {
    match file {
        None if texts.is_empty() => Err("give texts to embed, or --file".into()),
        None => Ok(texts),
        Some(path) => {
            let content =
                std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
            let lines: Vec<String> =
                content.lines().filter(|l| !l.trim().is_empty()).map(str::to_owned).collect();
            if lines.is_empty() {
                return Err(format!("{} has no text to embed", path.display()));
            }
            Ok(lines)
        }
    }
}

/// Runs a command against `node`; returns what to print.
pub async fn execute(
    node: &impl Node,
    command: PoolCommand,
    bar: &mut ProgressBar,
) -> Result<String, String> {
    match command {
        PoolCommand::Network { command } => network(node, command).await,
        PoolCommand::Workers { network } => {
            let workers = node.workers(network.as_deref()).await?;
            if workers.is_empty() {
                return Ok(
                    "no workers (start one with `infermesh node --compute`, or contribute a tab)".into()
                );
            }
            let mut rows = vec![
                [
                    "device", "person", "kind", "threads", "queue", "ms/text", "chunks", "trust", "seen",
                    "network",
                ]
                .map(String::from)
                .to_vec(),
            ];
            for w in workers {
                rows.push(vec![
                    format!("{}{}", short(&w.device), if w.local { " (this node)" } else { "" }),
                    short(&w.person),
                    w.offer.kind,
                    w.offer.threads.to_string(),
                    w.queue.to_string(),
                    w.ms_per_input.map_or("-".into(), |m| format!("{m:.1}")),
                    w.chunks.to_string(),
                    match &w.excluded {
                        Some(why) => format!("{:.2} (no work: {why})", w.trust),
                        None => format!(
                            "{:.2} ({}/{} checks)",
                            w.trust,
                            w.checks_agreed,
                            w.checks_agreed + w.checks_lost
                        ),
                    },
                    ago(w.seen_ms_ago),
                    w.network,
                ]);
            }
            Ok(table(rows))
        }
        PoolCommand::Jobs => {
            let jobs = node.jobs().await?;
            if jobs.is_empty() {
                return Ok("no jobs yet".into());
            }
            let mut rows = vec![
                ["job", "state", "texts", "took", "workers (chunks)", "rerun", "network"]
                    .map(String::from)
                    .to_vec(),
            ];
            for j in jobs {
                rows.push(vec![
                    j.id,
                    j.error.map_or(j.state.clone(), |e| format!("{}: {e}", j.state)),
                    format!("{}/{}", j.done, j.inputs),
                    format!("{:.1}s", j.elapsed_ms as f64 / 1000.0),
                    j.workers.iter().map(|(w, n)| format!("{}:{n}", short(w))).collect::<Vec<_>>().join(" "),
                    j.reassigned.to_string(),
                    j.network,
                ]);
            }
            Ok(table(rows))
        }
        PoolCommand::Credits { network } => {
            let c = node.credits(network.as_deref()).await?;
            let mut out = format!(
                "network {}: {} credits to start, {} a token, {}% of chunks checked; {} records\n",
                c.network,
                c.grant,
                c.price_per_token,
                c.check_rate * 100.0,
                c.records
            );
            let mut rows = vec![["person", "available", "earned", "spent"].map(String::from).to_vec()];
            for b in &c.balances {
                let me = if b.person == c.me { " (you)" } else { "" };
                rows.push(vec![
                    format!("{}{me}", short(&b.person)),
                    b.available.to_string(),
                    b.earned.to_string(),
                    b.spent.to_string(),
                ]);
            }
            out.push_str(&table(rows));
            if !c.receipts.is_empty() {
                let mut rows = vec![
                    ["job", "chunk", "requester", "worker", "tokens", "credits", ""]
                        .map(String::from)
                        .to_vec(),
                ];
                for r in &c.receipts {
                    rows.push(vec![
                        r.job.clone(),
                        r.chunk.to_string(),
                        short(&r.requester),
                        short(&r.worker),
                        r.tokens.to_string(),
                        r.credits.to_string(),
                        if r.void { "void (lost a check)".into() } else { String::new() },
                    ]);
                }
                out.push_str("\nlatest receipts:\n");
                out.push_str(&table(rows));
            }
            Ok(out)
        }
        PoolCommand::Embed { texts, file, out, network, model } => {
            let inputs = embed_inputs(texts, file.as_deref())?;
            let total = inputs.len();
            let mut sink: Box<dyn Write + Send> = match &out {
                Some(path) => Box::new(std::io::BufWriter::new(
                    std::fs::File::create(path)
                        .map_err(|e| format!("cannot write {}: {e}", path.display()))?,
                )),
                None => Box::new(std::io::stdout()),
            };
            let started = std::time::Instant::now();
            let (mut workers, mut tokens, mut reassigned, mut jobs) =
                (BTreeMap::<String, usize>::new(), 0, 0, 0);
            let mut overheads = Vec::new();
            let mut index = 0;
            // Jobs have a size limit: a long file goes as several.
            for batch in inputs.chunks(MAX_JOB_INPUTS) {
                let offset = index;
                let mut report = |p: &Progress| bar.show(offset + p.done, total);
                let result =
                    node.embed(network.as_deref(), model.as_deref(), batch.to_vec(), &mut report).await;
                let result = result.inspect_err(|_| bar.end())?;
                bar.show(offset + batch.len(), total);
                for (text, vector) in batch.iter().zip(&result.vectors) {
                    let line = json!({ "index": index, "text": text, "embedding": vector });
                    writeln!(sink, "{line}").map_err(|e| format!("cannot write the output: {e}"))?;
                    index += 1;
                }
                for (w, n) in result.workers {
                    *workers.entry(w).or_default() += n;
                }
                tokens += result.tokens;
                reassigned += result.reassigned;
                overheads.extend(result.chunk_overhead_us);
                jobs += 1;
            }
            sink.flush().map_err(|e| format!("cannot write the output: {e}"))?;
            bar.end();
            let spread: Vec<String> = workers.iter().map(|(w, n)| format!("{w}: {n}")).collect();
            Ok(format!(
                "embedded {total} texts ({tokens} tokens) in {:.2} s, {jobs} job(s), chunks by worker: {}; {reassigned} rerun elsewhere{}{}",
                started.elapsed().as_secs_f64(),
                spread.join(", "),
                match overheads.is_empty() {
                    true => String::new(),
                    false => format!(
                        "; {:.2} ms per chunk sent to another node beyond its compute",
                        overheads.iter().sum::<u64>() as f64 / overheads.len() as f64 / 1000.0
                    ),
                },
                out.map_or(String::new(), |p| format!("; written to {}", p.display()))
            ))
        }
    }
}

async fn network(node: &impl Node, command: NetworkCommand) -> Result<String, String> {
    match command {
        NetworkCommand::Create { name } => {
            let n = node.create(&name).await?;
            Ok(format!("created network {} (id {}); invite people with `network invite`", n.name, n.id))
        }
        NetworkCommand::Invite { uses, expires, member_for, network } => {
            let options = InviteOptions { uses, valid_for: expires, member_for };
            node.invite(network.as_deref(), options).await
        }
        NetworkCommand::Join { token, device_cert } => {
            let n = node.join(&token, device_cert.as_deref()).await?;
            Ok(format!("joined network {} (id {}), owned by {}, as {}", n.name, n.id, n.owner, n.person))
        }
        NetworkCommand::Certify { device, expires, network } => {
            node.certify(network.as_deref(), &device, expires).await
        }
        NetworkCommand::Members { network } => {
            let members = node.members(network.as_deref()).await?;
            let mut rows = vec![["person", "role", "devices", "expires"].map(String::from).to_vec()];
            for m in members {
                rows.push(vec![
                    m.person,
                    if m.owner { "owner" } else { "member" }.into(),
                    m.devices.iter().map(|d| short(d)).collect::<Vec<_>>().join(" "),
                    m.expires_ms.map_or("never".into(), |ms| format!("{ms}")),
                ]);
            }
            Ok(table(rows))
        }
        NetworkCommand::Revoke { id, network } => node.revoke(network.as_deref(), &id).await,
        NetworkCommand::Leave { network } => Ok(if node.leave(network.as_deref()).await? {
            "left the network".into()
        } else {
            "left the network (its owner could not be told now; it still lists this node)".into()
        }),
        NetworkCommand::Terms { grant, price, check_percent, network } => {
            let rate = check_percent.map(|p| f64::from(p) / 100.0);
            let info = node.set_terms(network.as_deref(), grant, price, rate).await?;
            Ok(format!(
                "network {}: {} credits to start, {} a token, {}% of chunks checked",
                info.network,
                info.grant,
                info.price_per_token,
                info.check_rate * 100.0
            ))
        }
        NetworkCommand::List => {
            let networks = node.networks().await?;
            if networks.is_empty() {
                return Ok("in no network: `network create NAME`, or `network join TOKEN`".into());
            }
            let mut rows =
                vec![["id", "name", "role", "status", "members", "owner"].map(String::from).to_vec()];
            for n in networks {
                rows.push(vec![n.id, n.name, n.role, n.status, n.members.to_string(), short(&n.owner)]);
            }
            Ok(table(rows))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prompt_lines_parse_like_the_subcommands() {
        assert_eq!(parse_line("status"), None);
        assert_eq!(
            parse_line("network create 'my lab'").unwrap().unwrap(),
            PoolCommand::Network { command: NetworkCommand::Create { name: "my lab".into() } }
        );
        assert_eq!(
            parse_line("network invite --uses 3 --expires 1h").unwrap().unwrap(),
            PoolCommand::Network {
                command: NetworkCommand::Invite {
                    uses: 3,
                    expires: Duration::from_secs(3600),
                    member_for: None,
                    network: None
                }
            }
        );
        assert_eq!(
            parse_line("embed hello \"good morning\"").unwrap().unwrap(),
            PoolCommand::Embed {
                texts: vec!["hello".into(), "good morning".into()],
                file: None,
                out: None,
                network: None,
                model: None
            }
        );
        assert!(parse_line("network invite --expires soon").unwrap().unwrap_err().contains("not a duration"));
        assert!(parse_line("network frob").unwrap().is_err());
        assert!(parse_line("embed 'open").unwrap().is_err());
        assert_eq!(parse_line("jobs").unwrap().unwrap(), PoolCommand::Jobs);
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("2d").unwrap(), Duration::from_secs(172_800));
        assert!(parse_duration("0").is_err() && parse_duration("1y").is_err() && parse_duration("").is_err());
    }
}
