//! Cross-process wake-ups for SQLite: every commit appends to the database's write-ahead log,
//! so an inotify watch on that file tells a process, within a fraction of a millisecond, that
//! some process on the machine wrote. It says nothing about what changed; listeners re-check.

use std::ffi::OsString;
use std::io;
use std::path::Path;
use std::time::Duration;

use futures::StreamExt;
use inotify::{EventMask, EventStream, Inotify, WatchMask};
use tokio::time::Instant;
use tokio_util::sync::{CancellationToken, DropGuard};

use super::StoreEvents;

/// How long after the last write of a burst listeners are signalled once more. inotify reports
/// a commit's writes before SQLite publishes the commit in its shared-memory index, so a
/// listener that reads at once often still sees the old state (a third of the time on a busy
/// machine, in `examples/sqlite_wakeup`). The commit's later writes signal again; this last
/// signal catches what is left instead of leaving it to the backstop poll.
const SETTLE: Duration = Duration::from_millis(1);

/// Room for many events; each is 16 bytes plus the padded file name.
const BUFFER_BYTES: usize = 4096;

/// Which signals a change of the log raises.
#[derive(Debug, Clone, Copy)]
pub(super) struct Listen {
    /// `StoreEvents::queued`: workers claim.
    pub queued: bool,
    /// `StoreEvents::changed`: waiters re-check their jobs.
    pub finished: bool,
}

/// Watches the write-ahead log of the database file `database` and raises `listen`'s signals on
/// every change. The watch is in place when this returns, so no later commit is missed; it
/// ends, closing its inotify descriptor, when the returned guard is dropped.
///
/// The directory is watched rather than the log itself: SQLite creates the log when the first
/// connection opens and deletes it when the last one closes, and a watch on a deleted file
/// would see nothing of the next one.
///
/// # Errors
/// When inotify refuses (too many instances or watches for this user, an unwatchable
/// directory); callers fall back to polling.
pub(super) fn start(database: &Path, listen: Listen) -> io::Result<(StoreEvents, DropGuard)> {
    let directory = match database.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    let mut log = database
        .file_name()
        .map(OsString::from)
        .ok_or_else(|| io::Error::other(format!("{} names no file", database.display())))?;
    log.push("-wal");

    let inotify = Inotify::init()?;
    // MODIFY only: opening, reading and the mmap'd `-shm` index raise nothing, so an idle
    // system (reads, empty claims) wakes no one.
    inotify.watches().add(directory, WatchMask::MODIFY)?;
    let stream = inotify.into_event_stream([0; BUFFER_BYTES])?;

    let events = StoreEvents::default();
    let stop = CancellationToken::new();
    tokio::spawn(relay(stream, log, listen, events.clone(), stop.clone()));
    Ok((events, stop.drop_guard()))
}

/// Turns writes to the file named `log` into signals until `stop` is cancelled. Signals
/// coalesce (`Notify` keeps one permit, `watch` one version), so a burst of thousands of
/// writes costs each listener one re-check per check it has time for, never a queue.
async fn relay(
    mut stream: EventStream<[u8; BUFFER_BYTES]>,
    log: OsString,
    listen: Listen,
    events: StoreEvents,
    stop: CancellationToken,
) {
    let signal = || {
        if listen.queued {
            events.queued.notify_one();
        }
        if listen.finished {
            events.changed.send_replace(());
        }
    };
    let settle = tokio::time::sleep(Duration::ZERO);
    tokio::pin!(settle);
    // Only a burst arms the timer: idle, this task waits on the descriptor alone.
    let mut settling = false;
    loop {
        tokio::select! {
            biased;
            () = stop.cancelled() => return,
            () = &mut settle, if settling => {
                settling = false;
                signal();
            }
            event = stream.next() => match event {
                Some(Ok(event)) => {
                    // An overflowed queue dropped events, ours perhaps among them.
                    let ours = event.mask.contains(EventMask::Q_OVERFLOW)
                        || event.name.as_deref() == Some(log.as_os_str());
                    if ours {
                        signal();
                        settle.as_mut().reset(Instant::now() + SETTLE);
                        settling = true;
                    } else if event.mask.contains(EventMask::IGNORED) {
                        tracing::warn!(
                            "the database directory was removed; SQLite wake-ups stop and \
                             processes fall back to their backstop poll"
                        );
                        return;
                    }
                }
                Some(Err(e)) => {
                    // Never seen in practice; pausing keeps a persistent failure from spinning.
                    tracing::warn!(error = %e, "reading SQLite change events failed; retrying");
                    signal();
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
                None => return,
            },
        }
    }
}
