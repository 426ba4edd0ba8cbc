//! The API describing itself: the OpenAPI document at `/openapi.json` and an interactive page
//! at `/docs` (Swagger UI, its files built into the binary, so it works offline).

use std::sync::{Arc, LazyLock};

use axum::extract::{Path, State};
use axum::http::header;
use axum::response::{Html, IntoResponse, Response};
use utoipa_swagger_ui::Config;

use crate::error::{ApiError, ErrorBody};
use crate::state::AppState;

/// The page's settings: our document, no calls to the public spec validator, and the API key
/// kept across reloads.
static SWAGGER_CONFIG: LazyLock<Arc<Config<'static>>> = LazyLock::new(|| {
    Arc::new(
        Config::new(["/openapi.json"])
            .validator_url("none")
            .try_it_out_enabled(true)
            .display_request_duration(true)
            // A key entered with "Authorize" survives reloads (kept in the browser).
            .persist_authorization(true),
    )
});

/// This API's OpenAPI 3.1 description.
#[utoipa::path(
    get,
    path = "/openapi.json",
    tag = "docs",
    responses(
        (status = 200, description = "This document, with this server's request limits.",
            content_type = "application/json", body = Object),
    )
)]
pub(super) async fn openapi_json(State(state): State<AppState>) -> Response {
    ([(header::CONTENT_TYPE, "application/json")], state.openapi).into_response()
}

/// Interactive documentation of this API.
#[utoipa::path(
    get,
    path = "/docs",
    tag = "docs",
    responses(
        (status = 200, description = "A Swagger UI page for `/openapi.json`; its scripts and \
            styles come from `/docs/{file}`.", content_type = "text/html", body = String),
    )
)]
pub(super) async fn page() -> Html<&'static str> {
    Html(include_str!("docs.html"))
}

/// A script, style sheet or image of the docs page.
#[utoipa::path(
    get,
    path = "/docs/{file}",
    tag = "docs",
    params(("file" = String, Path, description = "File name, e.g. `swagger-ui-bundle.js`.")),
    responses(
        (status = 200, description = "The file.", content(
            ("text/javascript"), ("text/css"), ("image/png"), ("text/html"),
        )),
        (status = 404, description = "No such file (`not_found`).", body = ErrorBody),
    )
)]
pub(super) async fn asset(Path(file): Path<String>) -> Result<Response, ApiError> {
    let found = utoipa_swagger_ui::serve(&file, Arc::clone(&SWAGGER_CONFIG))
        .map_err(|e| ApiError::Internal(format!("docs file {file}: {e}")))?;
    let Some(found) = found else {
        return Err(ApiError::NoRoute(format!("/docs/{file}")));
    };
    Ok((
        [(header::CONTENT_TYPE, found.content_type)],
        found.bytes.into_owned(),
    )
        .into_response())
}
