//! `/validate`: the checks of a submission without the job.

use axum::extract::State;
use axum::Json;

use crate::error::{ApiError, ErrorBody};
use crate::request::{Args, ScriptRequest, ScriptRequestBody};
use crate::state::AppState;
use crate::view::{MainKind, Validated};
use crate::webhooks;

/// Check a script without running it.
///
/// The checks `/execute` makes before queueing: the same 400 and 413 answers, or which `main`
/// the script defines.
#[utoipa::path(
    post,
    path = "/validate",
    tag = "scripts",
    request_body = ScriptRequestBody,
    responses(
        (status = 200, description = "The script would be queued.", body = Validated),
        (status = 400, description = "The request or the script is invalid.", body = ErrorBody),
        (status = 413, description = "Script or body too large (`payload_too_large`).", body = ErrorBody),
        (status = 503, description = "Validation capacity stayed busy (`busy`) or too many \
            requests are in flight.", body = ErrorBody,
            headers(("Retry-After" = u32, description = "Seconds to wait before retrying."))),
    )
)]
pub(super) async fn validate(
    State(state): State<AppState>,
    request: ScriptRequest,
) -> Result<Json<Validated>, ApiError> {
    if let Some(url) = &request.webhook_url {
        webhooks::check(&state.webhooks, url).await?;
    }
    let names = Args::names(request.args.as_ref());
    let main = state.checker.check(request.script, names).await?;
    Ok(Json(Validated {
        ok: true,
        main: MainKind::from(&main),
    }))
}
