//! `ApiError`: every way a request can fail, and the one place each maps to a status code
//! and a stable JSON `code`.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use pycheck::{Diagnostic, Position, Problem};
use serde::Serialize;
use shared::job::JobStatus;
use shared::store::StoreError;
use utoipa::openapi::schema::{ObjectBuilder, Schema, Type};
use utoipa::openapi::RefOr;
use utoipa::ToSchema;

use crate::auth::Unauthenticated;
use crate::quota::{Quota, QuotaExceeded};
use crate::view::job_status_schema;

/// A request that cannot be served. Bodies are always `{"error", "code", ...}`.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("request body is not valid JSON: {0}")]
    InvalidJson(String),
    #[error("{message}")]
    InvalidField {
        field: &'static str,
        message: String,
    },
    #[error(transparent)]
    InvalidScript(#[from] Diagnostic),
    #[error("{what} is larger than the {limit}-byte limit")]
    TooLarge { what: &'static str, limit: usize },
    #[error("job id {0:?} is not a UUID")]
    InvalidJobId(String),
    #[error("no job with id {0}")]
    JobNotFound(String),
    #[error("no route for {0}")]
    NoRoute(String),
    #[error("method not allowed")]
    MethodNotAllowed,
    #[error("the service is busy validating other scripts; retry shortly")]
    Busy,
    #[error("the server is handling too many requests; retry shortly")]
    Overloaded,
    #[error("the request took longer than the server's {0}-second limit")]
    RequestTimeout(u64),
    #[error("the queue is full ({depth} jobs waiting, limit {limit}); retry later")]
    QueueFull { depth: u64, limit: u64 },
    #[error("this Idempotency-Key was already used with a different request")]
    IdempotencyConflict { job_id: String },
    #[error("the Idempotency-Key header must be 1 to 255 visible ASCII characters")]
    InvalidIdempotencyKey,
    #[error("job {id} already finished with status {status}")]
    AlreadyFinished { id: String, status: &'static str },
    #[error("{}", unauthenticated_message(*.0))]
    Unauthenticated(Unauthenticated),
    #[error("this route needs an admin API key (METRICS_AUTH=admin)")]
    AdminOnly,
    #[error("{}", quota_message(.0))]
    QuotaExceeded(QuotaExceeded),
    #[error("the job store is unavailable")]
    StoreUnavailable(#[source] StoreError),
    #[error("internal error")]
    Internal(String),
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        Self::StoreUnavailable(e)
    }
}

impl ApiError {
    fn status(&self) -> StatusCode {
        match self {
            Self::InvalidJson(_)
            | Self::InvalidField { .. }
            | Self::InvalidScript(_)
            | Self::InvalidJobId(_)
            | Self::InvalidIdempotencyKey => StatusCode::BAD_REQUEST,
            Self::QueueFull { .. } | Self::QuotaExceeded(_) => StatusCode::TOO_MANY_REQUESTS,
            Self::IdempotencyConflict { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            Self::AlreadyFinished { .. } => StatusCode::CONFLICT,
            Self::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::Unauthenticated(_) => StatusCode::UNAUTHORIZED,
            Self::AdminOnly => StatusCode::FORBIDDEN,
            Self::JobNotFound(_) | Self::NoRoute(_) => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::Busy | Self::StoreUnavailable(_) | Self::Overloaded => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            Self::RequestTimeout(_) => StatusCode::GATEWAY_TIMEOUT,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn code(&self) -> &'static str {
        match self {
            Self::InvalidJson(_) => "invalid_json",
            Self::InvalidField { .. } => "invalid_request",
            Self::InvalidScript(e) => rejection_code(e),
            Self::TooLarge { .. } => "payload_too_large",
            Self::InvalidJobId(_) => "invalid_job_id",
            Self::JobNotFound(_) | Self::NoRoute(_) => "not_found",
            Self::MethodNotAllowed => "method_not_allowed",
            Self::Busy => "busy",
            Self::Overloaded => "overloaded",
            Self::RequestTimeout(_) => "request_timeout",
            Self::QueueFull { .. } => "queue_full",
            Self::IdempotencyConflict { .. } => "idempotency_key_reused",
            Self::InvalidIdempotencyKey => "invalid_idempotency_key",
            Self::AlreadyFinished { .. } => "already_finished",
            Self::Unauthenticated(_) => "unauthenticated",
            Self::QuotaExceeded(_) => "quota_exceeded",
            Self::AdminOnly => "forbidden",
            Self::StoreUnavailable(_) => "store_unavailable",
            Self::Internal(_) => "internal_error",
        }
    }

    /// The JSON body of this error.
    #[must_use]
    pub fn body(&self) -> ErrorBody {
        let mut body = ErrorBody {
            error: self.to_string(),
            code: self.code(),
            ..ErrorBody::default()
        };
        match self {
            Self::InvalidField { field, .. } => body.field = Some(field),
            Self::InvalidScript(Diagnostic {
                position: Some(Position { line, column }),
                ..
            }) => {
                body.line = Some(*line);
                body.column = Some(*column);
            }
            Self::TooLarge { limit, .. } => body.limit_bytes = Some(*limit),
            Self::QueueFull { depth, limit } => {
                body.queued = Some(*depth);
                body.limit = Some(*limit);
            }
            Self::IdempotencyConflict { job_id } => body.id = Some(job_id.clone()),
            Self::QuotaExceeded(exceeded) => {
                body.quota = Some(exceeded.quota.as_str());
                body.quota_limit = Some(exceeded.limit);
            }
            Self::AlreadyFinished { id, status } => {
                body.id = Some(id.clone());
                body.status = Some(status);
            }
            _ => {}
        }
        body
    }

    /// One error of each kind, so the API description can list every code with its status.
    fn samples() -> Vec<Self> {
        let text = String::new;
        vec![
            Self::InvalidJson(text()),
            Self::InvalidField {
                field: "script",
                message: text(),
            },
            Self::InvalidScript(rejected(Problem::Syntax)),
            Self::InvalidScript(rejected(Problem::MissingMain)),
            Self::InvalidScript(rejected(Problem::MainParameters)),
            Self::InvalidIdempotencyKey,
            Self::InvalidJobId(text()),
            Self::JobNotFound(text()),
            Self::NoRoute(text()),
            Self::MethodNotAllowed,
            Self::AlreadyFinished {
                id: text(),
                status: JobStatus::Succeeded.as_str(),
            },
            Self::TooLarge {
                what: "script",
                limit: 0,
            },
            Self::IdempotencyConflict { job_id: text() },
            Self::QueueFull { depth: 0, limit: 0 },
            Self::QuotaExceeded(QuotaExceeded {
                quota: Quota::MaxQueued,
                limit: 0.0,
                retry_after: std::time::Duration::ZERO,
            }),
            Self::Unauthenticated(Unauthenticated::Missing),
            Self::AdminOnly,
            Self::Internal(text()),
            Self::Busy,
            Self::Overloaded,
            Self::StoreUnavailable(StoreError::Schema(text())),
            Self::RequestTimeout(0),
        ]
    }

    /// Every stable `code` an error answer can carry, with its HTTP status.
    #[must_use]
    pub fn codes() -> Vec<(&'static str, StatusCode)> {
        let mut codes: Vec<_> = Self::samples()
            .iter()
            .map(|e| (e.code(), e.status()))
            .collect();
        codes.dedup();
        codes
    }
}

fn quota_message(exceeded: &QuotaExceeded) -> String {
    let limit = exceeded.limit;
    match exceeded.quota {
        Quota::MaxTimeout => {
            format!("this API key may ask for a timeout of at most {limit} s (quota max_timeout)")
        }
        Quota::MaxMemory => {
            format!("this API key may ask for memory_mb of at most {limit} (quota max_memory_mb)")
        }
        Quota::MaxQueued => format!(
            "this API key already has {limit} jobs queued, its quota (max_queued); retry once \
             some have started"
        ),
        Quota::SubmissionsPerMinute => format!(
            "this API key may submit {limit} jobs a minute (quota submissions_per_minute); retry \
             after {} s",
            retry_after_secs(exceeded.retry_after)
        ),
    }
}

/// Whole seconds for `Retry-After`, rounded up, at least 1.
fn retry_after_secs(wait: std::time::Duration) -> u64 {
    wait.as_secs() + u64::from(wait.subsec_nanos() > 0).max(u64::from(wait.is_zero()))
}

fn unauthenticated_message(reason: Unauthenticated) -> &'static str {
    match reason {
        Unauthenticated::Missing => {
            "this server requires an API key: send `Authorization: Bearer <key>`"
        }
        Unauthenticated::Malformed => {
            "the Authorization header must be `Bearer <key>`, the key in visible ASCII"
        }
        Unauthenticated::Invalid => "the API key is not valid: unknown or revoked",
    }
}

/// The stable `code` of a refused script.
#[must_use]
pub fn rejection_code(diagnostic: &Diagnostic) -> &'static str {
    match diagnostic.problem {
        Problem::Syntax => "syntax_error",
        Problem::MissingMain => "missing_main",
        Problem::MainParameters => "main_signature",
    }
}

/// A refusal of the kind `problem`, for [`ApiError::samples`].
fn rejected(problem: Problem) -> Diagnostic {
    Diagnostic {
        problem,
        message: String::new(),
        position: (problem == Problem::Syntax).then_some(Position { line: 1, column: 1 }),
    }
}

/// The body of every error answer: a message for people, a stable `code` for programs, and
/// the details that code carries.
#[derive(Debug, Default, Serialize, ToSchema)]
// Closed, so that a client can tell it from a job, which also has `error` and `code`.
#[serde(deny_unknown_fields)]
pub struct ErrorBody {
    /// What went wrong, for people; the wording may change.
    pub error: String,
    /// What went wrong, for programs; stable.
    #[schema(schema_with = error_code_schema)]
    pub code: &'static str,
    /// `invalid_request`: the request field (or query parameter) at fault.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<&'static str>,
    /// `syntax_error`: 1-based line of the error.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line: Option<u32>,
    /// `syntax_error`: 1-based column of the error.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub column: Option<u32>,
    /// `payload_too_large`: the limit that was passed, in bytes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit_bytes: Option<usize>,
    /// `queue_full`: jobs waiting.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub queued: Option<u64>,
    /// `queue_full`: queued jobs past which submissions are refused.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit: Option<u64>,
    /// `idempotency_key_reused`, `already_finished`: the job concerned.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(format = Uuid)]
    pub id: Option<String>,
    /// `quota_exceeded`: the quota passed (`max_timeout`, `max_memory_mb`, `max_queued`,
    /// `submissions_per_minute`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub quota: Option<&'static str>,
    /// `quota_exceeded`: the quota's value (seconds for `max_timeout`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub quota_limit: Option<f64>,
    /// `already_finished`: the status the job had finished with.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(schema_with = job_status_schema)]
    pub status: Option<&'static str>,
}

/// `code` of [`ErrorBody`]: an enum of every code, described with its status.
fn error_code_schema() -> impl Into<RefOr<Schema>> {
    let codes = ApiError::codes();
    let description = codes
        .iter()
        .map(|(code, status)| format!("`{code}` ({})", status.as_u16()))
        .collect::<Vec<_>>()
        .join(", ");
    ObjectBuilder::new()
        .schema_type(Type::String)
        .enum_values(Some(codes.iter().map(|(code, _)| *code)))
        .description(Some(format!(
            "What went wrong, for programs; stable. With the HTTP status each comes with: {description}."
        )))
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        match &self {
            Self::StoreUnavailable(e) => tracing::error!(error = %e, "job store unavailable"),
            Self::Internal(detail) => tracing::error!(%detail, "internal error"),
            _ => {}
        }
        let mut response = (status, Json(self.body())).into_response();
        if matches!(
            self,
            Self::Busy | Self::StoreUnavailable(_) | Self::QueueFull { .. } | Self::Overloaded
        ) {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        if let Self::QuotaExceeded(exceeded) = &self {
            response.headers_mut().insert(
                header::RETRY_AFTER,
                HeaderValue::from(retry_after_secs(exceeded.retry_after)),
            );
        }
        if let Self::Unauthenticated(reason) = self {
            // RFC 6750: the challenge says whether a key was refused or none was sent.
            let challenge = if reason == Unauthenticated::Missing {
                "Bearer realm=\"runbox\""
            } else {
                "Bearer realm=\"runbox\", error=\"invalid_token\""
            };
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static(challenge),
            );
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn syntax_errors_carry_line_and_column() {
        let error = ApiError::from(Diagnostic {
            problem: Problem::Syntax,
            message: "invalid syntax".into(),
            position: Some(Position { line: 2, column: 5 }),
        });
        assert_eq!(error.status(), StatusCode::BAD_REQUEST);
        let body = serde_json::to_value(error.body()).expect("serializes");
        assert_eq!(
            body,
            serde_json::json!({
                "error": "SyntaxError: invalid syntax (line 2, column 5)",
                "code": "syntax_error",
                "line": 2,
                "column": 5,
            })
        );
    }

    /// The string literals in the `match` of the function starting `signature` in `source`,
    /// up to its closing `end` line.
    fn code_literals<'a>(source: &'a str, signature: &str, end: &str) -> Vec<&'a str> {
        let start = source.find(signature).expect("the function");
        let body = &source[start..];
        let body = &body[..body.find(end).expect("end of the function")];
        body.split("=> \"")
            .skip(1)
            .filter_map(|rest| rest.split('"').next())
            .collect()
    }

    #[test]
    fn every_code_the_api_can_answer_is_in_the_documented_list() {
        let documented: Vec<&str> = ApiError::codes().iter().map(|(code, _)| *code).collect();
        let source = include_str!("error.rs");
        let literals: Vec<&str> = code_literals(source, "    fn code(&self)", "\n    }\n")
            .into_iter()
            .chain(code_literals(source, "pub fn rejection_code(", "\n}\n"))
            .collect();
        assert!(
            literals.len() >= 15,
            "codes not found in the source: {literals:?}"
        );
        for code in &literals {
            assert!(
                documented.contains(code),
                "`{code}` is missing from ApiError::samples"
            );
        }
        for code in &documented {
            assert!(
                literals.contains(code),
                "`{code}` is documented but never answered"
            );
        }
    }

    #[test]
    fn script_refusal_codes_are_stable() {
        assert_eq!(rejection_code(&rejected(Problem::Syntax)), "syntax_error");
        assert_eq!(
            rejection_code(&rejected(Problem::MissingMain)),
            "missing_main"
        );
        assert_eq!(
            rejection_code(&rejected(Problem::MainParameters)),
            "main_signature"
        );
    }

    #[test]
    fn refusals_without_a_position_carry_no_line_or_column() {
        let error = ApiError::from(Diagnostic {
            problem: Problem::MissingMain,
            message: "no main".into(),
            position: None,
        });
        let body = serde_json::to_value(error.body()).expect("serializes");
        assert_eq!(
            body,
            serde_json::json!({"error": "no main", "code": "missing_main"})
        );
    }

    #[test]
    fn store_failures_are_503_without_details() {
        let error = ApiError::from(StoreError::Schema("secret detail".into()));
        assert_eq!(error.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(!error.to_string().contains("secret"));
    }
}
