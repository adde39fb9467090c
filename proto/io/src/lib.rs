//! `proto-io`: the I/O shell shared by the `edge`, `circuit-worker` and `dirauth` binaries
//! (DESIGN.md "Observability and config"). `proto` is sans-io; everything two or more
//! binaries need that touches files, sockets, clocks or signals lives here:
//! configuration loading, log set-up, the Prometheus `/metrics` endpoint, shutdown
//! signals ([this module](self)), the queue ceiling ([`budget`]), key directories ([`keydir`]), the edge↔worker gRPC
//! schema ([`rpc`], [`batch`]), rustls set-up for Tor links ([`tls`]) and the tokio
//! driver of one Tor link ([`channel`]).
//!
//! Invariants:
//! - Configuration comes from an explicit file path and an explicit environment map, never
//!   from the process environment directly, so tests pass a map.
//! - Servers take an already-bound listener, so tests bind `127.0.0.1:0`.
//! - Every read from a peer is bounded in size and time; bad input closes the connection
//!   (with a 4xx status where one can be sent), it never panics.
//! - Nothing here logs a peer's address.

pub mod batch;
pub mod budget;
pub mod channel;
pub mod cluster_tls;
pub mod keydir;
pub mod rpc;
pub mod tls;
pub mod unix_link;

use std::collections::HashMap;
use std::convert::Infallible;
use std::fmt;
use std::path::Path;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use serde::Serialize;
use serde::de::{self, DeserializeOwned, Deserializer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;

/// Errors from process set-up (configuration, logging, metrics, sockets).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The configuration file or an environment override is missing, malformed or has a
    /// value of the wrong type; the message names the key.
    #[error("configuration: {0}")]
    Config(#[from] config::ConfigError),
    /// The effective configuration could not be rendered as TOML.
    #[error("cannot render configuration as TOML: {0}")]
    Render(#[from] toml::ser::Error),
    /// The log filter (from the configuration or `RUST_LOG`) does not parse.
    #[error("log filter {filter:?}: {reason}")]
    LogFilter {
        /// The filter as given.
        filter: String,
        /// Why it was rejected.
        reason: String,
    },
    /// A different global metrics recorder is already installed in this process.
    #[error("metrics recorder: {0}")]
    Metrics(&'static str),
    /// A socket or signal operation failed.
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
    /// A key file is missing, malformed, inconsistent or readable by others.
    #[error("keys: {0}")]
    Keys(String),
}

/// Result alias for this module.
pub type Result<T> = std::result::Result<T, Error>;

/// Separator between the prefix and the key, and between nested keys, in environment
/// overrides: `EDGE__ORPORT__LISTEN` sets `orport.listen`.
///
/// A double underscore because key names themselves contain single underscores
/// (`advertised_address`, `keys_dir`), and because Kubernetes injects service variables
/// such as `EDGE_PORT=tcp://…` for a Service named `edge`, which must not be read as
/// configuration.
pub const ENV_SEPARATOR: &str = "__";

/// Loads a configuration of type `T`.
///
/// Layers, later ones winning:
/// 1. defaults: `T` must be `#[serde(default)]` (per struct), so absent keys take the
///    values of its `Default`;
/// 2. the TOML `file`, if given (it must exist);
/// 3. entries of `env` named `{prefix}__{key}__{subkey}` (case-insensitive; see
///    [`ENV_SEPARATOR`]), e.g. `EDGE__ORPORT__LISTEN=0.0.0.0:9001` or
///    `CIRCUIT_WORKER__SHARDS=4`. Values are strings, converted to the field's type when
///    deserialised (numbers, addresses); an empty value counts as unset. For list fields
///    use [`string_or_list`] so `A,B` works from the environment.
///
/// `env` is a map rather than the process environment so tests can pass their own.
///
/// # Errors
/// [`Error::Config`] if the file is missing or not TOML, or a value does not convert to the
/// field's type, or (when `T` denies unknown fields) a key is unknown.
pub fn load_config<T: DeserializeOwned>(
    file: Option<&Path>,
    env: &HashMap<String, String>,
    prefix: &str,
) -> Result<T> {
    let mut builder = config::Config::builder();
    if let Some(path) = file {
        builder = builder.add_source(
            config::File::from(path)
                .format(config::FileFormat::Toml)
                .required(true),
        );
    }
    let env_source: config::Map<String, String> =
        env.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    builder = builder.add_source(
        config::Environment::with_prefix(prefix)
            .prefix_separator(ENV_SEPARATOR)
            .separator(ENV_SEPARATOR)
            .ignore_empty(true)
            .source(Some(env_source)),
    );
    Ok(builder.build()?.try_deserialize()?)
}

/// Renders a configuration as TOML (what `check-config` prints).
///
/// # Errors
/// [`Error::Render`] if `T` has a shape TOML cannot express.
pub fn to_toml<T: Serialize>(value: &T) -> Result<String> {
    Ok(toml::to_string(value)?)
}

/// Serde `deserialize_with` helper for list options: accepts a list (TOML array) or one
/// string of comma-separated items (an environment override such as
/// `EDGE__WORKERS=http://a:9201,http://b:9201`). Items are trimmed; empty items dropped.
///
/// # Errors
/// The deserialiser's error if the value is neither a list of strings nor a string.
pub fn string_or_list<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> std::result::Result<Vec<String>, D::Error> {
    struct ListVisitor;
    impl<'de> de::Visitor<'de> for ListVisitor {
        type Value = Vec<String>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a list of strings or a comma-separated string")
        }
        fn visit_str<E: de::Error>(self, v: &str) -> std::result::Result<Self::Value, E> {
            Ok(v.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect())
        }
        fn visit_unit<E: de::Error>(self) -> std::result::Result<Self::Value, E> {
            Ok(Vec::new())
        }
        fn visit_seq<A: de::SeqAccess<'de>>(
            self,
            mut seq: A,
        ) -> std::result::Result<Self::Value, A::Error> {
            let mut out = Vec::new();
            while let Some(item) = seq.next_element::<String>()? {
                out.push(item);
            }
            Ok(out)
        }
    }
    deserializer.deserialize_any(ListVisitor)
}

/// Seconds since the Unix epoch by the system clock (0 if the clock is before 1970): the
/// `now` the binaries hand to the protocol code.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Installs the global `tracing` subscriber: human-readable lines on stderr (stdout is
/// reserved for command output such as `check-config`), filtered by `RUST_LOG` if that is
/// set and non-empty, else by `filter` (`EnvFilter` syntax, e.g. `info,edge=debug`).
///
/// Safe to call more than once: a second call keeps the first subscriber and returns
/// `Ok(())` (tests start several servers in one process).
///
/// # Errors
/// [`Error::LogFilter`] if the effective filter does not parse.
pub fn init_tracing(filter: &str) -> Result<()> {
    use std::io::IsTerminal;
    use tracing_subscriber::EnvFilter;

    let from_env = std::env::var("RUST_LOG")
        .ok()
        .filter(|s| !s.trim().is_empty());
    let directives = from_env.as_deref().unwrap_or(filter);
    let env_filter = EnvFilter::builder()
        .parse(directives)
        .map_err(|e| Error::LogFilter {
            filter: directives.to_owned(),
            reason: e.to_string(),
        })?;
    // Err only means a subscriber is already installed: keep it.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(env_filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .try_init();
    Ok(())
}

/// The process-wide Prometheus handle, set by the first [`install_metrics_recorder`].
static RECORDER: Mutex<Option<PrometheusHandle>> = Mutex::new(None);

/// Buckets of every `*_seconds` histogram: 100 µs to 5 s.
pub const SECONDS_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];
/// Buckets of every `*_cells` histogram (cells per batch): powers of two to 1024.
pub const CELLS_BUCKETS: &[f64] = &[
    1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0,
];

/// Installs a Prometheus recorder as the global `metrics` recorder and returns a handle
/// that renders it. Idempotent: later calls return the same handle.
///
/// # Errors
/// [`Error::Metrics`] if some other recorder was installed first.
pub fn install_metrics_recorder() -> Result<PrometheusHandle> {
    let mut slot = RECORDER.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(handle) = slot.as_ref() {
        return Ok(handle.clone());
    }
    // Histograms, not summaries: a summary's quantiles cannot be added up across pods.
    let recorder = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), SECONDS_BUCKETS)
        .and_then(|b| b.set_buckets_for_metric(Matcher::Suffix("_cells".into()), CELLS_BUCKETS))
        .map_err(|_| Error::Metrics("empty histogram buckets"))?
        .build_recorder();
    let handle = recorder.handle();
    metrics::set_global_recorder(recorder)
        .map_err(|_| Error::Metrics("another global metrics recorder is already installed"))?;
    *slot = Some(handle.clone());
    Ok(handle)
}

/// Registers the per-process gauges every component exports:
/// `{component}_build_info{version="…"} 1` and `{component}_start_time_seconds` (Unix
/// time of `start_time`, as Prometheus' `process_start_time_seconds`).
///
/// `component` is the metric prefix (`edge`, `worker`, `dirauth`).
pub fn register_process_metrics(component: &str, version: &str, start_time: SystemTime) {
    let build_info = format!("{component}_build_info");
    let start = format!("{component}_start_time_seconds");
    metrics::describe_gauge!(
        build_info.clone(),
        "Always 1; the label carries the running version."
    );
    metrics::describe_gauge!(
        start.clone(),
        metrics::Unit::Seconds,
        "Start time of the process since the Unix epoch."
    );
    metrics::gauge!(build_info, "version" => version.to_owned()).set(1.0);
    let secs = start_time
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0);
    metrics::gauge!(start).set(secs);
}

/// Limits of the `/metrics` HTTP responder.
#[derive(Debug, Clone, Copy)]
struct HttpLimits {
    /// Largest request head (request line + headers) read before answering 431.
    max_head: usize,
    /// Time a client gets to send its whole request head.
    read_timeout: Duration,
    /// Time to write the response.
    write_timeout: Duration,
    /// Connections served at once; more are closed on accept.
    max_connections: usize,
}

impl Default for HttpLimits {
    fn default() -> Self {
        HttpLimits {
            max_head: 8 * 1024,
            read_timeout: Duration::from_secs(5),
            write_timeout: Duration::from_secs(10),
            max_connections: 32,
        }
    }
}

/// How often histograms are folded into their summaries when nobody scrapes.
const UPKEEP_INTERVAL: Duration = Duration::from_secs(5);
/// Pause after a failed `accept` (e.g. out of file descriptors) so the loop does not spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// The process's tokio runtime: `threads` worker threads, or one per available core when
/// `threads` is 0. Every thread beyond the cores it can run on turns hand-offs between
/// tasks into context switches, so small machines want few. `threads = 1` is a
/// current-thread runtime: every task, and the future the caller blocks on, runs on the
/// calling thread, so no hand-off between tasks wakes another thread (a one-worker
/// multi-thread runtime would still split the blocked-on future from its tasks).
///
/// # Errors
/// [`Error::Io`] when the runtime cannot start.
pub fn runtime(threads: u32) -> Result<tokio::runtime::Runtime> {
    let mut b = if threads == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        if threads > 0 {
            b.worker_threads(usize::try_from(threads).unwrap_or(1));
        }
        b
    };
    Ok(b.enable_all().build()?)
}

/// Binds `addr` for the option named `option`, naming both in the error so an operator
/// sees which setting to change.
///
/// # Errors
/// [`Error::Io`] when the address cannot be bound.
pub async fn bind(addr: std::net::SocketAddr, option: &str) -> Result<TcpListener> {
    TcpListener::bind(addr).await.map_err(|e| {
        Error::Io(std::io::Error::new(
            e.kind(),
            format!("cannot bind {option} {addr}: {e}"),
        ))
    })
}

/// Serves `GET /metrics` (Prometheus text format) over HTTP/1.1 on an already-bound
/// listener, one request per connection; any other path is 404, any other method 405.
///
/// Runs until the future is dropped (which also aborts connections in flight); it never
/// fails, since accept errors are logged and retried.
pub async fn serve_metrics(listener: TcpListener, handle: PrometheusHandle) -> Infallible {
    serve_metrics_with(listener, handle, HttpLimits::default()).await
}

async fn serve_metrics_with(
    listener: TcpListener,
    handle: PrometheusHandle,
    limits: HttpLimits,
) -> Infallible {
    let mut connections = JoinSet::new();
    let mut upkeep = tokio::time::interval(UPKEEP_INTERVAL);
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                // The peer address is deliberately dropped: it is never logged.
                Ok((stream, _peer)) => {
                    if connections.len() >= limits.max_connections {
                        drop(stream);
                        continue;
                    }
                    connections.spawn(handle_connection(stream, handle.clone(), limits));
                }
                Err(e) => {
                    tracing::warn!(error = %e, "metrics endpoint: accept failed");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            _ = upkeep.tick() => handle.run_upkeep(),
        }
    }
}

/// What reading a request head produced.
enum Head {
    /// Bytes up to and including the blank line that ends the head.
    Complete(Vec<u8>),
    /// The head exceeded the size limit.
    TooLarge,
    /// The client closed before finishing its head.
    Closed,
}

async fn read_head(stream: &mut TcpStream, max_head: usize) -> std::io::Result<Head> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    loop {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Ok(Head::Closed);
        }
        let scan_from = buf.len().saturating_sub(3);
        buf.extend_from_slice(&chunk[..n]);
        if let Some(end) = find_head_end(&buf[scan_from..]) {
            buf.truncate(scan_from + end);
            return Ok(Head::Complete(buf));
        }
        if buf.len() > max_head {
            return Ok(Head::TooLarge);
        }
    }
}

/// Offset just past the blank line (`\r\n\r\n`, or a bare `\n\n`) ending a request head.
fn find_head_end(buf: &[u8]) -> Option<usize> {
    let crlf = buf.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4);
    let lf = buf.windows(2).position(|w| w == b"\n\n").map(|i| i + 2);
    match (crlf, lf) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

async fn handle_connection(mut stream: TcpStream, handle: PrometheusHandle, limits: HttpLimits) {
    let response =
        match tokio::time::timeout(limits.read_timeout, read_head(&mut stream, limits.max_head))
            .await
        {
            Ok(Ok(Head::Complete(head))) => respond(&head, &handle),
            Ok(Ok(Head::TooLarge)) => simple_response(431, "Request Header Fields Too Large"),
            // Timed out, closed early or failed: nobody is listening for an answer.
            Ok(Ok(Head::Closed)) | Ok(Err(_)) | Err(_) => return,
        };
    let written = tokio::time::timeout(limits.write_timeout, async {
        stream.write_all(&response).await?;
        stream.shutdown().await
    })
    .await;
    if matches!(written, Ok(Ok(()))) {
        // Lingering close: discard what the client still sends (a body, the rest of an
        // oversized head) so closing does not reset the connection before it has read
        // the answer. Bounded in bytes and time like every other read.
        let _ = tokio::time::timeout(LINGER_TIMEOUT, async {
            let mut sink = [0u8; 4096];
            let mut left = LINGER_MAX_BYTES;
            while left > 0 {
                match stream.read(&mut sink).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => left = left.saturating_sub(n),
                }
            }
        })
        .await;
    }
}

/// Longest a finished connection is kept open to drain the client's remaining input.
const LINGER_TIMEOUT: Duration = Duration::from_secs(1);
/// Most bytes drained from a finished connection.
const LINGER_MAX_BYTES: usize = 64 * 1024;

/// Builds the response to a complete request head.
fn respond(head: &[u8], handle: &PrometheusHandle) -> Vec<u8> {
    let line_end = head.iter().position(|&b| b == b'\n').unwrap_or(head.len());
    let Ok(line) = std::str::from_utf8(&head[..line_end]) else {
        return simple_response(400, "Bad Request");
    };
    let mut parts = line.trim_end_matches('\r').split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return simple_response(400, "Bad Request");
    };
    if version != "HTTP/1.1" && version != "HTTP/1.0" {
        return simple_response(400, "Bad Request");
    }
    let path = target.split('?').next().unwrap_or(target);
    if path != "/metrics" {
        return simple_response(404, "Not Found");
    }
    match method {
        "GET" => response(
            200,
            "OK",
            PROMETHEUS_CONTENT_TYPE,
            handle.render().as_bytes(),
            true,
        ),
        "HEAD" => response(
            200,
            "OK",
            PROMETHEUS_CONTENT_TYPE,
            handle.render().as_bytes(),
            false,
        ),
        _ => simple_response(405, "Method Not Allowed"),
    }
}

/// Content type of the Prometheus text exposition format.
const PROMETHEUS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

fn simple_response(code: u16, reason: &str) -> Vec<u8> {
    let body = format!("{code} {reason}\n");
    response(
        code,
        reason,
        "text/plain; charset=utf-8",
        body.as_bytes(),
        true,
    )
}

fn response(code: u16, reason: &str, content_type: &str, body: &[u8], with_body: bool) -> Vec<u8> {
    let allow = if code == 405 {
        "Allow: GET, HEAD\r\n"
    } else {
        ""
    };
    let mut out = format!(
        "HTTP/1.1 {code} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n{allow}Connection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    if with_body {
        out.extend_from_slice(body);
    }
    out
}

/// Ctrl-C and SIGTERM, registered eagerly so a signal that arrives between start-up and
/// the first wait still shuts the process down cleanly (rather than killing it with the
/// default action).
#[derive(Debug)]
pub struct ShutdownSignals {
    #[cfg(unix)]
    interrupt: tokio::signal::unix::Signal,
    #[cfg(unix)]
    terminate: tokio::signal::unix::Signal,
}

impl ShutdownSignals {
    /// Registers the handlers. Call inside a tokio runtime, before announcing readiness.
    ///
    /// # Errors
    /// [`Error::Io`] if a handler cannot be installed.
    pub fn register() -> Result<Self> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            Ok(ShutdownSignals {
                interrupt: signal(SignalKind::interrupt())?,
                terminate: signal(SignalKind::terminate())?,
            })
        }
        #[cfg(not(unix))]
        {
            Ok(ShutdownSignals {})
        }
    }

    /// Waits for the first Ctrl-C (SIGINT) or SIGTERM.
    pub async fn recv(mut self) {
        #[cfg(unix)]
        tokio::select! {
            _ = self.interrupt.recv() => {}
            _ = self.terminate.recv() => {}
        }
        #[cfg(not(unix))]
        {
            let _ = &mut self;
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde::Deserialize;
    use std::net::SocketAddr;

    #[derive(Debug, Default, Deserialize, Serialize, PartialEq)]
    #[serde(default, deny_unknown_fields)]
    struct Sample {
        #[serde(deserialize_with = "string_or_list")]
        workers: Vec<String>,
        shards: u32,
        orport: Port,
        note: String,
    }

    #[derive(Debug, Deserialize, Serialize, PartialEq)]
    #[serde(default, deny_unknown_fields)]
    struct Port {
        listen: SocketAddr,
        advertised_address: Option<SocketAddr>,
    }

    impl Default for Port {
        fn default() -> Self {
            Port {
                listen: "127.0.0.1:9001".parse().unwrap(),
                advertised_address: None,
            }
        }
    }

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn toml_file(text: &str) -> tempfile::NamedTempFile {
        use std::io::Write;
        let mut f = tempfile::Builder::new().suffix(".toml").tempfile().unwrap();
        f.write_all(text.as_bytes()).unwrap();
        f
    }

    #[test]
    fn defaults_when_nothing_is_given() {
        let got: Sample = load_config(None, &HashMap::new(), "EDGE").unwrap();
        assert_eq!(got, Sample::default());
    }

    #[test]
    fn file_overrides_defaults_and_keeps_the_rest() {
        let f = toml_file("shards = 3\n[orport]\nadvertised_address = \"192.0.2.7:443\"\n");
        let got: Sample = load_config(Some(f.path()), &HashMap::new(), "EDGE").unwrap();
        assert_eq!(got.shards, 3);
        assert_eq!(got.orport.listen, Port::default().listen);
        assert_eq!(
            got.orport.advertised_address,
            Some("192.0.2.7:443".parse().unwrap())
        );
    }

    #[test]
    fn env_overrides_file_for_nested_keys_and_numbers() {
        let f = toml_file("shards = 3\n[orport]\nlisten = \"127.0.0.1:1\"\n");
        let e = env(&[
            ("EDGE__SHARDS", "12"),
            ("EDGE__ORPORT__LISTEN", "0.0.0.0:9001"),
            ("edge__orport__advertised_address", "[2001:db8::1]:9001"),
            ("EDGE__NOTE", "42"),
        ]);
        let got: Sample = load_config(Some(f.path()), &e, "EDGE").unwrap();
        assert_eq!(got.shards, 12);
        assert_eq!(got.orport.listen, "0.0.0.0:9001".parse().unwrap());
        assert_eq!(
            got.orport.advertised_address,
            Some("[2001:db8::1]:9001".parse().unwrap())
        );
        // A number-looking value still reaches a string field as written.
        assert_eq!(got.note, "42");
    }

    #[test]
    fn unrelated_and_single_underscore_variables_are_ignored() {
        // Kubernetes service variables look like this; they must not be configuration.
        let e = env(&[
            ("EDGE_PORT", "tcp://10.0.0.1:9001"),
            ("EDGE_SERVICE_HOST", "10.0.0.1"),
            ("OTHER__SHARDS", "9"),
            ("EDGE__NOTE", ""),
        ]);
        let got: Sample = load_config(None, &e, "EDGE").unwrap();
        assert_eq!(got, Sample::default());
    }

    #[test]
    fn prefix_with_underscore_works() {
        let e = env(&[("CIRCUIT_WORKER__SHARDS", "4")]);
        let got: Sample = load_config(None, &e, "CIRCUIT_WORKER").unwrap();
        assert_eq!(got.shards, 4);
    }

    #[test]
    fn lists_from_file_and_from_env() {
        let f = toml_file("workers = [\"http://a:1\", \"http://b:2\"]\n");
        let got: Sample = load_config(Some(f.path()), &HashMap::new(), "EDGE").unwrap();
        assert_eq!(got.workers, ["http://a:1", "http://b:2"]);
        let e = env(&[("EDGE__WORKERS", "http://c:3, http://d:4,")]);
        let got: Sample = load_config(Some(f.path()), &e, "EDGE").unwrap();
        assert_eq!(got.workers, ["http://c:3", "http://d:4"]);
    }

    #[test]
    fn bad_values_are_errors_naming_the_key() {
        for (k, v) in [
            ("EDGE__SHARDS", "-1"),
            ("EDGE__SHARDS", "many"),
            ("EDGE__ORPORT__LISTEN", "not-an-address"),
            ("EDGE__ORPORT__LISTEN", "127.0.0.1:70000"),
        ] {
            let err = load_config::<Sample>(None, &env(&[(k, v)]), "EDGE").unwrap_err();
            let msg = err.to_string();
            let key = k
                .trim_start_matches("EDGE__")
                .to_lowercase()
                .replace("__", ".");
            assert!(msg.contains(&key), "{k}={v}: {msg}");
        }
    }

    #[test]
    fn unknown_keys_missing_files_and_bad_toml_are_errors() {
        let typo = env(&[("EDGE__ORPORT__LISTN", "127.0.0.1:1")]);
        assert!(load_config::<Sample>(None, &typo, "EDGE").is_err());
        let missing = Path::new("/nonexistent/dir/edge.toml");
        assert!(load_config::<Sample>(Some(missing), &HashMap::new(), "EDGE").is_err());
        let garbage = toml_file("shards = [[[\n");
        assert!(load_config::<Sample>(Some(garbage.path()), &HashMap::new(), "EDGE").is_err());
        let wrong_type = toml_file("[orport]\nlisten = 5\n");
        assert!(load_config::<Sample>(Some(wrong_type.path()), &HashMap::new(), "EDGE").is_err());
    }

    #[test]
    fn to_toml_round_trips_through_load_config() {
        let s = Sample {
            workers: vec!["http://a:1".into()],
            orport: Port {
                advertised_address: Some("192.0.2.1:443".parse().unwrap()),
                ..Port::default()
            },
            ..Sample::default()
        };
        let text = to_toml(&s).unwrap();
        let f = toml_file(&text);
        let back: Sample = load_config(Some(f.path()), &HashMap::new(), "EDGE").unwrap();
        assert_eq!(back, s);
    }

    #[test]
    fn init_tracing_twice_is_fine_and_bad_filters_are_rejected() {
        // RUST_LOG, if the test runner has it, would override the argument.
        if std::env::var("RUST_LOG").is_err() {
            assert!(matches!(
                init_tracing("edge=loud"),
                Err(Error::LogFilter { .. })
            ));
        }
        init_tracing("info").unwrap();
        init_tracing("debug").unwrap();
    }

    #[test]
    fn head_end_detection() {
        assert_eq!(find_head_end(b"GET / HTTP/1.1\r\n\r\n"), Some(18));
        assert_eq!(find_head_end(b"GET / HTTP/1.1\n\nrest"), Some(16));
        assert_eq!(find_head_end(b"GET / HTTP/1.1\r\nHost: x\r\n"), None);
    }

    #[test]
    fn respond_never_panics_on_arbitrary_heads() {
        let handle = install_metrics_recorder().unwrap();
        for head in [
            &b""[..],
            b"\n\n",
            b"\xff\xfe\r\n\r\n",
            b"GET\r\n\r\n",
            b"GET /metrics HTTP/1.1 extra\r\n\r\n",
            b"GET /metrics SPDY/3\r\n\r\n",
        ] {
            assert!(respond(head, &handle).starts_with(b"HTTP/1.1 400 "));
        }
    }

    async fn start(limits: HttpLimits) -> SocketAddr {
        let handle = install_metrics_recorder().unwrap();
        register_process_metrics(
            "runtimetest",
            "9.9.9",
            UNIX_EPOCH + Duration::from_secs(1000),
        );
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(serve_metrics_with(listener, handle, limits));
        addr
    }

    /// Sends `request` and returns everything the server wrote before closing.
    async fn exchange(addr: SocketAddr, request: &[u8]) -> String {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(request).await.unwrap();
        let mut out = Vec::new();
        tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out))
            .await
            .expect("server closes the connection")
            .unwrap();
        String::from_utf8_lossy(&out).into_owned()
    }

    #[tokio::test]
    async fn metrics_endpoint_serves_gauges_and_rejects_the_rest() {
        let addr = start(HttpLimits::default()).await;

        let ok = exchange(addr, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").await;
        assert!(ok.starts_with("HTTP/1.1 200 OK\r\n"), "{ok}");
        assert!(
            ok.contains("Content-Type: text/plain; version=0.0.4"),
            "{ok}"
        );
        assert!(
            ok.contains("runtimetest_build_info{version=\"9.9.9\"} 1"),
            "{ok}"
        );
        assert!(ok.contains("runtimetest_start_time_seconds 1000"), "{ok}");
        let (head, body) = ok.split_once("\r\n\r\n").unwrap();
        assert!(head.contains(&format!("Content-Length: {}", body.len())));

        let head_only = exchange(addr, b"HEAD /metrics?x=1 HTTP/1.0\r\n\r\n").await;
        assert!(head_only.starts_with("HTTP/1.1 200 OK\r\n"));
        assert!(head_only.ends_with("\r\n\r\n"), "HEAD has no body");

        let nf = exchange(addr, b"GET / HTTP/1.1\r\n\r\n").await;
        assert!(nf.starts_with("HTTP/1.1 404 "), "{nf}");
        let post = exchange(addr, b"POST /metrics HTTP/1.1\r\n\r\n").await;
        assert!(post.starts_with("HTTP/1.1 405 ") && post.contains("Allow: GET, HEAD"));
        let junk = exchange(addr, b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\n\n").await;
        assert!(junk.starts_with("HTTP/1.1 400 "), "{junk}");
    }

    #[tokio::test]
    async fn oversized_and_slow_requests_are_cut_off_and_serving_continues() {
        let limits = HttpLimits {
            read_timeout: Duration::from_millis(300),
            ..HttpLimits::default()
        };
        let addr = start(limits).await;

        let mut big = b"GET /metrics HTTP/1.1\r\n".to_vec();
        big.extend(std::iter::repeat_n(b'a', 20 * 1024));
        let too_large = exchange(addr, &big).await;
        assert!(too_large.starts_with("HTTP/1.1 431 "), "{too_large}");

        // A client that never finishes its head is dropped after the read timeout.
        let silent = tokio::time::timeout(
            Duration::from_secs(5),
            exchange(addr, b"GET /metrics HTTP/1.1\r\n"),
        )
        .await
        .expect("slow client is disconnected within the bound");
        assert_eq!(silent, "");

        let ok = exchange(addr, b"GET /metrics HTTP/1.1\r\n\r\n").await;
        assert!(ok.starts_with("HTTP/1.1 200 OK\r\n"));
    }
}
