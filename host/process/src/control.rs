//! The control channel between the supervisor and one worker: a Unix socket pair, one line
//! per message, from the worker to the supervisor only (the supervisor speaks with signals).
//!
//! Lines are short (an error message is cut at [`MAX_LINE`]) and written with one `send`, so
//! the loop thread's heartbeat and a tokio thread's recycle request never interleave.

/// The longest line either side writes or reads.
pub const MAX_LINE: usize = 4096;

/// What a worker tells its supervisor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// The handler package is imported and the event loop runs: the worker may take traffic.
    Ready,
    /// Sent by the event loop every heartbeat period (`pyhost::workers::heartbeat`), with the requests served so
    /// far: a worker whose loop is stuck stops sending it.
    Beat {
        /// Requests the worker has served so far.
        requests: u64,
    },
    /// The worker has served `server.max_requests`: replace it.
    Recycle,
    /// Start-up failed; the worker exits after sending this (newlines escaped as `\n`).
    Error(String),
    /// The worker's last figures, sent as it exits (`pyhost stats:` form).
    Stats(String),
}

impl Message {
    /// The line for this message, newline included.
    pub fn encode(&self) -> String {
        let mut line = match self {
            Message::Ready => "ready".to_owned(),
            Message::Beat { requests } => format!("beat {requests}"),
            Message::Recycle => "recycle".to_owned(),
            Message::Error(text) => format!("error {}", escape(text)),
            Message::Stats(text) => format!("stats {}", escape(text)),
        };
        if line.len() > MAX_LINE - 1 {
            let mut cut = MAX_LINE - 1;
            while !line.is_char_boundary(cut) {
                cut -= 1;
            }
            line.truncate(cut);
        }
        line.push('\n');
        line
    }

    /// Reads one line (without its newline); `None` for a line no worker writes.
    pub fn parse(line: &str) -> Option<Self> {
        let (word, rest) = line.split_once(' ').unwrap_or((line, ""));
        match word {
            "ready" => Some(Message::Ready),
            "beat" => rest.parse().ok().map(|requests| Message::Beat { requests }),
            "recycle" => Some(Message::Recycle),
            "error" => Some(Message::Error(unescape(rest))),
            "stats" => Some(Message::Stats(unescape(rest))),
            _ => None,
        }
    }
}

fn escape(text: &str) -> String {
    text.replace('\\', "\\\\").replace('\n', "\\n")
}

fn unescape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            match chars.next() {
                Some('n') => out.push('\n'),
                Some(other) => out.push(other),
                None => out.push('\\'),
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_message_reads_back_as_written() {
        for message in [
            Message::Ready,
            Message::Beat { requests: 12345 },
            Message::Recycle,
            Message::Error("Traceback:\n  line \\n 1\nImportError: x".to_owned()),
            Message::Stats("requests=3 gil_hold_p50_us=2.0".to_owned()),
        ] {
            let line = message.encode();
            assert!(
                line.ends_with('\n') && line.matches('\n').count() == 1,
                "{line:?}"
            );
            assert_eq!(Message::parse(line.trim_end_matches('\n')), Some(message));
        }
    }

    #[test]
    fn a_long_error_is_cut_to_one_line() {
        let line = Message::Error("é".repeat(10_000)).encode();
        assert!(line.len() <= MAX_LINE);
        assert!(line.ends_with('\n'));
    }

    #[test]
    fn unknown_lines_are_ignored() {
        assert_eq!(Message::parse("hello"), None);
        assert_eq!(Message::parse("beat many"), None);
    }
}
