//! The playground: a page at `GET /` to edit, run and queue scripts and watch recent jobs.
//! Its HTML, CSS and JavaScript are embedded in the binary, so it works offline.

use axum::http::{header, HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

/// One embedded file and the validator its `ETag` is made of.
struct Asset {
    body: &'static str,
    content_type: &'static str,
    hash: u64,
}

impl Asset {
    const fn new(body: &'static str, content_type: &'static str) -> Self {
        Self {
            body,
            content_type,
            hash: fnv1a(body.as_bytes()),
        }
    }
}

static INDEX: Asset = Asset::new(
    include_str!("../../playground/index.html"),
    "text/html; charset=utf-8",
);
static SCRIPT: Asset = Asset::new(
    include_str!("../../playground/app.js"),
    "text/javascript; charset=utf-8",
);
static STYLESHEET: Asset = Asset::new(
    include_str!("../../playground/style.css"),
    "text/css; charset=utf-8",
);

/// The page renders script output, which is untrusted: it may load nothing but its own files
/// and talk to nothing but this API.
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self'; img-src 'self' data:; connect-src 'self'; base-uri 'none'; \
     form-action 'none'; frame-ancestors 'none'";

/// FNV-1a, computed at compile time: enough to tell one build's files from another's.
const fn fnv1a(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let mut i = 0;
    while i < bytes.len() {
        hash ^= bytes[i] as u64;
        hash = hash.wrapping_mul(0x0100_0000_01b3);
        i += 1;
    }
    hash
}

/// The playground: edit, run and queue scripts, and watch recent jobs.
#[utoipa::path(
    get,
    path = "/",
    operation_id = "playground",
    tag = "playground",
    responses(
        (status = 200, description = "The playground page; its script and style sheet come from \
            `/playground/app.js` and `/playground/style.css`.", content_type = "text/html", body = String),
        (status = 304, description = "Unchanged since the `If-None-Match` the client sent."),
    )
)]
pub(super) async fn page(headers: HeaderMap) -> Response {
    let mut response = serve(&INDEX, &headers);
    let extra = response.headers_mut();
    extra.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    extra.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    response
}

/// The playground's script.
#[utoipa::path(
    get,
    path = "/playground/app.js",
    operation_id = "playground_script",
    tag = "playground",
    responses(
        (status = 200, description = "The script.", content_type = "text/javascript", body = String),
        (status = 304, description = "Unchanged since the `If-None-Match` the client sent."),
    )
)]
pub(super) async fn script(headers: HeaderMap) -> Response {
    serve(&SCRIPT, &headers)
}

/// The playground's style sheet.
#[utoipa::path(
    get,
    path = "/playground/style.css",
    operation_id = "playground_stylesheet",
    tag = "playground",
    responses(
        (status = 200, description = "The style sheet.", content_type = "text/css", body = String),
        (status = 304, description = "Unchanged since the `If-None-Match` the client sent."),
    )
)]
pub(super) async fn stylesheet(headers: HeaderMap) -> Response {
    serve(&STYLESHEET, &headers)
}

/// The asset, or 304 when the client's copy is current. Browsers revalidate on every load
/// (`no-cache`), so a new build's page is never mixed with an old build's script.
fn serve(asset: &Asset, request: &HeaderMap) -> Response {
    let etag = format!("\"{:016x}\"", asset.hash);
    let current = request
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|tags| {
            tags.split(',')
                .map(|tag| tag.trim().trim_start_matches("W/"))
                .any(|tag| tag == etag || tag == "*")
        });
    let mut response = if current {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        asset.body.into_response()
    };
    let headers = response.headers_mut();
    let mut set = |name: HeaderName, value: &str| {
        if let Ok(value) = HeaderValue::from_str(value) {
            headers.insert(name, value);
        }
    };
    set(header::CONTENT_TYPE, asset.content_type);
    set(header::CACHE_CONTROL, "no-cache");
    set(header::ETAG, &etag);
    set(header::X_CONTENT_TYPE_OPTIONS, "nosniff");
    response
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use axum::body::Body;
    use axum::http::Request;
    use axum::Router;
    use http_body_util::BodyExt;
    use shared::store::{self, Schema, StoreOptions};
    use tower::ServiceExt;

    use super::*;
    use crate::config::ApiConfig;

    /// The whole application, as `main` builds it, on a throwaway SQLite file.
    async fn app() -> (Router, tempfile::TempDir) {
        let dir = tempfile::tempdir().expect("temp dir");
        let url = format!("sqlite://{}", dir.path().join("jobs.db").display());
        let store = store::connect(&url, Schema::Migrate, &StoreOptions::default())
            .await
            .expect("sqlite store");
        let config: ApiConfig =
            testkit::settings_without_env(&["api", "--database-url", url.as_str()]);
        (crate::app(&config, Arc::clone(&store)).router, dir)
    }

    async fn get(router: &Router, path: &str, headers: &[(&str, &str)]) -> Response {
        let mut request = Request::get(path);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        router
            .clone()
            .oneshot(request.body(Body::empty()).expect("request"))
            .await
            .expect("response")
    }

    fn header(response: &Response, name: HeaderName) -> &str {
        response
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
    }

    async fn text(response: Response) -> String {
        let bytes = response
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes();
        String::from_utf8(bytes.to_vec()).expect("utf-8")
    }

    #[tokio::test]
    async fn root_serves_the_page_with_its_editor() {
        let (router, _dir) = app().await;
        let response = get(&router, "/", &[]).await;
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(
            header(&response, header::CONTENT_TYPE),
            "text/html; charset=utf-8"
        );
        assert!(header(&response, header::CONTENT_SECURITY_POLICY).contains("script-src 'self'"));
        let page = text(response).await;
        assert!(page.contains(r#"<textarea id="code""#), "{page}");
        assert!(page.contains(r#"src="/playground/app.js""#));
        assert!(page.contains(r#"href="/playground/style.css""#));
    }

    #[tokio::test]
    async fn assets_are_served_with_their_content_types() {
        let (router, _dir) = app().await;
        for (path, content_type, asset) in [
            (
                "/playground/app.js",
                "text/javascript; charset=utf-8",
                &SCRIPT,
            ),
            (
                "/playground/style.css",
                "text/css; charset=utf-8",
                &STYLESHEET,
            ),
        ] {
            let response = get(&router, path, &[]).await;
            assert_eq!(response.status(), StatusCode::OK, "{path}");
            assert_eq!(header(&response, header::CONTENT_TYPE), content_type);
            assert_eq!(header(&response, header::CACHE_CONTROL), "no-cache");
            assert_eq!(header(&response, header::X_CONTENT_TYPE_OPTIONS), "nosniff");
            assert_eq!(text(response).await, asset.body);
        }
    }

    #[tokio::test]
    async fn a_current_etag_gets_not_modified() {
        let (router, _dir) = app().await;
        let first = get(&router, "/playground/app.js", &[]).await;
        let etag = header(&first, header::ETAG).to_owned();
        assert!(etag.starts_with('"') && etag.len() == 18, "{etag}");

        let again = get(&router, "/playground/app.js", &[("if-none-match", &etag)]).await;
        assert_eq!(again.status(), StatusCode::NOT_MODIFIED);
        assert!(text(again).await.is_empty());

        let other = get(&router, "/playground/app.js", &[("if-none-match", "\"0\"")]).await;
        assert_eq!(other.status(), StatusCode::OK);
    }

    #[test]
    fn each_asset_has_its_own_etag() {
        assert_ne!(INDEX.hash, SCRIPT.hash);
        assert_ne!(SCRIPT.hash, STYLESHEET.hash);
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
    }
}
