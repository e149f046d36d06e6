//! Log lines collected in memory and written to stdout in batches by a thread of their own,
//! so that a review neither makes a `write(2)` to the container runtime's pipe nor wakes a
//! thread.
//!
//! Every review logs one decision line. Written in place, that is a syscall per review under
//! stdout's lock; handed to a thread through a channel, it is a futex wake per review instead.
//! Here a line is appended to a buffer of the logging thread's own (its shard), under a
//! mutex that only the writer thread also takes, once per batch. With one buffer shared by
//! the worker threads, its lock and its last cache lines moved from core to core with every
//! line: ~10 ns a line on the two vCPUs where it was measured, one lock serializing every
//! worker on a machine with more cores (docs/benchmarks-history.md). Only the first line after
//! the writer went to sleep wakes it, and the writer waits [`BATCH_INTERVAL`] after each write
//! so that lines accumulate: at most a few hundred batches a second whatever the review rate,
//! and a line reaches stdout within milliseconds.
//!
//! Nothing is dropped: past [`MAX_PENDING`] bytes in a shard (stdout is not being read fast
//! enough) the logging thread writes the batch itself, waiting as it would have on the pipe.
//! Each thread's lines keep their order; lines of different threads logged within the same
//! batch (a few milliseconds) are written shard after shard. [`LogGuard`] writes out what is
//! pending when dropped.

use std::cell::RefCell;
use std::io::Write;
use std::sync::atomic::{self, AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

use tracing_subscriber::fmt::MakeWriter;

/// How long the writer lets lines accumulate after a write.
pub const BATCH_INTERVAL: Duration = Duration::from_millis(2);
/// Bytes pending in one thread's shard before that thread writes the batch itself.
pub const MAX_PENDING: usize = 1024 * 1024;

/// One thread's pending lines, on cache lines of its own (128 bytes: two lines, as the
/// adjacent-line prefetcher fetches them in pairs).
#[repr(align(128))]
#[derive(Default)]
struct Shard {
    bytes: Mutex<Vec<u8>>,
    /// Its thread has exited: dropped from the writer's list once empty.
    orphan: AtomicBool,
}

/// The writer thread's state, under [`Shared::state`].
#[derive(Default)]
struct State {
    closed: bool,
}

struct Shared {
    /// Tells this writer's shards from another's in a thread's [`SHARDS`].
    id: u64,
    /// Every thread's shard that has logged here.
    shards: Mutex<Vec<Arc<Shard>>>,
    /// The writer thread is about to wait or waits for a line. Read by every line, written
    /// only when the writer goes to sleep and by the line that wakes it.
    writer_waiting: AtomicBool,
    state: Mutex<State>,
    wake: Condvar,
    /// Held while a batch is taken and written, so that batches reach `out` in order.
    out: Mutex<Output>,
}

struct Output {
    writer: Box<dyn Write + Send>,
    /// Emptied buffers of the batch written last: they become shards' next buffers, so that
    /// lines go into a buffer already grown to a batch's size instead of one grown again
    /// from nothing.
    spare: Vec<Vec<u8>>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock leaves plain bytes behind; keep logging.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Writers' ids, for [`Shared::id`].
static NEXT_WRITER: AtomicU64 = AtomicU64::new(0);

/// A thread's shard in one writer; marks it orphan when the thread exits.
struct ShardHandle {
    writer: u64,
    shard: Arc<Shard>,
}

impl Drop for ShardHandle {
    fn drop(&mut self) {
        self.shard.orphan.store(true, Ordering::Release);
    }
}

thread_local! {
    /// This thread's shard in each writer it has logged to: one in `serve`.
    static SHARDS: RefCell<Vec<ShardHandle>> = const { RefCell::new(Vec::new()) };
}

impl Shared {
    /// Runs `f` on this thread's shard, registered on its first line.
    fn with_shard<R>(&self, f: impl FnOnce(&Shard) -> R) -> R {
        let mut f = Some(f);
        let done = SHARDS.try_with(|handles| {
            let mut handles = handles.borrow_mut();
            if let Some(handle) = handles.iter().find(|h| h.writer == self.id) {
                return (f.take().expect("called once"))(&handle.shard);
            }
            // Writers that are gone (tests start several): their shards go with them.
            handles.retain(|h| Arc::strong_count(&h.shard) > 1);
            let shard = self.register();
            let result = (f.take().expect("called once"))(&shard);
            handles.push(ShardHandle {
                writer: self.id,
                shard,
            });
            result
        });
        match done {
            Ok(result) => result,
            // A line logged while the thread's locals are being destroyed: a shard of its own,
            // orphan from the start, written out with the next batch.
            Err(_) => {
                let shard = self.register();
                let result = (f.take().expect("not called yet"))(&shard);
                shard.orphan.store(true, Ordering::Release);
                result
            }
        }
    }

    fn register(&self) -> Arc<Shard> {
        let shard = Arc::new(Shard::default());
        lock(&self.shards).push(shard.clone());
        shard
    }

    /// Take everything pending in every shard and write it.
    fn write_pending(&self) {
        let mut out = lock(&self.out);
        let shards: Vec<Arc<Shard>> = lock(&self.shards).clone();
        let mut orphans = false;
        for shard in &shards {
            // Read before taking the bytes: an orphan's last line is then taken too.
            orphans |= shard.orphan.load(Ordering::Acquire);
            let mut batch = out.spare.pop().unwrap_or_default();
            std::mem::swap(&mut *lock(&shard.bytes), &mut batch);
            if !batch.is_empty() {
                // A failing stdout has nowhere to report to; the lines are lost, as with
                // tracing's own writer.
                let _ = out.writer.write_all(&batch);
            }
            batch.clear();
            // A burst may have grown it past the usual batch: not kept then.
            if batch.capacity() <= MAX_PENDING {
                out.spare.push(batch);
            }
        }
        let _ = out.writer.flush();
        out.spare.truncate(shards.len());
        if orphans {
            lock(&self.shards).retain(|shard| {
                !shard.orphan.load(Ordering::Acquire) || !lock(&shard.bytes).is_empty()
            });
        }
    }

    /// Whether any shard holds a line.
    fn any_pending(&self) -> bool {
        lock(&self.shards)
            .iter()
            .any(|shard| !lock(&shard.bytes).is_empty())
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
            id: NEXT_WRITER.fetch_add(1, Ordering::Relaxed),
            shards: Mutex::new(Vec::new()),
            writer_waiting: AtomicBool::new(false),
            state: Mutex::new(State::default()),
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
        let full = self.shared.with_shard(|shard| {
            let mut bytes = lock(&shard.bytes);
            bytes.extend_from_slice(line);
            bytes.len() >= MAX_PENDING
        });
        // Pairs with the fence in `write_batches`: either the writer sees this line before it
        // sleeps, or this sees that it sleeps.
        atomic::fence(Ordering::SeqCst);
        if self.shared.writer_waiting.load(Ordering::Relaxed)
            && self.shared.writer_waiting.swap(false, Ordering::AcqRel)
        {
            // Under the state lock: the writer is then waiting, not about to.
            let _state = lock(&self.shared.state);
            self.shared.wake.notify_one();
        }
        if full {
            self.shared.write_pending();
        }
    }
}

fn write_batches(shared: &Shared) {
    loop {
        {
            let mut state = lock(&shared.state);
            loop {
                if state.closed {
                    return;
                }
                shared.writer_waiting.store(true, Ordering::Relaxed);
                atomic::fence(Ordering::SeqCst);
                if shared.any_pending() {
                    shared.writer_waiting.store(false, Ordering::Relaxed);
                    break;
                }
                state = shared
                    .wake
                    .wait(state)
                    .unwrap_or_else(|poisoned| poisoned.into_inner());
            }
        }
        shared.write_pending();
        std::thread::sleep(BATCH_INTERVAL);
    }
}

impl Drop for LogGuard {
    fn drop(&mut self) {
        {
            let mut state = lock(&self.shared.state);
            state.closed = true;
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
    fn the_lines_of_a_thread_that_exited_are_written_and_its_shard_let_go() {
        let out = Sink::default();
        let (writer, guard) = LogWriter::spawn(out.clone()).unwrap();
        writer.write_line(b"from the test thread\n");
        for t in 0..3 {
            let writer = writer.clone();
            std::thread::spawn(move || writer.write_line(format!("from thread {t}\n").as_bytes()))
                .join()
                .unwrap();
        }
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        // The test thread's shard stays; the three others go once written out.
        while lock(&writer.shared.shards).len() > 1 || out.text().lines().count() < 4 {
            assert!(
                std::time::Instant::now() < deadline,
                "shards left: {}, written: {:?}",
                lock(&writer.shared.shards).len(),
                out.text()
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        writer.write_line(b"last\n");
        drop(guard);
        let text = out.text();
        let mut lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.pop(), Some("last"), "{text}");
        lines.sort_unstable();
        assert_eq!(
            lines,
            [
                "from the test thread",
                "from thread 0",
                "from thread 1",
                "from thread 2"
            ]
        );
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
