//! The API's OpenAPI 3.1 description: its frame (info, tags) here, one path per handler from
//! the routes (`routes::document` joins the two), and what every operation shares (request
//! id, overload answers) and the server's request limits filled in by [`complete`].

use std::collections::HashSet;

use serde::Serialize;
use utoipa::openapi::header::HeaderBuilder;
use utoipa::openapi::path::{Operation, Parameter, ParameterBuilder, ParameterIn, PathItem};
use utoipa::openapi::schema::{Schema, SchemaType, Type};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{ContentBuilder, OpenApi, Ref, RefOr, Required, ResponseBuilder};
use utoipa::{Number, PartialSchema, ToSchema};

use crate::config::RequestLimits;
use crate::error::ErrorBody;
use crate::view::JobView;

/// The frame of the document; [`document`] adds the paths.
#[derive(utoipa::OpenApi)]
#[openapi(
    info(
        title = "runbox",
        version = env!("CARGO_PKG_VERSION"),
        description = "Runs untrusted Python scripts in nsjail sandboxes. A client posts a script \
            that defines `main()`; the API validates it and queues it as a job, a worker runs it \
            in its own sandbox and records what `main()` returned, what it printed and how it \
            ended.\n\nEvery error answer is an `ErrorBody`: `{\"error\": <message for people>, \
            \"code\": <stable code>, ...}`. Unknown routes answer 404 `not_found`, wrong methods \
            405 `method_not_allowed`. Every answer carries an `x-request-id` header: the request's \
            own, or a new UUID.",
    ),
    tags(
        (name = "jobs", description = "Run scripts as jobs and follow them."),
        (name = "scripts", description = "Check scripts without running them."),
        (name = "service", description = "Liveness and readiness."),
        (name = "docs", description = "This description and its interactive page."),
    ),
    components(schemas(ErrorBody))
)]
pub struct ApiDoc;

/// What `/execute` answers when the job did not succeed: the finished job with its `code`, or
/// an `ErrorBody` when the request was refused before anything ran.
#[derive(Serialize, ToSchema)]
#[serde(untagged)]
#[allow(dead_code, clippy::large_enum_variant)] // described, never built: handlers answer with one of the two directly
pub enum ExecuteFailure<'a> {
    Job(JobView<'a>),
    Refused(ErrorBody),
}

const REQUEST_ID: &str = "x-request-id";

/// Name of the bearer-key security scheme.
const BEARER: &str = "bearer";

/// The routes' description made whole, as this server runs it: the shared parts of every
/// operation and the server's limits added, and, when keys are required, the key scheme on
/// the `keyed` paths.
#[must_use]
pub fn complete(
    mut document: OpenApi,
    limits: &RequestLimits,
    keyed: Option<&HashSet<String>>,
) -> OpenApi {
    describe_limits(&mut document, limits);
    if let Some(keyed) = keyed {
        require_keys(&mut document, keyed);
    }
    for item in document.paths.paths.values_mut() {
        for operation in operations_of(item) {
            add_shared_parts(operation);
        }
    }
    document
}

/// The request id every operation takes and answers with, and the answers any request can
/// get from the layers in front of the handlers.
fn add_shared_parts(operation: &mut Operation) {
    let parameters = operation.parameters.get_or_insert_with(Vec::new);
    for parameter in parameters.iter_mut() {
        never_null(parameter);
    }
    parameters.push(
        ParameterBuilder::new()
            .name(REQUEST_ID)
            .parameter_in(ParameterIn::Header)
            .required(Required::False)
            .description(Some(
                "Identifies the request in logs; a new UUID when absent. Echoed in the answer.",
            ))
            .schema(Some(String::schema()))
            .build(),
    );
    let shared = [
        (
            "500",
            "An internal error (`internal_error`); details are logged, not sent.",
        ),
        (
            "503",
            "Too many requests are in flight (`overloaded`, `MAX_CONCURRENT_REQUESTS`).",
        ),
        (
            "504",
            "The request outlived `REQUEST_TIMEOUT_SECS` (`request_timeout`).",
        ),
    ];
    let responses = &mut operation.responses.responses;
    for (status, description) in shared {
        responses.entry(status.to_owned()).or_insert_with(|| {
            ResponseBuilder::new()
                .description(description)
                .content(
                    "application/json",
                    ContentBuilder::new()
                        .schema(Some(Ref::from_schema_name(ErrorBody::name())))
                        .build(),
                )
                .into()
        });
    }
    for response in responses.values_mut() {
        if let RefOr::T(response) = response {
            response.headers.insert(
                REQUEST_ID.to_owned(),
                HeaderBuilder::new()
                    .schema(String::schema())
                    .description(Some("The request's id, as sent or as generated."))
                    .build(),
            );
        }
    }
}

/// Declares the bearer scheme, and on every operation of the `keyed` paths requires it and
/// describes its 401.
fn require_keys(document: &mut OpenApi, keyed: &HashSet<String>) {
    document
        .components
        .get_or_insert_with(Default::default)
        .add_security_scheme(
            BEARER,
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "An API key (`rbx_…`), created with `api keys create --name NAME`.",
                    ))
                    .build(),
            ),
        );
    for (path, item) in &mut document.paths.paths {
        if !keyed.contains(path) {
            continue;
        }
        for operation in operations_of(item) {
            operation.security = Some(vec![SecurityRequirement::new(BEARER, Vec::<String>::new())]);
            operation.responses.responses.insert(
                "401".to_owned(),
                ResponseBuilder::new()
                    .description(
                        "No API key, a malformed one, or an unknown or revoked one \
                         (`unauthenticated`).",
                    )
                    .header(
                        "WWW-Authenticate",
                        HeaderBuilder::new()
                            .schema(String::schema())
                            .description(Some("`Bearer realm=\"runbox\"`, with `error=\"invalid_token\"` when a key was refused."))
                            .build(),
                    )
                    .content(
                        "application/json",
                        ContentBuilder::new()
                            .schema(Some(Ref::from_schema_name(ErrorBody::name())))
                            .build(),
                    )
                    .into(),
            );
        }
    }
}

fn operations_of(item: &mut PathItem) -> impl Iterator<Item = &mut Operation> {
    [
        &mut item.get,
        &mut item.put,
        &mut item.post,
        &mut item.delete,
        &mut item.options,
        &mut item.head,
        &mut item.patch,
        &mut item.trace,
    ]
    .into_iter()
    .flatten()
}

/// An optional parameter is absent or has a value; it is never `null`, as `Option` makes it.
fn never_null(parameter: &mut Parameter) {
    if let Some(RefOr::T(Schema::Object(schema))) = &mut parameter.schema {
        if let SchemaType::Array(types) = &schema.schema_type {
            if let [one] = types
                .iter()
                .filter(|t| **t != Type::Null)
                .collect::<Vec<_>>()[..]
            {
                schema.schema_type = SchemaType::Type(one.clone());
            }
        }
    }
}

/// Fills the request body's defaults and bounds in from the limits this server enforces.
fn describe_limits(document: &mut OpenApi, limits: &RequestLimits) {
    let Some(RefOr::T(Schema::Object(body))) = document
        .components
        .as_mut()
        .and_then(|components| components.schemas.get_mut("ScriptRequest"))
    else {
        return;
    };
    for (name, property) in &mut body.properties {
        let RefOr::T(Schema::Object(property)) = property else {
            continue;
        };
        match name.as_str() {
            "script" => {
                append(
                    &mut property.description,
                    &format!("At most {} bytes of UTF-8.", limits.max_script_bytes),
                );
            }
            "timeout" => {
                property.default = Some(limits.default_timeout_secs.into());
                property.exclusive_minimum = Some(Number::Float(0.0));
                property.maximum = Some(Number::Float(limits.max_timeout_secs));
            }
            "memory_mb" => {
                property.default = Some(limits.default_memory_mb.into());
                property.minimum = Some(Number::UInt(limits.min_memory_mb as usize));
                property.maximum = Some(Number::UInt(limits.max_memory_mb as usize));
            }
            _ => {}
        }
    }
}

fn append(description: &mut Option<String>, sentence: &str) {
    let text = description.get_or_insert_with(String::new);
    if !text.is_empty() {
        text.push(' ');
    }
    text.push_str(sentence);
}
