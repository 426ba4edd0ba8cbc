//! `GET /openapi.json` and `GET /docs`: the document is valid OpenAPI 3.1, lists exactly the
//! routes the server serves and the README names, and the docs page works without the network.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Command;

use reqwest::{Method, StatusCode};
use serde_json::Value;

use crate::app::{spawn_app_with, Options, TestApp};

fn no_worker() -> Options {
    Options {
        with_worker: false,
        ..Options::default()
    }
}

/// Methods an OpenAPI path item can hold.
const METHODS: [&str; 8] = [
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];

async fn document(app: &TestApp) -> Value {
    let response = app
        .client
        .get(format!("{}/openapi.json", app.base))
        .send()
        .await
        .expect("request sent");
    assert_eq!(response.status(), StatusCode::OK);
    let content_type = response.headers()[reqwest::header::CONTENT_TYPE].clone();
    assert_eq!(content_type, "application/json");
    response.json().await.expect("the document is JSON")
}

/// Every (METHOD, path) the document describes.
fn operations(document: &Value) -> BTreeSet<(String, String)> {
    let paths = document["paths"].as_object().expect("paths");
    paths
        .iter()
        .flat_map(|(path, item)| {
            let item = item.as_object().expect("path item");
            METHODS
                .iter()
                .filter(|method| item.contains_key(**method))
                .map(|method| (method.to_uppercase(), path.clone()))
        })
        .collect()
}

/// Runs the pinned `openapi-spec-validator` (installed by `make devtools`) on `document`.
fn validate(document: &Value) -> std::process::Output {
    let runtime = std::env::var("RUNTIME_DIR").unwrap_or_else(|_| "/opt/runbox".into());
    let validator = PathBuf::from(runtime).join("devtools/bin/openapi-spec-validator");
    assert!(
        validator.exists(),
        "{} is missing: run `make devtools`",
        validator.display()
    );
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("openapi.json");
    std::fs::write(&file, document.to_string()).expect("write the document");
    Command::new(&validator)
        .args(["--schema", "3.1", "--validation-errors", "all"])
        .arg(&file)
        .output()
        .expect("run openapi-spec-validator")
}

#[tokio::test]
async fn document_is_valid_openapi_3_1() {
    let app = spawn_app_with(no_worker()).await;
    let document = document(&app).await;
    assert!(
        document["openapi"]
            .as_str()
            .is_some_and(|v| v.starts_with("3.1.")),
        "{}",
        document["openapi"]
    );
    assert_eq!(document["info"]["title"], "runbox");
    assert_eq!(document["info"]["version"], env!("CARGO_PKG_VERSION"));

    let verdict = validate(&document);
    assert!(
        verdict.status.success(),
        "openapi-spec-validator rejects the document:\n{}{}",
        String::from_utf8_lossy(&verdict.stdout),
        String::from_utf8_lossy(&verdict.stderr)
    );

    // The validator must be able to say no: a path parameter that is not in the path.
    let mut broken = document;
    let parameters = broken["paths"]["/jobs/{id}"]["get"]["parameters"]
        .as_array_mut()
        .expect("GET /jobs/{id} has parameters");
    for parameter in parameters {
        if parameter["name"] == "id" {
            parameter["name"] = "job".into();
        }
    }
    assert!(!validate(&broken).status.success());
}

#[tokio::test]
async fn document_carries_the_servers_request_limits() {
    let app = spawn_app_with(Options {
        with_worker: false,
        api_env: vec![
            ("DEFAULT_TIMEOUT_SECS", "5".into()),
            ("MAX_TIMEOUT_SECS", "20".into()),
            ("MAX_MEMORY_MB", "512".into()),
        ],
        ..Options::default()
    })
    .await;
    let document = document(&app).await;
    let body = &document["components"]["schemas"]["ScriptRequest"]["properties"];
    assert_eq!(body["timeout"]["default"], 5.0);
    assert_eq!(body["timeout"]["maximum"], 20.0);
    assert_eq!(body["memory_mb"]["maximum"], 512);
}

/// A concrete URL path for a documented path template.
fn concrete(path: &str) -> String {
    path.split('/')
        .map(|segment| match segment {
            // Not a UUID, so job routes answer 400 `invalid_job_id` without touching a job.
            "{id}" => "not-a-uuid",
            "{file}" => "swagger-ui.css",
            other if other.starts_with('{') => {
                panic!("no example value for the path parameter {other} of {path}")
            }
            other => other,
        })
        .collect::<Vec<_>>()
        .join("/")
}

/// Whether an answer came from the router's fallbacks rather than a route.
fn is_fallback(status: StatusCode, body: &str) -> bool {
    let body: Value = serde_json::from_str(body).unwrap_or(Value::Null);
    status == StatusCode::METHOD_NOT_ALLOWED && body["code"] == "method_not_allowed"
        || status == StatusCode::NOT_FOUND
            && body["error"]
                .as_str()
                .is_some_and(|e| e.starts_with("no route for"))
}

#[tokio::test]
async fn every_documented_operation_is_served_and_no_other_method() {
    let app = spawn_app_with(no_worker()).await;
    let documented = operations(&document(&app).await);
    let paths: BTreeSet<&String> = documented.iter().map(|(_, path)| path).collect();
    assert!(paths.len() >= 10, "{paths:?}");
    for path in paths {
        let url = format!("{}{}", app.base, concrete(path));
        for method in METHODS.map(str::to_uppercase) {
            let served = documented.contains(&(method.clone(), path.clone()))
                // Every GET route answers HEAD too (HTTP requires it); OpenAPI lists GET only.
                || method == "HEAD" && documented.contains(&("GET".to_owned(), path.clone()));
            let response = app
                .client
                .request(Method::from_bytes(method.as_bytes()).expect("method"), &url)
                .send()
                .await
                .expect("request sent");
            let status = response.status();
            let body = response.text().await.expect("body");
            if served {
                assert!(
                    !is_fallback(status, &body),
                    "{method} {path} is documented but not served: {status} {body}"
                );
            } else {
                assert_eq!(
                    status,
                    StatusCode::METHOD_NOT_ALLOWED,
                    "{method} {path} is served but not documented: {body}"
                );
            }
        }
    }
}

/// Every `` `METHOD /path` `` the README names, with `<id>` written `{id}` as in OpenAPI.
fn readme_routes() -> BTreeSet<(String, String)> {
    let readme = include_str!("../../../README.md");
    readme
        .split('`')
        .skip(1)
        .step_by(2)
        .filter_map(|span| {
            let (method, rest) = span.split_once(' ')?;
            if !METHODS.contains(&method.to_lowercase().as_str()) || !rest.starts_with('/') {
                return None;
            }
            let path = rest.split(['?', ' ']).next()?;
            Some((method.to_owned(), path.replace('<', "{").replace('>', "}")))
        })
        .collect()
}

#[tokio::test]
async fn readme_names_exactly_the_documented_routes() {
    let app = spawn_app_with(no_worker()).await;
    let documented = operations(&document(&app).await);
    let readme = readme_routes();
    let undocumented: Vec<_> = readme.difference(&documented).collect();
    let unmentioned: Vec<_> = documented.difference(&readme).collect();
    assert!(
        undocumented.is_empty(),
        "in the README but not in /openapi.json (a route without #[utoipa::path]?): {undocumented:?}"
    );
    assert!(
        unmentioned.is_empty(),
        "in /openapi.json but not in the README's API section: {unmentioned:?}"
    );
}

#[tokio::test]
async fn docs_page_loads_everything_from_the_api_itself() {
    let app = spawn_app_with(no_worker()).await;
    let response = app
        .client
        .get(format!("{}/docs", app.base))
        .send()
        .await
        .expect("request sent");
    assert_eq!(response.status(), StatusCode::OK);
    assert!(response.headers()[reqwest::header::CONTENT_TYPE]
        .to_str()
        .is_ok_and(|t| t.starts_with("text/html")));
    let page = response.text().await.expect("body");
    assert!(
        !page.contains("http://") && !page.contains("https://") && !page.contains("//cdn"),
        "the page names another host:\n{page}"
    );

    let assets: Vec<&str> = ["src=\"", "href=\""]
        .iter()
        .flat_map(|attribute| page.split(attribute).skip(1))
        .filter_map(|rest| rest.split('"').next())
        .collect();
    assert!(
        assets.iter().filter(|a| a.ends_with(".js")).count() >= 3
            && assets.iter().any(|a| a.ends_with(".css")),
        "{assets:?}"
    );
    for asset in &assets {
        assert!(asset.starts_with("/docs/"), "{asset} is not served here");
        let response = app
            .client
            .get(format!("{}{asset}", app.base))
            .send()
            .await
            .expect("request sent");
        assert_eq!(response.status(), StatusCode::OK, "{asset}");
        let bytes = response.bytes().await.expect("body");
        assert!(bytes.len() > 100, "{asset} is empty");
        if asset.ends_with("swagger-initializer.js") {
            let script = String::from_utf8_lossy(&bytes);
            assert!(script.contains("\"/openapi.json\""), "{script}");
            // No spec upload to the public validator.
            assert!(script.contains("\"validatorUrl\": \"none\""), "{script}");
        }
    }
}

/// The router is `api_routes()` and nothing else: a route added with a plain `.route()` (or
/// nested, merged or served as a service) would be served without being in the document, so
/// outside test modules the API's sources may register routes only through `routes!`.
#[test]
fn routes_are_registered_only_through_the_documented_router() {
    const UNDOCUMENTED_WAYS: [&str; 5] = [
        ".route(",
        ".route_service(",
        ".nest(",
        ".nest_service(",
        ".merge(",
    ];
    let src = crate::app::repo_root().join("api").join("src");
    let mut checked = 0;
    let mut pending = vec![src.clone()];
    let mut sources = Vec::new();
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).expect("a source directory") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                pending.push(path);
            } else if path.extension().is_some_and(|ext| ext == "rs") {
                sources.push(path);
            }
        }
    }
    for path in sources {
        let text = std::fs::read_to_string(&path).expect("source");
        let code = text.split("#[cfg(test)]").next().unwrap_or_default();
        for way in UNDOCUMENTED_WAYS {
            assert!(
                !code.contains(way),
                "{} registers a route with `{way}`; use `routes!` in routes::api_routes so \
                 /openapi.json documents it",
                path.display()
            );
        }
        checked += 1;
    }
    assert!(checked >= 15, "sources not found in {}", src.display());
}
