//! The WebSocket echo load of the benchmark (`bench/run.py`, scenario `ws`): `--connections`
//! connections to `--url`, each sending a text message of `--size` bytes and waiting for its
//! echo before sending the next, for `--duration` seconds. It prints one line,
//! `BENCH_RESULT {json}`, with the fields of wrk's (`bench/lua/report.lua`): messages echoed,
//! the run's length, the 50th and 99th latency percentiles, and errors.
//!
//! Written in Rust, on one thread, like wrk, so that the load generator on its core is not what
//! limits the figures. `--check` instead sends a few messages on one connection and exits 0 only if each
//! came back unchanged (the benchmark's correctness check).

use std::process::ExitCode;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::connect_async;
use tokio_tungstenite::tungstenite::Message;

/// A message not echoed within this counts as a timeout, as in wrk's runs.
const TIMEOUT: Duration = Duration::from_secs(5);

struct Options {
    url: String,
    connections: usize,
    duration: Duration,
    size: usize,
    check: bool,
}

fn options() -> Result<Options, String> {
    let mut options = Options {
        url: String::new(),
        connections: 64,
        duration: Duration::from_secs(5),
        size: 64,
        check: false,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().ok_or_else(|| format!("{arg} needs a value"));
        match arg.as_str() {
            "--url" => options.url = value()?,
            "--connections" => options.connections = number(&value()?)?,
            "--duration" => options.duration = Duration::from_secs(number(&value()?)? as u64),
            "--size" => options.size = number(&value()?)?,
            "--check" => options.check = true,
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    if options.url.is_empty() {
        return Err("--url ws://HOST:PORT/PATH is required".to_owned());
    }
    Ok(options)
}

fn number(text: &str) -> Result<usize, String> {
    text.parse()
        .ok()
        .filter(|n| *n > 0)
        .ok_or_else(|| format!("expected a positive number, got {text:?}"))
}

/// What one connection counted.
#[derive(Default)]
struct Tally {
    latencies_us: Vec<u32>,
    connect: u64,
    read: u64,
    write: u64,
    timeout: u64,
    /// Echoes that were not the message sent.
    wrong: u64,
}

async fn converse(url: String, size: usize, until: Instant, index: usize) -> Tally {
    let mut tally = Tally::default();
    let Ok((mut socket, _)) = connect_async(url.as_str()).await else {
        tally.connect += 1;
        return tally;
    };
    let body: String = std::iter::repeat_n(char::from(b'a' + (index % 26) as u8), size).collect();
    let mut counter: u64 = 0;
    while Instant::now() < until {
        counter += 1;
        // Every message differs, so an echo of the wrong one is caught.
        let text = format!("{counter:016x}{body}");
        let sent = Instant::now();
        if socket.send(Message::text(text.clone())).await.is_err() {
            tally.write += 1;
            break;
        }
        match tokio::time::timeout(TIMEOUT, socket.next()).await {
            Ok(Some(Ok(Message::Text(echo)))) if echo.as_str() == text => {
                let micros = sent.elapsed().as_micros();
                tally
                    .latencies_us
                    .push(u32::try_from(micros).unwrap_or(u32::MAX));
            }
            Ok(Some(Ok(_))) => {
                tally.wrong += 1;
                break;
            }
            Ok(_) => {
                tally.read += 1;
                break;
            }
            Err(_) => {
                tally.timeout += 1;
                break;
            }
        }
    }
    let _ = socket.close(None).await;
    tally
}

async fn check(url: &str) -> Result<(), String> {
    let (mut socket, _) = connect_async(url)
        .await
        .map_err(|err| format!("cannot connect to {url}: {err}"))?;
    for text in ["check", "é and ✓", &"x".repeat(70_000)] {
        socket
            .send(Message::text(text.to_owned()))
            .await
            .map_err(|err| format!("send failed: {err}"))?;
        match tokio::time::timeout(TIMEOUT, socket.next()).await {
            Ok(Some(Ok(Message::Text(echo)))) if echo.as_str() == text => {}
            other => return Err(format!("sent {} bytes, got {other:?}", text.len())),
        }
    }
    let _ = socket.close(None).await;
    Ok(())
}

fn percentile(sorted: &[u32], fraction: f64) -> u32 {
    if sorted.is_empty() {
        return 0;
    }
    let index = ((sorted.len() as f64 * fraction).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[index]
}

fn main() -> ExitCode {
    let options = match options() {
        Ok(options) => options,
        Err(message) => {
            eprintln!("wsload: {message}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("wsload: cannot start a runtime: {err}");
            return ExitCode::from(2);
        }
    };
    if options.check {
        return match runtime.block_on(check(&options.url)) {
            Ok(()) => ExitCode::SUCCESS,
            Err(message) => {
                eprintln!("wsload: {message}");
                ExitCode::FAILURE
            }
        };
    }
    let started = Instant::now();
    let until = started + options.duration;
    let tallies = runtime.block_on(async {
        let tasks: Vec<_> = (0..options.connections)
            .map(|index| tokio::spawn(converse(options.url.clone(), options.size, until, index)))
            .collect();
        let mut tallies = Vec::with_capacity(tasks.len());
        for task in tasks {
            tallies.push(task.await.unwrap_or_default());
        }
        tallies
    });
    let elapsed = started.elapsed();
    let mut latencies: Vec<u32> = tallies
        .iter()
        .flat_map(|t| t.latencies_us.iter().copied())
        .collect();
    latencies.sort_unstable();
    let sum = |field: fn(&Tally) -> u64| tallies.iter().map(field).sum::<u64>();
    println!(
        "BENCH_RESULT {{\"requests\": {}, \"duration_us\": {}, \"p50_us\": {}, \"p99_us\": {}, \
         \"connect\": {}, \"read\": {}, \"write\": {}, \"timeout\": {}, \"status\": {}}}",
        latencies.len(),
        elapsed.as_micros(),
        percentile(&latencies, 0.50),
        percentile(&latencies, 0.99),
        sum(|t| t.connect),
        sum(|t| t.read),
        sum(|t| t.write),
        sum(|t| t.timeout),
        sum(|t| t.wrong),
    );
    ExitCode::SUCCESS
}
