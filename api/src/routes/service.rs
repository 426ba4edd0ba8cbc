//! `/health` and `/ready`: whether the process is up and whether it can serve.

use axum::extract::State;
use axum::Json;

use crate::error::{ApiError, ErrorBody};
use crate::state::AppState;
use crate::view::ServiceStatus;

/// Liveness: the process is up.
#[utoipa::path(
    get,
    path = "/health",
    tag = "service",
    responses((status = 200, description = "`{\"status\": \"ok\"}`", body = ServiceStatus)),
)]
pub(super) async fn health() -> Json<ServiceStatus> {
    Json(ServiceStatus { status: "ok" })
}

/// Readiness: the job store answers.
#[utoipa::path(
    get,
    path = "/ready",
    tag = "service",
    responses(
        (status = 200, description = "`{\"status\": \"ready\"}`", body = ServiceStatus),
        (status = 503, description = "The job store is unavailable (`store_unavailable`).", body = ErrorBody,
            headers(("Retry-After" = u32, description = "Seconds to wait before retrying."))),
    )
)]
pub(super) async fn ready(State(state): State<AppState>) -> Result<Json<ServiceStatus>, ApiError> {
    state.store.ping().await?;
    Ok(Json(ServiceStatus { status: "ready" }))
}
