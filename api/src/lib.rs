//! The HTTP API: validates scripts, queues them as jobs, waits for and reports outcomes.

pub mod auth;
pub mod checker;
pub mod completions;
pub mod config;
pub mod error;
pub mod keys_command;
pub mod metrics;
pub mod openapi;
pub mod quota;
pub mod request;
pub mod retention;
pub mod routes;
pub mod state;
pub mod submission;
pub mod view;
pub mod webhooks;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::error_handling::HandleErrorLayer;
use axum::http::{HeaderName, Request};
use axum::response::IntoResponse;
use axum::BoxError;
use axum::Router;
use shared::store::JobStore;
use tokio::net::TcpListener;
use tower::limit::GlobalConcurrencyLimitLayer;
use tower::ServiceBuilder;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::{DefaultOnResponse, TraceLayer};
use tower_http::LatencyUnit;
use tracing::Level;

use crate::auth::Authenticator;
use crate::checker::ScriptChecker;
use crate::completions::Completions;
use crate::config::ApiConfig;
use crate::error::ApiError;
use crate::state::AppState;

pub(crate) const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The application: its router with every middleware, and the background loops the router
/// relies on, which [`serve`] runs for as long as it serves. Building it starts nothing.
pub struct App {
    pub router: Router,
    background: Background,
}

/// What runs beside the handlers: the completion waiter that wakes waiting requests, and the
/// retention sweep.
struct Background {
    store: Arc<dyn JobStore>,
    completions: Arc<Completions>,
    completion_poll: Duration,
    backstop_poll: Duration,
    retention: Duration,
    webhooks: webhooks::WebhookConfig,
}

/// The running background loops of an [`App`]; they stop when this is dropped.
pub struct BackgroundTasks {
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for BackgroundTasks {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

impl App {
    /// Starts the loops the router relies on (waking waiting requests, retention), for a
    /// caller that drives [`App::router`] itself rather than through [`serve`].
    #[must_use]
    pub fn start_background(&self) -> BackgroundTasks {
        BackgroundTasks {
            tasks: self.background.spawn(),
        }
    }
}

impl Background {
    fn spawn(&self) -> Vec<tokio::task::JoinHandle<()>> {
        vec![
            tokio::spawn(Arc::clone(&self.completions).run(
                Arc::clone(&self.store),
                self.completion_poll,
                self.backstop_poll,
            )),
            tokio::spawn(retention::run(Arc::clone(&self.store), self.retention)),
            tokio::spawn(webhooks::run(
                Arc::clone(&self.store),
                self.webhooks.clone(),
            )),
        ]
    }
}

/// Builds the application for `config` on `store`.
pub fn app(config: &ApiConfig, store: Arc<dyn JobStore>) -> App {
    let completions = Arc::new(Completions::default());
    let background = Background {
        store: Arc::clone(&store),
        completions: Arc::clone(&completions),
        completion_poll: config.completion_poll(),
        backstop_poll: config.store.backstop_poll(),
        retention: Duration::from_secs(config.retention_secs),
        webhooks: config.webhooks.clone(),
    };
    let state = AppState {
        limits: config.limits,
        checker: Arc::new(ScriptChecker::new(config.validation_concurrency())),
        completions,
        queue_grace: config.queue_grace(),
        max_queued_jobs: config.max_queued_jobs,
        quota_defaults: config.quotas,
        webhooks: config.webhooks.clone(),
        idempotency_window: Duration::from_secs(config.idempotency_window_secs),
        cancel_on_disconnect: config.execute_cancel_on_disconnect,
        metrics: metrics::exporter(Arc::clone(&store)),
        // Plain data with string keys: serializing it cannot fail.
        openapi: serde_json::to_vec(&routes::document(
            &config.limits,
            config.auth_mode(),
            config.metrics_auth,
        ))
        .expect("the API description serializes")
        .into(),
        auth: Arc::new(Authenticator::new(
            config.auth_mode(),
            routes::keyed_paths(),
            routes::admin_paths(config.metrics_auth),
            Arc::clone(&store),
        )),
        store,
    };
    let request_timeout = config.request_timeout_secs;
    let router = routes::router(state)
        .layer(CatchPanicLayer::custom(|_| {
            ApiError::Internal("handler panicked".to_owned()).into_response()
        }))
        // Outermost of the limits: shed load at once when too many requests are in flight,
        // and bound every request's time, answering both with our JSON errors.
        .layer(
            ServiceBuilder::new()
                .layer(HandleErrorLayer::new(move |error: BoxError| async move {
                    if error.is::<tower::timeout::error::Elapsed>() {
                        ApiError::RequestTimeout(request_timeout)
                    } else if error.is::<tower::load_shed::error::Overloaded>() {
                        ApiError::Overloaded
                    } else {
                        ApiError::Internal(error.to_string())
                    }
                }))
                .load_shed()
                .layer(GlobalConcurrencyLimitLayer::new(
                    config.max_concurrent_requests.max(1),
                ))
                .timeout(Duration::from_secs(request_timeout.max(1))),
        )
        .layer(axum::middleware::from_fn(metrics::track_http))
        .layer(
            TraceLayer::new_for_http().make_span_with(|request: &Request<_>| {
                let id = request
                    .headers()
                    .get(REQUEST_ID)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("-");
                tracing::info_span!("request", method = %request.method(), path = %request.uri().path(), request_id = %id)
            })
            // One line per request, with its status and latency.
            .on_response(
                DefaultOnResponse::new()
                    .level(Level::INFO)
                    .latency_unit(LatencyUnit::Millis),
            ),
        )
        .layer(PropagateRequestIdLayer::new(REQUEST_ID))
        .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid))
        .layer(axum::middleware::map_request(drop_unusable_request_id));
    App { router, background }
}

/// Longest client-chosen `x-request-id` kept; it is stored with the job and logged.
const MAX_REQUEST_ID_LEN: usize = 128;

/// A client's `x-request-id` is kept when it is short, printable ASCII; otherwise it is
/// removed so a fresh one is generated, since it ends up in the jobs table and in logs.
async fn drop_unusable_request_id<B>(mut request: Request<B>) -> Request<B> {
    let usable = request.headers().get(&REQUEST_ID).is_none_or(|value| {
        let bytes = value.as_bytes();
        !bytes.is_empty()
            && bytes.len() <= MAX_REQUEST_ID_LEN
            && bytes.iter().all(|b| b.is_ascii_graphic())
    });
    if !usable {
        request.headers_mut().remove(&REQUEST_ID);
    }
    request
}

/// Serves `app` on `listener`, with its background loops, until `shutdown` resolves; then
/// waiting `/execute` requests answer 202 with their job's location at once, in-flight
/// requests finish, and the loops stop.
///
/// # Errors
/// When the listener fails.
pub async fn serve(
    listener: TcpListener,
    app: App,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let background = app.start_background();
    let completions = Arc::clone(&app.background.completions);
    let router = app.router;
    let shutdown = async move {
        shutdown.await;
        completions.stop();
    };
    let served = axum::serve(listener, router)
        .with_graceful_shutdown(shutdown)
        .await;
    drop(background);
    served
}
