//! The ops port (plain HTTP, port name `http`): `GET /metrics`, `/health/live`,
//! `/health/ready`.

use std::time::Duration;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use tokio::net::TcpListener;
use tokio::sync::watch;

use super::tls::stopped;
use super::AppState;
use crate::metrics;

/// How long open ops connections (a scrape, a probe) get to finish at shutdown.
pub(crate) const OPS_DRAIN: Duration = Duration::from_secs(5);

pub fn ops_router(state: AppState) -> Router {
    Router::new()
        .route("/metrics", get(serve_metrics))
        .route("/health/live", get(live))
        .route("/health/ready", get(ready))
        .with_state(state)
}

async fn serve_metrics(State(state): State<AppState>) -> Response {
    (
        [(header::CONTENT_TYPE, metrics::CONTENT_TYPE)],
        metrics::encode(&state.registry),
    )
        .into_response()
}

/// The process is up and its runtime answers.
async fn live() -> &'static str {
    "ok\n"
}

/// 200 when the policies and certificates are loaded, the exception source has synced and
/// the server is not shutting down; 503 naming what is missing otherwise.
async fn ready(State(state): State<AppState>) -> Response {
    let waiting = state.health.not_ready_reasons();
    if waiting.is_empty() {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {}\n", waiting.join(", ")),
        )
            .into_response()
    }
}

/// Serve until `stop`, then finish open requests (the caller bounds that wait with
/// [`OPS_DRAIN`]).
pub(crate) async fn serve(listener: TcpListener, app: Router, mut stop: watch::Receiver<bool>) {
    let server = axum::serve(listener, app).with_graceful_shutdown(async move {
        stopped(&mut stop).await;
    });
    if let Err(error) = server.await {
        tracing::error!(%error, "ops server failed");
    }
}
