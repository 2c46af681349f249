// Over 300 lines: the pooled-compute routes, the OpenAI-compatible endpoint and its error shapes.
//! The HTTP API of pooled compute, bearer-token protected: networks,
//! workers, jobs, `POST /api/embed` (progress, then the result, as JSON
//! lines) and the OpenAI-compatible `POST /v1/embeddings` that the tools
//! people already use for embeddings (the `openai` clients, LangChain,
//! LlamaIndex) can point at. Also, unprotected, the model files for
//! browser workers (`/models/…`): public files, checked by hash where
//! they are used.

use std::{convert::Infallible, path::PathBuf, sync::Arc, time::Duration};

use axum::{
    Json, Router,
    body::{Body, Bytes},
    extract::{DefaultBodyLimit, FromRequestParts, Query, State},
    http::{HeaderMap, StatusCode, header, request::Parts},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use base64::{Engine as _, engine::general_purpose::STANDARD};
use infermesh_compute::MODEL;
use infermesh_core::{
    InviteOptions, MeshError, MeshHandle, PeerId,
    compute::{self, MAX_JOB_BYTES},
};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::pool::EmbedLine;

/// What the routes share.
#[derive(Clone)]
pub struct PoolState {
    /// The node.
    pub mesh: MeshHandle,
    /// The bearer token.
    pub token: Arc<str>,
}

/// A request that carried the right bearer token.
struct Authorized;

impl FromRequestParts<PoolState> for Authorized {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &PoolState) -> Result<Self, Response> {
        if crate::http::has_token(&parts.headers, &state.token) {
            return Ok(Authorized);
        }
        let message = "missing or wrong API token: send `Authorization: Bearer <token>`, the token in the node's data directory (api-token)";
        Err(openai_error(StatusCode::UNAUTHORIZED, message, "invalid_api_key"))
    }
}

/// A refused request: its status and why.
struct Failure(StatusCode, String);

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        (self.0, self.1).into_response()
    }
}

type Answer = Result<Json<Value>, Failure>;

fn status_of(e: &MeshError) -> StatusCode {
    match e {
        _ if e.is_bad_request() => StatusCode::BAD_REQUEST,
        MeshError::Network(_) => StatusCode::CONFLICT,
        _ => StatusCode::SERVICE_UNAVAILABLE,
    }
}

fn failed(e: MeshError) -> Failure {
    Failure(status_of(&e), e.to_string())
}

fn to_json<T: serde::Serialize>(value: T) -> Answer {
    serde_json::to_value(value)
        .map(Json)
        .map_err(|e| Failure(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))
}

#[derive(Deserialize)]
struct NetworkQuery {
    network: Option<String>,
}

#[derive(Deserialize)]
struct CreateBody {
    name: String,
}

#[derive(Deserialize)]
struct InviteBody {
    network: Option<String>,
    uses: Option<u32>,
    expires_secs: Option<u64>,
    member_for_secs: Option<u64>,
}

#[derive(Deserialize)]
struct JoinBody {
    token: String,
    device_cert: Option<String>,
}

#[derive(Deserialize)]
struct CertifyBody {
    network: Option<String>,
    device: String,
    expires_secs: Option<u64>,
}

#[derive(Deserialize)]
struct RevokeBody {
    network: Option<String>,
    id: String,
}

#[derive(Deserialize)]
struct TermsBody {
    network: Option<String>,
    grant: Option<u64>,
    price_per_token: Option<u64>,
    check_rate: Option<f64>,
}

#[derive(Deserialize)]
struct EmbedBody {
    network: Option<String>,
    model: Option<String>,
    inputs: Vec<String>,
}

async fn networks(_: Authorized, State(s): State<PoolState>) -> Answer {
    to_json(s.mesh.networks().await.map_err(failed)?)
}

async fn create(_: Authorized, State(s): State<PoolState>, Json(body): Json<CreateBody>) -> Answer {
    to_json(s.mesh.network_create(&body.name).await.map_err(failed)?)
}

async fn invite(_: Authorized, State(s): State<PoolState>, Json(body): Json<InviteBody>) -> Answer {
    let defaults = InviteOptions::default();
    let options = InviteOptions {
        uses: body.uses.unwrap_or(defaults.uses),
        valid_for: body.expires_secs.map_or(defaults.valid_for, Duration::from_secs),
        member_for: body.member_for_secs.map(Duration::from_secs),
    };
    let token = s.mesh.network_invite(body.network.as_deref(), options).await.map_err(failed)?;
    to_json(json!({ "token": token }))
}

async fn join(_: Authorized, State(s): State<PoolState>, Json(body): Json<JoinBody>) -> Answer {
    to_json(s.mesh.network_join(&body.token, body.device_cert.as_deref()).await.map_err(failed)?)
}

async fn certify(_: Authorized, State(s): State<PoolState>, Json(body): Json<CertifyBody>) -> Answer {
    let device: PeerId = body
        .device
        .parse()
        .map_err(|_| Failure(StatusCode::BAD_REQUEST, format!("'{}' is not a node ID", body.device)))?;
    let valid_for = Duration::from_secs(body.expires_secs.unwrap_or(7 * 86_400));
    let cert = s.mesh.network_certify(body.network.as_deref(), device, valid_for).await.map_err(failed)?;
    to_json(json!({ "cert": cert }))
}

async fn members(_: Authorized, State(s): State<PoolState>, Query(q): Query<NetworkQuery>) -> Answer {
    to_json(s.mesh.network_members(q.network.as_deref()).await.map_err(failed)?)
}

async fn revoke(_: Authorized, State(s): State<PoolState>, Json(body): Json<RevokeBody>) -> Answer {
    let revoked = s.mesh.network_revoke(body.network.as_deref(), &body.id).await.map_err(failed)?;
    to_json(json!({ "revoked": revoked }))
}

async fn leave(_: Authorized, State(s): State<PoolState>, Json(body): Json<NetworkQuery>) -> Answer {
    let confirmed = s.mesh.network_leave(body.network.as_deref()).await.map_err(failed)?;
    to_json(json!({ "owner_confirmed": confirmed }))
}

async fn workers(_: Authorized, State(s): State<PoolState>, Query(q): Query<NetworkQuery>) -> Answer {
    to_json(s.mesh.workers(q.network.as_deref()).await.map_err(failed)?)
}

async fn credits(_: Authorized, State(s): State<PoolState>, Query(q): Query<NetworkQuery>) -> Answer {
    to_json(s.mesh.credits(q.network.as_deref()).await.map_err(failed)?)
}

/// Sets the terms a network's owner chose; what it leaves out stays as it was.
async fn terms(_: Authorized, State(s): State<PoolState>, Json(body): Json<TermsBody>) -> Answer {
    let TermsBody { network, grant, price_per_token, check_rate } = body;
    let info = s.mesh.update_credit_terms(network.as_deref(), grant, price_per_token, check_rate).await;
    to_json(info.map_err(failed)?)
}

async fn jobs(_: Authorized, State(s): State<PoolState>) -> Answer {
    to_json(s.mesh.jobs().await.map_err(failed)?)
}

fn line(value: &EmbedLine) -> Result<Bytes, Infallible> {
    let mut text = serde_json::to_string(value).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"));
    text.push('\n');
    Ok(Bytes::from(text))
}

/// Runs a job; answers its progress, then its result, as JSON lines.
async fn embed(
    _: Authorized,
    State(s): State<PoolState>,
    Json(body): Json<EmbedBody>,
) -> Result<Response, Failure> {
    let job = s
        .mesh
        .start_embed(body.network.as_deref(), body.model.as_deref(), body.inputs)
        .await
        .map_err(failed)?;
    let (lines, rx) = tokio::sync::mpsc::channel(8);
    tokio::spawn(async move {
        let (mut progress, mut result) = (job.progress, job.result);
        let mut watching = true;
        loop {
            tokio::select! {
                biased;
                changed = progress.changed(), if watching => {
                    if changed.is_err() {
                        // The job is over: its result is next.
                        watching = false;
                        continue;
                    }
                    let now = progress.borrow_and_update().clone();
                    if lines.send(line(&EmbedLine::Progress(now))).await.is_err() {
                        // The caller went away: dropping the job ends it.
                        return;
                    }
                }
                done = &mut result => {
                    let last = match done {
                        Ok(Ok(embeddings)) => EmbedLine::Result(embeddings),
                        Ok(Err(e)) => EmbedLine::Error(e.to_string()),
                        Err(_) => EmbedLine::Error("the node stopped".into()),
                    };
                    let _ = lines.send(line(&last)).await;
                    return;
                }
            }
        }
    });
    let stream = futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|item| (item, rx)) });
    Ok(([(header::CONTENT_TYPE, "application/x-ndjson")], Body::from_stream(stream)).into_response())
}

// ---- the OpenAI-compatible endpoint ----------------------------------------------

fn openai_error(status: StatusCode, message: &str, code: &str) -> Response {
    let kind = if status.is_client_error() { "invalid_request_error" } else { "server_error" };
    (status, Json(json!({ "error": { "message": message, "type": kind, "param": null, "code": code } })))
        .into_response()
}

/// `input` as OpenAI takes it.
#[derive(Deserialize)]
#[serde(untagged)]
enum Input {
    One(String),
    Many(Vec<String>),
    Tokens(#[allow(dead_code)] Vec<u32>),
    ManyTokens(#[allow(dead_code)] Vec<Vec<u32>>),
}

#[derive(Deserialize)]
struct OpenAiRequest {
    input: Input,
    model: String,
    encoding_format: Option<String>,
    dimensions: Option<usize>,
}

/// `POST /v1/embeddings`, as OpenAI's: the network is the node's only one,
/// or the one named by the `X-InferMesh-Network` header.
async fn openai_embeddings(
    _: Authorized,
    State(s): State<PoolState>,
    headers: HeaderMap,
    body: Result<Json<OpenAiRequest>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let Json(request) = match body {
        Ok(body) => body,
        Err(e) => return openai_error(StatusCode::BAD_REQUEST, &e.body_text(), "invalid_request"),
    };
    let Some(model) = compute::model(&request.model) else {
        let message =
            format!("The model `{}` does not exist here; this mesh runs `{}`.", request.model, MODEL.name);
        return openai_error(StatusCode::NOT_FOUND, &message, "model_not_found");
    };
    let inputs = match request.input {
        Input::One(text) => vec![text],
        Input::Many(texts) => texts,
        Input::Tokens(_) | Input::ManyTokens(_) => {
            let message = "token arrays are not supported: send the text (with LangChain, set check_embedding_ctx_length=False)";
            return openai_error(StatusCode::BAD_REQUEST, message, "unsupported_input");
        }
    };
    if let Some(d) = request.dimensions
        && d != model.dimensions
    {
        let message = format!("`{}` has {} dimensions, not {d}", model.name, model.dimensions);
        return openai_error(StatusCode::BAD_REQUEST, &message, "invalid_dimensions");
    }
    let base64 = match request.encoding_format.as_deref() {
        None | Some("float") => false,
        Some("base64") => true,
        Some(other) => {
            let message = format!("encoding_format '{other}' is not 'float' or 'base64'");
            return openai_error(StatusCode::BAD_REQUEST, &message, "invalid_encoding_format");
        }
    };
    let network = headers.get("x-infermesh-network").and_then(|v| v.to_str().ok());
    let result = match s.mesh.start_embed(network, Some(model.name), inputs).await {
        Ok(job) => job.result.await.unwrap_or(Err(MeshError::Closed)),
        Err(e) => Err(e),
    };
    let embeddings = match result {
        Ok(e) => e,
        Err(e) => {
            let code = if e.is_bad_request() { "invalid_input" } else { "unavailable" };
            return openai_error(status_of(&e), &e.to_string(), code);
        }
    };
    let data: Vec<Value> = embeddings
        .vectors
        .iter()
        .enumerate()
        .map(|(index, v)| {
            let embedding = if base64 {
                let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
                json!(STANDARD.encode(bytes))
            } else {
                json!(v)
            };
            json!({ "object": "embedding", "index": index, "embedding": embedding })
        })
        .collect();
    Json(json!({
        "object": "list",
        "data": data,
        "model": model.name,
        "usage": { "prompt_tokens": embeddings.tokens, "total_tokens": embeddings.tokens },
    }))
    .into_response()
}

/// `GET /v1/models`, as OpenAI's.
async fn openai_models(_: Authorized) -> Json<Value> {
    let data: Vec<Value> = compute::MODELS
        .iter()
        .map(|m| json!({ "id": m.name, "object": "model", "created": 0, "owned_by": "infermesh" }))
        .collect();
    Json(json!({ "object": "list", "data": data }))
}

/// `GET /models/manifest.json`: the model files a browser worker fetches,
/// with their SHA-256 (it checks them).
async fn manifest() -> Json<Value> {
    let files: Vec<Value> = MODEL
        .files()
        .iter()
        .map(|f| json!({ "name": f.name, "sha256": f.sha256, "size": f.size, "url": format!("/models/{}/{}", MODEL.name, f.name) }))
        .collect();
    Json(json!({ "models": [{ "name": MODEL.name, "files": files }] }))
}

/// The routes; the model files are served from `model_dir` when given.
pub fn routes(state: PoolState, model_dir: Option<PathBuf>) -> Router {
    // A job's inputs may be large (up to the job limit, as JSON).
    let big = DefaultBodyLimit::max(MAX_JOB_BYTES * 2);
    let mut router = Router::new()
        .route("/api/networks", get(networks).post(create))
        .route("/api/networks/invite", post(invite))
        .route("/api/networks/join", post(join))
        .route("/api/networks/certify", post(certify))
        .route("/api/networks/members", get(members))
        .route("/api/networks/revoke", post(revoke))
        .route("/api/networks/leave", post(leave))
        .route("/api/networks/terms", post(terms))
        .route("/api/workers", get(workers))
        .route("/api/credits", get(credits))
        .route("/api/jobs", get(jobs))
        .route("/api/embed", post(embed).layer(big))
        .route("/v1/embeddings", post(openai_embeddings).layer(big))
        .route("/v1/models", get(openai_models))
        .route("/models/manifest.json", get(manifest))
        .with_state(state);
    if let Some(dir) = model_dir {
        router =
            router.nest_service(&format!("/models/{}", MODEL.name), tower_http::services::ServeDir::new(dir));
    }
    router
}
