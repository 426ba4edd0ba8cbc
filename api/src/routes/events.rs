//! `GET /jobs/{id}/events`: a job's life as Server-Sent Events, its output as it is printed.
//!
//! Every event has an id that fixes its place in the job's history, so a client that
//! reconnects with `Last-Event-ID` gets exactly what it missed: `0` queued, `1` running,
//! `n + 1` the output chunk numbered `n` (chunks number from 1 and keep rising across
//! attempts), and [`END_ID`] the terminal event, which carries the full job and ends the
//! stream.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use futures::stream::{self, StreamExt};
use serde_json::json;
use shared::job::{Job, JobId, OutputChunk};
use shared::store::StoreEvents;
use tokio::sync::{broadcast, watch};

use crate::auth::Caller;
use crate::error::{ApiError, ErrorBody};
use crate::state::AppState;
use crate::view::JobView;

/// The id of the terminal event, after every other.
const END_ID: u64 = u64::MAX;

/// How long a follower waits without a wake-up before looking again: a job's start is
/// announced to nobody, and wake-ups can be lost.
const BACKSTOP: Duration = Duration::from_millis(200);

/// Output chunks read per look; a follower far behind catches up over several.
const CHUNKS_PER_READ: u32 = 256;

/// Follow a job as Server-Sent Events.
///
/// Events: `status` (`{"status": "queued"}`, then `{"status": "running", ...}`), `output`
/// (`{"stream": "stdout" | "stderr", "text": ...}`, within ~250 ms of being printed), and a
/// last `status` holding the full job once it is terminal, after which the stream ends.
/// Reconnect with `Last-Event-ID` to continue without gaps or repeats.
#[utoipa::path(
    get,
    path = "/jobs/{id}/events",
    tag = "jobs",
    params(
        ("id" = String, Path, format = Uuid, description = "The job's id."),
        ("Last-Event-ID" = Option<String>, Header,
            description = "The id of the last event received; only later events are sent."),
    ),
    responses(
        (status = 200, description = "The event stream (`text/event-stream`).",
            content_type = "text/event-stream", body = String),
        (status = 400, description = "The id is not a UUID (`invalid_job_id`) or \
            `Last-Event-ID` is not an event id (`invalid_request`).", body = ErrorBody),
        (status = 404, description = "No such job (`not_found`).", body = ErrorBody),
    )
)]
pub(super) async fn events(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let after = last_event_id(&headers)?;
    let job = super::jobs::visible_job(&state, &caller, &id).await?;
    let follow = Follow::new(state, job.id, after);
    let stream = stream::unfold(Some((follow, Some(job))), |state| async move {
        let (mut follow, first) = state?;
        let (events, done) = follow.next(first).await;
        Some((events, (!done).then_some((follow, None))))
    })
    .flat_map(stream::iter);
    Ok(Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response())
}

fn last_event_id(headers: &HeaderMap) -> Result<Option<u64>, ApiError> {
    headers
        .get("last-event-id")
        .map(|value| {
            value
                .to_str()
                .ok()
                .and_then(|text| text.trim().parse::<u64>().ok())
                .ok_or(ApiError::InvalidField {
                    field: "Last-Event-ID",
                    message: "`Last-Event-ID` must be the id of an event of this stream".to_owned(),
                })
        })
        .transpose()
}

/// One follower's place in a job's history, and what wakes it.
struct Follow {
    state: AppState,
    id: JobId,
    /// The id of the last event sent (or received before a reconnect).
    after: Option<u64>,
    output: Option<broadcast::Receiver<JobId>>,
    changed: Option<watch::Receiver<()>>,
}

type Events = Vec<Result<Event, Infallible>>;

impl Follow {
    fn new(state: AppState, id: JobId, after: Option<u64>) -> Self {
        let events: Option<StoreEvents> = state.store.events();
        Self {
            id,
            after,
            output: events.as_ref().map(|e| e.output.subscribe()),
            changed: events.as_ref().map(|e| e.changed.subscribe()),
            state,
        }
    }

    /// The events since the last call (waiting for some unless `job` is given fresh), and
    /// whether the stream is over.
    async fn next(&mut self, job: Option<Job>) -> (Events, bool) {
        let job = match job {
            Some(job) => job,
            None => {
                // A stopping server ends its streams; clients resume elsewhere with
                // Last-Event-ID.
                if self.state.completions.stopped() {
                    return (Vec::new(), true);
                }
                self.wait().await;
                match self.state.store.get(self.id).await {
                    Ok(Some(job)) => job,
                    // Deleted by retention while followed: nothing more will come.
                    Ok(None) => return (Vec::new(), true),
                    Err(e) => {
                        tracing::warn!(error = %e, "job store unavailable while following a job");
                        return (Vec::new(), false);
                    }
                }
            }
        };
        let mut events = Vec::new();
        self.emit(&mut events, 0, || status_event("queued", None));
        if job.started_at.is_some() {
            self.emit(&mut events, 1, || status_event("running", Some(&job)));
        }
        // Output first, then the end: the worker stores the last output before the outcome.
        loop {
            let after = self
                .after
                .filter(|a| *a >= 1 && *a != END_ID)
                .map_or(0, |a| u32::try_from(a - 1).unwrap_or(u32::MAX));
            let chunks = match self
                .state
                .store
                .output_after(self.id, after, CHUNKS_PER_READ)
                .await
            {
                Ok(chunks) => chunks,
                Err(e) => {
                    tracing::warn!(error = %e, "could not read a job's output");
                    return (events, false);
                }
            };
            let full = chunks.len() == CHUNKS_PER_READ as usize;
            for chunk in chunks {
                self.emit(&mut events, u64::from(chunk.seq) + 1, || {
                    output_event(&chunk)
                });
            }
            if !full {
                break;
            }
        }
        if !job.status.is_terminal() {
            return (events, false);
        }
        self.emit(&mut events, END_ID, || end_event(&job));
        (events, true)
    }

    /// Adds the event with `id` unless the client has it already.
    fn emit(&mut self, events: &mut Events, id: u64, event: impl FnOnce() -> Event) {
        if self.after.is_some_and(|after| after >= id) {
            return;
        }
        events.push(Ok(event().id(id.to_string())));
        self.after = Some(id);
    }

    /// Returns when the job may have printed or changed status, or after [`BACKSTOP`].
    async fn wait(&mut self) {
        let id = self.id;
        let output = async {
            match self.output.as_mut() {
                Some(output) => loop {
                    match output.recv().await {
                        Ok(printed) if printed == id => break,
                        Ok(_) => {}
                        Err(broadcast::error::RecvError::Lagged(_)) => break,
                        Err(broadcast::error::RecvError::Closed) => {
                            std::future::pending::<()>().await;
                        }
                    }
                },
                None => std::future::pending().await,
            }
        };
        let changed = async {
            match self.changed.as_mut() {
                Some(changed) => {
                    if changed.changed().await.is_err() {
                        std::future::pending::<()>().await;
                    }
                }
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = self.state.completions.wait(id, BACKSTOP) => {}
            () = output => {}
            () = changed => {}
        }
    }
}

fn status_event(status: &str, job: Option<&Job>) -> Event {
    let data = match job {
        Some(job) => json!({
            "status": status,
            "attempt": job.attempt,
            "worker_id": job.worker_id,
        }),
        None => json!({ "status": status }),
    };
    Event::default().event("status").data(data.to_string())
}

fn output_event(chunk: &OutputChunk) -> Event {
    let data = json!({ "stream": chunk.stream.as_str(), "text": chunk.text });
    Event::default().event("output").data(data.to_string())
}

fn end_event(job: &Job) -> Event {
    // Serialized from the view, so large integers in the result stay exact.
    let data = serde_json::to_string(&JobView::new(job)).unwrap_or_else(|_| {
        json!({ "status": job.status.as_str(), "id": job.id.to_string() }).to_string()
    });
    Event::default().event("status").data(data)
}
