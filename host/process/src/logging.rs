//! Keeping the host's log useful under attack: records a client can trigger are rate-limited
//! per kind, and text a client or handler controls cannot forge a record.
//!
//! [`LogBudget`] lets a kind of per-request record (a handler cancelled because its client
//! left, a timeout) through at a bounded rate and counts what it holds back, reported with the
//! next record of that kind that gets through. [`LogWriter`] is the writer the `pyhost` binary
//! gives its tracing subscriber: within one record, every line after the first is indented, so
//! a `\n` smuggled into a path parameter that ends up in an exception message cannot start a
//! line that looks like a record of its own, and other control characters (`\r`, escape
//! sequences, NUL) are written as `\xNN`. An embedding application keeps its own subscriber
//! and may use the writer too.
//!
//! [`Timer`] stamps each record with its time and, in a server with several processes, the
//! process that wrote it (`worker=3`, `supervisor`), set by [`set_process_tag`] (`pyhost::workers::role` sets it).

use std::io::{self, Write};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Instant;

/// How many records of one kind pass per second.
#[derive(Debug)]
pub struct LogBudget {
    per_second: u32,
    second: AtomicU64,
    used: AtomicU32,
    suppressed: AtomicU64,
}

impl LogBudget {
    /// A budget of `per_second` records a second.
    pub const fn new(per_second: u32) -> Self {
        Self {
            per_second,
            second: AtomicU64::new(0),
            used: AtomicU32::new(0),
            suppressed: AtomicU64::new(0),
        }
    }

    /// `Some(held_back)` when a record may be written now, `held_back` being how many of its
    /// kind were suppressed since the last one written; `None` when it must be suppressed.
    ///
    /// Lock-free: two atomics on the common path. Two threads starting a new second at once
    /// may let a record or two more through; that is all a race costs.
    pub fn admit(&self) -> Option<u64> {
        static EPOCH: OnceLock<Instant> = OnceLock::new();
        self.admit_at(EPOCH.get_or_init(Instant::now).elapsed().as_secs() + 1)
    }

    /// [`LogBudget::admit`] in the second numbered `now` (from 1).
    fn admit_at(&self, now: u64) -> Option<u64> {
        let second = self.second.load(Ordering::Relaxed);
        if second != now
            && self
                .second
                .compare_exchange(second, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            self.used.store(0, Ordering::Relaxed);
        }
        if self.used.fetch_add(1, Ordering::Relaxed) < self.per_second {
            Some(self.suppressed.swap(0, Ordering::Relaxed))
        } else {
            self.suppressed.fetch_add(1, Ordering::Relaxed);
            None
        }
    }
}

/// ` (N similar records suppressed)`, or nothing when none were.
pub fn suppressed_note(held_back: u64) -> String {
    if held_back == 0 {
        String::new()
    } else {
        format!(" ({held_back} similar records suppressed)")
    }
}

static PROCESS_TAG: OnceLock<String> = OnceLock::new();

/// Names this process in every record [`Timer`] stamps (set once; later calls are ignored).
pub fn set_process_tag(tag: String) {
    let _ = PROCESS_TAG.set(tag);
}

/// The process's tag, if it has one (`worker=3`, `supervisor`).
pub fn process_tag() -> Option<&'static str> {
    PROCESS_TAG.get().map(String::as_str)
}

/// The time of a record (as tracing's default timer writes it) followed by the process that
/// wrote it, when the server runs several: `2026-12-02T10:00:00.123456Z worker=2`.
///
/// Installs the log subscriber the pyhost binaries use: records to stderr, filtered by
/// `PYHOST_LOG` (default `info`), stamped by [`Timer`]. Colours only on a terminal; anywhere
/// else (a file, journald, a collector) records are plain text written through
/// [`LogWriter`], whose control characters are escaped, so no client can forge a line.
pub fn init() {
    use std::io::IsTerminal;
    use tracing_subscriber::fmt::writer::BoxMakeWriter;
    let terminal = io::stderr().is_terminal();
    let writer = if terminal {
        BoxMakeWriter::new(io::stderr)
    } else {
        BoxMakeWriter::new(LogWriter)
    };
    tracing_subscriber::fmt()
        .with_timer(Timer)
        .with_writer(writer)
        .with_ansi(terminal)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("PYHOST_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
}

/// Give it to a subscriber with `.with_timer(pyhost::logging::Timer)`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Timer;

impl tracing_subscriber::fmt::time::FormatTime for Timer {
    fn format_time(&self, w: &mut tracing_subscriber::fmt::format::Writer<'_>) -> std::fmt::Result {
        tracing_subscriber::fmt::time::SystemTime.format_time(w)?;
        match process_tag() {
            Some(tag) => write!(w, " {tag}"),
            None => Ok(()),
        }
    }
}

/// Writes log records to stderr with their control characters escaped (see the module docs).
///
/// Give it to a tracing subscriber whose output is plain text (`with_ansi(false)`): the
/// escape character of colour codes is escaped too.
#[derive(Debug, Clone, Copy, Default)]
pub struct LogWriter;

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogWriter {
    type Writer = RecordWriter;

    fn make_writer(&'a self) -> Self::Writer {
        RecordWriter
    }
}

/// One record on its way to stderr, from [`LogWriter`].
#[derive(Debug)]
pub struct RecordWriter;

impl Write for RecordWriter {
    /// The subscriber formats a whole record and writes it at once, so `buf` is one record
    /// ending in its newline.
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        io::stderr().lock().write_all(&escape_record(buf))?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        io::stderr().flush()
    }
}

/// Continuation lines indented, other control characters (but tab) as `\xNN`.
fn escape_record(record: &[u8]) -> Vec<u8> {
    let body = record.strip_suffix(b"\n").unwrap_or(record);
    let mut out = Vec::with_capacity(record.len() + 16);
    for &byte in body {
        match byte {
            b'\n' => out.extend_from_slice(b"\n    "),
            b'\t' => out.push(byte),
            0x00..=0x1f | 0x7f => {
                let _ = write!(out, "\\x{byte:02x}");
            }
            _ => out.push(byte),
        }
    }
    if body.len() != record.len() {
        out.push(b'\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_smuggled_newline_cannot_start_a_record() {
        let record =
            b"2026-12-01T00:00:00Z ERROR pyhost: bad id 7\n2026-12-01T00:00:01Z INFO forged\n";
        let escaped = String::from_utf8(escape_record(record)).unwrap();
        assert_eq!(
            escaped,
            "2026-12-01T00:00:00Z ERROR pyhost: bad id 7\n    2026-12-01T00:00:01Z INFO forged\n"
        );
        for line in escaped.lines().skip(1) {
            assert!(line.starts_with("    "), "{line:?}");
        }
    }

    #[test]
    fn other_control_characters_are_escaped() {
        let escaped = escape_record(b"a\rb\x1b[31mc\x00d\te\x7f\n");
        assert_eq!(escaped, b"a\\x0db\\x1b[31mc\\x00d\te\\x7f\n");
    }

    #[test]
    fn a_budget_lets_its_rate_through_and_counts_the_rest() {
        let budget = LogBudget::new(3);
        let passed: Vec<Option<u64>> = (0..10).map(|_| budget.admit_at(1)).collect();
        assert_eq!(passed[..3], [Some(0), Some(0), Some(0)]);
        assert!(passed[3..].iter().all(Option::is_none), "{passed:?}");
        // The next second's first record reports what the last one held back.
        assert_eq!(budget.admit_at(2), Some(7));
        assert_eq!(budget.admit_at(2), Some(0));
    }
}
