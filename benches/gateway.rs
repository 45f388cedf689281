//! Gateway latency and throughput, run by hand (`bench/gateway.sh`), never in
//! the test suite.
//!
//! Every target (the fake upstream itself, called `direct`; `tollgate serve`;
//! optionally LiteLLM's proxy) gets the same chat completion request, the
//! same way, phase by phase, targets interleaved within each phase:
//!
//! - `c1`: one connection, one request at a time (closed loop).
//! - `rates`: open loop at fixed rates. A dispatcher thread schedules send
//!   times on a fixed grid regardless of answers; latency runs from the
//!   *scheduled* time, so a stalled server cannot hide its queue (no
//!   coordinated omission). Requests take an idle connection or open one (up
//!   to `--open-connections`). The first `--warmup` seconds are not counted.
//!   Requests still unanswered `--drain` seconds after the last send count as
//!   infinitely slow ("saturated" when that is more than 1%); a saturated
//!   target is not run at higher rates.
//! - `max`: closed loop on N connections for each N of `--max-connections`;
//!   the best answers per second is the maximum throughput.
//! - `stream`: one connection, `"stream": true`; time to the first SSE
//!   `data:` line, and to the end of the stream.
//!
//! Before each measurement the bench waits until every process under test is
//! idle (a saturated target works off its backlog), and each closed-loop
//! measurement starts with `--phase-warmup` seconds of the same load, not
//! counted.
//!
//! The client is a minimal HTTP/1.1 client over tokio's `TcpStream`
//! (pre-serialized request, keep-alive, Content-Length and chunked bodies)
//! on a single-threaded runtime, so the load generator takes as little of the
//! machine's two cores as possible. Each measurement reports the CPU used by
//! the target, the fake, the load generator and anything else (which should
//! be ~0; the bench first waits, up to `--quiet-wait` seconds, for an idle
//! machine). Peak RSS is the `VmHWM` of each target's process tree, summed.
//!
//! Usage: gateway [flags] --target NAME --url URL [--token T] [--pid PID]… …
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    clippy::disallowed_methods,
    clippy::float_arithmetic,
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    clippy::cast_precision_loss,
    reason = "a benchmark binary run by hand"
)]

use std::cell::RefCell;
use std::fmt::Write as _;
use std::io;
use std::rc::Rc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use tokio::task::LocalSet;

const CHAT: &str = r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}"#;
const CHAT_STREAM: &str =
    r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}],"stream":true}"#;
/// Clock ticks per second in `/proc/PID/stat` (`getconf CLK_TCK`).
const TICKS_PER_SECOND: f64 = 100.0;
/// Closed-loop connections used to warm each target up before its first phase.
const WARMUP_CONNECTIONS: usize = 16;

// ---------------------------------------------------------------- options

#[derive(Debug, Clone)]
struct Target {
    name: String,
    address: String,
    /// More instances of the same target (`--also`): new connections go to
    /// each address in turn.
    more: Vec<String>,
    host: String,
    path: String,
    token: Option<String>,
    /// Roots of the target's process trees (for CPU and RSS).
    pids: Vec<u32>,
}

#[derive(Debug)]
struct Options {
    targets: Vec<Target>,
    /// The fake upstream's process (its CPU is reported for every phase).
    fake_pid: Option<u32>,
    phases: Vec<String>,
    warmup: f64,
    /// Closed-loop warm-up before each closed-loop measurement, same
    /// connections.
    phase_warmup: f64,
    c1_seconds: f64,
    rates: Vec<u32>,
    rate_seconds: f64,
    open_connections: usize,
    max_connections: Vec<usize>,
    max_seconds: f64,
    stream_seconds: f64,
    drain: f64,
    settle_seconds: f64,
    quiet_wait: f64,
}

fn split_url(url: &str) -> (String, String) {
    let rest = url
        .strip_prefix("http://")
        .expect("only http:// URLs (loopback)");
    match rest.find('/') {
        Some(index) => (rest[..index].to_owned(), rest[index..].to_owned()),
        None => (rest.to_owned(), "/".to_owned()),
    }
}

fn list<T: std::str::FromStr>(value: &str) -> Vec<T> {
    value
        .split(',')
        .filter(|item| !item.is_empty())
        .map(|item| {
            item.trim()
                .parse()
                .unwrap_or_else(|_| panic!("bad list item `{item}`"))
        })
        .collect()
}

fn options() -> Options {
    let mut options = Options {
        targets: Vec::new(),
        fake_pid: None,
        phases: list("c1,rates,max,stream"),
        warmup: 2.0,
        phase_warmup: 1.0,
        c1_seconds: 10.0,
        rates: list("500,1000,2000"),
        rate_seconds: 10.0,
        open_connections: 1_000,
        max_connections: list("16,64,256"),
        max_seconds: 5.0,
        stream_seconds: 5.0,
        drain: 5.0,
        settle_seconds: 60.0,
        quiet_wait: 600.0,
    };
    let mut arguments = std::env::args().skip(1);
    while let Some(flag) = arguments.next() {
        if flag == "--bench" {
            continue;
        }
        let value = arguments
            .next()
            .unwrap_or_else(|| panic!("{flag} needs a value"));
        let number = || -> f64 { value.parse().unwrap_or_else(|_| panic!("bad {flag}")) };
        fn target<'a>(options: &'a mut Options, flag: &str) -> &'a mut Target {
            options
                .targets
                .last_mut()
                .unwrap_or_else(|| panic!("{flag} before any --target"))
        }
        match flag.as_str() {
            "--target" => options.targets.push(Target {
                name: value.clone(),
                address: String::new(),
                more: Vec::new(),
                host: String::new(),
                path: String::new(),
                token: None,
                pids: Vec::new(),
            }),
            "--url" => {
                let (address, path) = split_url(&value);
                let target = target(&mut options, &flag);
                target.host.clone_from(&address);
                target.address = address;
                target.path = path;
            }
            "--also" => target(&mut options, &flag).more.push(value.clone()),
            "--token" => target(&mut options, &flag).token = Some(value.clone()),
            "--pid" => target(&mut options, &flag).pids.push(number() as u32),
            "--fake-pid" => options.fake_pid = Some(number() as u32),
            "--phase-warmup" => options.phase_warmup = number(),
            "--phases" => options.phases = list(&value),
            "--warmup" => options.warmup = number(),
            "--c1-seconds" => options.c1_seconds = number(),
            "--rates" => options.rates = list(&value),
            "--rate-seconds" => options.rate_seconds = number(),
            "--open-connections" => options.open_connections = number() as usize,
            "--max-connections" => options.max_connections = list(&value),
            "--max-seconds" => options.max_seconds = number(),
            "--stream-seconds" => options.stream_seconds = number(),
            "--drain" => options.drain = number(),
            "--settle-seconds" => options.settle_seconds = number(),
            "--quiet-wait" => options.quiet_wait = number(),
            other => panic!("unknown flag {other}"),
        }
    }
    assert!(!options.targets.is_empty(), "give at least one --target");
    for target in &options.targets {
        assert!(
            !target.address.is_empty(),
            "target {} has no --url",
            target.name
        );
    }
    options
}

impl Target {
    fn addresses(&self) -> Vec<String> {
        std::iter::once(self.address.clone())
            .chain(self.more.iter().cloned())
            .collect()
    }
}

fn request_bytes(target: &Target, streaming: bool) -> Rc<[u8]> {
    let body = if streaming { CHAT_STREAM } else { CHAT };
    let mut request = format!(
        "POST {} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n",
        target.path,
        target.host,
        body.len()
    );
    if let Some(token) = &target.token {
        write!(request, "Authorization: Bearer {token}\r\n").unwrap();
    }
    request.push_str("\r\n");
    request.push_str(body);
    Rc::from(request.into_bytes())
}

// ------------------------------------------------------- a minimal client

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack
        .windows(needle.len())
        .position(|window| window == needle)
}

#[derive(Debug)]
struct Reply {
    status: u16,
    /// When the first `data:` line of an event stream arrived.
    first_data: Option<Instant>,
    /// The server will close the connection.
    close: bool,
}

enum Framing {
    Length(usize),
    Chunked,
    UntilClose,
}

#[derive(Debug)]
struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Conn {
    async fn open(address: &str) -> io::Result<Conn> {
        let stream = TcpStream::connect(address).await?;
        stream.set_nodelay(true)?;
        Ok(Conn {
            stream,
            buf: Vec::with_capacity(16 * 1024),
        })
    }

    /// Reads more bytes; an error at end of stream.
    async fn fill(&mut self) -> io::Result<()> {
        if self.buf.capacity() - self.buf.len() < 4096 {
            self.buf.reserve(16 * 1024);
        }
        let read = self.stream.read_buf(&mut self.buf).await?;
        if read == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        Ok(())
    }

    /// Sends one request and reads its whole answer.
    async fn exchange(&mut self, request: &[u8], streaming: bool) -> io::Result<Reply> {
        self.buf.clear();
        self.stream.write_all(request).await?;
        let head_end = loop {
            if let Some(index) = find(&self.buf, b"\r\n\r\n") {
                break index + 4;
            }
            self.fill().await?;
        };
        let head = std::str::from_utf8(&self.buf[..head_end])
            .map_err(|_| io::Error::other("response head is not text"))?;
        let mut lines = head.split("\r\n");
        let status_line = lines.next().unwrap_or_default();
        let status: u16 = status_line
            .get(9..12)
            .and_then(|code| code.parse().ok())
            .ok_or_else(|| io::Error::other(format!("bad status line `{status_line}`")))?;
        let mut framing = Framing::UntilClose;
        let mut close = status_line.starts_with("HTTP/1.0");
        for line in lines {
            let Some((name, value)) = line.split_once(':') else {
                continue;
            };
            let value = value.trim();
            if name.eq_ignore_ascii_case("content-length") {
                framing = Framing::Length(value.parse().map_err(io::Error::other)?);
            } else if name.eq_ignore_ascii_case("transfer-encoding")
                && value.eq_ignore_ascii_case("chunked")
            {
                framing = Framing::Chunked;
            } else if name.eq_ignore_ascii_case("connection") {
                close = value.eq_ignore_ascii_case("close");
            }
        }
        let mut first_data = None;
        let mut seen = head_end;
        let mut check = |buf: &[u8], first_data: &mut Option<Instant>| {
            if streaming && first_data.is_none() {
                // A chunk-size line is hex digits, so `data:` is payload.
                let from = seen.saturating_sub(4).max(head_end);
                if find(&buf[from..], b"data:").is_some() {
                    *first_data = Some(Instant::now());
                }
                seen = buf.len();
            }
        };
        check(&self.buf, &mut first_data);
        match framing {
            Framing::Length(length) => {
                while self.buf.len() < head_end + length {
                    self.fill().await?;
                    check(&self.buf, &mut first_data);
                }
            }
            Framing::Chunked => {
                let mut position = head_end;
                loop {
                    let line_end = loop {
                        if let Some(index) = find(&self.buf[position..], b"\r\n") {
                            break position + index;
                        }
                        self.fill().await?;
                        check(&self.buf, &mut first_data);
                    };
                    let size_text = std::str::from_utf8(&self.buf[position..line_end])
                        .unwrap_or_default()
                        .split(';')
                        .next()
                        .unwrap_or_default()
                        .trim();
                    let size = usize::from_str_radix(size_text, 16)
                        .map_err(|_| io::Error::other(format!("bad chunk size `{size_text}`")))?;
                    // The last chunk is `0\r\n\r\n` (no trailers here).
                    let next = line_end + 2 + size + 2;
                    while self.buf.len() < next {
                        self.fill().await?;
                        check(&self.buf, &mut first_data);
                    }
                    if size == 0 {
                        break;
                    }
                    position = next;
                }
            }
            Framing::UntilClose => {
                close = true;
                loop {
                    match self.fill().await {
                        Ok(()) => check(&self.buf, &mut first_data),
                        Err(error) if error.kind() == io::ErrorKind::UnexpectedEof => break,
                        Err(error) => return Err(error),
                    }
                }
            }
        }
        if streaming && status == 200 && find(&self.buf[head_end..], b"[DONE]").is_none() {
            return Err(io::Error::other("the stream ended without [DONE]"));
        }
        Ok(Reply {
            status,
            first_data,
            close,
        })
    }
}

/// Connections shared by the requests of an open-loop phase.
#[derive(Debug)]
struct Pool {
    addresses: Vec<String>,
    opened: RefCell<usize>,
    idle: RefCell<Vec<Conn>>,
    permits: Semaphore,
}

impl Pool {
    fn new(target: &Target, connections: usize) -> Pool {
        Pool {
            addresses: target.addresses(),
            opened: RefCell::new(0),
            idle: RefCell::new(Vec::new()),
            permits: Semaphore::new(connections),
        }
    }

    /// Opens a connection to the next address in turn.
    async fn open(&self) -> io::Result<Conn> {
        let index = {
            let mut opened = self.opened.borrow_mut();
            *opened += 1;
            *opened % self.addresses.len()
        };
        Conn::open(&self.addresses[index]).await
    }

    async fn send(&self, request: &[u8]) -> io::Result<Reply> {
        let _permit = self.permits.acquire().await.map_err(io::Error::other)?;
        let pooled = self.idle.borrow_mut().pop();
        let reused = pooled.is_some();
        let mut conn = match pooled {
            Some(conn) => conn,
            None => self.open().await?,
        };
        let reply = match conn.exchange(request, false).await {
            // A kept-alive connection the server closed meanwhile: once more
            // on a new one, as HTTP clients do.
            Err(_) if reused && conn.buf.is_empty() => {
                conn = self.open().await?;
                conn.exchange(request, false).await?
            }
            other => other?,
        };
        if !reply.close {
            self.idle.borrow_mut().push(conn);
        }
        Ok(reply)
    }
}

// ---------------------------------------------------------------- results

#[derive(Debug, Default)]
struct Samples {
    /// Nanoseconds; `u64::MAX` for requests that never got an answer.
    latency: Vec<u64>,
    /// Time to the end of the stream (stream phase only).
    total: Vec<u64>,
    /// How late the open-loop dispatcher started each request.
    lag: Vec<u64>,
    errors: u64,
    statuses: Vec<u16>,
    completed: u64,
    elapsed: Duration,
}

impl Samples {
    fn merge(&mut self, other: Samples) {
        self.latency.extend(other.latency);
        self.total.extend(other.total);
        self.lag.extend(other.lag);
        self.errors += other.errors;
        for status in other.statuses {
            self.note_status(status);
        }
        self.completed += other.completed;
    }

    fn note_status(&mut self, status: u16) {
        if self.statuses.len() < 5 && !self.statuses.contains(&status) {
            self.statuses.push(status);
        }
    }
}

fn percentile(sorted: &[u64], fraction: f64) -> Option<u64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((sorted.len() as f64) * fraction).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

fn ms(nanos: Option<u64>) -> String {
    match nanos {
        None => "-".to_owned(),
        Some(u64::MAX) => "unanswered".to_owned(),
        Some(nanos) => format!("{:.3}", nanos as f64 / 1e6),
    }
}

#[derive(Debug, Clone, Copy, Default)]
struct Summary {
    p50: Option<u64>,
    p99: Option<u64>,
    p999: Option<u64>,
    max: Option<u64>,
}

fn summarize(values: &mut [u64]) -> Summary {
    values.sort_unstable();
    Summary {
        p50: percentile(values, 0.50),
        p99: percentile(values, 0.99),
        p999: percentile(values, 0.999),
        max: values.last().copied(),
    }
}

// ------------------------------------------------------- process accounting

/// A process and its descendants.
fn process_tree(root: u32) -> Vec<u32> {
    let mut pids = vec![root];
    let mut index = 0;
    while index < pids.len() && pids.len() < 1_000 {
        let pid = pids[index];
        if let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) {
            for task in tasks.flatten() {
                let children =
                    std::fs::read_to_string(task.path().join("children")).unwrap_or_default();
                pids.extend(
                    children
                        .split_whitespace()
                        .filter_map(|child| child.parse::<u32>().ok()),
                );
            }
        }
        index += 1;
    }
    pids.sort_unstable();
    pids.dedup();
    pids
}

/// User plus system CPU ticks of the processes and their descendants.
fn cpu_ticks(roots: &[u32]) -> u64 {
    roots
        .iter()
        .flat_map(|root| process_tree(*root))
        .map(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            // Fields after the command name (which may hold spaces).
            let rest = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
            let fields: Vec<&str> = rest.split_whitespace().collect();
            let field = |index: usize| -> u64 {
                fields
                    .get(index)
                    .and_then(|value| value.parse().ok())
                    .unwrap_or(0)
            };
            // utime and stime are fields 14 and 15 of the whole line.
            field(11) + field(12)
        })
        .sum()
}

/// `VmHWM` and `VmRSS` in KiB, summed over the process trees.
fn memory_kib(roots: &[u32]) -> (u64, u64, usize) {
    let pids: Vec<u32> = roots.iter().flat_map(|root| process_tree(*root)).collect();
    let mut peak = 0;
    let mut current = 0;
    for pid in &pids {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        let value = |key: &str| -> u64 {
            status
                .lines()
                .find_map(|line| line.strip_prefix(key))
                .and_then(|rest| rest.split_whitespace().next())
                .and_then(|kib| kib.parse().ok())
                .unwrap_or(0)
        };
        peak += value("VmHWM:");
        current += value("VmRSS:");
    }
    (peak, current, pids.len())
}

/// Busy CPU ticks of the whole machine (all cores), from `/proc/stat`.
fn machine_busy_ticks() -> u64 {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let fields: Vec<u64> = stat
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .skip(1)
        .filter_map(|value| value.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal (guest time is in user).
    [0, 1, 2, 5, 6, 7]
        .iter()
        .map(|index| fields.get(*index).copied().unwrap_or(0))
        .sum()
}

/// User plus system CPU ticks of one process (its threads, not its children).
fn own_ticks() -> u64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let rest = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<u64> = rest
        .split_whitespace()
        .map(|value| value.parse().unwrap_or(0))
        .collect();
    fields.get(11).copied().unwrap_or(0) + fields.get(12).copied().unwrap_or(0)
}

/// CPU time over one measurement: the target, the fake upstream, the load
/// generator, the other targets (idle, unless a saturated one is still
/// working off its backlog), and anything else on the machine.
struct CpuMeter {
    started: Instant,
    target: u64,
    others: u64,
    fake: u64,
    own: u64,
    machine: u64,
}

fn other_targets(all: &[Target], target: &Target) -> Vec<u32> {
    all.iter()
        .filter(|other| other.name != target.name)
        .flat_map(|other| other.pids.iter().copied())
        .collect()
}

impl CpuMeter {
    fn start(all: &[Target], target: &Target, fake_pid: Option<u32>) -> CpuMeter {
        CpuMeter {
            started: Instant::now(),
            target: cpu_ticks(&target.pids),
            others: cpu_ticks(&other_targets(all, target)),
            fake: cpu_ticks(&fake_pid.into_iter().collect::<Vec<_>>()),
            own: own_ticks(),
            machine: machine_busy_ticks(),
        }
    }

    /// CPU use since `start`, in percent of one core.
    fn report(&self, all: &[Target], target: &Target, fake_pid: Option<u32>) -> String {
        let seconds = self.started.elapsed().as_secs_f64();
        let percent = |ticks: u64| ticks as f64 / TICKS_PER_SECOND / seconds * 100.0;
        let own = own_ticks().saturating_sub(self.own);
        let fake = cpu_ticks(&fake_pid.into_iter().collect::<Vec<_>>()).saturating_sub(self.fake);
        let target_ticks = cpu_ticks(&target.pids).saturating_sub(self.target);
        let others = cpu_ticks(&other_targets(all, target)).saturating_sub(self.others);
        let rest = machine_busy_ticks()
            .saturating_sub(self.machine)
            .saturating_sub(own + fake + target_ticks + others);
        let mut line = "cpu:".to_owned();
        if !target.pids.is_empty() {
            write!(line, " {} {:.0}%,", target.name, percent(target_ticks)).unwrap();
        }
        write!(
            line,
            " fake {:.0}%, loadgen {:.0}%, other {:.0}%",
            percent(fake),
            percent(own),
            percent(rest)
        )
        .unwrap();
        if percent(others) >= 1.0 {
            write!(line, ", other targets {:.0}%", percent(others)).unwrap();
        }
        line
    }
}

/// Waits (bounded) until every process under test is idle, so a saturated
/// target's backlog does not spill into the next measurement.
async fn settle(options: &Options) {
    let mut roots: Vec<u32> = options
        .targets
        .iter()
        .flat_map(|target| target.pids.iter().copied())
        .collect();
    roots.extend(options.fake_pid);
    let deadline = Instant::now() + Duration::from_secs_f64(options.settle_seconds);
    loop {
        let before = cpu_ticks(&roots);
        tokio::time::sleep(Duration::from_millis(300)).await;
        // At most ~7% of one core over the 300 ms.
        if cpu_ticks(&roots).saturating_sub(before) <= 2 || Instant::now() >= deadline {
            break;
        }
    }
}

// ------------------------------------------------------------------ phases

/// `connections` clients, each sending its next request when the last one
/// is answered, until `seconds` have passed.
async fn closed_loop(
    target: &Target,
    connections: usize,
    seconds: f64,
    streaming: bool,
    drain: f64,
) -> Samples {
    let request = request_bytes(target, streaming);
    let started = Instant::now();
    let deadline = started + Duration::from_secs_f64(seconds);
    let hard_deadline = deadline + Duration::from_secs_f64(drain);
    let local = LocalSet::new();
    let mut workers = Vec::new();
    let addresses = target.addresses();
    for index in 0..connections {
        let request = Rc::clone(&request);
        let address = addresses[index % addresses.len()].clone();
        workers.push(local.spawn_local(async move {
            let mut samples = Samples::default();
            let mut conn: Option<Conn> = None;
            while Instant::now() < deadline {
                let sent = Instant::now();
                let exchange = async {
                    let mut open = match conn.take() {
                        Some(open) => open,
                        None => Conn::open(&address).await?,
                    };
                    let reply = open.exchange(&request, streaming).await?;
                    Ok::<_, io::Error>((open, reply))
                };
                match tokio::time::timeout_at(hard_deadline.into(), exchange).await {
                    Ok(Ok((open, reply))) => {
                        let done = Instant::now();
                        if !reply.close {
                            conn = Some(open);
                        }
                        if reply.status != 200 {
                            samples.errors += 1;
                            samples.note_status(reply.status);
                            continue;
                        }
                        samples.completed += 1;
                        if streaming {
                            let first = reply.first_data.unwrap_or(done);
                            samples.latency.push((first - sent).as_nanos() as u64);
                            samples.total.push((done - sent).as_nanos() as u64);
                        } else {
                            samples.latency.push((done - sent).as_nanos() as u64);
                        }
                    }
                    Ok(Err(_)) => {
                        samples.errors += 1;
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                    Err(_) => {
                        samples.latency.push(u64::MAX);
                        break;
                    }
                }
            }
            samples
        }));
    }
    let mut samples = local
        .run_until(async move {
            let mut all = Samples::default();
            for worker in workers {
                all.merge(worker.await.unwrap());
            }
            all
        })
        .await;
    samples.elapsed = started.elapsed();
    samples
}

/// Requests scheduled `rate` times a second for `warmup + seconds`, sent on
/// time whatever the answers; only those after the warm-up are counted.
async fn open_loop(
    target: &Target,
    rate: u32,
    warmup: f64,
    seconds: f64,
    connections: usize,
    drain: f64,
) -> Samples {
    let request = request_bytes(target, false);
    let interval = Duration::from_secs_f64(1.0 / f64::from(rate));
    let total = ((warmup + seconds) * f64::from(rate)).round() as u32;
    let measured = (seconds * f64::from(rate)).round() as u64;
    let first_counted = total - measured as u32;
    let start = Instant::now() + Duration::from_millis(20);
    let (sender, mut receiver) = tokio::sync::mpsc::unbounded_channel::<(u32, Instant)>();
    let dispatcher = std::thread::spawn(move || {
        for index in 0..total {
            let at = start + interval * index;
            let now = Instant::now();
            if at > now {
                std::thread::sleep(at - now);
            }
            if sender.send((index, at)).is_err() {
                break;
            }
        }
    });
    let pool = Rc::new(Pool::new(target, connections));
    let samples = Rc::new(RefCell::new(Samples::default()));
    let finished = Rc::new(RefCell::new(0_u64));
    let local = LocalSet::new();
    let end_of_sending = start + interval * total;
    let hard_deadline = end_of_sending + Duration::from_secs_f64(drain);
    local
        .run_until(async {
            while let Some((index, at)) = receiver.recv().await {
                let pool = Rc::clone(&pool);
                let request = Rc::clone(&request);
                let samples = Rc::clone(&samples);
                let finished = Rc::clone(&finished);
                tokio::task::spawn_local(async move {
                    let lag = at.elapsed();
                    let reply = pool.send(&request).await;
                    let done = Instant::now();
                    if index >= first_counted {
                        let mut samples = samples.borrow_mut();
                        samples.lag.push(lag.as_nanos() as u64);
                        match reply {
                            Ok(reply) if reply.status == 200 => {
                                samples.completed += 1;
                                samples.latency.push((done - at).as_nanos() as u64);
                            }
                            Ok(reply) => {
                                samples.errors += 1;
                                samples.note_status(reply.status);
                            }
                            Err(_) => samples.errors += 1,
                        }
                        *finished.borrow_mut() += 1;
                    }
                });
            }
            while *finished.borrow() < measured && Instant::now() < hard_deadline {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await;
    // Dropping the set cancels the requests still waiting.
    drop(local);
    dispatcher.join().unwrap();
    let mut samples = Rc::try_unwrap(samples).unwrap().into_inner();
    let unanswered = measured - samples.completed - samples.errors;
    samples
        .latency
        .extend(std::iter::repeat_n(u64::MAX, unanswered as usize));
    samples.elapsed = Duration::from_secs_f64(seconds);
    samples
}

// ------------------------------------------------------------------ report

#[derive(Debug, Default, Clone)]
struct Figures {
    c1: Summary,
    rates: Vec<(u32, Summary, bool)>,
    max_rps: Option<(f64, usize)>,
    stream_ttft: Summary,
    stream_total: Summary,
    peak_kib: Option<u64>,
}

fn describe(samples: &Samples, summary: &Summary) -> String {
    let mut line = format!(
        "n={} p50 {} p99 {} p99.9 {} max {} ms",
        samples.completed,
        ms(summary.p50),
        ms(summary.p99),
        ms(summary.p999),
        ms(summary.max)
    );
    if samples.errors > 0 {
        write!(
            line,
            ", errors {} (statuses {:?})",
            samples.errors, samples.statuses
        )
        .unwrap();
    }
    line
}

/// A table cell: more than the percentile's share of requests unanswered
/// means the target could not keep up.
fn cell(nanos: Option<u64>) -> String {
    match nanos {
        Some(u64::MAX) => "saturated".to_owned(),
        other => ms(other),
    }
}

fn added(value: Option<u64>, base: Option<u64>) -> String {
    match (value, base) {
        (Some(u64::MAX), _) => "saturated".to_owned(),
        (Some(value), Some(base)) if base != u64::MAX => {
            format!("{:+.3}", (value as f64 - base as f64) / 1e6)
        }
        _ => "-".to_owned(),
    }
}

fn print_table(options: &Options, figures: &[Figures]) {
    let base = &figures[0];
    let mut header = "| measure |".to_owned();
    let mut rule = "| --- |".to_owned();
    for (index, target) in options.targets.iter().enumerate() {
        write!(header, " {} |", target.name).unwrap();
        rule.push_str(" ---: |");
        if index > 0 {
            write!(header, " {} added |", target.name).unwrap();
            rule.push_str(" ---: |");
        }
    }
    println!("\n{header}\n{rule}");
    let row = |label: &str, pick: &dyn Fn(&Figures) -> Option<u64>| {
        let mut line = format!("| {label} |");
        for (index, figure) in figures.iter().enumerate() {
            write!(line, " {} |", cell(pick(figure))).unwrap();
            if index > 0 {
                write!(line, " {} |", added(pick(figure), pick(base))).unwrap();
            }
        }
        println!("{line}");
    };
    if options.phases.iter().any(|phase| phase == "c1") {
        row("concurrency 1, p50 (ms)", &|figure| figure.c1.p50);
        row("concurrency 1, p99 (ms)", &|figure| figure.c1.p99);
    }
    if options.phases.iter().any(|phase| phase == "rates") {
        for (index, rate) in options.rates.iter().enumerate() {
            let pick = |percentile: fn(&Summary) -> Option<u64>| {
                move |figure: &Figures| {
                    figure
                        .rates
                        .get(index)
                        .and_then(|entry| percentile(&entry.1))
                }
            };
            row(
                &format!("{rate}/s open loop, p50 (ms)"),
                &pick(|summary| summary.p50),
            );
            row(
                &format!("{rate}/s open loop, p99 (ms)"),
                &pick(|summary| summary.p99),
            );
        }
    }
    if options.phases.iter().any(|phase| phase == "max") {
        let mut line = "| max throughput (req/s, closed loop) |".to_owned();
        for (index, figure) in figures.iter().enumerate() {
            match figure.max_rps {
                Some((rps, connections)) => write!(line, " {rps:.0} ({connections} conns) |"),
                None => write!(line, " - |"),
            }
            .unwrap();
            if index > 0 {
                line.push_str(" |");
            }
        }
        println!("{line}");
    }
    if options.phases.iter().any(|phase| phase == "stream") {
        row("stream TTFT, p50 (ms)", &|figure| figure.stream_ttft.p50);
        row("stream TTFT, p99 (ms)", &|figure| figure.stream_ttft.p99);
        row("stream end, p50 (ms)", &|figure| figure.stream_total.p50);
    }
    let mut line = "| peak RSS (MiB, VmHWM) |".to_owned();
    for (index, figure) in figures.iter().enumerate() {
        match figure.peak_kib {
            Some(kib) => write!(line, " {:.1} |", kib as f64 / 1024.0),
            None => write!(line, " - |"),
        }
        .unwrap();
        if index > 0 {
            line.push_str(" |");
        }
    }
    println!("{line}");
}

fn main() {
    let options = options();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(run(&options));
}

/// Waits (at most `seconds`) until the machine is quiet: other work on these
/// two cores (a compiler, a test run) would distort every figure.
async fn wait_for_quiet_machine(seconds: f64) {
    let deadline = Instant::now() + Duration::from_secs_f64(seconds);
    loop {
        let before = machine_busy_ticks();
        tokio::time::sleep(Duration::from_secs(1)).await;
        let busy = (machine_busy_ticks() - before) as f64 / TICKS_PER_SECOND * 100.0;
        if busy <= 10.0 {
            println!("machine quiet: {busy:.0}% of one core busy before the run");
            return;
        }
        if Instant::now() >= deadline {
            println!("WARNING: the machine is busy ({busy:.0}% of one core) with other work");
            return;
        }
    }
}

/// Waits for every process to be idle, then warms the target up with
/// `connections` closed-loop clients.
async fn prepare(
    options: &Options,
    target: &Target,
    connections: usize,
    streaming: bool,
    seconds: f64,
) {
    settle(options).await;
    if seconds > 0.0 {
        let warm = closed_loop(target, connections, seconds, streaming, options.drain).await;
        if warm.completed == 0 {
            println!(
                "{:<10} WARNING: no answer while warming up ({} errors, statuses {:?})",
                target.name, warm.errors, warm.statuses
            );
        }
    }
}

async fn run(options: &Options) {
    wait_for_quiet_machine(options.quiet_wait).await;
    let mut figures = vec![Figures::default(); options.targets.len()];
    let has = |phase: &str| options.phases.iter().any(|wanted| wanted == phase);
    println!(
        "targets: {}",
        options
            .targets
            .iter()
            .map(|target| format!("{} (http://{}{})", target.name, target.address, target.path))
            .collect::<Vec<_>>()
            .join(", ")
    );
    for target in &options.targets {
        settle(options).await;
        let warm = closed_loop(
            target,
            WARMUP_CONNECTIONS,
            options.warmup,
            false,
            options.drain,
        )
        .await;
        println!(
            "{:<10} warm-up: {} answers, {} errors {:?}",
            target.name, warm.completed, warm.errors, warm.statuses
        );
    }
    if has("c1") {
        for (target, figure) in options.targets.iter().zip(&mut figures) {
            prepare(options, target, 1, false, options.phase_warmup).await;
            let cpu = CpuMeter::start(&options.targets, target, options.fake_pid);
            let mut samples =
                closed_loop(target, 1, options.c1_seconds, false, options.drain).await;
            figure.c1 = summarize(&mut samples.latency);
            println!(
                "{:<10} concurrency 1: {}; {}",
                target.name,
                describe(&samples, &figure.c1),
                cpu.report(&options.targets, target, options.fake_pid)
            );
        }
    }
    if has("rates") {
        // A target that could not keep up with a rate is not run at higher
        // ones: its backlog would only take minutes to work off.
        let mut saturated_at: Vec<Option<u32>> = vec![None; options.targets.len()];
        for rate in &options.rates {
            for ((target, figure), saturated_at) in options
                .targets
                .iter()
                .zip(&mut figures)
                .zip(&mut saturated_at)
            {
                if let Some(lower) = *saturated_at {
                    let all = Some(u64::MAX);
                    let summary = Summary {
                        p50: all,
                        p99: all,
                        p999: all,
                        max: all,
                    };
                    figure.rates.push((*rate, summary, true));
                    println!(
                        "{:<10} {rate}/s open loop: not run, saturated at {lower}/s",
                        target.name
                    );
                    continue;
                }
                // The open loop's own first `warmup` seconds are not counted.
                prepare(options, target, 1, false, 0.0).await;
                let cpu = CpuMeter::start(&options.targets, target, options.fake_pid);
                let mut samples = open_loop(
                    target,
                    *rate,
                    options.warmup,
                    options.rate_seconds,
                    options.open_connections,
                    options.drain,
                )
                .await;
                let cpu = cpu.report(&options.targets, target, options.fake_pid);
                let summary = summarize(&mut samples.latency);
                let lag = summarize(&mut samples.lag);
                let saturated = summary.p99 == Some(u64::MAX);
                if saturated {
                    *saturated_at = Some(*rate);
                }
                figure.rates.push((*rate, summary, saturated));
                println!(
                    "{:<10} {rate}/s open loop: {}; dispatch lag p50 {} p99 {} ms; {cpu}",
                    target.name,
                    describe(&samples, &summary),
                    ms(lag.p50),
                    ms(lag.p99),
                );
            }
        }
    }
    if has("max") {
        for connections in &options.max_connections {
            for (target, figure) in options.targets.iter().zip(&mut figures) {
                prepare(options, target, *connections, false, options.phase_warmup).await;
                let cpu = CpuMeter::start(&options.targets, target, options.fake_pid);
                let mut samples = closed_loop(
                    target,
                    *connections,
                    options.max_seconds,
                    false,
                    options.drain,
                )
                .await;
                let cpu = cpu.report(&options.targets, target, options.fake_pid);
                let rps = samples.completed as f64 / samples.elapsed.as_secs_f64();
                let summary = summarize(&mut samples.latency);
                if figure.max_rps.is_none_or(|(best, _)| rps > best) {
                    figure.max_rps = Some((rps, *connections));
                }
                println!(
                    "{:<10} closed loop, {connections} connections: {rps:.0} answers/s; {}; {cpu}",
                    target.name,
                    describe(&samples, &summary),
                );
            }
        }
    }
    if has("stream") {
        for (target, figure) in options.targets.iter().zip(&mut figures) {
            prepare(options, target, 1, true, options.phase_warmup).await;
            let cpu = CpuMeter::start(&options.targets, target, options.fake_pid);
            let mut samples =
                closed_loop(target, 1, options.stream_seconds, true, options.drain).await;
            figure.stream_ttft = summarize(&mut samples.latency);
            figure.stream_total = summarize(&mut samples.total);
            println!(
                "{:<10} stream, concurrency 1: first data {}; end of stream p50 {} p99 {} ms; {}",
                target.name,
                describe(&samples, &figure.stream_ttft),
                ms(figure.stream_total.p50),
                ms(figure.stream_total.p99),
                cpu.report(&options.targets, target, options.fake_pid)
            );
        }
    }
    for (target, figure) in options.targets.iter().zip(&mut figures) {
        if target.pids.is_empty() {
            continue;
        }
        let (peak, current, processes) = memory_kib(&target.pids);
        figure.peak_kib = Some(peak);
        println!(
            "{:<10} memory: peak RSS (VmHWM) {:.1} MiB, RSS now {:.1} MiB, over {processes} process(es)",
            target.name,
            peak as f64 / 1024.0,
            current as f64 / 1024.0
        );
    }
    print_table(options, &figures);
}
