//! The access log: one line per request, in gunicorn's format language or
//! as JSON, to a file (`access_log`) or standard output (`-`).
//!
//! A request's line is formatted by its coroutine into the worker's buffer
//! (a mutex held for a copy); a thread of the worker's own writes the
//! buffer out every [`FLUSH_INTERVAL`] while there are lines (and sleeps
//! while there are none), so no scheduler thread ever blocks on the
//! disk. If the disk stalls and the buffer reaches [`MAX_BUFFER`],
//! further lines are dropped and counted (a warning says how many), rather
//! than memory growing without bound. SIGUSR1 reopens the file (after
//! logrotate moved it), as for the error log. At a graceful exit the
//! buffer is written out; a fast exit (INT, QUIT) may lose its last
//! [`FLUSH_INTERVAL`] of lines.
//!
//! Formats. gunicorn's atoms, `%(NAME)s`: `h` client address, `l` `-`,
//! `u` API token name (or `-`), `t` `[27/Nov/2026:17:40:00 +0000]`, `r`
//! request line, `m` method, `U` path, `q` query, `H` protocol, `s`
//! status, `b` body bytes (`-` for a streamed list), `B` body bytes (0),
//! `f` Referer, `a` User-Agent, `T` seconds, `M` milliseconds, `D`
//! microseconds, `L` seconds with decimals, `p` worker pid, `{name}i` any
//! request header; and `rid`, the request id. `json`: one object per line
//! with all of these. The client address is the peer's, or the first
//! address of `X-Forwarded-For` when the peer is in `forwarded_allow_ips`
//! (gunicorn's rule: only a proxy you trust may say who the client is).

use std::fmt::Write as _;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::net::Peers;

/// How often the buffer is written out.
pub const FLUSH_INTERVAL: Duration = Duration::from_millis(100);
/// Most bytes waiting to be written; beyond, lines are dropped.
pub const MAX_BUFFER: usize = 8 << 20;
/// Bytes a pipe write keeps whole (POSIX PIPE_BUF on Linux).
const PIPE_BUF: usize = 4096;
/// Longest request id taken from a client's `X-Request-Id`.
pub const MAX_REQUEST_ID: usize = 128;
/// Headers that carry secrets: a format may not log them.
const SECRET_HEADERS: [&str; 3] = ["authorization", "cookie", "proxy-authorization"];
/// Request headers every format may need (captured by index, in this order).
const BASE_HEADERS: [&str; 4] = ["referer", "user-agent", "x-forwarded-for", "x-request-id"];
const REFERER: usize = 0;
const USER_AGENT: usize = 1;
const FORWARDED_FOR: usize = 2;
/// Index of `X-Request-Id` among the captured headers.
pub const REQUEST_ID: usize = 3;
/// The request id's header, echoed in every response.
pub const REQUEST_ID_HEADER: &str = BASE_HEADERS[REQUEST_ID];

/// A format, parsed once.
#[derive(Debug, Clone, PartialEq)]
pub enum Format {
    /// gunicorn's language.
    Atoms(Vec<Piece>),
    /// One JSON object per line.
    Json,
}

/// Part of a format.
#[derive(Debug, Clone, PartialEq)]
pub enum Piece {
    /// Literal text.
    Text(String),
    /// An atom's name (one of ATOMS).
    Atom(String),
    /// A request header, by index among the captured ones.
    Header(usize),
}

/// Why a format cannot be used.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum FormatError {
    /// `%(name)s` with a name no atom has.
    #[error("unknown atom %({0})s")]
    UnknownAtom(String),
    /// `%(` without its `)s`.
    #[error("unterminated atom at byte {0} (atoms are written %(name)s)")]
    Unterminated(usize),
    /// A header that carries credentials.
    #[error("the {0} header carries secrets and is never logged")]
    Secret(String),
}

const ATOMS: [&str; 20] = [
    "h", "l", "u", "t", "r", "m", "U", "q", "H", "s", "b", "B", "f", "a", "T", "M", "D", "L", "p",
    "rid",
];

impl Format {
    /// Parses `json` or a gunicorn-style format; `headers` receives the
    /// names of the request headers it needs beyond the base ones.
    pub fn parse(text: &str, headers: &mut Vec<String>) -> Result<Format, FormatError> {
        if text == "json" {
            return Ok(Format::Json);
        }
        let mut pieces = Vec::new();
        let mut rest = text;
        let mut at = 0;
        while let Some(i) = rest.find("%(") {
            if i > 0 {
                pieces.push(Piece::Text(rest[..i].to_string()));
            }
            let end = rest[i..]
                .find(")s")
                .ok_or(FormatError::Unterminated(at + i))?
                + i;
            let name = &rest[i + 2..end];
            if let Some(header) = name.strip_prefix('{').and_then(|n| n.strip_suffix("}i")) {
                let header = header.to_ascii_lowercase();
                if SECRET_HEADERS.contains(&header.as_str()) {
                    return Err(FormatError::Secret(header));
                }
                let index = match BASE_HEADERS.iter().position(|h| *h == header) {
                    Some(i) => i,
                    None => {
                        headers.push(header);
                        BASE_HEADERS.len() + headers.len() - 1
                    }
                };
                pieces.push(Piece::Header(index));
            } else if ATOMS.contains(&name) {
                pieces.push(Piece::Atom(name.to_string()));
            } else {
                return Err(FormatError::UnknownAtom(name.to_string()));
            }
            at += end + 2;
            rest = &rest[end + 2..];
        }
        if !rest.is_empty() {
            pieces.push(Piece::Text(rest.to_string()));
        }
        Ok(Format::Atoms(pieces))
    }
}

/// Where the access log goes and what it says (`config` resolves it).
#[derive(Debug, Clone)]
pub struct AccessLogConfig {
    /// The file; None for standard output.
    pub path: Option<PathBuf>,
    /// The parsed format and the trusted proxies.
    pub log: AccessLog,
}

/// The access log settings of a worker.
#[derive(Debug, Clone)]
pub struct AccessLog {
    format: Format,
    trusted: Peers,
    /// Every header to capture, by index: BASE_HEADERS, then the format's.
    pub headers: Vec<String>,
}

/// What one request leaves in the log.
pub struct Entry<'a> {
    /// The connection's peer (before X-Forwarded-For).
    pub peer: Option<IpAddr>,
    /// The request's method and target, as sent.
    pub method: &'a str,
    pub target: &'a str,
    /// An HTTP/1.0 request.
    pub http10: bool,
    /// The response's status.
    pub status: u16,
    /// Body bytes; None for a streamed list.
    pub bytes: Option<usize>,
    /// Complete head to response.
    pub took: Duration,
    /// The API token's name, when one authorized the request.
    pub user: Option<&'a str>,
    /// Captured header values, by index of `AccessLog::headers`.
    pub headers: &'a [Option<Vec<u8>>],
    /// The request id (echoed in the response).
    pub request_id: &'a str,
}

impl AccessLog {
    /// Settings from the configuration (already validated by `config`).
    pub fn new(format: &str, trusted: Peers) -> Result<AccessLog, FormatError> {
        let mut extra = Vec::new();
        let format = Format::parse(format, &mut extra)?;
        let headers = BASE_HEADERS
            .iter()
            .map(|h| h.to_string())
            .chain(extra)
            .collect();
        Ok(AccessLog {
            format,
            trusted,
            headers,
        })
    }

    /// Formats `entry` and queues its line.
    pub fn record(&self, entry: &Entry<'_>) {
        let mut line = self.line(entry);
        line.push('\n');
        sink().push(line.as_bytes());
    }

    /// The line of `entry`, without its newline.
    fn line(&self, entry: &Entry<'_>) -> String {
        let mut line = String::with_capacity(256);
        match &self.format {
            Format::Atoms(pieces) => {
                for piece in pieces {
                    match piece {
                        Piece::Text(t) => line.push_str(t),
                        Piece::Atom(a) => self.atom(&mut line, a, entry),
                        Piece::Header(i) => {
                            line.push_str(&header(entry, *i).unwrap_or_else(|| "-".into()))
                        }
                    }
                }
            }
            Format::Json => self.json(&mut line, entry),
        }
        line
    }

    /// The client's address: the peer, or when the peer is trusted, the
    /// `X-Forwarded-For` hop just before the trusted ones (walking from the
    /// right: proxies append, so the entries left of the last untrusted
    /// hop are whatever the client sent). An entry that is no IP address
    /// ends the walk.
    fn client(&self, entry: &Entry<'_>) -> String {
        let Some(peer) = entry.peer.map(|p| p.to_canonical()) else {
            return "-".into();
        };
        let mut client = peer;
        if self.trusted.allows(peer) {
            let forwarded = entry
                .headers
                .get(FORWARDED_FOR)
                .and_then(|v| v.as_deref())
                .unwrap_or_default();
            for hop in String::from_utf8_lossy(forwarded).rsplit(',') {
                match hop.trim().parse::<IpAddr>() {
                    Ok(ip) => client = ip.to_canonical(),
                    Err(_) => break,
                }
                if !self.trusted.allows(client) {
                    break;
                }
            }
        }
        client.to_string()
    }

    fn atom(&self, out: &mut String, atom: &str, e: &Entry<'_>) {
        let (path, query) = e.target.split_once('?').unwrap_or((e.target, ""));
        let protocol = if e.http10 { "HTTP/1.0" } else { "HTTP/1.1" };
        let _ = match atom {
            "h" => write!(out, "{}", self.client(e)),
            "l" => write!(out, "-"),
            "u" => write!(out, "{}", e.user.unwrap_or("-")),
            "t" => write!(out, "[{}]", clf_time(SystemTime::now())),
            "r" => write!(out, "{} {} {protocol}", safe(e.method), safe(e.target)),
            "m" => write!(out, "{}", safe(e.method)),
            "U" => write!(out, "{}", safe(path)),
            "q" => write!(out, "{}", safe(query)),
            "H" => write!(out, "{protocol}"),
            "s" => write!(out, "{}", e.status),
            "b" => match e.bytes {
                Some(n) => write!(out, "{n}"),
                None => write!(out, "-"),
            },
            "B" => write!(out, "{}", e.bytes.unwrap_or(0)),
            "f" => write!(out, "{}", header(e, REFERER).unwrap_or_else(|| "-".into())),
            "a" => write!(
                out,
                "{}",
                header(e, USER_AGENT).unwrap_or_else(|| "-".into())
            ),
            "T" => write!(out, "{}", e.took.as_secs()),
            "M" => write!(out, "{}", e.took.as_millis()),
            "D" => write!(out, "{}", e.took.as_micros()),
            "L" => write!(out, "{:.6}", e.took.as_secs_f64()),
            "p" => write!(out, "<{}>", std::process::id()),
            "rid" => write!(out, "{}", e.request_id),
            _ => Ok(()),
        };
    }

    fn json(&self, out: &mut String, e: &Entry<'_>) {
        let (path, query) = e.target.split_once('?').unwrap_or((e.target, ""));
        let value = serde_json::json!({
            "time": iso_time(SystemTime::now()),
            "remote_addr": self.client(e),
            "user": e.user,
            "method": e.method,
            "path": path,
            "query": query,
            "protocol": if e.http10 { "HTTP/1.0" } else { "HTTP/1.1" },
            "status": e.status,
            "bytes": e.bytes,
            "duration_ms": e.took.as_secs_f64() * 1000.0,
            "referer": raw_header(e, REFERER),
            "user_agent": raw_header(e, USER_AGENT),
            "request_id": e.request_id,
            "pid": std::process::id(),
        });
        out.push_str(&value.to_string());
    }
}

/// A captured header as text, made safe to log (`safe`).
fn header(e: &Entry<'_>, i: usize) -> Option<String> {
    raw_header(e, i).map(|h| safe(&h))
}

/// A captured header as text, as sent (for the JSON format, whose own
/// escaping makes any text safe: escaping it first would log it twice
/// escaped).
fn raw_header(e: &Entry<'_>, i: usize) -> Option<String> {
    Some(String::from_utf8_lossy(e.headers.get(i)?.as_ref()?).into_owned())
}

/// Text a client sent, made safe for a log line: control characters
/// become `?`, and `"` and `\` are escaped (as Apache does), so a client
/// can neither start a line of its own nor close a quoted field early.
fn safe(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push('?'),
            c => out.push(c),
        }
    }
    out
}

/// A client's `X-Request-Id`, if usable: 1 to MAX_REQUEST_ID characters of
/// letters, digits, `-`, `_`, `.`, `:` (anything else could forge log
/// lines or headers).
pub fn valid_request_id(value: &[u8]) -> Option<&str> {
    let ok = !value.is_empty()
        && value.len() <= MAX_REQUEST_ID
        && value
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'));
    ok.then(|| std::str::from_utf8(value).expect("ASCII"))
}

/// A new request id: 16 hex digits, unique per worker process (a random
/// prefix drawn at start, then a counter).
pub fn new_request_id() -> String {
    static PREFIX: OnceLock<u32> = OnceLock::new();
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let prefix = *PREFIX.get_or_init(|| {
        let mut bytes = [0u8; 4];
        let random = File::open("/dev/urandom")
            .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut bytes));
        if random.is_err() {
            bytes = std::process::id().to_le_bytes();
        }
        u32::from_le_bytes(bytes)
    });
    format!(
        "{prefix:08x}{:08x}",
        NEXT.fetch_add(1, Ordering::Relaxed) as u32
    )
}

fn split(t: SystemTime) -> ((i64, u32, u32), u64, u32) {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    (
        crate::clock::civil_from_days((secs / 86_400) as i64),
        secs % 86_400,
        d.subsec_millis(),
    )
}

/// `27/Nov/2026:17:40:00 +0000` (the Common Log Format's time, in UTC).
fn clf_time(t: SystemTime) -> String {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let ((y, m, d), s, _) = split(t);
    format!(
        "{d:02}/{}/{y}:{:02}:{:02}:{:02} +0000",
        MONTHS[m as usize - 1],
        s / 3600,
        s / 60 % 60,
        s % 60
    )
}

/// `2026-11-27T17:40:00.123Z`.
fn iso_time(t: SystemTime) -> String {
    let ((y, m, d), s, ms) = split(t);
    format!(
        "{y}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{ms:03}Z",
        s / 3600,
        s / 60 % 60,
        s % 60
    )
}

/// Where lines go: a file or standard output, through a buffer.
struct Sink {
    path: Option<PathBuf>,
    buffer: Mutex<Vec<u8>>,
    /// The open file (or stdout), held while a batch is written: a final
    /// flush waits for a write in progress instead of racing it.
    out: Mutex<Option<Box<dyn Write + Send>>>,
    reopen: AtomicBool,
    dropped: AtomicU64,
    /// The writer thread, and whether it sleeps until there is work (so an
    /// idle worker's writer does not wake every [`FLUSH_INTERVAL`]).
    writer: OnceLock<std::thread::Thread>,
    writer_parked: AtomicBool,
}

static SINK: OnceLock<Sink> = OnceLock::new();

fn sink() -> &'static Sink {
    SINK.get().expect("access_log::start before any request")
}

impl Sink {
    fn push(&self, line: &[u8]) {
        let mut buffer = self.buffer.lock().unwrap_or_else(|e| e.into_inner());
        if buffer.len() + line.len() > MAX_BUFFER {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let was_empty = buffer.is_empty();
        buffer.extend_from_slice(line);
        drop(buffer);
        if was_empty {
            self.wake_writer();
        }
    }

    /// Wakes the writer if it sleeps (one wake-up per sleep, not per line).
    fn wake_writer(&self) {
        if self.writer_parked.swap(false, Ordering::SeqCst) {
            if let Some(writer) = self.writer.get() {
                writer.unpark();
            }
        }
    }

    /// The writer: sleeps until a line is buffered or a reopen is asked.
    /// (The flag is raised before the buffer is looked at, and lowered by
    /// whoever adds work after it: no wake-up is lost.)
    fn park_writer_while_idle(&self) {
        self.writer_parked.store(true, Ordering::SeqCst);
        while self.writer_parked.load(Ordering::SeqCst)
            && !self.reopen.load(Ordering::SeqCst)
            && self
                .buffer
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .is_empty()
        {
            std::thread::park();
        }
        self.writer_parked.store(false, Ordering::SeqCst);
    }

    /// Writes whole lines. To a file (opened O_APPEND) one write each batch;
    /// to standard output, shared by every worker as a pipe or the
    /// journal's socket, pieces of at most PIPE_BUF bytes ending at a line
    /// end, which the kernel never interleaves with another worker's.
    fn write_lines(&self, out: &mut Box<dyn Write + Send>, lines: &[u8]) -> std::io::Result<()> {
        if self.path.is_some() {
            return out.write_all(lines).and_then(|()| out.flush());
        }
        let mut rest = lines;
        while !rest.is_empty() {
            let window = &rest[..rest.len().min(PIPE_BUF)];
            // A line longer than PIPE_BUF goes out alone, unsplit.
            let end = match window.iter().rposition(|b| *b == b'\n') {
                Some(i) => i + 1,
                None => rest
                    .iter()
                    .position(|b| *b == b'\n')
                    .map_or(rest.len(), |i| i + 1),
            };
            out.write_all(&rest[..end])?;
            rest = &rest[end..];
        }
        out.flush()
    }

    fn open(&self) -> std::io::Result<Box<dyn Write + Send>> {
        Ok(match &self.path {
            Some(p) => Box::new(OpenOptions::new().create(true).append(true).open(p)?),
            None => Box::new(std::io::stdout()),
        })
    }

    /// Writes what is buffered out (reopening the file first if asked).
    fn write_out(&self) {
        let mut out = self.out.lock().unwrap_or_else(|e| e.into_inner());
        if self.reopen.swap(false, Ordering::Relaxed) || out.is_none() {
            match self.open() {
                Ok(f) => *out = Some(f),
                Err(e) => log::warn!("access log: cannot reopen: {e}"),
            }
        }
        let pending = std::mem::take(&mut *self.buffer.lock().unwrap_or_else(|e| e.into_inner()));
        if let (false, Some(out)) = (pending.is_empty(), out.as_mut()) {
            if let Err(e) = self.write_lines(out, &pending) {
                crate::log_repeated!(log::Level::Warn, "access log: cannot write: {e}");
            }
        }
        let dropped = self.dropped.swap(0, Ordering::Relaxed);
        if dropped > 0 {
            log::warn!(
                "access log: {dropped} lines dropped (the log could not be written fast enough)"
            );
        }
    }
}

/// Opens the log (`None`: standard output) and starts the worker's writer
/// thread. Call once per worker, after fork (threads do not survive fork).
pub fn start(path: Option<PathBuf>) -> std::io::Result<()> {
    let sink = SINK.get_or_init(|| Sink {
        path,
        buffer: Mutex::new(Vec::new()),
        out: Mutex::new(None),
        reopen: AtomicBool::new(false),
        dropped: AtomicU64::new(0),
        writer: OnceLock::new(),
        writer_parked: AtomicBool::new(false),
    });
    *sink.out.lock().unwrap_or_else(|e| e.into_inner()) = Some(sink.open()?);
    std::thread::Builder::new()
        .name("access-log".into())
        .spawn(move || {
            // Known before it first sleeps, so that it can be woken.
            let _ = sink.writer.set(std::thread::current());
            loop {
                sink.park_writer_while_idle();
                std::thread::sleep(FLUSH_INTERVAL);
                sink.write_out();
            }
        })?;
    Ok(())
}

/// SIGUSR1: the writer reopens the file, at once if it has nothing to
/// write (the old file is let go), else before its next write.
pub fn reopen() {
    if let Some(s) = SINK.get() {
        s.reopen.store(true, Ordering::SeqCst);
        s.wake_writer();
    }
}

/// Writes out what is buffered now (a graceful exit), after any write the
/// writer thread has in progress.
pub fn flush() {
    if let Some(s) = SINK.get() {
        s.write_out();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry<'a>(headers: &'a [Option<Vec<u8>>]) -> Entry<'a> {
        Entry {
            peer: Some("127.0.0.1".parse().unwrap()),
            method: "GET",
            target: "/orders?limit=2",
            http10: false,
            status: 200,
            bytes: Some(42),
            took: Duration::from_micros(1500),
            user: None,
            headers,
            request_id: "abc",
        }
    }

    fn line(log: &AccessLog, e: &Entry<'_>) -> String {
        log.line(e)
    }

    #[test]
    fn gunicorn_atoms_and_headers() {
        let log = AccessLog::new(
            r#"%(h)s "%(r)s" %(s)s %(b)s "%(a)s" %(M)s %(U)s?%(q)s %({X-Custom}i)s %(rid)s"#,
            Peers::Only(vec![]),
        )
        .unwrap();
        assert_eq!(log.headers.last().unwrap(), "x-custom");
        let headers = vec![
            None,
            Some(b"curl/8\x1b[31m \" 500 \\".to_vec()),
            Some(b"10.1.1.1".to_vec()),
            None,
            Some(b"yes".to_vec()),
        ];
        assert_eq!(
            line(&log, &entry(&headers)),
            r#"127.0.0.1 "GET /orders?limit=2 HTTP/1.1" 200 42 "curl/8?[31m \" 500 \\" 1 /orders?limit=2 yes abc"#
        );
    }

    /// JSON escapes what a client sent once: a User-Agent `q"x\y` decodes
    /// as itself, and control characters cannot start a line of their own.
    #[test]
    fn json_lines_escape_client_text_once() {
        let log = AccessLog::new("json", Peers::Only(vec![])).unwrap();
        let headers = vec![None, Some(b"q\"x\\y\n{}".to_vec()), None, None];
        let text = line(&log, &entry(&headers));
        assert!(!text.contains('\n'), "{text}");
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["user_agent"], "q\"x\\y\n{}");
    }

    #[test]
    fn forwarded_for_only_from_trusted_peers() {
        // The client sent "6.6.6.6"; the proxy at 10.0.0.2 appended the
        // address it saw; the trusted peer (127.0.0.1) appended 10.0.0.2.
        let headers = vec![
            None,
            None,
            Some(b"6.6.6.6, 203.0.113.9, 10.0.0.2".to_vec()),
            None,
        ];
        let peer_only = AccessLog::new("%(h)s", Peers::parse("127.0.0.1").unwrap()).unwrap();
        assert_eq!(
            line(&peer_only, &entry(&headers)),
            "10.0.0.2",
            "the hop the trusted peer saw"
        );
        let both = AccessLog::new("%(h)s", Peers::parse("127.0.0.1, 10.0.0.2").unwrap()).unwrap();
        assert_eq!(
            line(&both, &entry(&headers)),
            "203.0.113.9",
            "never the client's own claim"
        );
        let wary = AccessLog::new("%(h)s", Peers::parse("10.0.0.1, 10.0.0.2").unwrap()).unwrap();
        assert_eq!(line(&wary, &entry(&headers)), "127.0.0.1");
        let junk = vec![None, None, Some(b"203.0.113.9, \"x\"".to_vec()), None];
        assert_eq!(
            line(&both, &entry(&junk)),
            "127.0.0.1",
            "no IP: the walk stops at the peer"
        );
        assert_eq!(Peers::parse("*").unwrap(), Peers::Any);
        assert!(Peers::parse("nope").is_err());
    }

    #[test]
    fn bad_formats_are_refused() {
        assert_eq!(
            Format::parse("%(zz)s", &mut Vec::new()),
            Err(FormatError::UnknownAtom("zz".into()))
        );
        assert_eq!(
            Format::parse("x %(h", &mut Vec::new()),
            Err(FormatError::Unterminated(2))
        );
        assert_eq!(
            Format::parse("%({Authorization}i)s", &mut Vec::new()),
            Err(FormatError::Secret("authorization".into()))
        );
    }

    #[test]
    fn times_and_request_ids() {
        let t = UNIX_EPOCH + Duration::from_millis(1_795_801_200_123); // 2026-11-27T17:40:00.123Z
        assert_eq!(clf_time(t), "27/Nov/2026:17:40:00 +0000");
        assert_eq!(iso_time(t), "2026-11-27T17:40:00.123Z");
        assert_eq!(crate::clock::civil_from_days(0), (1970, 1, 1));
        assert_eq!(crate::clock::civil_from_days(-1), (1969, 12, 31));
        assert_eq!(crate::clock::civil_from_days(19_782), (2024, 2, 29));
        assert_eq!(valid_request_id(b"req-1.2_3:x"), Some("req-1.2_3:x"));
        assert_eq!(valid_request_id(b"a b"), None);
        assert_eq!(valid_request_id(b""), None);
        let (a, b) = (new_request_id(), new_request_id());
        assert_ne!(a, b);
        assert_eq!(a.len(), 16);
    }
}
