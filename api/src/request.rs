//! The body of `POST /execute`, `/jobs` and `/validate`: read with a size cap, parsed as JSON,
//! each field checked with a message that names it. Every failure is our JSON error.

use std::time::Duration;

use axum::body::Body;
use axum::extract::{FromRequest, Request};
use axum::http::header::CONTENT_LENGTH;
use http_body_util::BodyExt;
use serde_json::Value;
use shared::job::Limits;

use crate::config::RequestLimits;
use crate::error::ApiError;
use crate::state::AppState;

/// Bodies past the limit are still read (and dropped) up to this size, so a client that is
/// still sending gets our 413 instead of a connection reset.
const DRAIN_LIMIT: usize = 32 * 1024 * 1024;

/// The body as the API description shows it; [`parse`] reads bodies by hand, so that each
/// mistake gets an error naming its field. Defaults and bounds are filled in from the server's
/// limits when the description is served.
#[derive(utoipa::ToSchema)]
#[schema(
    as = ScriptRequest,
    description = "The body of `POST /execute`, `POST /jobs` and `POST /validate`."
)]
#[allow(dead_code)] // described, never built
pub struct ScriptRequestBody {
    /// Python source defining a top-level `def main()` or `async def main()` whose parameters
    /// all have defaults. Not blank.
    #[schema(min_length = 1)]
    script: String,
    /// Wall-time limit of the job, in seconds.
    timeout: Option<f64>,
    /// Memory limit of the job, in MiB.
    memory_mb: Option<u32>,
    /// Keyword arguments for `main`: `main(**args)`. Each name must be a parameter of `main`
    /// (unless it takes `**kwargs`), and every parameter without a default must be given.
    /// Numbers of any size and strings arrive exactly as sent.
    args: Option<serde_json::Map<String, Value>>,
    /// Where to POST the job once it is terminal, signed per Standard Webhooks (`/jobs` and
    /// `/execute`; `/validate` checks it).
    webhook: Option<WebhookBody>,
}

/// `webhook` of the request body.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)] // described, never built
pub struct WebhookBody {
    /// An `http://` or `https://` URL whose host resolves to public addresses.
    url: String,
}

/// A checked request to run a script.
#[derive(Debug, Clone)]
pub struct ScriptRequest {
    pub script: String,
    pub limits: Limits,
    pub args: Option<Args>,
    /// `webhook.url`, not yet checked against where it resolves.
    pub webhook_url: Option<String>,
}

/// A request's `args`: the object's text exactly as sent, and its names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Args {
    pub text: String,
    pub names: Vec<String>,
}

impl Args {
    /// The names, as the checker takes them.
    #[must_use]
    pub fn names(args: Option<&Self>) -> Vec<String> {
        args.map(|a| a.names.clone()).unwrap_or_default()
    }
}

/// `args` as it appears in the body, unparsed, so big integers and escapes stay exact.
#[derive(serde::Deserialize)]
struct RawArgs<'a> {
    #[serde(borrow)]
    args: Option<&'a serde_json::value::RawValue>,
}

impl FromRequest<AppState> for ScriptRequest {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        let limits = state.limits;
        let body = read_body(req, limits.max_body_bytes()).await?;
        parse(&body, &limits)
    }
}

async fn read_body(req: Request, limit: usize) -> Result<Vec<u8>, ApiError> {
    let too_large = ApiError::TooLarge {
        what: "request body",
        limit,
    };
    let declared = req
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    let mut body: Body = req.into_body();
    if declared.is_some_and(|n| n > DRAIN_LIMIT) {
        return Err(too_large);
    }
    let mut kept = Vec::new();
    let mut seen = 0usize;
    while let Some(frame) = body.frame().await {
        let frame =
            frame.map_err(|e| ApiError::InvalidJson(format!("could not read body: {e}")))?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        seen = seen.saturating_add(data.len());
        if seen <= limit {
            kept.extend_from_slice(&data);
        } else if seen > DRAIN_LIMIT {
            break;
        }
    }
    if seen > limit {
        return Err(too_large);
    }
    Ok(kept)
}

fn invalid(field: &'static str, message: impl Into<String>) -> ApiError {
    ApiError::InvalidField {
        field,
        message: message.into(),
    }
}

/// Checks a body against the limits; pure so every rule has a unit test.
///
/// # Errors
/// The 400 or 413 the request deserves.
pub fn parse(body: &[u8], limits: &RequestLimits) -> Result<ScriptRequest, ApiError> {
    let value: Value =
        serde_json::from_slice(body).map_err(|e| ApiError::InvalidJson(e.to_string()))?;
    let Value::Object(fields) = value else {
        return Err(ApiError::InvalidJson(
            "expected a JSON object like {\"script\": \"def main(): ...\"}".to_owned(),
        ));
    };
    let script = match fields.get("script") {
        None | Some(Value::Null) => return Err(invalid("script", "`script` is required")),
        Some(Value::String(s)) => s.clone(),
        Some(_) => return Err(invalid("script", "`script` must be a string")),
    };
    if script.trim().is_empty() {
        return Err(invalid("script", "`script` is empty"));
    }
    if script.len() > limits.max_script_bytes {
        return Err(ApiError::TooLarge {
            what: "script",
            limit: limits.max_script_bytes,
        });
    }
    let timeout = match fields.get("timeout") {
        None | Some(Value::Null) => limits.default_timeout_secs,
        Some(Value::Number(n)) => n.as_f64().unwrap_or(f64::NAN),
        Some(_) => f64::NAN,
    };
    if !(timeout > 0.0 && timeout <= limits.max_timeout_secs) {
        return Err(invalid(
            "timeout",
            format!(
                "`timeout` must be a number of seconds greater than 0 and at most {}",
                limits.max_timeout_secs
            ),
        ));
    }
    let memory_mb = match fields.get("memory_mb") {
        None | Some(Value::Null) => Some(limits.default_memory_mb),
        Some(Value::Number(n)) => n.as_u64().and_then(|n| u32::try_from(n).ok()),
        Some(_) => None,
    };
    let memory_mb = memory_mb
        .filter(|m| (limits.min_memory_mb..=limits.max_memory_mb).contains(m))
        .ok_or_else(|| {
            invalid(
                "memory_mb",
                format!(
                    "`memory_mb` must be a whole number of MiB from {} to {}",
                    limits.min_memory_mb, limits.max_memory_mb
                ),
            )
        })?;
    let args = match fields.get("args") {
        None | Some(Value::Null) => None,
        Some(Value::Object(object)) => {
            let raw: RawArgs =
                serde_json::from_slice(body).map_err(|e| ApiError::InvalidJson(e.to_string()))?;
            let text = raw.args.map(|raw| raw.get().to_owned()).unwrap_or_default();
            if text.len() > limits.max_args_bytes {
                return Err(ApiError::TooLarge {
                    what: "args",
                    limit: limits.max_args_bytes,
                });
            }
            Some(Args {
                text,
                names: object.keys().cloned().collect(),
            })
        }
        Some(_) => {
            return Err(invalid(
                "args",
                "`args` must be a JSON object of keyword arguments for `main`",
            ))
        }
    };
    let webhook_url = match fields.get("webhook") {
        None | Some(Value::Null) => None,
        Some(Value::Object(webhook)) => match (webhook.get("url"), webhook.len()) {
            (Some(Value::String(url)), 1) => Some(url.clone()),
            _ => {
                return Err(invalid(
                    "webhook",
                    "`webhook` must be {\"url\": \"https://...\"}",
                ))
            }
        },
        Some(_) => {
            return Err(invalid(
                "webhook",
                "`webhook` must be {\"url\": \"https://...\"}",
            ))
        }
    };
    Ok(ScriptRequest {
        script,
        limits: Limits {
            timeout: Duration::from_secs_f64(timeout),
            memory_mb,
        },
        args,
        webhook_url,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: RequestLimits = RequestLimits {
        max_script_bytes: 1000,
        default_timeout_secs: 10.0,
        max_timeout_secs: 60.0,
        default_memory_mb: 256,
        min_memory_mb: 32,
        max_memory_mb: 1024,
        max_args_bytes: 100,
    };

    fn field_of(result: &Result<ScriptRequest, ApiError>) -> Option<&'static str> {
        match result {
            Err(ApiError::InvalidField { field, .. }) => Some(field),
            _ => None,
        }
    }

    #[test]
    fn defaults_apply_when_limits_are_omitted() {
        let request = parse(br#"{"script": "def main(): pass"}"#, &LIMITS).expect("valid");
        assert_eq!(request.limits.timeout, Duration::from_secs(10));
        assert_eq!(request.limits.memory_mb, 256);
    }

    #[test]
    fn fractional_timeouts_are_accepted() {
        let request = parse(
            br#"{"script": "x", "timeout": 2.5, "memory_mb": 64}"#,
            &LIMITS,
        )
        .expect("valid");
        assert_eq!(request.limits.timeout, Duration::from_millis(2500));
        assert_eq!(request.limits.memory_mb, 64);
    }

    #[test]
    fn body_that_is_not_json_is_rejected() {
        assert!(matches!(
            parse(b"script=1", &LIMITS),
            Err(ApiError::InvalidJson(_))
        ));
        assert!(matches!(
            parse(b"[1]", &LIMITS),
            Err(ApiError::InvalidJson(_))
        ));
    }

    #[test]
    fn script_must_be_a_non_empty_string() {
        assert_eq!(field_of(&parse(br"{}", &LIMITS)), Some("script"));
        assert_eq!(
            field_of(&parse(br#"{"script": 5}"#, &LIMITS)),
            Some("script")
        );
        assert_eq!(
            field_of(&parse(br#"{"script": "  \n"}"#, &LIMITS)),
            Some("script")
        );
    }

    #[test]
    fn timeout_must_be_a_number_in_range() {
        for body in [
            r#"{"script": "x", "timeout": "5"}"#,
            r#"{"script": "x", "timeout": true}"#,
            r#"{"script": "x", "timeout": 0}"#,
            r#"{"script": "x", "timeout": -1}"#,
            r#"{"script": "x", "timeout": 61}"#,
        ] {
            assert_eq!(
                field_of(&parse(body.as_bytes(), &LIMITS)),
                Some("timeout"),
                "{body}"
            );
        }
    }

    #[test]
    fn memory_must_be_whole_mib_in_range() {
        for body in [
            r#"{"script": "x", "memory_mb": 1.5}"#,
            r#"{"script": "x", "memory_mb": 16}"#,
            r#"{"script": "x", "memory_mb": 4096}"#,
            r#"{"script": "x", "memory_mb": "64"}"#,
        ] {
            assert_eq!(
                field_of(&parse(body.as_bytes(), &LIMITS)),
                Some("memory_mb"),
                "{body}"
            );
        }
    }

    #[test]
    fn oversized_script_is_payload_too_large() {
        let body = serde_json::json!({ "script": "#".repeat(1001) }).to_string();
        assert!(matches!(
            parse(body.as_bytes(), &LIMITS),
            Err(ApiError::TooLarge { what: "script", .. })
        ));
    }

    #[test]
    fn args_keep_their_text_exactly_and_list_their_names() {
        let body =
            br#"{"script": "x", "args": {"n": 123456789012345678901234567890, "s": "\u00e9\n"}}"#;
        let request = parse(body, &LIMITS).expect("valid");
        let args = request.args.expect("args");
        assert_eq!(
            args.text,
            r#"{"n": 123456789012345678901234567890, "s": "\u00e9\n"}"#
        );
        assert_eq!(args.names, ["n", "s"]);
    }

    #[test]
    fn args_must_be_an_object_within_the_size_limit() {
        for body in [
            &br#"{"script": "x", "args": [1, 2]}"#[..],
            br#"{"script": "x", "args": "n=1"}"#,
            br#"{"script": "x", "args": 3}"#,
        ] {
            match parse(body, &LIMITS) {
                Err(ApiError::InvalidField { field: "args", .. }) => {}
                other => panic!("{other:?}"),
            }
        }
        let big = format!(
            r#"{{"script": "x", "args": {{"s": "{}"}}}}"#,
            "a".repeat(100)
        );
        assert!(matches!(
            parse(big.as_bytes(), &LIMITS),
            Err(ApiError::TooLarge {
                what: "args",
                limit: 100
            })
        ));
        let none = parse(br#"{"script": "x", "args": null}"#, &LIMITS).expect("valid");
        assert_eq!(none.args, None);
    }
}
