//! The management HTTP server: health probes and Prometheus metrics.
//!
//! Paths follow both Waggle's short form (`/health/live`) and Zeebe's Spring-style form
//! (`/actuator/health/liveness`), so existing probes and dashboards work unchanged.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::service::BrokerService;

type Shared = Arc<BrokerService>;

pub fn router(service: Shared) -> Router {
    Router::new()
        .route("/health/live", get(live))
        .route("/actuator/health/liveness", get(live))
        .route("/health/ready", get(ready))
        .route("/actuator/health/readiness", get(ready))
        .route("/health/startup", get(ready))
        .route("/actuator/health/startup", get(ready))
        .route("/actuator/health", get(ready))
        .route("/metrics", get(metrics))
        .route("/actuator/prometheus", get(metrics))
        .with_state(service)
}

/// Alive unless a partition is dead: stuck (no progress for the stall timeout), or stopped with
/// restarts in place that keep failing (see [`crate::partition`]). Neither heals in this process, so
/// Kubernetes should restart it. A replica that waits for disk space or is being restarted is not a
/// reason (a new process would meet the same full disk), nor is a partition without a leader: that
/// heals when the other replicas come back.
async fn live(State(service): State<Shared>) -> impl IntoResponse {
    let dead: Vec<_> = service
        .info()
        .partitions
        .into_iter()
        .filter(|p| p.health == waggle_protocol::topology::PartitionHealth::Dead)
        .map(|p| json!({ "partitionId": p.partition_id, "status": "DOWN", "reason": p.problem }))
        .collect();
    if dead.is_empty() {
        (StatusCode::OK, Json(json!({ "status": "UP" })))
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, Json(json!({ "status": "DOWN", "partitions": dead })))
    }
}

/// Ready once every local partition takes part in its raft group and knows its leader; otherwise the
/// answer names each unhealthy partition and why.
async fn ready(State(service): State<Shared>) -> impl IntoResponse {
    let info = service.info();
    let mut all_healthy = true;
    let partitions: Vec<_> = info
        .partitions
        .iter()
        .map(|p| {
            let healthy = p.health == waggle_protocol::topology::PartitionHealth::Healthy;
            all_healthy &= healthy;
            json!({
                "partitionId": p.partition_id,
                "role": format!("{:?}", p.role).to_uppercase(),
                "status": if healthy { "UP" } else { "DOWN" },
                "reason": p.problem,
            })
        })
        .collect();
    let status = if all_healthy { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    let body =
        json!({ "status": if all_healthy { "UP" } else { "DOWN" }, "nodeId": info.node_id, "partitions": partitions });
    (status, Json(body))
}

async fn metrics(State(service): State<Shared>) -> impl IntoResponse {
    service.refresh_raft_metrics();
    ([(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4")], service.metrics.render())
}

pub async fn serve(
    listener: tokio::net::TcpListener,
    service: Shared,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    axum::serve(listener, router(service)).with_graceful_shutdown(async move { shutdown.cancelled().await }).await
}
