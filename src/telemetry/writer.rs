//! Where log lines go: appended to one in-memory queue under a short lock, and written to stdout
//! in batches by one thread every [`FLUSH_EVERY`] (sooner in a burst), so a request neither
//! waits for a `write(2)` nor wakes a thread per line.
//!
//! Measured with `examples/access_line_cost.rs` (bench/README.md): a line written straight to
//! stdout cost about 6 µs of CPU, most of it the write; through a channel to a writer thread
//! (tracing-appender) about 9 µs, because every line woke the thread. Queued here, one wake-up
//! every 20 ms writes whatever arrived since.
//!
//! Nothing is lost on shutdown: dropping the [`LogGuard`] writes out what is queued. Lines are
//! dropped only when stdout has not taken the queue for long enough that [`MAX_QUEUED`] bytes
//! wait; each dropped line is counted ([`dropped_lines`], exported as
//! `scimgate_log_lines_dropped_total`) and reported on stderr.

use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

/// How often queued lines are written out.
const FLUSH_EVERY: Duration = Duration::from_millis(20);
/// Queued bytes that wake the writer thread before its next turn (a burst); the one wake-up
/// per this many bytes is all a line ever costs in thread wake-ups.
const WAKE_AT: usize = 1024 * 1024;
/// Queued bytes beyond which new lines are dropped: about half a second of access lines at
/// 30,000 requests a second, i.e. stdout blocked for that long.
const MAX_QUEUED: usize = 8 * 1024 * 1024;

/// The process's log queue and its writer thread.
pub struct LogWriter {
    queue: Mutex<Vec<u8>>,
    /// Signalled when the queue passes [`WAKE_AT`].
    burst: Condvar,
    /// Held while a batch is taken and written, so batches reach stdout in queue order; holds
    /// the spare buffer the next batch is swapped into.
    output: Mutex<Vec<u8>>,
    dropped: AtomicU64,
    /// Dropped lines already reported on stderr.
    reported: AtomicU64,
    started: AtomicBool,
}

/// Keeps the log writer going; dropping it writes out every queued line (at shutdown).
#[must_use = "dropping the guard ends logging's final flush point"]
pub struct LogGuard(&'static LogWriter);

/// One line on its way into the queue (`tracing-subscriber` formats an event whole, then
/// writes it with one `write_all`).
pub struct QueuedLine(&'static LogWriter);

/// Log lines dropped so far because stdout did not keep up.
pub fn dropped_lines() -> u64 {
    LogWriter::global().dropped.load(Ordering::Relaxed)
}

impl LogWriter {
    /// The process's writer (the subscriber is global too).
    pub fn global() -> &'static Self {
        static WRITER: OnceLock<LogWriter> = OnceLock::new();
        WRITER.get_or_init(|| Self {
            queue: Mutex::new(Vec::with_capacity(64 * 1024)),
            burst: Condvar::new(),
            output: Mutex::new(Vec::with_capacity(64 * 1024)),
            dropped: AtomicU64::new(0),
            reported: AtomicU64::new(0),
            started: AtomicBool::new(false),
        })
    }

    /// Starts the writer thread once. If the thread cannot be started, lines are written by
    /// the logging thread itself.
    pub(crate) fn start(&'static self) -> LogGuard {
        if !self.started.swap(true, Ordering::AcqRel) {
            let spawned = std::thread::Builder::new()
                .name("scimgate-log".into())
                .spawn(move || {
                    loop {
                        let queue = lock(&self.queue);
                        // Woken early by a burst, else after FLUSH_EVERY; either way write.
                        drop(self.burst.wait_timeout(queue, FLUSH_EVERY));
                        self.flush();
                    }
                });
            if spawned.is_err() {
                self.started.store(false, Ordering::Release);
            }
        }
        LogGuard(self)
    }

    /// Writes out every queued line, in order.
    pub fn flush(&self) {
        let mut spare = lock(&self.output);
        {
            let mut queue = lock(&self.queue);
            if queue.is_empty() {
                return;
            }
            std::mem::swap(&mut *queue, &mut *spare);
        }
        let mut out = std::io::stdout().lock();
        // A closed stdout loses the lines whatever we do; nothing better to report them to.
        let _ = out.write_all(&spare).and_then(|()| out.flush());
        drop(out);
        // Keep a buffer of a typical batch's size for the next swap, not a burst's.
        spare.clear();
        spare.shrink_to(1024 * 1024);
        drop(spare);
        self.report_drops();
    }

    /// Queues one whole line (written out within [`FLUSH_EVERY`]).
    pub(crate) fn append(&self, line: &[u8]) {
        {
            let mut queue = lock(&self.queue);
            if queue.len() + line.len() <= MAX_QUEUED {
                let before = queue.len();
                queue.extend_from_slice(line);
                if before < WAKE_AT && queue.len() >= WAKE_AT {
                    self.burst.notify_one();
                }
                if self.started.load(Ordering::Acquire) {
                    return;
                }
            } else {
                self.dropped.fetch_add(1, Ordering::Relaxed);
                return;
            }
        }
        // No writer thread (before `start`, or it could not be spawned): write now.
        self.flush();
    }

    fn report_drops(&self) {
        let dropped = self.dropped.load(Ordering::Relaxed);
        let reported = self.reported.swap(dropped, Ordering::Relaxed);
        if dropped > reported {
            eprintln!(
                "scimgate: {} log lines dropped: stdout did not take them for too long ({} in total)",
                dropped - reported,
                dropped
            );
        }
    }
}

/// A poisoned lock only means a thread panicked while holding it; the bytes are still usable.
fn lock(mutex: &Mutex<Vec<u8>>) -> MutexGuard<'_, Vec<u8>> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Drop for LogGuard {
    fn drop(&mut self) {
        self.0.flush();
    }
}

impl Write for QueuedLine {
    fn write(&mut self, line: &[u8]) -> std::io::Result<usize> {
        self.0.append(line);
        Ok(line.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for &'static LogWriter {
    type Writer = QueuedLine;

    fn make_writer(&'a self) -> QueuedLine {
        QueuedLine(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn writer() -> &'static LogWriter {
        Box::leak(Box::new(LogWriter {
            queue: Mutex::new(Vec::new()),
            burst: Condvar::new(),
            output: Mutex::new(Vec::new()),
            dropped: AtomicU64::new(0),
            reported: AtomicU64::new(0),
            started: AtomicBool::new(true),
        }))
    }

    #[test]
    fn lines_queue_in_order_until_flushed() {
        let w = writer();
        let mut sink = tracing_subscriber::fmt::MakeWriter::make_writer(&w);
        sink.write_all(b"{\"n\":1}\n").unwrap();
        sink.write_all(b"{\"n\":2}\n").unwrap();
        assert_eq!(&*lock(&w.queue), b"{\"n\":1}\n{\"n\":2}\n");
        w.flush();
        assert!(lock(&w.queue).is_empty(), "flushed to stdout");
        assert_eq!(w.dropped.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn a_full_queue_drops_and_counts_whole_lines() {
        let w = writer();
        let line = vec![b'x'; 1024 * 1024];
        let mut sink = QueuedLine(w);
        for _ in 0..MAX_QUEUED / line.len() {
            sink.write_all(&line).unwrap();
        }
        assert_eq!(w.dropped.load(Ordering::Relaxed), 0, "up to the bound");
        sink.write_all(b"one more\n").unwrap();
        sink.write_all(&line).unwrap();
        assert_eq!(w.dropped.load(Ordering::Relaxed), 2);
        assert_eq!(lock(&w.queue).len(), MAX_QUEUED, "no partial line queued");
        // Reported once on stderr, then not again until more are dropped.
        w.report_drops();
        assert_eq!(w.reported.load(Ordering::Relaxed), 2);
    }
}
