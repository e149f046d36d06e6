//! Log lines collected in memory and written to stdout in batches by a thread of their own,
//! so that a review neither makes a `write(2)` to the container runtime's pipe nor wakes a
//! thread.
//!
//! Every review logs one decision line. Written in place, that is a syscall per review under
//! stdout's lock; handed to a thread through a channel, it is a futex wake per review instead.
//! Here a line is appended to a shared buffer under a mutex; only the first line after the
//! writer went to sleep wakes it, and the writer waits [`BATCH_INTERVAL`] after each write so
//! that lines accumulate: at most a few hundred writes a second whatever the review rate,
//! and a line reaches stdout within milliseconds.
//!
//! Nothing is dropped: past [`MAX_PENDING`] bytes (stdout is not being read fast enough) the
//! logging task writes the batch itself, waiting as it would have on the pipe. Lines keep
//! their order. [`LogGuard`] writes out what is pending when dropped.

use std::io::Write;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

use tracing_subscriber::fmt::MakeWriter;

/// How long the writer lets lines accumulate after a write.
pub const BATCH_INTERVAL: Duration = Duration::from_millis(2);
/// Bytes pending before the logging task writes them itself.
pub const MAX_PENDING: usize = 1024 * 1024;

#[derive(Default)]
struct Pending {
    bytes: Vec<u8>,
    /// The writer thread waits for a line.
    writer_waiting: bool,
    closed: bool,
}

struct Shared {
    pending: Mutex<Pending>,
    wake: Condvar,
    /// Held while a batch is taken and written, so that batches reach `out` in order.
    out: Mutex<Output>,
}

struct Output {
    writer: Box<dyn Write + Send>,
    /// The buffer of the batch written last, emptied: it becomes the next pending buffer,
    /// so that the lines of each batch go into a buffer already grown to a batch's size
    /// instead of one grown again from nothing.
    spare: Vec<u8>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock leaves plain bytes behind; keep logging.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Shared {
    /// Take everything pending and write it.
    fn write_pending(&self) {
        let mut out = lock(&self.out);
        let mut batch = std::mem::take(&mut out.spare);
        std::mem::swap(&mut lock(&self.pending).bytes, &mut batch);
        if !batch.is_empty() {
            // A failing stdout has nowhere to report to; the lines are lost, as with
            // tracing's own writer.
            let _ = out.writer.write_all(&batch);
            let _ = out.writer.flush();
        }
        batch.clear();
        // A burst may have grown it past the usual batch: not kept then.
        if batch.capacity() <= MAX_PENDING {
            out.spare = batch;
        }
    }
}

/// A [`MakeWriter`] for tracing-subscriber that queues each event's line.
#[derive(Clone)]
pub struct LogWriter {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for LogWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogWriter").finish_non_exhaustive()
    }
}

/// Writes out the pending lines and stops the writer thread when dropped (at the end of
/// `serve`).
pub struct LogGuard {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for LogGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogGuard").finish_non_exhaustive()
    }
}

impl LogWriter {
    /// Start the writer thread on `out` (stdout for `serve`).
    pub fn spawn(out: impl Write + Send + 'static) -> std::io::Result<(LogWriter, LogGuard)> {
        let shared = Arc::new(Shared {
            pending: Mutex::new(Pending::default()),
            wake: Condvar::new(),
            out: Mutex::new(Output {
                writer: Box::new(out),
                spare: Vec::new(),
            }),
        });
        let thread = shared.clone();
        std::thread::Builder::new()
            .name("log-writer".into())
            .spawn(move || write_batches(&thread))?;
        Ok((
            LogWriter {
                shared: shared.clone(),
            },
            LogGuard { shared },
        ))
    }

    /// Queues a whole line, with its newline, written without tracing.
    pub fn write_line(&self, line: &[u8]) {
        self.push(line);
    }

    fn push(&self, line: &[u8]) {
        let mut pending = lock(&self.shared.pending);
        pending.bytes.extend_from_slice(line);
        if pending.writer_waiting {
            pending.writer_waiting = false;
            self.shared.wake.notify_one();
        }
        let full = pending.bytes.len() >= MAX_PENDING;
        drop(pending);
        if full {
            self.shared.write_pending();
        }
    }
}

fn write_batches(shared: &Shared) {
    loop {
        {
            let mut pending = lock(&shared.pending);
            while pending.bytes.is_empty() && !pending.closed {
                pending.writer_waiting = true;
                pending = shared
                    .wake
                    .wait(pending)
                    .unwrap_or_else(|poisoned| poisoned.into_inner());
            }
            if pending.closed {
                return;
            }
        }
        shared.write_pending();
        std::thread::sleep(BATCH_INTERVAL);
    }
}

impl Drop for LogGuard {
    fn drop(&mut self) {
        {
            let mut pending = lock(&self.shared.pending);
            pending.closed = true;
            self.shared.wake.notify_one();
        }
        self.shared.write_pending();
    }
}

/// One event's writer: tracing-subscriber formats the whole line and writes it at once.
#[derive(Debug)]
pub struct LineWriter<'a> {
    writer: &'a LogWriter,
}

impl Write for LineWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.writer.push(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for LogWriter {
    type Writer = LineWriter<'a>;

    fn make_writer(&'a self) -> Self::Writer {
        LineWriter { writer: self }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A `Write` whose bytes the test can read.
    #[derive(Clone, Default)]
    struct Sink(Arc<Mutex<Vec<u8>>>);

    impl Write for Sink {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Sink {
        fn text(&self) -> String {
            String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
        }
    }

    #[test]
    fn every_line_is_written_in_order_by_the_time_the_guard_is_dropped() {
        let out = Sink::default();
        let (writer, guard) = LogWriter::spawn(out.clone()).unwrap();
        // Long lines, so that some batches pass MAX_PENDING and are written by the loggers.
        let padding = "x".repeat(2000);
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let writer = writer.clone();
                let padding = padding.clone();
                std::thread::spawn(move || {
                    for i in 0..1000 {
                        // As tracing-subscriber does: the whole line in one write.
                        let line = format!("{t} {i} {padding}\n");
                        writer.make_writer().write_all(line.as_bytes()).unwrap();
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
        drop(guard);
        let text = out.text();
        assert_eq!(text.lines().count(), 4000);
        for t in 0..4 {
            let own: Vec<usize> = text
                .lines()
                .filter_map(|l| l.strip_prefix(&format!("{t} ")))
                .map(|rest| rest.split(' ').next().unwrap().parse().unwrap())
                .collect();
            assert_eq!(own, (0..1000).collect::<Vec<_>>(), "thread {t}");
        }
    }

    #[test]
    fn a_line_reaches_the_output_without_a_flush() {
        let out = Sink::default();
        let (writer, _guard) = LogWriter::spawn(out.clone()).unwrap();
        writer.make_writer().write_all(b"one line\n").unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while out.text().is_empty() {
            assert!(
                std::time::Instant::now() < deadline,
                "the line was not written"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        assert_eq!(out.text(), "one line\n");
    }
}
