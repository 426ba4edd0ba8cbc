//! Ships what a running job prints to the store while it runs, for `GET /jobs/<id>/events`.
//! Output is gathered and written at most every [`SHIP_EVERY`] per job, one statement per
//! write, so a chatty script costs the database a few small writes a second; the sandbox's
//! output cap bounds the total. Live output is a convenience: a failed write is logged and
//! dropped, and the job's outcome still carries its whole (capped) output.

use std::sync::Arc;
use std::time::Duration;

use shared::job::{JobId, Lease, OutputChunk, OutputStream};
use shared::store::JobStore;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::sandbox::OutputTap;

/// How often a running job's new output is written.
pub const SHIP_EVERY: Duration = Duration::from_millis(200);

/// Chunk numbers each attempt may use: attempt *n* numbers from (n - 1) × this + 1, so a
/// job's chunks keep rising across attempts. Within the output cap and a job's time, an
/// attempt writes far fewer.
const SEQS_PER_ATTEMPT: u32 = 1_000_000;

/// The shipping task of one run; [`Shipper::finish`] flushes what is left.
pub struct Shipper {
    tap: OutputTap,
    task: JoinHandle<()>,
}

impl Shipper {
    /// Starts shipping the output of the run holding `lease`.
    #[must_use]
    pub fn start(store: Arc<dyn JobStore>, lease: &Lease) -> Self {
        let (tap, received) = mpsc::unbounded_channel();
        let first = lease
            .attempt
            .saturating_sub(1)
            .saturating_mul(SEQS_PER_ATTEMPT)
            .saturating_add(1);
        let task = tokio::spawn(ship(store, lease.job_id, first, received));
        Self {
            tap: Some(tap),
            task,
        }
    }

    /// Where the executor sends the output.
    #[must_use]
    pub fn tap(&self) -> &OutputTap {
        &self.tap
    }

    /// Writes what the run printed last; returns once it is stored (or given up on).
    pub async fn finish(mut self) {
        self.tap = None;
        let _ = self.task.await;
    }
}

async fn ship(
    store: Arc<dyn JobStore>,
    job: JobId,
    first_seq: u32,
    mut received: mpsc::UnboundedReceiver<(OutputStream, Vec<u8>)>,
) {
    let mut batch = Batch::new(first_seq);
    let mut tick = tokio::time::interval(SHIP_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            read = received.recv() => match read {
                Some((stream, bytes)) => batch.add(stream, &bytes),
                None => break,
            },
            _ = tick.tick() => write(store.as_ref(), job, batch.take(false)).await,
        }
    }
    write(store.as_ref(), job, batch.take(true)).await;
}

async fn write(store: &dyn JobStore, job: JobId, chunks: Vec<OutputChunk>) {
    if chunks.is_empty() {
        return;
    }
    if let Err(e) = store.append_output(job, &chunks).await {
        tracing::warn!(error = %e, "could not store live output; the outcome keeps it all");
    }
}

/// Output read since the last write, as text per stream in the order it came.
struct Batch {
    next_seq: u32,
    chunks: Vec<OutputChunk>,
    /// Bytes of an unfinished UTF-8 character at the end of each stream's last read.
    partial: [Vec<u8>; 2],
}

impl Batch {
    fn new(first_seq: u32) -> Self {
        Self {
            next_seq: first_seq,
            chunks: Vec::new(),
            partial: [Vec::new(), Vec::new()],
        }
    }

    fn add(&mut self, stream: OutputStream, bytes: &[u8]) {
        let partial = &mut self.partial[index(stream)];
        partial.extend_from_slice(bytes);
        let text = take_text(partial, false);
        self.push(stream, text);
    }

    fn push(&mut self, stream: OutputStream, text: String) {
        if text.is_empty() {
            return;
        }
        match self.chunks.last_mut() {
            Some(last) if last.stream == stream => last.text.push_str(&text),
            _ => {
                self.chunks.push(OutputChunk {
                    seq: self.next_seq,
                    stream,
                    text,
                });
                self.next_seq = self.next_seq.saturating_add(1);
            }
        }
    }

    /// The chunks to write now; at the end (`last`), unfinished characters too.
    fn take(&mut self, last: bool) -> Vec<OutputChunk> {
        if last {
            for stream in [OutputStream::Stdout, OutputStream::Stderr] {
                let text = take_text(&mut self.partial[index(stream)], true);
                self.push(stream, text);
            }
        }
        std::mem::take(&mut self.chunks)
    }
}

fn index(stream: OutputStream) -> usize {
    match stream {
        OutputStream::Stdout => 0,
        OutputStream::Stderr => 1,
    }
}

/// Decodes what `bytes` holds as UTF-8, invalid bytes as U+FFFD, and leaves an unfinished
/// character at the end in place for the next read (unless this is the `last`).
fn take_text(bytes: &mut Vec<u8>, last: bool) -> String {
    let mut text = String::new();
    let mut rest: &[u8] = bytes;
    loop {
        match std::str::from_utf8(rest) {
            Ok(valid) => {
                text.push_str(valid);
                rest = &[];
                break;
            }
            Err(e) => {
                let (valid, after) = rest.split_at(e.valid_up_to());
                text.push_str(std::str::from_utf8(valid).unwrap_or_default());
                match e.error_len() {
                    Some(bad) => {
                        text.push(char::REPLACEMENT_CHARACTER);
                        rest = after.get(bad..).unwrap_or_default();
                    }
                    None if last => {
                        text.push(char::REPLACEMENT_CHARACTER);
                        rest = &[];
                        break;
                    }
                    None => {
                        rest = after;
                        break;
                    }
                }
            }
        }
    }
    *bytes = rest.to_vec();
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_character_split_between_reads_is_kept_whole() {
        let mut batch = Batch::new(1);
        let smile = "😀".as_bytes();
        batch.add(OutputStream::Stdout, &[b"a", &smile[..2]].concat());
        batch.add(OutputStream::Stdout, &smile[2..]);
        let chunks = batch.take(false);
        assert_eq!(chunks.len(), 1);
        assert_eq!(chunks[0].text, "a😀");
    }

    #[test]
    fn streams_alternate_in_order_and_numbers_keep_rising() {
        let mut batch = Batch::new(7);
        batch.add(OutputStream::Stdout, b"one\n");
        batch.add(OutputStream::Stdout, b"two\n");
        batch.add(OutputStream::Stderr, b"oops\n");
        batch.add(OutputStream::Stdout, b"three\n");
        let chunks = batch.take(false);
        let seen: Vec<(u32, OutputStream, &str)> = chunks
            .iter()
            .map(|c| (c.seq, c.stream, c.text.as_str()))
            .collect();
        assert_eq!(
            seen,
            [
                (7, OutputStream::Stdout, "one\ntwo\n"),
                (8, OutputStream::Stderr, "oops\n"),
                (9, OutputStream::Stdout, "three\n"),
            ]
        );
        batch.add(OutputStream::Stdout, b"four\n");
        assert_eq!(batch.take(false)[0].seq, 10);
    }

    #[test]
    fn invalid_bytes_become_replacement_characters() {
        let mut batch = Batch::new(1);
        batch.add(OutputStream::Stderr, b"x\xffy\xe2\x82");
        assert_eq!(batch.take(false)[0].text, "x\u{fffd}y");
        assert_eq!(batch.take(true)[0].text, "\u{fffd}");
    }
}
