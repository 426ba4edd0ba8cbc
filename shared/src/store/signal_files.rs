//! Cross-process wake-ups for SQLite. Two signal files live beside the database,
//! `<database>-queued` and `<database>-finished`. A process that has committed a change others
//! wait for (jobs queued; jobs finished) writes one byte to the matching file. Each waiting
//! process holds an inotify watch on the files it cares about: within a fraction of a
//! millisecond it knows *that* something of that kind happened (not which job), and re-checks.
//!
//! The byte is written after the commit has returned, so a woken reader always sees the
//! change. Only the two meaningful kinds of change wake anyone: claims, heartbeats and reads
//! (most of the traffic) wake nobody.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use futures::StreamExt;
use inotify::{EventMask, EventStream, Inotify, WatchDescriptor, WatchMask};
use tokio_util::sync::{CancellationToken, DropGuard};

use super::StoreEvents;

/// Room for many events; each is 16 bytes (watches on files carry no name).
const BUFFER_BYTES: usize = 1024;

/// A kind of change others may wait for; each has its own signal file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Change {
    /// Jobs were queued (new, released or requeued): workers claim.
    Queued,
    /// Jobs reached a terminal status: waiting requests re-check theirs.
    Finished,
}

impl Change {
    const ALL: [Self; 2] = [Self::Queued, Self::Finished];

    /// Opens this change's signal file of `database` for writing, creating it if needed.
    fn open(self, database: &Path) -> io::Result<File> {
        OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(self.path(database))
    }

    /// The signal file of this change for `database`.
    fn path(self, database: &Path) -> PathBuf {
        let mut name = database.as_os_str().to_owned();
        name.push(match self {
            Self::Queued => "-queued",
            Self::Finished => "-finished",
        });
        PathBuf::from(name)
    }
}

/// Which changes a process wants to be woken by.
#[derive(Debug, Clone, Copy)]
pub(super) struct Listen {
    /// `StoreEvents::queued`: workers claim.
    pub queued: bool,
    /// `StoreEvents::changed`: waiters re-check their jobs.
    pub finished: bool,
}

impl Listen {
    fn wants(self, change: Change) -> bool {
        match change {
            Change::Queued => self.queued,
            Change::Finished => self.finished,
        }
    }
}

/// The writing side: the open signal files of one database.
#[derive(Debug)]
pub(super) struct Signals {
    queued: File,
    finished: File,
}

impl Signals {
    /// Opens (creating) both signal files of `database`.
    ///
    /// # Errors
    /// When a file cannot be created or opened for writing.
    pub(super) fn open(database: &Path) -> io::Result<Self> {
        Ok(Self {
            queued: Change::Queued.open(database)?,
            finished: Change::Finished.open(database)?,
        })
    }

    /// Tells every listener that `change` happened; call after the commit returned. A lost
    /// signal only delays listeners until their backstop poll, so failures are logged only.
    pub(super) fn raise(&self, change: Change) {
        let file = match change {
            Change::Queued => &self.queued,
            Change::Finished => &self.finished,
        };
        // Always the same byte at the same offset: the file never grows.
        if let Err(e) = file.write_at(b"\n", 0) {
            tracing::debug!(?change, error = %e, "could not raise a SQLite wake-up");
        }
    }
}

/// Watches the signal files of `database` that `listen` asks for and raises the matching
/// [`StoreEvents`]. The watches are in place when this returns, so no later signal is missed;
/// they end, closing the inotify descriptor, when the returned guard is dropped.
///
/// # Errors
/// When a signal file cannot be created, or inotify refuses (too many instances or watches
/// for this user); callers fall back to polling.
pub(super) fn listen(database: &Path, listen: Listen) -> io::Result<(StoreEvents, DropGuard)> {
    let inotify = Inotify::init()?;
    let mut watched = Vec::new();
    for change in Change::ALL.into_iter().filter(|c| listen.wants(*c)) {
        // Made here too, so a listener that starts before any writer can watch.
        drop(change.open(database)?);
        let watch = inotify.watches().add(
            change.path(database),
            WatchMask::MODIFY | WatchMask::DELETE_SELF | WatchMask::MOVE_SELF,
        )?;
        watched.push((watch, change));
    }
    let stream = inotify.into_event_stream([0; BUFFER_BYTES])?;
    let events = StoreEvents::default();
    let stop = CancellationToken::new();
    tokio::spawn(relay(stream, watched, events.clone(), stop.clone()));
    Ok((events, stop.drop_guard()))
}

/// Turns signals into [`StoreEvents`] until `stop` is cancelled. They coalesce (`Notify`
/// keeps one permit, `watch` one version), so a burst costs each listener one re-check per
/// check it has time for, never a queue.
async fn relay(
    mut stream: EventStream<[u8; BUFFER_BYTES]>,
    watched: Vec<(WatchDescriptor, Change)>,
    events: StoreEvents,
    stop: CancellationToken,
) {
    let raise = |change: Change| match change {
        Change::Queued => events.queued.notify_one(),
        Change::Finished => {
            events.changed.send_replace(());
        }
    };
    loop {
        let event = tokio::select! {
            biased;
            () = stop.cancelled() => return,
            event = stream.next() => event,
        };
        match event {
            Some(Ok(event)) => {
                if event.mask.contains(EventMask::Q_OVERFLOW) {
                    // Events were dropped, ours perhaps among them.
                    for (_, change) in &watched {
                        raise(*change);
                    }
                } else if event.mask.contains(EventMask::MODIFY) {
                    if let Some((_, change)) = watched.iter().find(|(wd, _)| *wd == event.wd) {
                        raise(*change);
                    }
                } else if event
                    .mask
                    .intersects(EventMask::DELETE_SELF | EventMask::MOVE_SELF | EventMask::IGNORED)
                {
                    tracing::warn!(
                        "a SQLite signal file was removed; wake-ups stop and this process \
                         falls back to its backstop poll"
                    );
                    return;
                }
            }
            Some(Err(e)) => {
                // Never seen in practice; pausing keeps a persistent failure from spinning.
                tracing::warn!(error = %e, "reading SQLite wake-ups failed; retrying");
                for (_, change) in &watched {
                    raise(*change);
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            None => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signal_files_sit_beside_the_database() {
        let db = Path::new("/data/jobs.db");
        assert_eq!(Change::Queued.path(db), Path::new("/data/jobs.db-queued"));
        assert_eq!(
            Change::Finished.path(db),
            Path::new("/data/jobs.db-finished")
        );
    }

    #[tokio::test]
    async fn a_listener_is_woken_only_by_the_changes_it_listens_for() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = dir.path().join("jobs.db");
        let (events, _guard) = listen(
            &db,
            Listen {
                queued: true,
                finished: false,
            },
        )
        .expect("listen");
        let signals = Signals::open(&db).expect("open");
        let changed = events.changed.subscribe();

        signals.raise(Change::Finished);
        signals.raise(Change::Queued);
        tokio::time::timeout(Duration::from_secs(5), events.queued.notified())
            .await
            .expect("a queued signal wakes a worker");
        // The finished signal was raised first, so had it been relayed it would be seen now.
        assert!(
            !changed.has_changed().expect("sender alive"),
            "a worker is not woken by finished jobs"
        );
    }
}
