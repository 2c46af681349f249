//! The pooled-compute commands' way to a running node over its HTTP API
//! (the subcommands: `infermesh network create lab` asks the node whose
//! data directory it is given), with the token from that directory.

use std::{io::BufRead, path::Path, time::Duration};

use infermesh_core::{
    InviteOptions,
    compute::{CreditsInfo, Embeddings, JobInfo, MemberInfo, NetworkInfo, Progress, WorkerInfo},
};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::{Node, text};

/// A running node's HTTP API, with its token.
#[derive(Clone, Debug)]
pub struct Api {
    base: String,
    token: String,
}

/// One line of `POST /api/embed`'s answer.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EmbedLine {
    /// How far the job is.
    Progress(Progress),
    /// The job's result.
    Result(Embeddings),
    /// Why it failed.
    Error(String),
}

impl Api {
    /// The API of the node whose data directory is `dir` (its address from
    /// `addrs.json`, its token from `api-token`).
    pub fn from_data_dir(dir: &Path) -> Result<Self, String> {
        let addrs = std::fs::read_to_string(dir.join("addrs.json"))
            .map_err(|e| format!("no node is running with data directory {} ({e})", dir.display()))?;
        let addrs: crate::datadir::AddrsFile = serde_json::from_str(&addrs).map_err(text)?;
        let base = addrs.api.ok_or_else(|| "that node runs without its HTTP API (--no-api)".to_owned())?;
        let token = std::fs::read_to_string(dir.join(crate::datadir::API_TOKEN_FILE))
            .map_err(|e| format!("cannot read the node's API token: {e}"))?;
        Ok(Self { base, token: token.trim().to_owned() })
    }

    /// An API at `base` with `token`.
    pub fn new(base: &str, token: &str) -> Self {
        Self { base: base.trim_end_matches('/').to_owned(), token: token.to_owned() }
    }

    fn agent() -> ureq::Agent {
        ureq::Agent::config_builder().http_status_as_error(false).build().into()
    }

    async fn call<T: for<'de> Deserialize<'de> + Send + 'static>(
        &self,
        method: &'static str,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> Result<T, String> {
        let (url, auth) = (format!("{}{path}", self.base), format!("Bearer {}", self.token));
        tokio::task::spawn_blocking(move || {
            let agent = Self::agent();
            let response = match (method, body) {
                ("GET", _) => agent.get(&url).header("Authorization", &auth).call(),
                (_, body) => {
                    agent.post(&url).header("Authorization", &auth).send_json(body.unwrap_or(json!({})))
                }
            };
            let mut response = response.map_err(|e| format!("cannot reach the node at {url}: {e}"))?;
            let status = response.status();
            let text = response.body_mut().read_to_string().map_err(text)?;
            if !status.is_success() {
                return Err(text);
            }
            serde_json::from_str(&text).map_err(|e| format!("unexpected answer from the node: {e}"))
        })
        .await
        .map_err(text)?
    }
}

fn query(network: Option<&str>) -> String {
    network.map_or_else(String::new, |n| {
        format!("?network={}", n.replace(|c: char| !c.is_ascii_alphanumeric() && c != '-', ""))
    })
}

impl Node for Api {
    async fn networks(&self) -> Result<Vec<NetworkInfo>, String> {
        self.call("GET", "/api/networks", None).await
    }
    async fn create(&self, name: &str) -> Result<NetworkInfo, String> {
        self.call("POST", "/api/networks", Some(json!({ "name": name }))).await
    }
    async fn invite(&self, network: Option<&str>, options: InviteOptions) -> Result<String, String> {
        let body = json!({
            "network": network,
            "uses": options.uses,
            "expires_secs": options.valid_for.as_secs(),
            "member_for_secs": options.member_for.map(|d| d.as_secs()),
        });
        let answer: serde_json::Value = self.call("POST", "/api/networks/invite", Some(body)).await?;
        Ok(answer["token"].as_str().unwrap_or_default().to_owned())
    }
    async fn join(&self, token: &str, cert: Option<&str>) -> Result<NetworkInfo, String> {
        self.call("POST", "/api/networks/join", Some(json!({ "token": token, "device_cert": cert }))).await
    }
    async fn certify(
        &self,
        network: Option<&str>,
        device: &str,
        valid_for: Duration,
    ) -> Result<String, String> {
        let body = json!({ "network": network, "device": device, "expires_secs": valid_for.as_secs() });
        let answer: serde_json::Value = self.call("POST", "/api/networks/certify", Some(body)).await?;
        Ok(answer["cert"].as_str().unwrap_or_default().to_owned())
    }
    async fn members(&self, network: Option<&str>) -> Result<Vec<MemberInfo>, String> {
        self.call("GET", &format!("/api/networks/members{}", query(network)), None).await
    }
    async fn revoke(&self, network: Option<&str>, id: &str) -> Result<String, String> {
        let answer: serde_json::Value =
            self.call("POST", "/api/networks/revoke", Some(json!({ "network": network, "id": id }))).await?;
        Ok(answer["revoked"].as_str().unwrap_or_default().to_owned())
    }
    async fn leave(&self, network: Option<&str>) -> Result<bool, String> {
        let answer: serde_json::Value =
            self.call("POST", "/api/networks/leave", Some(json!({ "network": network }))).await?;
        Ok(answer["owner_confirmed"].as_bool().unwrap_or(false))
    }
    async fn workers(&self, network: Option<&str>) -> Result<Vec<WorkerInfo>, String> {
        self.call("GET", &format!("/api/workers{}", query(network)), None).await
    }
    async fn jobs(&self) -> Result<Vec<JobInfo>, String> {
        self.call("GET", "/api/jobs", None).await
    }
    async fn credits(&self, network: Option<&str>) -> Result<CreditsInfo, String> {
        self.call("GET", &format!("/api/credits{}", query(network)), None).await
    }
    async fn set_terms(
        &self,
        network: Option<&str>,
        grant: Option<u64>,
        price: Option<u64>,
        check_rate: Option<f64>,
    ) -> Result<CreditsInfo, String> {
        let body =
            json!({ "network": network, "grant": grant, "price_per_token": price, "check_rate": check_rate });
        self.call("POST", "/api/networks/terms", Some(body)).await
    }
    async fn embed(
        &self,
        network: Option<&str>,
        model: Option<&str>,
        inputs: Vec<String>,
        progress: &mut (dyn FnMut(&Progress) + Send),
    ) -> Result<Embeddings, String> {
        let (url, auth) = (format!("{}/api/embed", self.base), format!("Bearer {}", self.token));
        let body = json!({ "network": network, "model": model, "inputs": inputs });
        let (lines_tx, mut lines) = tokio::sync::mpsc::channel::<Result<EmbedLine, String>>(16);
        let reader = tokio::task::spawn_blocking(move || {
            let send = |line| lines_tx.blocking_send(line).is_ok();
            let response = Self::agent().post(&url).header("Authorization", &auth).send_json(body);
            let mut response = match response {
                Ok(r) => r,
                Err(e) => {
                    send(Err(format!("cannot reach the node at {url}: {e}")));
                    return;
                }
            };
            if !response.status().is_success() {
                let text = response.body_mut().read_to_string().unwrap_or_default();
                send(Err(text));
                return;
            }
            let reader = std::io::BufReader::new(response.into_body().into_reader());
            for line in reader.lines() {
                let parsed =
                    line.map_err(text).and_then(|l| serde_json::from_str::<EmbedLine>(&l).map_err(text));
                if !send(parsed) {
                    return;
                }
            }
        });
        let mut outcome = Err("the node closed the connection before the job ended".to_owned());
        while let Some(line) = lines.recv().await {
            match line {
                Ok(EmbedLine::Progress(p)) => progress(&p),
                Ok(EmbedLine::Result(r)) => outcome = Ok(r),
                Ok(EmbedLine::Error(e)) | Err(e) => outcome = Err(e),
            }
        }
        let _ = reader.await;
        outcome
    }
}

// ---- running a command -----------------------------------------------------------
