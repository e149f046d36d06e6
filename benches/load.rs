//! The load bench: the release `kube-baseline` binary, as a child process on 127.0.0.1 with
//! real TLS, against `serve --reference-noop` (the same binary, TLS, HTTP, body limit, decode
//! and encode, no evaluation) as the physical limit of this machine.
//!
//! `cargo bench --bench load` (builds the release binary; flags after `--`, see [`USAGE`]).
//!
//! Each server × protocol gets a fresh process, so its CPU seconds (utime + stime from
//! `/proc/<pid>/stat`) and peak RSS (`VmHWM` from `/proc/<pid>/status`) are its own. One
//! client drives each the same way: a closed loop with a fixed number of requests in flight
//! (warm-up, then a bounded number of measured reviews), then an open loop at half of the
//! no-op's peak throughput on that protocol: reviews falling due as a Poisson process, as
//! independent API requests do, released by a 50 µs tick ([`Pacing`]), their latency counted
//! from when each fell due. More pairs of the closed loop alone follow
//! (`--rounds`, 5 by default), the no-op then kube-baseline in fresh processes, for the
//! median of their throughput ratios. `--calibrate NS` adds pairs of the plain no-op and the
//! no-op busy-waiting NS nanoseconds per review (`serve --reference-busy-ns`): what that much
//! work per review costs in this bench's ratio. Last, `--interleave N` runs both servers at
//! once and alternates the closed loop between them in short slices, so that the machine's
//! drift falls on both alike (see [`Bench::interleaved`]). The reviews are a fixed mix of
//! Deployments and Pods built from `tests/data`, 10% of them violating. Then a server with
//! 10,000 exceptions loaded ([`exceptions_run`]), and kube-baseline with `image-signature`
//! off and enforced on the mix with its images pinned to a signed one in a real registry
//! ([`signatures_run`]).
//!
//! Before all that, [`wake_up_lateness`] measures how late the idle machine wakes a sleeping
//! thread: the floor under every latency the bench reports.
//!
//! The server writes its JSON logs (one decision line per review) to a pipe that a thread of
//! the bench drains, as a container runtime would.

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "../tests/signature/harness.rs"]
mod harness;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::Request;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, RootCertStore};
use serde_json::json;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use kube_baseline::server::coalesce::Coalesce;
use kube_baseline::workload::WorkloadKind;

const USAGE: &str = "\
cargo bench --bench load -- [--requests N] [--warmup N] [--concurrency N]
                            [--h2-connections N] [--open-seconds S] [--rate R] [--client-threads N]
                            [--tick-us N | --pace-us N] [--arrivals poisson|even]
                            [--latency-log DIR] [--rounds N] [--calibrate NS[,NS...]]
                            [--interleave N] [--slice N]
                            [--exceptions N] [--no-signatures] [--only h2|h1] [--pin]
                            [--dump-mix DIR]
  KUBE_BASELINE_BIN=path   use this binary instead of the one cargo built";

#[derive(Debug, Clone)]
struct Options {
    /// Measured reviews per closed-loop run.
    requests: usize,
    /// Reviews sent before measuring, on the same connections.
    warmup: usize,
    /// Requests in flight in the closed loop; also the number of HTTP/1.1 connections.
    concurrency: usize,
    /// HTTP/2 connections the in-flight requests are spread over.
    h2_connections: usize,
    /// Length of each open-loop run.
    open_seconds: f64,
    /// The second open-loop rate, besides half of the no-op's peak.
    fixed_rate: f64,
    /// Worker threads of the client's runtime.
    client_threads: usize,
    /// How the open loop releases its reviews when they are due.
    pacing: Pacing,
    /// The open loop's reviews fall due as a Poisson process (random gaps of the same mean,
    /// as independent requests arrive), or evenly spaced.
    poisson: bool,
    /// Write each open-loop review's due time and latency into a file in this directory.
    latency_log: Option<PathBuf>,
    /// Closed-loop pairs (no-op, then kube-baseline, fresh processes) per protocol, the
    /// first with the open loop: the throughput ratio of each, and their median.
    rounds: usize,
    /// Busy-waits (nanoseconds per review) of the no-op to compare with the plain no-op in
    /// closed-loop pairs, `rounds` each: what that much work per review costs in this bench.
    calibrate: Vec<u64>,
    /// Slices of the closed loop per server in the interleaved run (0: no interleaved run).
    interleave: usize,
    /// Reviews per slice of the interleaved run.
    slice: usize,
    /// Exceptions written for the memory run.
    exceptions: usize,
    /// Run kube-baseline with `image-signature` off and enforced on a signed mix (needs
    /// Debian's `docker-registry`; skipped with a note without it).
    signatures: bool,
    protocols: Vec<Protocol>,
    /// The client on the first CPU and the servers on the second (`taskset`), instead of
    /// both on both: what the servers do without the client's threads between them.
    pin: bool,
    /// Write the mix's reviews into this directory (for h2load, callgrind) and exit.
    dump_mix: Option<PathBuf>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            requests: 20_000,
            warmup: 2_000,
            concurrency: 32,
            h2_connections: 4,
            open_seconds: 3.0,
            fixed_rate: 1000.0,
            client_threads: 2,
            pacing: Pacing::Tick(Duration::from_micros(50)),
            poisson: true,
            latency_log: None,
            rounds: 5,
            calibrate: Vec::new(),
            interleave: 20,
            slice: 2_000,
            exceptions: 10_000,
            signatures: true,
            protocols: vec![Protocol::H2, Protocol::H1],
            pin: false,
            dump_mix: None,
        }
    }
}

fn options() -> Options {
    let mut o = Options::default();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = |name: &str| -> String {
            args.next()
                .unwrap_or_else(|| panic!("{name} needs a value\n{USAGE}"))
        };
        let number = |text: String| -> usize {
            text.parse()
                .unwrap_or_else(|_| panic!("not a number: {text}\n{USAGE}"))
        };
        match arg.as_str() {
            "--requests" => o.requests = number(value(&arg)),
            "--warmup" => o.warmup = number(value(&arg)),
            "--concurrency" => o.concurrency = number(value(&arg)),
            "--h2-connections" => o.h2_connections = number(value(&arg)),
            "--client-threads" => o.client_threads = number(value(&arg)),
            "--pace-us" => {
                o.pacing = match number(value(&arg)) {
                    0 => Pacing::Timer,
                    us => Pacing::Thread(Duration::from_micros(us as u64)),
                }
            }
            "--tick-us" => {
                o.pacing = Pacing::Tick(Duration::from_micros(number(value(&arg)).max(1) as u64))
            }
            "--arrivals" => {
                o.poisson = match value(&arg).as_str() {
                    "poisson" => true,
                    "even" => false,
                    other => panic!("--arrivals poisson|even, not {other}\n{USAGE}"),
                }
            }
            "--latency-log" => o.latency_log = Some(PathBuf::from(value(&arg))),
            "--rounds" => o.rounds = number(value(&arg)),
            "--interleave" => o.interleave = number(value(&arg)),
            "--slice" => o.slice = number(value(&arg)),
            "--exceptions" => o.exceptions = number(value(&arg)),
            "--calibrate" => {
                o.calibrate = value(&arg)
                    .split(',')
                    .map(|ns| number(ns.to_owned()) as u64)
                    .collect()
            }
            "--open-seconds" | "--rate" => {
                let text = value(&arg);
                let v: f64 = text
                    .parse()
                    .unwrap_or_else(|_| panic!("not a number: {text}\n{USAGE}"));
                if arg == "--rate" {
                    o.fixed_rate = v;
                } else {
                    o.open_seconds = v;
                }
            }
            "--dump-mix" => o.dump_mix = Some(PathBuf::from(value(&arg))),
            "--pin" => o.pin = true,
            "--no-signatures" => o.signatures = false,
            "--only" => {
                o.protocols = match value(&arg).as_str() {
                    "h2" => vec![Protocol::H2],
                    "h1" => vec![Protocol::H1],
                    other => panic!("--only h2|h1, not {other}\n{USAGE}"),
                }
            }
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            // `cargo bench` passes `--bench`; a filter may follow.
            _ => {}
        }
    }
    assert!(
        o.concurrency > 0 && o.h2_connections > 0 && o.requests > 0 && o.rounds > 0 && o.slice > 0
    );
    o
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Protocol {
    H2,
    H1,
}

impl Protocol {
    fn name(self) -> &'static str {
        match self {
            Protocol::H2 => "HTTP/2",
            Protocol::H1 => "HTTP/1.1",
        }
    }

    fn alpn(self) -> &'static [u8] {
        match self {
            Protocol::H2 => b"h2",
            Protocol::H1 => b"http/1.1",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flavour {
    Noop,
    Webhook,
}

impl Flavour {
    fn name(self) -> &'static str {
        match self {
            Flavour::Noop => "no-op reference",
            Flavour::Webhook => "kube-baseline",
        }
    }
}

// ---------------------------------------------------------------------------------------
// The reviews.

/// The mix, in the order it is sent (cycled): 9 compliant Deployments, 9 compliant Pods, one
/// violating Deployment and one violating Pod in 20. Half the compliant ones are the
/// reviews captured from a real kube-apiserver, half are built from the policy table's
/// compliant pod (2 containers and an init container). All are compact JSON, as the API
/// server sends them (the fixtures are indented for reading).
fn mix() -> Vec<Bytes> {
    let captured = |name: &str| {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/data/apiserver")
            .join(name);
        let text = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let value: serde_json::Value = serde_json::from_slice(&text).expect("fixture is JSON");
        Bytes::from(serde_json::to_vec(&value).expect("re-encode"))
    };
    let pod = common::compliant_pod();
    let mut bad = pod.clone();
    bad["spec"]["containers"][0]["securityContext"] = json!({"runAsUser": 0});
    bad["spec"]["containers"][1]["resources"] = json!({});
    bad["spec"]["hostNetwork"] = json!(true);
    let build = |kind, name, pod: &serde_json::Value, replicas| {
        Bytes::from(common::create(&common::workload(
            kind, name, "shop", pod, replicas,
        )))
    };
    let deployment_captured = captured("create-deployment-validate.json");
    let pod_captured = captured("create-pod-validate.json");
    let deployment = build(WorkloadKind::Deployment, "api", &pod, Some(3));
    let bare_pod = build(WorkloadKind::Pod, "api-7d9f", &pod, None);
    let deployment_bad = build(WorkloadKind::Deployment, "legacy", &bad, Some(2));
    let pod_bad = build(WorkloadKind::Pod, "debug", &bad, None);

    let mut reviews = Vec::with_capacity(20);
    for i in 0..9 {
        let (d, p) = if i % 2 == 0 {
            (&deployment_captured, &pod_captured)
        } else {
            (&deployment, &bare_pod)
        };
        reviews.push(d.clone());
        reviews.push(p.clone());
        if i == 4 {
            reviews.push(deployment_bad.clone());
        }
    }
    reviews.push(pod_bad);
    assert_eq!(reviews.len(), 20);
    reviews
}

// ---------------------------------------------------------------------------------------
// The server, as a child process.

struct Child {
    child: std::process::Child,
    pid: u32,
    addr: SocketAddr,
}

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn binary() -> PathBuf {
    if let Some(path) = std::env::var_os("KUBE_BASELINE_BIN") {
        return PathBuf::from(path);
    }
    // Cargo builds the package's binaries with the bench profile (release) before the bench.
    PathBuf::from(env!("CARGO_BIN_EXE_kube-baseline"))
}

/// The CPU the servers run on with `--pin`; the client runs on [`CLIENT_CPU`].
const SERVER_CPU: &str = "1";
const CLIENT_CPU: &str = "0";

fn spawn(bin: &Path, certs: &Path, flavour: Flavour, extra: &[String], pin: bool) -> Child {
    // `taskset` execs the server in its own process: the pid stays the server's.
    let mut command = if pin {
        let mut taskset = Command::new("taskset");
        taskset.args(["-c", SERVER_CPU]).arg(bin);
        taskset
    } else {
        Command::new(bin)
    };
    command
        .arg("serve")
        .arg("--tls-cert")
        .arg(certs.join("tls.crt"))
        .arg("--tls-key")
        .arg(certs.join("tls.key"))
        .args(["--listen", "127.0.0.1:0", "--ops-listen", "127.0.0.1:0"])
        .args(["--log-format", "json"])
        .args(extra)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    if flavour == Flavour::Noop {
        command.arg("--reference-noop");
    }
    let mut child = command
        .spawn()
        .unwrap_or_else(|e| panic!("{}: {e}", bin.display()));
    let stdout = child.stdout.take().expect("piped stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    // Drains the logs for the process's life: line by line until the webhook's address is
    // logged, then in blocks, as a container runtime copies a container's stdout to its log
    // file (so the client's share of the 2 cores does not grow with the server's log lines).
    std::thread::spawn(move || {
        let mut reader = BufReader::with_capacity(64 * 1024, stdout);
        let mut line = String::new();
        while reader.read_line(&mut line).is_ok_and(|n| n > 0) {
            if line.contains("\"listening\"") {
                let value: serde_json::Value = serde_json::from_str(&line).unwrap_or_default();
                let webhook = value["webhook"].as_str().and_then(|a| a.parse().ok());
                let ops = value["ops"].as_str().and_then(|a| a.parse().ok());
                if let (Some(webhook), Some(ops)) = (webhook, ops) {
                    let _ = tx.send((webhook, ops));
                    let _ = std::io::copy(&mut reader, &mut std::io::sink());
                    return;
                }
            }
            line.clear();
        }
    });
    let pid = child.id();
    let (addr, ops): (SocketAddr, SocketAddr) = match rx.recv_timeout(Duration::from_secs(60)) {
        Ok(addrs) => addrs,
        Err(_) => {
            let status = child.try_wait().ok().flatten();
            let _ = child.kill();
            panic!(
                "{} serve did not log `listening` (exit: {status:?})",
                bin.display()
            );
        }
    };
    // Load only a ready server: with an exception source, readiness waits for its first load.
    let give_up = Instant::now() + Duration::from_secs(120);
    while !is_ready(ops) {
        assert!(
            Instant::now() < give_up,
            "{} never became ready",
            bin.display()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    Child { child, pid, addr }
}

/// `GET /health/ready` on the ops port answers 200.
fn is_ready(ops: SocketAddr) -> bool {
    use std::io::{Read, Write};
    let Ok(mut tcp) = std::net::TcpStream::connect(ops) else {
        return false;
    };
    let _ = tcp.set_read_timeout(Some(Duration::from_secs(2)));
    if tcp
        .write_all(b"GET /health/ready HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut answer = String::new();
    let _ = tcp.read_to_string(&mut answer);
    answer.starts_with("HTTP/1.1 200")
}

/// utime + stime of a process, in seconds.
fn cpu_seconds(pid: u32, ticks_per_second: f64) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces): state is field 3, utime 14,
    // stime 15.
    let rest = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |n: usize| -> f64 {
        fields
            .get(n - 3)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (field(14) + field(15)) / ticks_per_second
}

/// Write syscalls a process has made (`syscw` of `/proc/<pid>/io`).
fn write_syscalls(pid: u32) -> u64 {
    let io = std::fs::read_to_string(format!("/proc/{pid}/io")).unwrap_or_default();
    io.lines()
        .find_map(|line| line.strip_prefix("syscw:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

/// Idle and total jiffies of the whole machine (`cpu` line of `/proc/stat`; idle includes
/// iowait).
fn machine_jiffies() -> (u64, u64) {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let values: Vec<u64> = stat
        .lines()
        .next()
        .and_then(|line| line.strip_prefix("cpu "))
        .map(|rest| {
            rest.split_whitespace()
                .filter_map(|v| v.parse().ok())
                .collect()
        })
        .unwrap_or_default();
    let idle = values.get(3).copied().unwrap_or(0) + values.get(4).copied().unwrap_or(0);
    (idle, values.iter().sum())
}

/// A `/proc/<pid>/status` line in KiB (`VmRSS`, `VmHWM`).
fn status_kib(pid: u32, key: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix(key)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

fn clock_ticks() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

// ---------------------------------------------------------------------------------------
// The client.

#[derive(Clone)]
enum Sender {
    H1(Arc<tokio::sync::Mutex<hyper::client::conn::http1::SendRequest<Full<Bytes>>>>),
    H2(hyper::client::conn::http2::SendRequest<Full<Bytes>>),
}

async fn connect(addr: SocketAddr, config: Arc<ClientConfig>, protocol: Protocol) -> Sender {
    let tcp = TcpStream::connect(addr).await.expect("connect");
    tcp.set_nodelay(true).expect("nodelay");
    let name = ServerName::IpAddress(addr.ip().into());
    let tls = TlsConnector::from(config)
        .connect(name, tcp)
        .await
        .expect("TLS handshake");
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(protocol.alpn()));
    // The client gathers its HTTP/2 requests into shared writes as the server does its answers,
    // so that its own share of the 2 cores stays small.
    let io = TokioIo::new(Coalesce::new(tls, protocol == Protocol::H2));
    match protocol {
        Protocol::H2 => {
            let (sender, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
                .await
                .expect("HTTP/2 handshake");
            tokio::spawn(conn);
            Sender::H2(sender)
        }
        Protocol::H1 => {
            let (sender, conn) = hyper::client::conn::http1::handshake(io)
                .await
                .expect("HTTP/1.1 handshake");
            tokio::spawn(conn);
            Sender::H1(Arc::new(tokio::sync::Mutex::new(sender)))
        }
    }
}

/// What one review got: whether it was denied.
async fn send(sender: &Sender, body: Bytes) -> bool {
    // The API server's form: `?timeout=` from the webhook configuration's timeoutSeconds.
    let (uri, h2) = match sender {
        Sender::H2(_) => ("https://127.0.0.1/validate?timeout=10s", true),
        Sender::H1(_) => ("/validate?timeout=10s", false),
    };
    let mut builder = Request::post(uri).header(hyper::header::CONTENT_TYPE, "application/json");
    if !h2 {
        builder = builder.header(hyper::header::HOST, "127.0.0.1");
    }
    let request = builder.body(Full::new(body)).expect("request");
    let response = match sender {
        Sender::H2(sender) => {
            let mut sender = sender.clone();
            sender.ready().await.expect("HTTP/2 ready");
            sender.send_request(request).await
        }
        Sender::H1(sender) => {
            let mut sender = sender.lock().await;
            sender.ready().await.expect("HTTP/1.1 ready");
            sender.send_request(request).await
        }
    }
    .expect("response");
    assert_eq!(
        response.status(),
        200,
        "a review got HTTP {}",
        response.status()
    );
    let body = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    memchr(b"\"allowed\":false", &body)
}

fn memchr(needle: &[u8], haystack: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

struct Connections {
    senders: Vec<Sender>,
}

impl Connections {
    async fn open(
        addr: SocketAddr,
        config: Arc<ClientConfig>,
        protocol: Protocol,
        o: &Options,
    ) -> Self {
        let n = match protocol {
            Protocol::H2 => o.h2_connections,
            Protocol::H1 => o.concurrency,
        };
        let mut senders = Vec::with_capacity(n);
        for _ in 0..n {
            senders.push(connect(addr, config.clone(), protocol).await);
        }
        Self { senders }
    }
}

#[derive(Debug, Default)]
struct Measured {
    /// Latencies in nanoseconds, sorted.
    latencies: Vec<u64>,
    /// The open loop's reviews in the order they fell due: when (after the start), and their
    /// latency.
    timeline: Vec<(Duration, Duration)>,
    elapsed: Duration,
    denied: usize,
}

impl Measured {
    fn throughput(&self) -> f64 {
        self.latencies.len() as f64 / self.elapsed.as_secs_f64()
    }

    /// The share of reviews answered later than `limit`.
    fn share_over(&self, limit: Duration) -> f64 {
        let limit = limit.as_nanos() as u64;
        let within = self.latencies.partition_point(|&l| l <= limit);
        (self.latencies.len() - within) as f64 / self.latencies.len().max(1) as f64
    }

    fn percentile(&self, p: f64) -> Duration {
        if self.latencies.is_empty() {
            return Duration::ZERO;
        }
        let rank = ((p / 100.0) * self.latencies.len() as f64).ceil() as usize;
        Duration::from_nanos(self.latencies[rank.clamp(1, self.latencies.len()) - 1])
    }
}

/// `count` reviews with `concurrency` in flight: each worker sends its next review when the
/// previous one is answered.
async fn closed_loop(
    conns: &Connections,
    reviews: &Arc<Vec<Bytes>>,
    count: usize,
    concurrency: usize,
) -> Measured {
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut workers = Vec::with_capacity(concurrency);
    for w in 0..concurrency {
        let sender = conns.senders[w % conns.senders.len()].clone();
        let next = next.clone();
        let reviews = reviews.clone();
        workers.push(tokio::spawn(async move {
            let mut latencies = Vec::with_capacity(count / concurrency + 1);
            let mut denied = 0;
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= count {
                    break;
                }
                let body = reviews[i % reviews.len()].clone();
                let t0 = Instant::now();
                denied += usize::from(send(&sender, body).await);
                latencies.push(t0.elapsed().as_nanos() as u64);
            }
            (latencies, denied)
        }));
    }
    let mut measured = Measured::default();
    for worker in workers {
        let (latencies, denied) = worker.await.expect("worker");
        measured.latencies.extend(latencies);
        measured.denied += denied;
    }
    measured.elapsed = started.elapsed();
    measured.latencies.sort_unstable();
    measured
}

/// How the open loop releases each review when it falls due.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pacing {
    /// The client's tokio timer, of 1 ms resolution, releases each millisecond's reviews as
    /// one burst, and latency runs from the moment the timer fired.
    Timer,
    /// A thread of its own wakes this often and releases the reviews due since its last
    /// wake-up.
    Thread(Duration),
    /// A periodic timer of the kernel (a `timerfd`, of nanosecond resolution) that the
    /// client's runtime waits on with its sockets ticks this often, and each tick releases
    /// the reviews due since the last: small bursts, with no thread of its own.
    Tick(Duration),
}

/// `DIR/<server>-<protocol>-<rate>.txt`: one line per review of an open loop, in the order
/// they fell due: when (µs after the start) and its latency (µs). A stall shows as a run of
/// consecutive late reviews.
fn write_latency_log(dir: &Path, flavour: Flavour, protocol: Protocol, rate: f64, m: &Measured) {
    use std::fmt::Write;
    let mut text = String::with_capacity(m.timeline.len() * 16);
    for (due, latency) in &m.timeline {
        let _ = writeln!(text, "{} {}", due.as_micros(), latency.as_micros());
    }
    let name = format!(
        "{}-{}-{:.0}.txt",
        if flavour == Flavour::Noop {
            "noop"
        } else {
            "kube-baseline"
        },
        if protocol == Protocol::H2 { "h2" } else { "h1" },
        rate
    );
    std::fs::create_dir_all(dir).expect("--latency-log directory");
    std::fs::write(dir.join(name), text).expect("write the latency log");
}

/// A `timerfd` that expires every `period`, registered with the client's runtime.
fn tick_timer(period: Duration) -> tokio::io::unix::AsyncFd<std::os::fd::OwnedFd> {
    use rustix::time::{
        timerfd_create, timerfd_settime, Itimerspec, TimerfdClockId, TimerfdFlags,
        TimerfdTimerFlags, Timespec,
    };
    let fd = timerfd_create(
        TimerfdClockId::Monotonic,
        TimerfdFlags::NONBLOCK | TimerfdFlags::CLOEXEC,
    )
    .expect("timerfd_create");
    let every = Timespec {
        tv_sec: period.as_secs() as _,
        tv_nsec: period.subsec_nanos() as _,
    };
    let spec = Itimerspec {
        it_interval: every,
        it_value: every,
    };
    timerfd_settime(&fd, TimerfdTimerFlags::empty(), &spec).expect("timerfd_settime");
    // `AsyncFd::new` is deprecated for any `AsRawFd` whose descriptor could be closed while
    // registered (tokio#8587); an `OwnedFd` that the `AsyncFd` owns stays open until both
    // are dropped, the condition `AsyncFd::register` asks of its caller, without `unsafe`.
    #[allow(deprecated)]
    let timer = tokio::io::unix::AsyncFd::new(fd);
    timer.expect("timerfd in the runtime")
}

/// Reviews at a fixed rate for `seconds`, whatever the answers' pace (open loop).
///
/// The reviews fall due evenly spaced, or as a Poisson process with `poisson`, and are
/// released as `pacing` says. Except with [`Pacing::Timer`], latency runs from the moment
/// each review was due, so the pacer's own lateness counts against the server. It includes
/// any wait for a free HTTP/1.1 connection.
async fn open_loop(
    conns: &Connections,
    reviews: &Arc<Vec<Bytes>>,
    rate: f64,
    seconds: f64,
    pacing: Pacing,
    poisson: bool,
) -> Measured {
    let count = (rate * seconds).round().max(1.0) as usize;
    // HTTP/1.1: a pool of idle connections; HTTP/2: round robin over the connections.
    let idle = Arc::new(Mutex::new(conns.senders.clone()));
    let permits = Arc::new(tokio::sync::Semaphore::new(conns.senders.len()));
    // When each review falls due, after the start. A Poisson process's gaps are exponential
    // with the same mean; the seed is fixed so that every run offers the same schedule.
    let mut random = fastrand::Rng::with_seed(8);
    let mut at = 0.0;
    let schedule: Arc<Vec<Duration>> = Arc::new(
        (0..count)
            .map(|i| {
                let due = if poisson { at } else { i as f64 / rate };
                at += -(1.0 - random.f64()).ln() / rate;
                Duration::from_secs_f64(due)
            })
            .collect(),
    );
    let started = tokio::time::Instant::now();
    let origin = started.into_std();
    // How many reviews are due: from the tick, the pacer thread or the tokio timer.
    let (due_tx, mut due_rx) = tokio::sync::mpsc::unbounded_channel::<usize>();
    let ticks = match pacing {
        Pacing::Tick(period) => Some(tick_timer(period)),
        _ => None,
    };
    if let Pacing::Thread(pace) = pacing {
        let schedule = schedule.clone();
        std::thread::spawn(move || {
            let mut released = 0;
            while released < count {
                let elapsed = origin.elapsed();
                let due = released + schedule[released..].partition_point(|&d| d <= elapsed);
                if due > released {
                    released = due;
                    if due_tx.send(due).is_err() {
                        return;
                    }
                }
                std::thread::sleep(pace);
            }
        });
    }
    let mut tasks = Vec::with_capacity(count);
    let mut next = 0;
    while next < count {
        let (due, t0_of) = match pacing {
            Pacing::Timer => {
                tokio::time::sleep_until(started + schedule[next]).await;
                let fired = Instant::now();
                (next + 1, Some(fired))
            }
            Pacing::Thread(_) => match due_rx.recv().await {
                Some(due) => (due, None),
                None => break,
            },
            Pacing::Tick(_) => {
                let elapsed = origin.elapsed();
                let due = next + schedule[next..].partition_point(|&d| d <= elapsed);
                if due == next {
                    let timer = ticks.as_ref().expect("the tick timer");
                    let mut ready = timer.readable().await.expect("timerfd");
                    // The count of expirations since the last read; only the clock matters.
                    match rustix::io::read(timer.get_ref(), &mut [0u8; 8]) {
                        Ok(_) => {}
                        Err(rustix::io::Errno::AGAIN) => ready.clear_ready(),
                        Err(e) => panic!("reading the timerfd: {e}"),
                    }
                    continue;
                }
                (due, None)
            }
        };
        for i in next..due {
            let t0 = t0_of.unwrap_or_else(|| origin + schedule[i]);
            let body = reviews[i % reviews.len()].clone();
            let task = match &conns.senders[0] {
                Sender::H2(_) => {
                    let sender = conns.senders[i % conns.senders.len()].clone();
                    tokio::spawn(async move {
                        let denied = send(&sender, body).await;
                        (t0.elapsed(), denied)
                    })
                }
                Sender::H1(_) => {
                    let idle = idle.clone();
                    let permits = permits.clone();
                    tokio::spawn(async move {
                        let _permit = permits.acquire().await.expect("semaphore");
                        let sender = idle.lock().expect("pool").pop().expect("a free connection");
                        let denied = send(&sender, body).await;
                        idle.lock().expect("pool").push(sender);
                        (t0.elapsed(), denied)
                    })
                }
            };
            tasks.push(task);
        }
        next = due;
    }
    let mut measured = Measured::default();
    for (task, &due) in tasks.into_iter().zip(schedule.iter()) {
        let (latency, denied) = task.await.expect("request task");
        measured.timeline.push((due, latency));
        measured.latencies.push(latency.as_nanos() as u64);
        measured.denied += usize::from(denied);
    }
    measured.elapsed = started.elapsed();
    measured.latencies.sort_unstable();
    measured
}

// ---------------------------------------------------------------------------------------
// One run, and the report.

struct Run {
    flavour: Flavour,
    protocol: Protocol,
    closed: Measured,
    cpu_per_1k: f64,
    /// The server's write syscalls per review (answers, and its log lines in blocks).
    writes_per_review: f64,
    /// The bench's own CPU (the client) per 1,000 reviews.
    client_cpu_per_1k: f64,
    /// Share of the machine's CPU time left idle during the closed loop.
    machine_idle: f64,
    idle_rss_kib: u64,
    peak_rss_kib: u64,
    /// (offered rate, what it got), one per open-loop phase.
    open: Vec<(f64, Measured)>,
}

/// The rate of an open-loop phase after the closed loop.
#[derive(Debug, Clone, Copy)]
enum Open {
    /// Half of the throughput this process just reached in the closed loop.
    HalfOfOwnPeak,
    Rate(f64),
}

struct Bench {
    options: Options,
    bin: PathBuf,
    certs: PathBuf,
    roots: RootCertStore,
    reviews: Arc<Vec<Bytes>>,
    ticks: f64,
    runtime: tokio::runtime::Runtime,
}

impl Bench {
    /// A fresh server process; warm-up, the closed loop, then (if `open_rate`) the open loop.
    fn client(&self, protocol: Protocol) -> Arc<ClientConfig> {
        let mut config = ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_root_certificates(self.roots.clone())
        .with_no_client_auth();
        config.alpn_protocols = vec![protocol.alpn().to_vec()];
        Arc::new(config)
    }

    fn run(&self, flavour: Flavour, protocol: Protocol, open: &[Open], extra: &[String]) -> Run {
        self.run_reviews(&self.reviews, flavour, protocol, open, extra)
    }

    /// [`Bench::run`] with other reviews than the mix.
    fn run_reviews(
        &self,
        reviews: &Arc<Vec<Bytes>>,
        flavour: Flavour,
        protocol: Protocol,
        open: &[Open],
        extra: &[String],
    ) -> Run {
        let child = spawn(&self.bin, &self.certs, flavour, extra, self.options.pin);
        std::thread::sleep(Duration::from_millis(200));
        let idle_rss_kib = status_kib(child.pid, "VmRSS");
        let o = &self.options;
        self.runtime.block_on(async {
            let conns = Connections::open(child.addr, self.client(protocol), protocol, o).await;
            closed_loop(&conns, reviews, o.warmup, o.concurrency).await;
            let cpu_before = cpu_seconds(child.pid, self.ticks);
            let writes_before = write_syscalls(child.pid);
            let client_before = cpu_seconds(std::process::id(), self.ticks);
            let machine_before = machine_jiffies();
            let closed = closed_loop(&conns, reviews, o.requests, o.concurrency).await;
            let cpu = cpu_seconds(child.pid, self.ticks) - cpu_before;
            let writes = write_syscalls(child.pid).saturating_sub(writes_before);
            let client_cpu = cpu_seconds(std::process::id(), self.ticks) - client_before;
            let machine_after = machine_jiffies();
            let machine_idle = (machine_after.0 - machine_before.0) as f64
                / (machine_after.1 - machine_before.1).max(1) as f64;
            let peak_rss_kib = status_kib(child.pid, "VmHWM");
            let mut phases = Vec::new();
            for phase in open {
                let rate = match *phase {
                    Open::HalfOfOwnPeak => closed.throughput() / 2.0,
                    Open::Rate(rate) => rate,
                };
                let measured =
                    open_loop(&conns, reviews, rate, o.open_seconds, o.pacing, o.poisson).await;
                if let Some(dir) = &o.latency_log {
                    write_latency_log(dir, flavour, protocol, rate, &measured);
                }
                phases.push((rate, measured));
            }
            Run {
                flavour,
                protocol,
                cpu_per_1k: cpu / closed.latencies.len() as f64 * 1000.0,
                writes_per_review: writes as f64 / closed.latencies.len() as f64,
                client_cpu_per_1k: client_cpu / closed.latencies.len() as f64 * 1000.0,
                machine_idle,
                closed,
                idle_rss_kib,
                peak_rss_kib,
                open: phases,
            }
        })
    }
}

/// The interleaved run of one protocol ([`Bench::interleaved`]).
struct Interleaved {
    protocol: Protocol,
    /// Throughput (reviews/s) of each slice: (no-op, kube-baseline), one pair per round.
    pairs: Vec<(f64, f64)>,
    /// Reviews and time in all slices of each server: no-op, kube-baseline.
    totals: [(usize, Duration); 2],
    /// Server CPU µs per review over all its slices: no-op, kube-baseline.
    cpu_us: [f64; 2],
}

impl Interleaved {
    fn throughput(&self, server: usize) -> f64 {
        let (reviews, time) = self.totals[server];
        reviews as f64 / time.as_secs_f64().max(f64::MIN_POSITIVE)
    }
}

impl Bench {
    /// Both servers up at once, and the closed loop alternating between them: `interleave`
    /// rounds of one slice of `slice` reviews on each, in the order no-op, kube-baseline,
    /// then kube-baseline, no-op (so that a drift during a round falls on both alike).
    ///
    /// The fresh-process pairs of [`Bench::run`] are a few seconds apart, and this shared
    /// machine's speed moves by ±30% over seconds; here the two servers take turns every few
    /// tens of milliseconds. The server not being driven is idle (its workers parked); each
    /// slice starts with caches the other server has just used, the same for both.
    fn interleaved(&self, protocol: Protocol) -> Interleaved {
        let o = &self.options;
        let children = [
            spawn(&self.bin, &self.certs, Flavour::Noop, &[], self.options.pin),
            spawn(
                &self.bin,
                &self.certs,
                Flavour::Webhook,
                &[],
                self.options.pin,
            ),
        ];
        self.runtime.block_on(async {
            let mut conns = Vec::with_capacity(2);
            for child in &children {
                let c = Connections::open(child.addr, self.client(protocol), protocol, o).await;
                closed_loop(&c, &self.reviews, o.warmup, o.concurrency).await;
                conns.push(c);
            }
            let cpu_before = children.each_ref().map(|c| cpu_seconds(c.pid, self.ticks));
            let mut pairs = Vec::with_capacity(o.interleave);
            let mut totals = [(0, Duration::ZERO); 2];
            for round in 0..o.interleave {
                let order = if round % 2 == 0 { [0, 1] } else { [1, 0] };
                let mut throughput = [0.0; 2];
                for server in order {
                    let m =
                        closed_loop(&conns[server], &self.reviews, o.slice, o.concurrency).await;
                    throughput[server] = m.throughput();
                    totals[server].0 += m.latencies.len();
                    totals[server].1 += m.elapsed;
                }
                pairs.push((throughput[0], throughput[1]));
            }
            let cpu_us = [0, 1].map(|server| {
                let cpu = cpu_seconds(children[server].pid, self.ticks) - cpu_before[server];
                cpu * 1e6 / totals[server].0.max(1) as f64
            });
            Interleaved {
                protocol,
                pairs,
                totals,
                cpu_us,
            }
        })
    }
}

impl Run {
    fn summary(&self) -> String {
        let mut line = format!(
            "{} {}: {:.0} reviews/s, p99 {} ms, {:.3} CPU s / 1k",
            self.flavour.name(),
            self.protocol.name(),
            self.closed.throughput(),
            ms(self.closed.percentile(99.0)),
            self.cpu_per_1k
        );
        for (rate, m) in &self.open {
            line += &format!("; at {rate:.0}/s p99 {} ms", ms(m.percentile(99.0)));
        }
        line
    }
}

fn ms(d: Duration) -> String {
    format!("{:.3}", d.as_secs_f64() * 1000.0)
}

fn mib(kib: u64) -> String {
    format!("{:.1}", kib as f64 / 1024.0)
}

fn ratio(a: f64, b: f64) -> String {
    if b == 0.0 {
        "-".into()
    } else {
        format!("×{:.2}", a / b)
    }
}

/// Each ratio and their median: `×0.71, ×0.66, ×0.69 (median ×0.69)`.
fn ratios_and_median(ratios: &[f64]) -> String {
    let mut sorted = ratios.to_vec();
    sorted.sort_by(f64::total_cmp);
    let median = sorted[sorted.len() / 2];
    let each: Vec<String> = ratios.iter().map(|r| format!("×{r:.2}")).collect();
    format!("{} (median ×{median:.2})", each.join(", "))
}

/// The throughput ratio of each round and their median, per protocol.
fn print_rounds(rounds: &[(Protocol, Vec<f64>)]) {
    println!();
    println!(
        "Throughput ratio to the no-op in alternating closed-loop rounds (fresh processes \
         each round; the first round is the table's):"
    );
    println!();
    for (protocol, ratios) in rounds {
        println!("- {}: {}", protocol.name(), ratios_and_median(ratios));
    }
}

/// The interleaved runs: pooled throughputs and their ratio, the spread of the rounds'
/// ratios, and the CPU per review.
fn print_interleaved(o: &Options, runs: &[Interleaved]) {
    if runs.is_empty() {
        return;
    }
    println!();
    println!(
        "Interleaved: both servers up at once, the closed loop alternating between them in \
         slices of {} reviews (no-op first in even rounds, kube-baseline first in odd ones), \
         {} slices each:",
        o.slice, o.interleave
    );
    println!();
    println!("| protocol | no-op reviews/s | kube-baseline reviews/s | throughput ratio | rounds' ratios: min / quartiles / max | server CPU µs / review (no-op / kube-baseline) | CPU ratio |");
    println!("|---|---:|---:|---:|---|---|---:|");
    for run in runs {
        let mut ratios: Vec<f64> = run.pairs.iter().map(|(noop, kb)| kb / noop).collect();
        ratios.sort_by(f64::total_cmp);
        let at = |q: f64| ratios[((ratios.len() - 1) as f64 * q).round() as usize];
        println!(
            "| {} | {:.0} | {:.0} | {} | ×{:.2} / ×{:.2}, ×{:.2}, ×{:.2} / ×{:.2} | {:.1} / {:.1} | {} |",
            run.protocol.name(),
            run.throughput(0),
            run.throughput(1),
            ratio(run.throughput(1), run.throughput(0)),
            at(0.0),
            at(0.25),
            at(0.5),
            at(0.75),
            at(1.0),
            run.cpu_us[0],
            run.cpu_us[1],
            ratio(run.cpu_us[1], run.cpu_us[0]),
        );
    }
}

/// `--calibrate`: the throughput ratio of the no-op with a busy-wait to the plain no-op.
fn print_calibration(calibration: &[(Protocol, u64, Vec<f64>)]) {
    if calibration.is_empty() {
        return;
    }
    println!();
    println!(
        "Calibration: the no-op busy-waiting N ns per review after decoding it, against the \
         plain no-op (alternating closed-loop pairs, fresh processes):"
    );
    println!();
    for (protocol, ns, ratios) in calibration {
        println!(
            "- {}, {ns} ns: {}",
            protocol.name(),
            ratios_and_median(ratios)
        );
    }
}

fn print_tables(o: &Options, runs: &[Run], exceptions: &ExceptionsResult) {
    println!();
    println!(
        "Closed loop: {} reviews measured after {} warm-up, {} in flight; HTTP/2 over {} \
         connections, HTTP/1.1 over {} keep-alive connections. Mix: 45% Deployment, 45% Pod, \
         10% violating.",
        o.requests, o.warmup, o.concurrency, o.h2_connections, o.concurrency
    );
    println!();
    println!("| server | protocol | reviews/s | p50 ms | p90 ms | p99 ms | p99.9 ms | CPU s / 1k reviews | writes / review | peak RSS MiB | denied | client CPU s / 1k | machine idle |");
    println!("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for run in runs {
        let c = &run.closed;
        println!(
            "| {} | {} | {:.0} | {} | {} | {} | {} | {:.3} | {:.2} | {} | {:.1}% | {:.3} | {:.0}% |",
            run.flavour.name(),
            run.protocol.name(),
            c.throughput(),
            ms(c.percentile(50.0)),
            ms(c.percentile(90.0)),
            ms(c.percentile(99.0)),
            ms(c.percentile(99.9)),
            run.cpu_per_1k,
            run.writes_per_review,
            mib(run.peak_rss_kib),
            100.0 * c.denied as f64 / c.latencies.len() as f64,
            run.client_cpu_per_1k,
            100.0 * run.machine_idle,
        );
        if run.flavour == Flavour::Webhook {
            if let Some(reference) = runs
                .iter()
                .find(|r| r.flavour == Flavour::Noop && r.protocol == run.protocol)
            {
                let r = &reference.closed;
                let pr =
                    |p: f64| ratio(c.percentile(p).as_secs_f64(), r.percentile(p).as_secs_f64());
                println!(
                    "| *ratio to no-op* | {} | {} | {} | {} | {} | {} | {} | {} | {} | | {} | |",
                    run.protocol.name(),
                    ratio(c.throughput(), r.throughput()),
                    pr(50.0),
                    pr(90.0),
                    pr(99.0),
                    pr(99.9),
                    ratio(run.cpu_per_1k, reference.cpu_per_1k),
                    ratio(run.writes_per_review, reference.writes_per_review),
                    ratio(run.peak_rss_kib as f64, reference.peak_rss_kib as f64),
                    ratio(run.client_cpu_per_1k, reference.client_cpu_per_1k),
                );
            }
        }
    }
    println!();
    let arrivals = if o.poisson {
        "falling due as a Poisson process"
    } else {
        "falling due evenly spaced"
    };
    let pacing = match o.pacing {
        Pacing::Timer => "released by the tokio timer (1 ms bursts)".to_owned(),
        Pacing::Thread(every) => {
            format!("released by a thread waking every {} µs", every.as_micros())
        }
        Pacing::Tick(every) => format!("released by a {} µs timerfd tick", every.as_micros()),
    };
    println!(
        "Open loop at half of the no-op's peak throughput on that protocol, and at {} reviews/s \
         ({} s each; reviews {arrivals}, {pacing}; latency from {}):",
        o.fixed_rate,
        o.open_seconds,
        if o.pacing == Pacing::Timer {
            "the timer's firing to the answer"
        } else {
            "when a review fell due to its answer"
        }
    );
    println!();
    println!("| server | protocol | offered reviews/s | achieved reviews/s | p50 ms | p90 ms | p99 ms | p99.9 ms | over 1 ms |");
    println!("|---|---|---:|---:|---:|---:|---:|---:|---:|");
    for run in runs {
        for (rate, m) in &run.open {
            println!(
                "| {} | {} | {:.0} | {:.0} | {} | {} | {} | {} | {:.2}% |",
                run.flavour.name(),
                run.protocol.name(),
                rate,
                m.throughput(),
                ms(m.percentile(50.0)),
                ms(m.percentile(90.0)),
                ms(m.percentile(99.0)),
                ms(m.percentile(99.9)),
                m.share_over(Duration::from_millis(1)) * 100.0,
            );
        }
    }
    println!();
    println!("Memory (RSS, MiB):");
    println!();
    println!(
        "| server | idle (after start) | peak under load (HTTP/2) | peak under load (HTTP/1.1) |"
    );
    println!("|---|---:|---:|---:|");
    for flavour in [Flavour::Noop, Flavour::Webhook] {
        let of = |p: Protocol| {
            runs.iter()
                .find(|r| r.flavour == flavour && r.protocol == p)
        };
        let idle = runs
            .iter()
            .filter(|r| r.flavour == flavour)
            .map(|r| r.idle_rss_kib)
            .max()
            .unwrap_or(0);
        let peak = |p| of(p).map_or("-".into(), |r| mib(r.peak_rss_kib));
        println!(
            "| {} | {} | {} | {} |",
            flavour.name(),
            mib(idle),
            peak(Protocol::H2),
            peak(Protocol::H1)
        );
    }
    match exceptions {
        ExceptionsResult::Measured { count, run } => println!(
            "| kube-baseline, {count} exceptions loaded | {} | {} ({:.0} reviews/s) | - |",
            mib(run.idle_rss_kib),
            mib(run.peak_rss_kib),
            run.closed.throughput()
        ),
        ExceptionsResult::NotYet(why) => println!(
            "| kube-baseline, {} exceptions loaded | to be measured | to be measured | - |\n\n({why})",
            o.exceptions
        ),
    }
}

// ---------------------------------------------------------------------------------------
// The 10,000-exceptions memory run.

enum ExceptionsResult {
    Measured { count: usize, run: Box<Run> },
    NotYet(String),
}

/// Write `n` BaselineException files into `dir`, in 1,000 namespaces, and the ADR index
/// accepting their ADRs to `adrs`: distinct ADRs and name globs, each waiving one exemptable
/// policy, none matching the mix.
fn write_exceptions(dir: &Path, adrs: &Path, n: usize) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let mut index = String::from("adrs:\n");
    for i in 0..n {
        index.push_str(&format!(
            "  - {{id: ADR-{i:05}, title: bench {i}, status: accepted, url: https://git.example/adr/{i:05}.md}}\n"
        ));
    }
    std::fs::write(adrs, index)?;
    let expires = (chrono::Utc::now() + chrono::Duration::days(90))
        .format("%Y-%m-%dT%H:%M:%SZ")
        .to_string();
    let policies = [
        "read-only-root-filesystem",
        "run-as-non-root",
        "drop-all-capabilities",
        "health-probes",
    ];
    for i in 0..n {
        let text = format!(
            "apiVersion: baseline.localplus.io/v1\n\
             kind: BaselineException\n\
             metadata:\n  name: adr-{i:05}-bench\n\
             spec:\n\
             \x20 adr: ADR-{i:05}\n\
             \x20 adrUrl: https://git.example/adr/{i:05}.md\n\
             \x20 approvedBy: bench@platform\n\
             \x20 reason: load bench exception {i}\n\
             \x20 policies: [{policy}]\n\
             \x20 match:\n\
             \x20   namespaces: [team-{ns}]\n\
             \x20   kinds: [Deployment]\n\
             \x20   names: [\"svc-{i}-*\"]\n\
             \x20 expires: \"{expires}\"\n",
            policy = policies[i % policies.len()],
            ns = i % 1000,
        );
        std::fs::write(dir.join(format!("exception-{i:05}.yaml")), text)?;
    }
    Ok(())
}

/// The flag by which `serve` loads exceptions from files.
const EXCEPTIONS_FLAG: &str = "--exceptions-dir";

/// `serve`'s flags for the exceptions [`exceptions_run`] wrote into `scratch`.
fn exceptions_flags(scratch: &Path) -> [String; 4] {
    [
        EXCEPTIONS_FLAG.to_owned(),
        scratch.join("exceptions").display().to_string(),
        "--adrs".to_owned(),
        scratch.join("adrs.yaml").display().to_string(),
    ]
}

fn exceptions_run(bench: &Bench, scratch: &Path) -> ExceptionsResult {
    let help = Command::new(&bench.bin)
        .args(["serve", "--help"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    if !help.contains(EXCEPTIONS_FLAG) {
        return ExceptionsResult::NotYet(format!(
            "`kube-baseline serve` has no {EXCEPTIONS_FLAG} yet; the bench writes the files and \
             runs this as soon as it has"
        ));
    }
    let (dir, adrs) = (scratch.join("exceptions"), scratch.join("adrs.yaml"));
    let n = bench.options.exceptions;
    if let Err(e) = write_exceptions(&dir, &adrs, n) {
        return ExceptionsResult::NotYet(format!("{}: {e}", dir.display()));
    }
    let run = bench.run(
        Flavour::Webhook,
        Protocol::H2,
        &[],
        &exceptions_flags(scratch),
    );
    ExceptionsResult::Measured {
        count: n,
        run: Box::new(run),
    }
}

// ---------------------------------------------------------------------------------------
// The image-signature run.

/// kube-baseline on the mix with every image pinned to one signed image, `image-signature`
/// off and then enforced, in alternating fresh processes over HTTP/2: what verification
/// costs once the verifier's cache holds the digest, the steady state after `/mutate` has
/// pinned a workload (the first review of each process asks the registry).
struct SignaturesRun {
    image: String,
    /// The first pair: signatures off, then enforced.
    first: Box<[Run; 2]>,
    /// Throughput ratio (enforced ÷ off) of each pair.
    ratios: Vec<f64>,
    /// Enforced with the exceptions of [`exceptions_run`] loaded too (the memory target's
    /// worst case), when they were.
    with_exceptions: Option<(usize, Box<Run>)>,
}

enum SignaturesResult {
    Measured(SignaturesRun),
    Skipped(String),
}

/// The embedded configuration with `image-signature` enforced for every image, the cosign
/// key `public_pem` as its authority and `host` as a plain-HTTP registry.
fn signature_config(host: &str, public_pem: &str) -> String {
    use serde_yaml::{Mapping, Value};
    let mut config: Value = serde_yaml::from_str(include_str!("../policies/baseline.yaml"))
        .expect("the embedded policies/baseline.yaml is YAML");
    let policy = &mut config["policies"]["image-signature"];
    policy["mode"] = "enforce".into();
    policy["images"] = Value::Sequence(vec!["*".into()]);
    let mut authority = Mapping::new();
    authority.insert("name".into(), "bench-key".into());
    authority.insert("key".into(), public_pem.into());
    policy["authorities"] = Value::Sequence(vec![authority.into()]);
    let mut plain = Mapping::new();
    plain.insert("insecure".into(), true.into());
    let mut registries = Mapping::new();
    registries.insert(host.into(), plain.into());
    policy["registries"] = registries.into();
    serde_yaml::to_string(&config).expect("YAML")
}

/// `review` with the image of every container, init container and ephemeral container of
/// its object replaced by `image`.
fn with_image(review: &[u8], image: &str) -> Bytes {
    fn walk(value: &mut serde_json::Value, image: &str) {
        match value {
            serde_json::Value::Object(map) => {
                for key in ["containers", "initContainers", "ephemeralContainers"] {
                    if let Some(serde_json::Value::Array(list)) = map.get_mut(key) {
                        for container in list.iter_mut().filter_map(|c| c.as_object_mut()) {
                            container.insert("image".to_owned(), image.into());
                        }
                    }
                }
                map.values_mut().for_each(|v| walk(v, image));
            }
            serde_json::Value::Array(list) => list.iter_mut().for_each(|v| walk(v, image)),
            _ => {}
        }
    }
    let mut value: serde_json::Value = serde_json::from_slice(review).expect("a review of the mix");
    walk(&mut value["request"]["object"], image);
    Bytes::from(serde_json::to_vec(&value).expect("JSON"))
}

fn signatures_run(
    bench: &Bench,
    scratch: &Path,
    exceptions: &ExceptionsResult,
) -> SignaturesResult {
    if !bench.options.signatures {
        return SignaturesResult::Skipped("--no-signatures".to_owned());
    }
    if Command::new("docker-registry")
        .arg("--version")
        .output()
        .is_err()
    {
        return SignaturesResult::Skipped(
            "Debian's docker-registry is not installed (apt-get install docker-registry)"
                .to_owned(),
        );
    }
    let registry = harness::TestRegistry::start();
    let key = harness::TestKey::generate();
    let digest = bench.runtime.block_on(async {
        let digest = registry.push_image("bench/app", "1.0", "load bench").await;
        registry.sign("bench/app", &digest, &key).await;
        digest
    });
    let image = format!("{}/bench/app:1.0@{digest}", registry.host());
    let config = scratch.join("signatures.yaml");
    std::fs::write(&config, signature_config(&registry.host(), &key.public_pem))
        .expect("write the configuration");
    let reviews: Arc<Vec<Bytes>> = Arc::new(mix().iter().map(|r| with_image(r, &image)).collect());
    let enforced = ["--config".to_owned(), config.display().to_string()];
    let pair = || {
        let off = bench.run_reviews(&reviews, Flavour::Webhook, Protocol::H2, &[], &[]);
        let on = bench.run_reviews(&reviews, Flavour::Webhook, Protocol::H2, &[], &enforced);
        // A verification that failed would deny every review, not the mix's violating tenth.
        assert_eq!(
            on.closed.denied, off.closed.denied,
            "with image-signature enforced, reviews were denied that were allowed with it off: \
             {image} did not verify"
        );
        [off, on]
    };
    let first = pair();
    let mut ratios = vec![first[1].closed.throughput() / first[0].closed.throughput()];
    for _ in 1..bench.options.rounds {
        let [off, on] = pair();
        ratios.push(on.closed.throughput() / off.closed.throughput());
    }
    let with_exceptions = match exceptions {
        ExceptionsResult::Measured { count, .. } => {
            let extra: Vec<String> = enforced
                .iter()
                .cloned()
                .chain(exceptions_flags(scratch))
                .collect();
            let run = bench.run_reviews(&reviews, Flavour::Webhook, Protocol::H2, &[], &extra);
            Some((*count, Box::new(run)))
        }
        ExceptionsResult::NotYet(_) => None,
    };
    SignaturesResult::Measured(SignaturesRun {
        image,
        first: Box::new(first),
        ratios,
        with_exceptions,
    })
}

fn print_signatures(result: &SignaturesResult) {
    println!();
    let run = match result {
        SignaturesResult::Measured(run) => run,
        SignaturesResult::Skipped(why) => {
            println!("Image signatures: not measured ({why}).");
            return;
        }
    };
    println!(
        "Image signatures: kube-baseline on the mix with every image pinned to {} (signed with \
         a cosign key, in a docker-registry on loopback), image-signature off then enforced, \
         HTTP/2 closed loop; the verifier's cache holds the digest after the first review:",
        run.image
    );
    println!();
    println!("| image-signature | reviews/s | p50 ms | p99 ms | CPU s / 1k reviews | peak RSS MiB | denied |");
    println!("|---|---:|---:|---:|---:|---:|---:|");
    let mut rows = vec![
        ("off".to_owned(), &run.first[0]),
        ("enforced".to_owned(), &run.first[1]),
    ];
    if let Some((count, r)) = &run.with_exceptions {
        rows.push((format!("enforced, {count} exceptions loaded"), &**r));
    }
    for (name, r) in rows {
        let c = &r.closed;
        println!(
            "| {name} | {:.0} | {} | {} | {:.3} | {} | {:.1}% |",
            c.throughput(),
            ms(c.percentile(50.0)),
            ms(c.percentile(99.0)),
            r.cpu_per_1k,
            mib(r.peak_rss_kib),
            100.0 * c.denied as f64 / c.latencies.len() as f64,
        );
    }
    let [off, on] = &*run.first;
    println!(
        "| *enforced ÷ off* | {} | | | {} | {} | |",
        ratio(on.closed.throughput(), off.closed.throughput()),
        ratio(on.cpu_per_1k, off.cpu_per_1k),
        ratio(on.peak_rss_kib as f64, off.peak_rss_kib as f64),
    );
    println!();
    println!(
        "- throughput, enforced ÷ off, in alternating pairs: {}",
        ratios_and_median(&run.ratios)
    );
}

/// How late the machine wakes a thread: `count` sleeps of 1 ms in a row, each one's lateness
/// past its millisecond. On an idle machine this is the floor under every latency above: a
/// review whose client or server thread is woken 1 ms late is 1 ms late.
fn wake_up_lateness(count: usize) -> Measured {
    let started = Instant::now();
    let mut late = Measured::default();
    for _ in 0..count {
        let asleep = Instant::now();
        std::thread::sleep(Duration::from_millis(1));
        let lateness = asleep.elapsed().saturating_sub(Duration::from_millis(1));
        late.latencies.push(lateness.as_nanos() as u64);
    }
    late.elapsed = started.elapsed();
    late.latencies.sort_unstable();
    late
}

fn print_lateness(late: &Measured) {
    println!(
        "The machine, idle: {} sleeps of 1 ms woke late by p50 {} ms, p99 {} ms, p99.9 {} ms, \
         max {} ms; {} of them ({:.2}%) by more than 1 ms.",
        late.latencies.len(),
        ms(late.percentile(50.0)),
        ms(late.percentile(99.0)),
        ms(late.percentile(99.9)),
        ms(late.percentile(100.0)),
        (late.share_over(Duration::from_millis(1)) * late.latencies.len() as f64).round(),
        late.share_over(Duration::from_millis(1)) * 100.0
    );
}

/// Binds this process's main thread, and so every thread it starts later (the client's
/// runtime, the log drains), to [`CLIENT_CPU`]. The servers get [`SERVER_CPU`] in [`spawn`];
/// each sees one CPU, so its runtime starts one worker thread.
fn pin_client(cpus: usize) {
    assert!(cpus >= 2, "--pin needs two CPUs");
    let status = Command::new("taskset")
        .args(["-p", "-c", CLIENT_CPU])
        .arg(std::process::id().to_string())
        .stdout(Stdio::null())
        .status()
        .unwrap_or_else(|e| panic!("--pin runs taskset (util-linux): {e}"));
    assert!(status.success(), "taskset -p -c {CLIENT_CPU}: {status}");
}

// ---------------------------------------------------------------------------------------

fn main() {
    let options = options();
    if let Some(dir) = &options.dump_mix {
        std::fs::create_dir_all(dir).expect("--dump-mix directory");
        for (i, review) in mix().iter().enumerate() {
            std::fs::write(dir.join(format!("review-{i:02}.json")), review).expect("write review");
        }
        println!(
            "wrote the mix's {} reviews into {}",
            mix().len(),
            dir.display()
        );
        return;
    }
    let bin = binary();
    assert!(
        bin.exists(),
        "{} not found: run `cargo bench --bench load` (it builds the binary) or set \
         KUBE_BASELINE_BIN",
        bin.display()
    );
    let scratch = tempfile::tempdir().expect("temporary directory");
    let generated = kube_baseline::certs::generate(
        &["localhost".to_owned()],
        &[std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST)],
    )
    .expect("certificates");
    kube_baseline::certs::write(scratch.path(), &generated, true).expect("write certificates");
    let mut roots = RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut generated.ca_pem.as_bytes()) {
        roots.add(cert.expect("CA PEM")).expect("CA");
    }
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    if options.pin {
        pin_client(cpus);
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(options.client_threads.max(1))
        .enable_all()
        .build()
        .expect("client runtime");

    println!("kube-baseline load bench: {}", bin.display());
    println!(
        "{cpus} CPUs online; load average at start {} (1/5/15 min)",
        load_average()
    );
    if options.pin {
        println!(
            "--pin: the client on CPU {CLIENT_CPU} ({} runtime threads), each server on CPU \
             {SERVER_CPU} (one worker thread)",
            options.client_threads.max(1)
        );
    }
    let lateness = wake_up_lateness(3_000);
    print_lateness(&lateness);
    let started = Instant::now();
    let bench = Bench {
        options: options.clone(),
        bin,
        certs: scratch.path().to_owned(),
        roots,
        reviews: Arc::new(mix()),
        ticks: clock_ticks(),
        runtime,
    };
    let mut runs = Vec::new();
    let mut rounds = Vec::new();
    for &protocol in &options.protocols {
        let fixed = Open::Rate(options.fixed_rate);
        let noop = bench.run(Flavour::Noop, protocol, &[Open::HalfOfOwnPeak, fixed], &[]);
        let half = noop.closed.throughput() / 2.0;
        eprintln!("{}", noop.summary());
        let webhook = bench.run(Flavour::Webhook, protocol, &[Open::Rate(half), fixed], &[]);
        eprintln!("{}", webhook.summary());
        let mut ratios = vec![webhook.closed.throughput() / noop.closed.throughput()];
        runs.push(noop);
        runs.push(webhook);
        // More pairs of the closed loop alone: the machine's drift between two runs moves
        // the ratio by more than most changes do.
        for _ in 1..options.rounds {
            let noop = bench.run(Flavour::Noop, protocol, &[], &[]);
            let webhook = bench.run(Flavour::Webhook, protocol, &[], &[]);
            ratios.push(webhook.closed.throughput() / noop.closed.throughput());
        }
        rounds.push((protocol, ratios));
    }
    let mut calibration = Vec::new();
    for &protocol in &options.protocols {
        for &ns in &options.calibrate {
            let busy = ["--reference-busy-ns".to_owned(), ns.to_string()];
            let ratios = (0..options.rounds)
                .map(|_| {
                    let noop = bench.run(Flavour::Noop, protocol, &[], &[]);
                    let busy = bench.run(Flavour::Noop, protocol, &[], &busy);
                    busy.closed.throughput() / noop.closed.throughput()
                })
                .collect();
            calibration.push((protocol, ns, ratios));
        }
    }
    let interleaved: Vec<Interleaved> = if options.interleave == 0 {
        Vec::new()
    } else {
        options
            .protocols
            .iter()
            .map(|&protocol| bench.interleaved(protocol))
            .collect()
    };
    let exceptions = exceptions_run(&bench, scratch.path());
    let signatures = signatures_run(&bench, scratch.path(), &exceptions);
    print_tables(&options, &runs, &exceptions);
    print_signatures(&signatures);
    print_rounds(&rounds);
    print_interleaved(&options, &interleaved);
    print_calibration(&calibration);
    println!();
    print_lateness(&lateness);
    println!(
        "Took {:.0} s; load average at end {} (1/5/15 min).",
        started.elapsed().as_secs_f64(),
        load_average()
    );
}
