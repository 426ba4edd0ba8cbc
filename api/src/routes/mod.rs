//! HTTP handlers, one module per resource. They check input, call the submission service or
//! the store, and shape replies; status mapping lives in `error` and `view`. Each handler's `#[utoipa::path]` is both its
//! route and its entry in the API description.

mod docs;
mod events;
mod jobs;
mod playground;
mod scripts;
mod service;

use std::collections::HashSet;
use std::sync::Arc;

use axum::http::Uri;
use axum::Router;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::{self, AuthMode, MetricsAuth};
use crate::config::RequestLimits;
use crate::error::ApiError;
use crate::metrics;
use crate::openapi::{self, ApiDoc};
use crate::state::AppState;

/// Every route, each declared once with its description: the router serves exactly what the
/// document lists. A new route is one more `routes!` line naming a `#[utoipa::path]` handler.
/// Routes tagged `jobs` or `scripts` need an API key when keys are required ([`keyed_paths`]).
pub fn api_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(jobs::execute))
        .routes(routes!(jobs::submit, jobs::list))
        .routes(routes!(jobs::job, jobs::delete_job))
        .routes(routes!(jobs::cancel_job))
        .routes(routes!(events::events))
        .routes(routes!(scripts::validate))
        .routes(routes!(service::health))
        .routes(routes!(service::ready))
        .routes(routes!(metrics::render))
        .routes(routes!(docs::openapi_json))
        .routes(routes!(docs::page))
        .routes(routes!(docs::asset))
        .routes(routes!(playground::page))
        .routes(routes!(playground::script))
        .routes(routes!(playground::stylesheet))
}

/// Tags of the operations that touch jobs or scripts: those need a key. Health, metrics, the
/// description and the pages stay open to anyone who reaches the port.
const KEYED_TAGS: [&str; 2] = ["jobs", "scripts"];

/// Where the API serves its metrics.
const METRICS_PATH: &str = "/metrics";

/// The path templates (`/jobs/{id}`) whose operations need a key when keys are required.
#[must_use]
pub fn keyed_paths() -> HashSet<String> {
    api_routes()
        .into_openapi()
        .paths
        .paths
        .into_iter()
        .filter(|(_, item)| {
            [&item.get, &item.put, &item.post, &item.delete, &item.patch]
                .into_iter()
                .flatten()
                .flat_map(|operation| operation.tags.iter().flatten())
                .any(|tag| KEYED_TAGS.contains(&tag.as_str()))
        })
        .map(|(path, _)| path)
        .collect()
}

/// The path templates that need an admin key: `/metrics` with `METRICS_AUTH=admin`.
#[must_use]
pub fn admin_paths(metrics: MetricsAuth) -> HashSet<String> {
    match metrics {
        MetricsAuth::Open => HashSet::new(),
        MetricsAuth::Admin => HashSet::from([METRICS_PATH.to_owned()]),
    }
}

/// The OpenAPI document of these routes as this server runs them.
#[must_use]
pub fn document(
    limits: &RequestLimits,
    auth: AuthMode,
    metrics: MetricsAuth,
) -> utoipa::openapi::OpenApi {
    let mut keyed = if auth == AuthMode::Required {
        keyed_paths()
    } else {
        HashSet::new()
    };
    keyed.extend(admin_paths(metrics));
    openapi::complete(
        api_routes().into_openapi(),
        limits,
        (!keyed.is_empty()).then_some(&keyed),
    )
}

/// All routes of the API, with JSON answers for unknown routes and methods.
pub fn router(state: AppState) -> Router {
    let (router, _) = api_routes().split_for_parts();
    router
        // Only matched routes: an unknown path is a 404 with or without a key.
        .route_layer(axum::middleware::from_fn_with_state(
            Arc::clone(&state.auth),
            auth::authenticate,
        ))
        .fallback(no_route)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(state)
}

async fn no_route(uri: Uri) -> ApiError {
    ApiError::NoRoute(uri.path().to_owned())
}

async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::*;

    /// The request-id header every operation takes and answers.
    const REQUEST_ID: &str = "x-request-id";

    const LIMITS: RequestLimits = RequestLimits {
        max_script_bytes: 1000,
        default_timeout_secs: 5.0,
        max_timeout_secs: 20.0,
        default_memory_mb: 128,
        min_memory_mb: 64,
        max_memory_mb: 512,
        max_args_bytes: 65536,
    };

    fn operations(document: &Value) -> Vec<(String, &Value)> {
        let paths = document["paths"].as_object().expect("paths");
        paths
            .iter()
            .flat_map(|(path, item)| {
                let item = item.as_object().expect("path item");
                item.iter()
                    .map(move |(method, operation)| (format!("{method} {path}"), operation))
            })
            .collect()
    }

    #[test]
    fn request_body_shows_the_servers_limits() {
        let document = serde_json::to_value(document(&LIMITS, AuthMode::Off, MetricsAuth::Open))
            .expect("serializes");
        let body = &document["components"]["schemas"]["ScriptRequest"]["properties"];
        assert_eq!(body["timeout"]["default"], 5.0);
        assert_eq!(body["timeout"]["exclusiveMinimum"], 0.0);
        assert_eq!(body["timeout"]["maximum"], 20.0);
        assert_eq!(body["memory_mb"]["default"], 128);
        assert_eq!(body["memory_mb"]["minimum"], 64);
        assert_eq!(body["memory_mb"]["maximum"], 512);
        let script = body["script"]["description"].as_str().expect("described");
        assert!(script.contains("1000 bytes"), "{script}");
    }

    #[test]
    fn the_status_filter_of_the_job_list_is_the_closed_set_of_statuses() {
        let document = serde_json::to_value(document(&LIMITS, AuthMode::Off, MetricsAuth::Open))
            .expect("serializes");
        let parameters = document["paths"]["/jobs"]["get"]["parameters"]
            .as_array()
            .expect("parameters");
        let status = parameters
            .iter()
            .find(|p| p["name"] == "status")
            .expect("a status parameter");
        assert_eq!(
            status["schema"]["enum"],
            serde_json::json!([
                "queued",
                "running",
                "succeeded",
                "failed",
                "timed_out",
                "cancelled"
            ]),
            "{status}"
        );
        assert_eq!(status["required"], false);
    }

    #[test]
    fn every_operation_takes_and_answers_a_request_id() {
        let document = serde_json::to_value(document(&LIMITS, AuthMode::Off, MetricsAuth::Open))
            .expect("serializes");
        let operations = operations(&document);
        assert!(operations.len() >= 11);
        for (name, operation) in operations {
            let parameters = operation["parameters"].as_array().expect("parameters");
            assert!(parameters.iter().any(|p| p["name"] == REQUEST_ID), "{name}");
            for parameter in parameters {
                assert!(
                    !parameter["schema"]["type"].is_array(),
                    "{name}: {parameter} may be null"
                );
            }
            let responses = operation["responses"].as_object().expect("responses");
            for status in ["500", "503", "504"] {
                assert!(responses.contains_key(status), "{name} lacks {status}");
            }
            for (status, response) in responses {
                assert!(
                    response["headers"][REQUEST_ID].is_object(),
                    "{name} {status}"
                );
            }
        }
    }
}
