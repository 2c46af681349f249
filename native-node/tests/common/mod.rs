//! Runs the real `infermesh` binary as a child process on loopback and
//! talks to it through its prompt (piped stdin) and its output.
#![allow(dead_code)]

pub mod pool;

use std::{
    io::{BufRead, BufReader, Write},
    path::{Path, PathBuf},
    process::{Child, ChildStdin, Command, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

pub const DEADLINE: Duration = Duration::from_secs(30);

/// Arguments that keep a node on loopback with free ports and no mDNS.
pub fn loopback_args(data_dir: &Path) -> Vec<String> {
    [
        "--data-dir",
        data_dir.to_str().unwrap(),
        "--listen-ip",
        "127.0.0.1",
        "--tcp-port",
        "0",
        "--quic-port",
        "0",
        "--ws-port",
        "0",
        "--webrtc-port",
        "0",
        "--api-port",
        "0",
        "--no-mdns",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// Replaces the value of `--flag` in `args`.
pub fn set_arg(args: &mut [String], flag: &str, value: &str) {
    let i = args.iter().position(|a| a == flag).expect("flag present");
    args[i + 1] = value.to_owned();
}

pub struct NodeProcess {
    pub name: String,
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: Arc<Mutex<Vec<String>>>,
    stderr: Arc<Mutex<Vec<String>>>,
    pub data_dir: PathBuf,
}

fn collect(reader: impl std::io::Read + Send + 'static, sink: Arc<Mutex<Vec<String>>>) {
    std::thread::spawn(move || {
        for line in BufReader::new(reader).lines() {
            let Ok(line) = line else { break };
            sink.lock().unwrap().push(line);
        }
    });
}

impl NodeProcess {
    /// Starts `infermesh <args…>`; `data_dir` is where it keeps its files.
    pub fn start(name: &str, args: &[String], data_dir: &Path) -> NodeProcess {
        let mut child = Command::new(env!("CARGO_BIN_EXE_infermesh"))
            .args(args)
            .env("RUST_LOG", "info,libp2p=warn,webrtc=off,webrtc_ice=off,webrtc_sctp=off")
            .env_remove("INFERMESH_DATA_DIR")
            .env_remove("INFERMESH_PRIVATE_KEY")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the infermesh binary starts");
        let stdout = Arc::new(Mutex::new(Vec::new()));
        let stderr = Arc::new(Mutex::new(Vec::new()));
        collect(child.stdout.take().unwrap(), stdout.clone());
        collect(child.stderr.take().unwrap(), stderr.clone());
        NodeProcess {
            name: name.to_owned(),
            stdin: child.stdin.take(),
            child,
            stdout,
            stderr,
            data_dir: data_dir.to_owned(),
        }
    }

    /// The process ID.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Resident memory, in bytes (`VmRSS` of `/proc/<pid>/status`).
    pub fn rss(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        let kb = status.lines().find_map(|l| l.strip_prefix("VmRSS:")).expect("VmRSS");
        kb.trim().trim_end_matches("kB").trim().parse::<u64>().unwrap() * 1024
    }

    /// Types a line at the prompt.
    pub fn send(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("stdin open");
        writeln!(stdin, "{line}").unwrap();
        stdin.flush().unwrap();
    }

    /// Closes stdin (end of file).
    pub fn close_stdin(&mut self) {
        self.stdin = None;
    }

    pub fn lines(&self) -> Vec<String> {
        self.stdout.lock().unwrap().clone()
    }

    pub fn count(&self, pred: impl Fn(&str) -> bool) -> usize {
        self.stdout.lock().unwrap().iter().filter(|l| pred(l)).count()
    }

    /// Waits until at least `n` output lines satisfy `pred`; returns the
    /// `n`-th.
    pub fn wait_nth(&self, n: usize, what: &str, pred: impl Fn(&str) -> bool) -> String {
        let start = Instant::now();
        loop {
            if let Some(line) = self.stdout.lock().unwrap().iter().filter(|l| pred(l)).nth(n - 1) {
                return line.clone();
            }
            assert!(
                start.elapsed() < DEADLINE,
                "{}: timed out waiting for {what}\n{}",
                self.name,
                self.transcript()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits for the first output line satisfying `pred`.
    pub fn wait_line(&self, what: &str, pred: impl Fn(&str) -> bool) -> String {
        self.wait_nth(1, what, pred)
    }

    /// Waits for the line containing `needle` after `already` such lines.
    pub fn wait_contains_after(&self, already: usize, needle: &str) -> String {
        self.wait_nth(already + 1, needle, |l| l.contains(needle))
    }

    /// Types a command and waits for its answer: the first new line
    /// containing any of `answers`.
    pub fn ask(&mut self, command: &str, answers: &[&str]) -> String {
        let before = self.count(|l| answers.iter().any(|a| l.contains(a)));
        self.send(command);
        self.wait_nth(before + 1, command, |l| answers.iter().any(|a| l.contains(a)))
    }

    /// Waits for `addrs.json` to list all four transports; returns it.
    pub fn addrs(&self) -> Addrs {
        let file = self.data_dir.join("addrs.json");
        let start = Instant::now();
        loop {
            if let Some(addrs) = std::fs::read_to_string(&file).ok().and_then(|t| parse_addrs(&t)) {
                return addrs;
            }
            assert!(start.elapsed() < DEADLINE, "{}: no addrs.json\n{}", self.name, self.transcript());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits for the process to exit; returns its exit code.
    pub fn wait_exit(&mut self) -> i32 {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code().unwrap_or(-1);
            }
            assert!(start.elapsed() < DEADLINE, "{}: did not exit\n{}", self.name, self.transcript());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends a signal (`TERM`, `INT`, `KILL`).
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill").arg(format!("-{signal}")).arg(self.child.id().to_string()).status();
        assert!(status.unwrap().success());
    }

    pub fn transcript(&self) -> String {
        let out = self.stdout.lock().unwrap();
        let err = self.stderr.lock().unwrap();
        let tail = |v: &Vec<String>| v.iter().rev().take(40).rev().cloned().collect::<Vec<_>>().join("\n");
        format!("--- {} stdout ---\n{}\n--- {} stderr ---\n{}", self.name, tail(&out), self.name, tail(&err))
    }

    pub fn stderr_text(&self) -> String {
        self.stderr.lock().unwrap().join("\n")
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("{}", self.transcript());
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Where a node listens, from its `addrs.json`.
#[derive(Debug, Clone)]
pub struct Addrs {
    pub peer_id: String,
    pub tcp: String,
    pub quic: String,
    pub ws: String,
    pub webrtc: String,
    pub api: Option<String>,
}

/// Reads `addrs.json`; `None` until it lists all four transports.
fn parse_addrs(text: &str) -> Option<Addrs> {
    let json: serde_json::Value = serde_json::from_str(text).ok()?;
    let addrs: Vec<&str> = json["addrs"].as_array()?.iter().filter_map(|v| v.as_str()).collect();
    let pick = |pred: &dyn Fn(&str) -> bool| addrs.iter().find(|a| pred(a)).map(|a| a.to_string());
    Some(Addrs {
        peer_id: json["peer_id"].as_str()?.to_owned(),
        tcp: pick(&|a| a.contains("/tcp/") && !a.contains("/ws"))?,
        quic: pick(&|a| a.contains("/quic-v1"))?,
        ws: pick(&|a| a.contains("/ws"))?,
        webrtc: pick(&|a| a.contains("/webrtc-direct/certhash/"))?,
        api: json["api"].as_str().map(String::from),
    })
}

/// The port number in a multiaddr like `/ip4/127.0.0.1/tcp/1234/…`.
pub fn port_of(addr: &str) -> String {
    let parts: Vec<&str> = addr.split('/').collect();
    let i = parts.iter().position(|p| *p == "tcp" || *p == "udp").unwrap();
    parts[i + 1].to_owned()
}

/// Runs the binary to completion with no stdin; returns (code, stdout, stderr).
pub fn run_to_end(args: &[String]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_infermesh"))
        .args(args)
        .env_remove("INFERMESH_DATA_DIR")
        .env_remove("INFERMESH_PRIVATE_KEY")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `GET <api><path>` on the node's loopback HTTP API; the response body.
pub fn http_get(api: &str, path: &str) -> String {
    use std::io::Read;
    let host = api.trim_start_matches("http://");
    let mut stream = std::net::TcpStream::connect(host).expect("the HTTP API answers");
    write!(stream, "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    response.split_once("\r\n\r\n").map(|(_, body)| body.to_owned()).unwrap_or_default()
}

/// A raw HTTP/1.1 request to the API: `GET path` with the given extra
/// header lines (each ending in `\r\n`); (status code, body).
pub fn http_raw(api: &str, path: &str, headers: &str) -> (u16, String) {
    use std::io::Read;
    let host = api.trim_start_matches("http://");
    let mut stream = std::net::TcpStream::connect(host).expect("the HTTP API answers");
    write!(stream, "GET {path} HTTP/1.1\r\n{headers}Connection: close\r\n\r\n").unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let status = response.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    (status, response.split_once("\r\n\r\n").map(|(_, body)| body.to_owned()).unwrap_or_default())
}

/// `POST <api><path>` with a JSON body and a bearer token (if any);
/// (status code, body).
pub fn http_post(api: &str, path: &str, token: Option<&str>, body: &str) -> (u16, String) {
    use std::io::Read;
    let host = api.trim_start_matches("http://");
    let mut stream = std::net::TcpStream::connect(host).expect("the HTTP API answers");
    let auth = token.map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default();
    write!(
        stream,
        "POST {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\nContent-Type: application/json\r\n{auth}Content-Length: {}\r\n\r\n",
        body.len()
    )
    .unwrap();
    stream.write_all(body.as_bytes()).unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).unwrap();
    let response = String::from_utf8_lossy(&response).into_owned();
    let status = response.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = response.split_once("\r\n\r\n").map(|(_, body)| body.to_owned()).unwrap_or_default();
    // Chunked bodies (streamed answers): join the chunks.
    let body = if response.to_ascii_lowercase().contains("transfer-encoding: chunked") {
        unchunk(&body)
    } else {
        body
    };
    (status, body)
}

fn unchunk(body: &str) -> String {
    let mut out = String::new();
    let mut rest = body;
    while let Some((size, after)) = rest.split_once("\r\n") {
        let Ok(size) = usize::from_str_radix(size.trim(), 16) else { break };
        if size == 0 || after.len() < size {
            break;
        }
        out.push_str(&after[..size]);
        rest = after[size..].trim_start_matches("\r\n");
    }
    out
}

/// Where the embeddings model's files are (`scripts/ci/models.sh`).
pub fn model_dir() -> PathBuf {
    std::env::var_os("INFERMESH_MODEL_DIR").map(PathBuf::from).unwrap_or_else(|| {
        PathBuf::from(std::env::var_os("HOME").expect("HOME"))
            .join(".cache/infermesh-models/all-MiniLM-L6-v2")
    })
}
