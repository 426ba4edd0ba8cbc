//! `ApiError`: every way a request can fail, and the one place each maps to a status code
//! and a stable JSON `code`.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Map, Value};
use shared::store::StoreError;

use crate::validation::ValidationError;

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
    InvalidScript(#[from] ValidationError),
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
            Self::QueueFull { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::IdempotencyConflict { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            Self::AlreadyFinished { .. } => StatusCode::CONFLICT,
            Self::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
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
            Self::InvalidScript(e) => e.code(),
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
            Self::StoreUnavailable(_) => "store_unavailable",
            Self::Internal(_) => "internal_error",
        }
    }

    fn details(&self, body: &mut Map<String, Value>) {
        match self {
            Self::InvalidField { field, .. } => {
                body.insert("field".into(), json!(field));
            }
            Self::InvalidScript(ValidationError::Syntax { line, column, .. }) => {
                body.insert("line".into(), json!(line));
                body.insert("column".into(), json!(column));
            }
            Self::TooLarge { limit, .. } => {
                body.insert("limit_bytes".into(), json!(limit));
            }
            Self::QueueFull { depth, limit } => {
                body.insert("queued".into(), json!(depth));
                body.insert("limit".into(), json!(limit));
            }
            Self::IdempotencyConflict { job_id } => {
                body.insert("id".into(), json!(job_id));
            }
            Self::AlreadyFinished { id, status } => {
                body.insert("id".into(), json!(id));
                body.insert("status".into(), json!(status));
            }
            _ => {}
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        match &self {
            Self::StoreUnavailable(e) => tracing::error!(error = %e, "job store unavailable"),
            Self::Internal(detail) => tracing::error!(%detail, "internal error"),
            _ => {}
        }
        let mut body = Map::new();
        body.insert("error".into(), json!(self.to_string()));
        body.insert("code".into(), json!(self.code()));
        self.details(&mut body);
        let mut response = (status, Json(Value::Object(body))).into_response();
        if matches!(
            self,
            Self::Busy | Self::StoreUnavailable(_) | Self::QueueFull { .. } | Self::Overloaded
        ) {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn syntax_errors_carry_line_and_column() {
        let error = ApiError::from(ValidationError::Syntax {
            message: "SyntaxError: invalid syntax (line 2, column 5)".into(),
            line: 2,
            column: 5,
        });
        assert_eq!(error.status(), StatusCode::BAD_REQUEST);
        let mut body = Map::new();
        error.details(&mut body);
        assert_eq!(body.get("line"), Some(&json!(2)));
        assert_eq!(body.get("column"), Some(&json!(5)));
        assert_eq!(error.code(), "syntax_error");
    }

    #[test]
    fn store_failures_are_503_without_details() {
        let error = ApiError::from(StoreError::Schema("secret detail".into()));
        assert_eq!(error.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(!error.to_string().contains("secret"));
    }
}
