//! The local HTTP API, bound to loopback only: addresses for browsers to
//! bootstrap from, status, peers, topic subscribers, state, and Prometheus
//! metrics.
//!
//! Loopback is not enough on its own: a web page can reach it through DNS
//! rebinding (a name of the page's that resolves to 127.0.0.1), so requests
//! whose `Host` is not a loopback name are refused; and this node's private
//! values are opened only for a request that carries the API token.

use std::{
    net::{Ipv4Addr, SocketAddr},
    path::Path,
    sync::Arc,
};

use anyhow::{Context, Result};
use axum::{
    Json, Router,
    extract::{Path as UrlPath, Request, State},
    http::{HeaderMap, StatusCode, header},
    middleware::{self, Next},
    response::{IntoResponse, Response},
    routing::get,
};
use infermesh_core::{MeshError, MeshHandle, PeerInfo, StateView, Status};
use serde::Serialize;

type ApiResult<T> = Result<Json<T>, (StatusCode, String)>;

/// What the core routes share.
#[derive(Clone)]
struct Api {
    mesh: MeshHandle,
    token: Arc<str>,
}

/// Whether `headers` carry `Authorization: Bearer <token>` (compared in
/// constant time).
pub(crate) fn has_token(headers: &HeaderMap, token: &str) -> bool {
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default();
    let (a, b) = (given.as_bytes(), token.as_bytes());
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Whether a `Host` header names this machine's loopback: `127.0.0.1`,
/// `localhost` or `[::1]`, with any port.
fn loopback_host(host: &str) -> bool {
    let name = match host.strip_prefix('[') {
        Some(v6) => v6.split_once(']').map_or(v6, |(addr, _)| addr),
        None => host.rsplit_once(':').map_or(host, |(name, _)| name),
    };
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    name == "localhost" || name.ends_with(".localhost") || name == "127.0.0.1" || name == "::1"
}

/// Refuses requests addressed to another name (DNS rebinding).
async fn only_loopback_hosts(request: Request, next: Next) -> Response {
    let host = request.headers().get(header::HOST).and_then(|h| h.to_str().ok());
    match host {
        Some(host) if loopback_host(host) => next.run(request).await,
        _ => (
            StatusCode::MISDIRECTED_REQUEST,
            "this API answers only requests addressed to 127.0.0.1, localhost or [::1]",
        )
            .into_response(),
    }
}

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

async fn addrs(State(Api { mesh, .. }): State<Api>) -> ApiResult<Addrs> {
    let status = mesh.status().await.map_err(unavailable)?;
    let browser_addrs = status
        .listen_addrs
        .iter()
        .filter(|a| !a.contains("/p2p-circuit") && (a.contains("/ws/") || a.contains("/webrtc-direct/")))
        .cloned()
        .collect();
    Ok(Json(Addrs { peer_id: status.peer_id, addrs: status.listen_addrs, browser_addrs }))
}

async fn status(State(Api { mesh, .. }): State<Api>) -> ApiResult<Status> {
    mesh.status().await.map(Json).map_err(unavailable)
}

async fn peers(State(Api { mesh, .. }): State<Api>) -> ApiResult<Vec<PeerInfo>> {
    mesh.peers().await.map(Json).map_err(unavailable)
}

/// The peers known to be subscribed to a topic.
async fn topic_peers(
    State(Api { mesh, .. }): State<Api>,
    UrlPath(topic): UrlPath<String>,
) -> ApiResult<Vec<String>> {
    let peers = mesh.topic_peers(&topic).await.map_err(unavailable)?;
    Ok(Json(peers.iter().map(ToString::to_string).collect()))
}

/// This node's state, or a namespace it holds (`/api/state/<node-id>`).
/// This node's private values are opened only for a request with the API
/// token; without it they stay sealed.
async fn state(
    State(Api { mesh, token }): State<Api>,
    headers: HeaderMap,
    namespace: Option<UrlPath<String>>,
) -> ApiResult<StateView> {
    let namespace = namespace.map(|UrlPath(ns)| ns);
    if let Some(ns) = &namespace
        && ns.parse::<infermesh_core::PeerId>().is_err()
    {
        return Err((StatusCode::BAD_REQUEST, format!("'{ns}' is not a node ID")));
    }
    let view = match has_token(&headers, &token) {
        true => mesh.state(namespace.as_deref()).await,
        false => mesh.state_sealed(namespace.as_deref()).await,
    };
    view.map(Json).map_err(unavailable)
}

async fn metrics(State(Api { mesh, .. }): State<Api>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")],
        mesh.prometheus_metrics(),
    )
}

/// Starts the API on `127.0.0.1:port` (0 picks a port), with the pooled
/// compute routes (`pool`) and the files of `www` (if given) at `/`;
/// returns the bound address. `token` is the API token.
pub async fn serve(
    mesh: MeshHandle,
    token: Arc<str>,
    port: u16,
    www: Option<&Path>,
    pool: Router,
) -> Result<SocketAddr> {
    let mut app = Router::new()
        .route("/api/addrs", get(addrs))
        .route("/api/status", get(status))
        .route("/api/peers", get(peers))
        .route("/api/topics/{topic}/peers", get(topic_peers))
        .route("/api/state", get(state))
        .route("/api/state/{namespace}", get(state))
        .route("/metrics", get(metrics))
        .with_state(Api { mesh, token })
        .merge(pool);
    if let Some(dir) = www {
        if !dir.join("index.html").is_file() {
            anyhow::bail!("--www {}: no index.html there", dir.display());
        }
        app = app.fallback_service(tower_http::services::ServeDir::new(dir));
    }
    let app = app.layer(middleware::from_fn(only_loopback_hosts));
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_names_are_accepted_as_host() {
        for host in [
            "127.0.0.1:8080",
            "localhost:1",
            "LOCALHOST",
            "[::1]:80",
            "[::1]",
            "demo.localhost:3",
            "localhost.",
        ] {
            assert!(loopback_host(host), "{host}");
        }
        for host in [
            "attacker.example",
            "attacker.example:8080",
            "127.0.0.1.evil.example",
            "localhost.evil.example:80",
            "[::2]:80",
            "",
            "10.0.0.1:80",
        ] {
            assert!(!loopback_host(host), "{host}");
        }
    }
}
