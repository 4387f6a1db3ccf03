//! The gateway's management HTTP server: health probes and Prometheus metrics.
//!
//! Kubernetes probes a gateway pod here like a broker pod (same paths as the broker's management
//! API). A gateway is ready once it knows a leader for every partition of the cluster it fronts.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use prometheus::{Gauge, IntGauge, Registry};
use serde_json::json;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::cluster::Cluster;

struct Management {
    cluster: Arc<Cluster>,
    registry: Registry,
    partitions_with_leader: IntGauge,
    /// See [`process_cpu_seconds`].
    cpu_seconds: Gauge,
}

/// User and system CPU time of this process so far, in seconds, to the nanosecond: the standard
/// `process_cpu_seconds_total` counts whole seconds, too coarse for `waggle bench`'s CPU time per
/// instance. The broker exports the same gauge.
fn process_cpu_seconds() -> f64 {
    let mut time = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime only writes the timespec it is given.
    if unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut time) } != 0 {
        return 0.0;
    }
    time.tv_sec as f64 + time.tv_nsec as f64 * 1e-9
}

pub(crate) async fn serve(
    listener: TcpListener,
    cluster: Arc<Cluster>,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let registry = Registry::new();
    let partitions_with_leader =
        IntGauge::new("waggle_gateway_partitions_with_leader", "Partitions for which the gateway knows a leader")
            .expect("valid metric");
    registry.register(Box::new(partitions_with_leader.clone())).expect("registers once");
    registry.register(Box::new(prometheus::process_collector::ProcessCollector::for_self())).expect("registers once");
    let cpu_seconds = Gauge::new(
        "waggle_process_cpu_seconds",
        "User and system CPU time the process has used so far, in seconds, to the nanosecond",
    )
    .expect("valid metric");
    registry.register(Box::new(cpu_seconds.clone())).expect("registers once");
    let state = Arc::new(Management { cluster, registry, partitions_with_leader, cpu_seconds });
    let router = Router::new()
        .route("/health/live", get(live))
        .route("/actuator/health/liveness", get(live))
        .route("/health/ready", get(ready))
        .route("/actuator/health/readiness", get(ready))
        .route("/health/startup", get(ready))
        .route("/actuator/health/startup", get(ready))
        .route("/metrics", get(metrics))
        .route("/actuator/prometheus", get(metrics))
        .with_state(state);
    axum::serve(listener, router).with_graceful_shutdown(async move { shutdown.cancelled().await }).await
}

async fn live() -> impl IntoResponse {
    Json(json!({ "status": "UP" }))
}

async fn ready(State(state): State<Arc<Management>>) -> impl IntoResponse {
    let view = state.cluster.view();
    let without_leader: Vec<u32> = (1..=view.partitions_count).filter(|p| view.leader(*p).is_none()).collect();
    if view.partitions_count > 0 && without_leader.is_empty() {
        (StatusCode::OK, Json(json!({ "status": "UP", "partitions": view.partitions_count })))
    } else {
        let reason = if view.partitions_count == 0 {
            "no broker has answered yet".to_string()
        } else {
            format!("no known leader for partitions {without_leader:?}")
        };
        (StatusCode::SERVICE_UNAVAILABLE, Json(json!({ "status": "DOWN", "reason": reason })))
    }
}

async fn metrics(State(state): State<Arc<Management>>) -> impl IntoResponse {
    let view = state.cluster.view();
    state.partitions_with_leader.set((1..=view.partitions_count).filter(|p| view.leader(*p).is_some()).count() as i64);
    state.cpu_seconds.set(process_cpu_seconds());
    let mut text = String::new();
    prometheus::TextEncoder::new().encode_utf8(&state.registry.gather(), &mut text).expect("encoding to a string");
    ([(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4")], text)
}
