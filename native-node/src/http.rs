//! The local HTTP API, bound to loopback only: addresses for browsers to
//! bootstrap from, status, peers, topic subscribers, state, and Prometheus
//! metrics.

use std::{
    net::{Ipv4Addr, SocketAddr},
    path::Path,
};

use anyhow::{Context, Result};
use axum::{
    Json, Router,
    extract::{Path as UrlPath, State},
    http::{StatusCode, header},
    response::IntoResponse,
    routing::get,
};
use infermesh_core::{MeshError, MeshHandle, PeerInfo, StateView, Status};
use serde::Serialize;

type ApiResult<T> = Result<Json<T>, (StatusCode, String)>;

fn unavailable(e: MeshError) -> (StatusCode, String) {
    (StatusCode::SERVICE_UNAVAILABLE, e.to_string())
}

#[derive(Serialize)]
struct Addrs {
    peer_id: String,
    /// Every listen address.
    addrs: Vec<String>,
    /// The ones a browser can dial: WebSocket and WebRTC-direct.
    browser_addrs: Vec<String>,
}

async fn addrs(State(mesh): State<MeshHandle>) -> ApiResult<Addrs> {
    let status = mesh.status().await.map_err(unavailable)?;
    let browser_addrs = status
        .listen_addrs
        .iter()
        .filter(|a| !a.contains("/p2p-circuit") && (a.contains("/ws/") || a.contains("/webrtc-direct/")))
        .cloned()
        .collect();
    Ok(Json(Addrs { peer_id: status.peer_id, addrs: status.listen_addrs, browser_addrs }))
}

async fn status(State(mesh): State<MeshHandle>) -> ApiResult<Status> {
    mesh.status().await.map(Json).map_err(unavailable)
}

async fn peers(State(mesh): State<MeshHandle>) -> ApiResult<Vec<PeerInfo>> {
    mesh.peers().await.map(Json).map_err(unavailable)
}

/// The peers known to be subscribed to a topic.
async fn topic_peers(
    State(mesh): State<MeshHandle>,
    UrlPath(topic): UrlPath<String>,
) -> ApiResult<Vec<String>> {
    let peers = mesh.topic_peers(&topic).await.map_err(unavailable)?;
    Ok(Json(peers.iter().map(ToString::to_string).collect()))
}

/// This node's state, or a namespace it holds (`/api/state/<node-id>`).
async fn state(State(mesh): State<MeshHandle>, namespace: Option<UrlPath<String>>) -> ApiResult<StateView> {
    let namespace = namespace.map(|UrlPath(ns)| ns);
    if let Some(ns) = &namespace
        && ns.parse::<infermesh_core::PeerId>().is_err()
    {
        return Err((StatusCode::BAD_REQUEST, format!("'{ns}' is not a node ID")));
    }
    mesh.state(namespace.as_deref()).await.map(Json).map_err(unavailable)
}

async fn metrics(State(mesh): State<MeshHandle>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")],
        mesh.prometheus_metrics(),
    )
}

/// Starts the API on `127.0.0.1:port` (0 picks a port), with the pooled
/// compute routes (`pool`) and the files of `www` (if given) at `/`;
/// returns the bound address.
pub async fn serve(mesh: MeshHandle, port: u16, www: Option<&Path>, pool: Router) -> Result<SocketAddr> {
    let mut app = Router::new()
        .route("/api/addrs", get(addrs))
        .route("/api/status", get(status))
        .route("/api/peers", get(peers))
        .route("/api/topics/{topic}/peers", get(topic_peers))
        .route("/api/state", get(state))
        .route("/api/state/{namespace}", get(state))
        .route("/metrics", get(metrics))
        .with_state(mesh)
        .merge(pool);
    if let Some(dir) = www {
        if !dir.join("index.html").is_file() {
            anyhow::bail!("--www {}: no index.html there", dir.display());
        }
        app = app.fallback_service(tower_http::services::ServeDir::new(dir));
    }
    let listener = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, port))
        .await
        .with_context(|| format!("cannot start the HTTP API on 127.0.0.1:{port}"))?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!("HTTP API stopped: {e}");
        }
    });
    Ok(addr)
}
