//! Configuration: raw values from the command line, the environment and a
//! TOML file, merged with precedence CLI > env > file > default, then
//! resolved into one [`Config`] whose parts go to the layers that use them
//! ([`HttpConfig`], [`StoreConfig`], [`ProcessConfig`]).
//!
//! Every setting is declared once, in the `settings!` table below: its
//! meaning, type, flag, environment variable, documented default, the rule
//! its value must follow (`check`) and whether a reload may change it.
//! Adding a setting is one row there, its field in one of the configs and
//! a line of [`resolve`], and its paragraph in conf/orders-server.toml (a
//! test checks that every setting has one, another that each documented
//! default is the real one and follows its rule).
//!
//! Loading is in three steps: [`read_file`] and [`Environment::read`] do
//! the I/O (the file, the environment variables that are not flags, the
//! machine's CPUs and open-file limit, the API tokens file); [`resolve`]
//! is a function of what they read (but for looking up a host name given
//! as an address), which checks each value against its row's rule and
//! then keeps only the derived defaults and the rules between settings.

pub use crate::logging::LogLevel;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Parser;
use serde::Deserialize;

use crate::http::access_log::{AccessLog, AccessLogConfig};
use crate::http::auth::{Tokens, TokensError};
use crate::http::routes::ListLimits;
use crate::http::{HttpConfig, HttpLimits};
use crate::net::Peers;
use crate::proto::request::HeadLimits;
use crate::proto::sweep::SweepPolicy;
use crate::store::mongo::{redact_uri, MongoTarget};
use crate::store::{Backend, StoreConfig};
use crate::tls::{ClientCerts, TlsError, TlsFiles};
use std::sync::Arc;

/// The default of max_buffered_body_bytes, unless max_body_size is larger
/// (64 MiB: 64 bodies of the default largest size).
pub const BODY_BUDGET_FLOOR: u64 = 64 * 1024 * 1024;
/// Env var for the MongoDB URI.
pub const MONGO_URI_ENV: &str = "ORDERS_MONGO_URI";
/// The seed's env var for the MongoDB URI, read below ORDERS_MONGO_URI.
pub const SEED_MONGO_URI_ENV: &str = "MONGO_URI";
/// Largest limit_request_fields accepted (gunicorn's).
pub const MAX_REQUEST_FIELDS: u64 = 32768;
/// Descriptors a worker keeps for itself (store, pipes, logs) out of the
/// open-file limit when deriving worker_connections.
pub const RESERVED_FDS: u64 = 64;
// Connections closing to make room may exceed worker_connections by a
// batch for a moment: the reserve must hold them and still leave room.
const _: () = assert!((crate::http::server::EVICT_BATCH as u64) < RESERVED_FDS / 2 + 1);
/// Largest max_requests and max_requests_jitter (their sum must not
/// overflow; a trillion requests is never reached).
pub const MAX_REQUESTS: u64 = 1_000_000_000_000;
/// Most workers one master will run.
pub const MAX_WORKERS: u64 = 1024;
/// Most scheduler threads per worker.
pub const MAX_THREADS: u64 = 256;
/// Smallest coroutine stack accepted.
pub const MIN_STACK_SIZE: u64 = 64 * 1024;
/// Largest page size accepted as the operator's cap.
pub const MAX_MAX_PAGE_SIZE: u64 = 1_000_000;
/// The rule of a setting in seconds: at least one, at most a day.
const SECONDS: Range = Range(1, 86_400);

/// Declares every setting once: its meaning (the doc comment), type, flag,
/// environment variable, default (as documented), the rule its value must
/// follow and whether a reload may change it. From this follow the command
/// line and `--help` (clap), the file format (serde, unknown keys refused),
/// the precedence (`or`), each value's check (`check`), the reload check
/// (`fixed_changes`) and the list of settings (`SETTINGS`, which the test
/// of conf/orders-server.toml walks).
macro_rules! settings {
    ($(
        $(#[doc = $doc:literal])*
        $name:ident: $ty:ty,
        $(short = $short:literal,)?
        $(env = $env:literal,)?
        $(value_name = $value_name:literal,)?
        $(formerly = $old_flag:literal / $old_key:literal,)?
        default = $default:literal,
        check = $rule:expr,
        reload = $reload:literal;
    )*) => {
        /// The settings as given on the command line (and its environment
        /// variables) or in the configuration file: every one optional.
        #[derive(Debug, Clone, Default, Parser, Deserialize)]
        #[command(name = "orders-server", version, about = "A prefork HTTP API server for orders", long_about = None)]
        #[serde(deny_unknown_fields)]
        pub struct Settings {
            /// A command instead of serving.
            #[command(subcommand)]
            #[serde(skip)]
            pub command: Option<Command>,
            /// Configuration file (TOML); see conf/orders-server.toml.
            #[arg(short = 'c', long = "config", env = "ORDERS_CONFIG", value_name = "FILE")]
            #[serde(skip)]
            pub config: Option<PathBuf>,
            $(
                $(#[doc = $doc])*
                #[arg(long, $(short = $short,)? $(env = $env,)? $(value_name = $value_name,)?
                      help = concat!($($doc,)* " [default: ", $default, "]"))]
                $(#[arg(alias = $old_flag)] #[serde(alias = $old_key)])?
                pub $name: Option<$ty>,
            )*
        }

        impl Settings {
            /// Each setting of `self`, or of `lower` where `self` has none
            /// (command line and environment over the file).
            pub fn or(self, lower: Settings) -> Settings {
                Settings { command: self.command, config: self.config, $($name: self.$name.or(lower.$name),)* }
            }

            /// Checks every value given against its row's rule; the first
            /// that breaks it is the error, named for the setting.
            pub fn check(&self) -> Result<(), ConfigError> {
                $(
                    if let Some(value) = &self.$name {
                        Check::check(&$rule, value).map_err(|reason| invalid(stringify!($name), reason))?;
                    }
                )*
                Ok(())
            }

            /// The settings a reload may not change that differ in `new`.
            pub fn fixed_changes(&self, new: &Settings) -> Vec<&'static str> {
                let mut changed = Vec::new();
                $(
                    if !$reload && self.$name != new.$name {
                        changed.push(stringify!($name));
                    }
                )*
                changed
            }
        }

        /// Every setting, as declared.
        pub const SETTINGS: &[SettingInfo] = &[$(SettingInfo { name: stringify!($name), default: $default, reloadable: $reload },)*];

        /// The documented default of each setting, where it is a value
        /// (None where it is described: "number of CPUs", "not set"): the
        /// default the server uses is the one `--help` shows.
        pub struct Defaults;

        impl Defaults {
            $(
                #[allow(missing_docs)]
                pub fn $name() -> Option<$ty> {
                    $default.parse().ok()
                }
            )*
        }
    };
}

/// What `SETTINGS` says of one setting.
#[derive(Debug, Clone, Copy)]
pub struct SettingInfo {
    /// The name in the file (the flag is the same with dashes).
    pub name: &'static str,
    /// The default, as documented.
    pub default: &'static str,
    /// Whether a reload (SIGHUP) may change it.
    pub reloadable: bool,
}

/// A rule a setting's value must follow (the `check` of its row).
pub trait Check<T: ?Sized> {
    /// Why `value` breaks the rule, if it does.
    fn check(&self, value: &T) -> Result<(), String>;
}

/// Any value of the type will do.
pub struct Any;

impl<T: ?Sized> Check<T> for Any {
    fn check(&self, _: &T) -> Result<(), String> {
        Ok(())
    }
}

/// A number in `min..=max`.
pub struct Range(pub u64, pub u64);

impl Check<u64> for Range {
    fn check(&self, value: &u64) -> Result<(), String> {
        let Range(min, max) = *self;
        if *value < min || *value > max {
            return Err(format!("{value} is outside {min}..={max}"));
        }
        Ok(())
    }
}

/// Text that this function accepts.
pub struct Valid(pub fn(&str) -> Result<(), String>);

impl Check<String> for Valid {
    fn check(&self, value: &String) -> Result<(), String> {
        (self.0)(value)
    }
}

settings! {
    /// Number of worker processes.
    workers: u64, short = 'w', env = "ORDERS_WORKERS", default = "number of CPUs",
        check = Range(1, MAX_WORKERS), reload = true;
    /// Address to listen on, HOST:PORT (port 0 picks a free port).
    bind: String, short = 'b', env = "ORDERS_BIND", value_name = "ADDR", default = "127.0.0.1:8000",
        check = Valid(check_addr), reload = false;
    /// Directory of the embedded store.
    data_dir: PathBuf, env = "ORDERS_DATA_DIR", value_name = "DIR", default = "data",
        check = Any, reload = false;
    /// Coroutine scheduler threads per worker.
    threads: u64, env = "ORDERS_THREADS", default = "1",
        check = Range(1, MAX_THREADS), reload = true;
    /// Coroutine stack size in bytes.
    coroutine_stack_size: u64, env = "ORDERS_COROUTINE_STACK_SIZE", value_name = "BYTES", default = "262144",
        check = Range(MIN_STACK_SIZE, 64 << 20), reload = true;
    /// Largest request body in bytes.
    max_body_size: u64, env = "ORDERS_MAX_BODY_SIZE", value_name = "BYTES", default = "1048576",
        check = Range(1, 1 << 30), reload = true;
    /// Bytes of request bodies one worker holds at once; more bodies wait, then get 503.
    max_buffered_body_bytes: u64, env = "ORDERS_MAX_BUFFERED_BODY_BYTES", value_name = "BYTES",
        default = "67108864, or max_body_size if larger",
        check = Range(1, 1 << 40), reload = true;
    /// Largest `limit` a client may ask for.
    max_page_size: u64, env = "ORDERS_MAX_PAGE_SIZE", value_name = "N", default = "1000",
        check = Range(1, MAX_MAX_PAGE_SIZE), reload = true;
    /// Apply max_page_size to a bare GET /orders too.
    cap_unpaged_list: bool, env = "ORDERS_CAP_UNPAGED_LIST", value_name = "BOOL", default = "false",
        check = Any, reload = true;
    /// Largest response built in memory; a longer list is streamed in chunks of about this size.
    response_buffer_size: u64, env = "ORDERS_RESPONSE_BUFFER_SIZE", value_name = "BYTES",
        formerly = "close-after-response-bytes" / "close_after_response_bytes", default = "262144",
        check = Range(4096, 1 << 30), reload = true;
    /// Largest size the embedded store may grow to, in bytes.
    map_size: u64, env = "ORDERS_MAP_SIZE", value_name = "BYTES", default = "4294967296",
        check = Range(1 << 20, 1 << 44), reload = false;
    /// Deadline of one store operation in milliseconds.
    store_timeout_ms: u64, env = "ORDERS_STORE_TIMEOUT_MS", value_name = "MS", default = "2000",
        check = Range(10, 600_000), reload = true;
    /// Seconds a graceful stop may take.
    graceful_timeout: u64, env = "ORDERS_GRACEFUL_TIMEOUT", value_name = "SECONDS", default = "30",
        check = Range(0, 3600), reload = true;
    /// Log level: error, warn, info, debug.
    log_level: String, env = "ORDERS_LOG_LEVEL", value_name = "LEVEL", default = "info",
        check = Valid(check_log_level), reload = true;
    /// Seconds a new worker may take to report ready before it is killed (a
    /// boot failure).
    boot_timeout: u64, env = "ORDERS_BOOT_TIMEOUT", value_name = "SECONDS", default = "30",
        check = SECONDS, reload = true;
    /// Seconds without a heartbeat before a worker is killed and replaced.
    timeout: u64, short = 't', env = "ORDERS_TIMEOUT", value_name = "SECONDS", default = "30",
        check = SECONDS, reload = true;
    /// Seconds an idle keep-alive connection is kept open.
    keepalive: u64, env = "ORDERS_KEEPALIVE", value_name = "SECONDS", default = "75",
        check = SECONDS, reload = true;
    /// Seconds a client may take to send one request, or stay blocked reading a response.
    client_timeout: u64, env = "ORDERS_CLIENT_TIMEOUT", value_name = "SECONDS", default = "30",
        check = SECONDS, reload = true;
    /// Fewest bytes a second a request body must bring over each period of
    /// body_rate_grace, else it is cut with 408 (0: no minimum).
    min_body_rate: u64, env = "ORDERS_MIN_BODY_RATE", value_name = "BYTES",
        default = "240",
        check = Range(0, 1 << 30), reload = true;
    /// Seconds over which a body's rate is measured; the first period after
    /// it starts is its grace.
    body_rate_grace: u64, env = "ORDERS_BODY_RATE_GRACE", value_name = "SECONDS",
        default = "5",
        check = SECONDS, reload = true;
    /// Recycle a worker after this many requests; 0 = never.
    max_requests: u64, env = "ORDERS_MAX_REQUESTS", value_name = "N", default = "0",
        check = Range(0, MAX_REQUESTS), reload = true;
    /// Add up to this many requests at random to max_requests, per worker.
    max_requests_jitter: u64, env = "ORDERS_MAX_REQUESTS_JITTER", value_name = "N", default = "0",
        check = Range(0, MAX_REQUESTS), reload = true;
    /// Most connections per worker; at it, the longest-idle ones are closed to
    /// admit new ones, and a new one gets 503 only when every connection is in a request.
    worker_connections: u64, env = "ORDERS_WORKER_CONNECTIONS", value_name = "N",
        default = "the open-file limit less 64",
        check = Range(1, u64::MAX), reload = true;
    /// Longest request line in bytes.
    limit_request_line: u64, env = "ORDERS_LIMIT_REQUEST_LINE", value_name = "BYTES", default = "4094",
        check = Range(16, 1 << 20), reload = true;
    /// Most request headers.
    limit_request_fields: u64, env = "ORDERS_LIMIT_REQUEST_FIELDS", value_name = "N", default = "100",
        check = Range(1, MAX_REQUEST_FIELDS), reload = true;
    /// Longest request header line in bytes.
    limit_request_field_size: u64, env = "ORDERS_LIMIT_REQUEST_FIELD_SIZE", value_name = "BYTES", default = "8190",
        check = Range(16, 1 << 20), reload = true;
    /// Accept backlog of each worker's listener.
    backlog: u64, env = "ORDERS_BACKLOG", value_name = "N", default = "2048",
        check = Range(1, 1 << 20), reload = true;
    /// Serve as this user after binding (the master keeps its own).
    user: String, short = 'u', env = "ORDERS_USER", value_name = "USER", default = "not set",
        check = Valid(check_not_empty), reload = false;
    /// Serve as this group after binding.
    group: String, short = 'g', env = "ORDERS_GROUP", value_name = "GROUP", default = "the user's group",
        check = Valid(check_not_empty), reload = false;
    /// Write the master's pid to this file.
    pid: PathBuf, short = 'p', env = "ORDERS_PID", value_name = "FILE", default = "not set",
        check = Any, reload = false;
    /// Raise the open-file limit to this at start.
    rlimit_nofile: u64, env = "ORDERS_RLIMIT_NOFILE", value_name = "N", default = "the hard limit",
        check = Range(1, u64::MAX), reload = false;
    /// Write logs to this file instead of stderr (reopened on SIGUSR1).
    log_file: PathBuf, env = "ORDERS_LOG_FILE", value_name = "FILE", default = "standard error",
        check = Any, reload = false;
    /// Store orders in MongoDB at this URI instead of the embedded store
    /// (also read from ORDERS_MONGO_URI, then MONGO_URI). Prefer the
    /// environment: a password on the command line is visible to every
    /// local user.
    mongo_uri: String, value_name = "URI", default = "unset: the embedded store",
        check = Any, reload = false;
    /// MongoDB database, when the URI names none.
    mongo_database: String, env = "ORDERS_MONGO_DATABASE", value_name = "NAME", default = "orders_db",
        check = Valid(check_database_name), reload = false;
    /// File of API tokens (`name:token` per line): writes then need
    /// `Authorization: Bearer <token>`. Read again on reload.
    api_tokens_file: PathBuf, env = "ORDERS_API_TOKENS_FILE", value_name = "FILE", default = "not set",
        check = Any, reload = true;
    /// With api_tokens_file: reads need a token too.
    api_tokens_for_reads: bool, env = "ORDERS_API_TOKENS_FOR_READS", value_name = "BOOL", default = "false",
        check = Any, reload = true;
    /// MongoDB collection.
    mongo_collection: String, env = "ORDERS_MONGO_COLLECTION", value_name = "NAME", default = "orders",
        check = Valid(check_collection_name), reload = false;
    /// Serve Prometheus metrics (`GET /metrics`) of the whole server on
    /// this address; never the API's own address.
    metrics_bind: String, env = "ORDERS_METRICS_BIND", value_name = "ADDR", default = "not set: no metrics endpoint",
        check = Valid(check_addr), reload = false;
    /// Write an access log line per request to this file (`-`: standard
    /// output); reopened on SIGUSR1.
    access_log: String, env = "ORDERS_ACCESS_LOG", value_name = "FILE", default = "not set: no access log",
        check = Any, reload = true;
    /// The access log's format: gunicorn's atoms (`%(h)s`, `%(r)s`, ...,
    /// `%(rid)s` the request id) or `json`.
    access_log_format: String, env = "ORDERS_ACCESS_LOG_FORMAT", value_name = "FORMAT",
        default = r#"%(h)s %(l)s %(u)s %(t)s "%(r)s" %(s)s %(b)s "%(f)s" "%(a)s" %(L)s %(rid)s"#,
        check = Valid(check_access_log_format), reload = true;
    /// Peers trusted to name the client in X-Forwarded-For (comma-separated
    /// addresses and networks, or `*`).
    forwarded_allow_ips: String, env = "ORDERS_FORWARDED_ALLOW_IPS", value_name = "IPS", default = "127.0.0.1",
        check = Valid(check_peers), reload = true;
    /// Expect the PROXY protocol (versions 1 and 2, as HAProxy and cloud
    /// balancers send it) on every connection: its client address is the
    /// one logged and trusted. A connection without a valid header, or from
    /// a peer not in proxy_allow_ips, is closed.
    proxy_protocol: bool, env = "ORDERS_PROXY_PROTOCOL", value_name = "BOOL", default = "false",
        check = Any, reload = true;
    /// Peers allowed to send the PROXY protocol (comma-separated addresses
    /// and networks, or `*`).
    proxy_allow_ips: String, env = "ORDERS_PROXY_ALLOW_IPS", value_name = "IPS", default = "127.0.0.1,::1",
        check = Valid(check_peers), reload = true;
    /// TLS certificate chain (PEM: the server's certificate, then its
    /// intermediates); with keyfile, the server speaks HTTPS only. Read
    /// again on reload.
    certfile: PathBuf, env = "ORDERS_CERTFILE", value_name = "FILE", default = "not set: plain HTTP",
        check = Any, reload = true;
    /// TLS private key (PEM); refused if other users may read or write it.
    keyfile: PathBuf, env = "ORDERS_KEYFILE", value_name = "FILE", default = "not set",
        check = Any, reload = true;
    /// CA certificates (PEM) that sign the client certificates cert_reqs asks for.
    ca_certs: PathBuf, env = "ORDERS_CA_CERTS", value_name = "FILE", default = "not set",
        check = Any, reload = true;
    /// Client certificates: 0 not asked for, 1 optional, 2 required
    /// (gunicorn's cert_reqs).
    cert_reqs: u64, env = "ORDERS_CERT_REQS", value_name = "N", default = "0",
        check = Range(0, 2), reload = true;
}

/// Commands other than serving.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum Command {
    /// Compare the running kernel's settings with tuning/sysctl.d/99-orders-server.conf.
    Check {
        /// Where the kernel's settings are read.
        #[arg(long, default_value = "/proc/sys", value_name = "DIR")]
        proc_sys: PathBuf,
    },
    /// Read and check the configuration (file, environment, flags) as a
    /// start would, print `configuration ok`, and exit: 0 when it is valid.
    /// A binary upgrade runs the new file this way before switching to it.
    CheckConfig,
    /// Copy the embedded store (data_dir) into DIR, compacted and
    /// consistent, while servers keep running: `orders-server --data-dir
    /// DIR` serves the copy.
    Backup {
        /// Where the copy goes (a new or empty directory).
        #[arg(value_name = "DIR")]
        dest: PathBuf,
    },
}

/// A setting that cannot be used, named for the operator.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The config file could not be read.
    #[error("config file {}", .0.display())]
    ReadFile(PathBuf, #[source] std::io::Error),
    /// The config file is not valid TOML or has an unknown key. The TOML
    /// error's short message is kept (its full form quotes the file over
    /// several lines; errors are one line).
    #[error("config file {}: {}", .0.display(), .1.trim().replace('\n', " "))]
    ParseFile(PathBuf, String),
    /// A setting has a value outside its range.
    #[error("setting {name}: {reason}")]
    Invalid { name: &'static str, reason: String },
    /// The API tokens file cannot be used.
    #[error(transparent)]
    Tokens(#[from] TokensError),
    /// The TLS files cannot be used.
    #[error(transparent)]
    Tls(#[from] TlsError),
}

fn invalid(name: &'static str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        name,
        reason: reason.into(),
    }
}

// The rules of the table's rows that are functions.

/// An address the server can resolve: HOST:PORT.
fn check_addr(s: &str) -> Result<(), String> {
    let (host, port) = s
        .rsplit_once(':')
        .ok_or_else(|| format!("{s:?} is not a HOST:PORT address"))?;
    if host.is_empty() || port.parse::<u16>().is_err() {
        return Err(format!("{s:?} is not a HOST:PORT address"));
    }
    Ok(())
}

fn check_log_level(s: &str) -> Result<(), String> {
    s.parse::<LogLevel>().map(drop)
}

fn check_not_empty(s: &str) -> Result<(), String> {
    match s.is_empty() {
        true => Err("must not be empty".into()),
        false => Ok(()),
    }
}

/// A MongoDB database name (the setting's, or the one a URI names).
fn check_database_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.contains(['/', '.', ' ', '"', '$', '\\']) {
        return Err(format!("{name:?} is not a valid database name"));
    }
    Ok(())
}

fn check_collection_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.starts_with("system.") || name.contains('$') {
        return Err(format!("{name:?} is not a valid collection name"));
    }
    Ok(())
}

fn check_access_log_format(format: &str) -> Result<(), String> {
    AccessLog::new(format, Peers::Any)
        .map(drop)
        .map_err(|e| e.to_string())
}

/// A list of peers (forwarded_allow_ips, proxy_allow_ips).
fn check_peers(ips: &str) -> Result<(), String> {
    Peers::parse(ips).map(drop)
}

/// Where the mongo_uri setting came from (a password on the command line
/// is visible in the process list: the server warns about it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UriSource {
    CommandLine,
    Environment,
    File,
}

/// The resolved, validated configuration, by concern.
#[derive(Debug, Clone)]
pub struct Config {
    /// The processes: how many, where, as whom, for how long.
    pub process: ProcessConfig,
    /// What the HTTP layer is told.
    pub http: HttpConfig,
    /// Where orders are stored.
    pub store: StoreConfig,
    /// Where mongo_uri came from, when set.
    pub mongo_uri_source: Option<UriSource>,
    /// The config file the settings came from, if any.
    pub config_file: Option<PathBuf>,
    /// The settings as given (before defaults): what a reload compares.
    pub settings: Settings,
}

/// The settings of the master and its worker processes.
#[derive(Debug, Clone)]
pub struct ProcessConfig {
    /// Worker processes.
    pub workers: usize,
    /// The address as the operator wrote it (port 0 allowed).
    pub bind: SocketAddr,
    /// Where `GET /metrics` is served, if anywhere.
    pub metrics_bind: Option<SocketAddr>,
    /// may scheduler threads per worker.
    pub threads: usize,
    /// Coroutine stack size in bytes.
    pub coroutine_stack_size: usize,
    /// Time a graceful stop may take.
    pub graceful_timeout: Duration,
    /// Heartbeat timeout of a worker.
    pub timeout: Duration,
    /// Time a new worker may take to report ready.
    pub boot_timeout: Duration,
    /// Recycle a worker after this many requests (0: never).
    pub max_requests: u64,
    /// Random extra requests per worker before recycling.
    pub max_requests_jitter: u64,
    /// Unprivileged user and group to serve as.
    pub user: Option<String>,
    /// See `user`.
    pub group: Option<String>,
    /// Pid file of the master.
    pub pid: Option<PathBuf>,
    /// Open-file limit to raise to (None: the hard limit).
    pub rlimit_nofile: Option<u64>,
    /// Log verbosity.
    pub log_level: LogLevel,
    /// Log file (None: stderr).
    pub log_file: Option<PathBuf>,
}

impl Config {
    /// Reads the file named by `cli.config` and the environment, then
    /// resolves.
    pub fn load(cli: Settings) -> Result<Config, ConfigError> {
        let file = match &cli.config {
            Some(path) => read_file(path)?,
            None => Settings::default(),
        };
        let env = Environment::read(&cli, &file);
        resolve(cli, file, env)
    }
}

/// Reads and parses a config file.
pub fn read_file(path: &Path) -> Result<Settings, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError::ReadFile(path.into(), e))?;
    toml::from_str(&text).map_err(|e| ConfigError::ParseFile(path.into(), e.message().to_string()))
}

/// The tokens file as read: its text and mode, or why it could not be.
pub type TokensRead = Result<(String, u32), std::sync::Arc<std::io::Error>>;
/// A file as read: its bytes and mode, or why it could not be.
pub type FileRead = Result<(Vec<u8>, u32), std::sync::Arc<std::io::Error>>;

/// The TLS files named by the settings, as read.
#[derive(Debug, Default)]
pub struct TlsRead {
    pub cert: Option<(PathBuf, FileRead)>,
    pub key: Option<(PathBuf, FileRead)>,
    pub ca: Option<(PathBuf, FileRead)>,
}

/// What the configuration depends on besides the settings: read before
/// [`resolve`], so that resolving is a pure function.
#[derive(Debug, Default)]
pub struct Environment {
    /// ORDERS_MONGO_URI, else the seed's MONGO_URI.
    pub mongo_uri: Option<String>,
    /// The CPUs this process may run on (the default of `workers`).
    pub cpus: u64,
    /// The hard open-file limit (bounds `worker_connections`).
    pub hard_nofile: u64,
    /// The API tokens file's text and mode, when one is named (read errors
    /// kept).
    pub tokens_file: Option<(PathBuf, TokensRead)>,
    /// The TLS files, when named.
    pub tls: TlsRead,
}

impl Environment {
    /// Reads the environment the merged `cli` over `file` settings need.
    pub fn read(cli: &Settings, file: &Settings) -> Environment {
        let tokens_path = cli
            .api_tokens_file
            .as_ref()
            .or(file.api_tokens_file.as_ref());
        Environment {
            mongo_uri: std::env::var(MONGO_URI_ENV)
                .ok()
                .or_else(|| std::env::var(SEED_MONGO_URI_ENV).ok()),
            cpus: std::thread::available_parallelism().map_or(1, |n| n.get() as u64),
            hard_nofile: hard_nofile_limit(),
            tokens_file: tokens_path.map(|p| (p.clone(), read_tokens_file(p))),
            tls: TlsRead {
                cert: read_named(cli.certfile.as_ref().or(file.certfile.as_ref())),
                key: read_named(cli.keyfile.as_ref().or(file.keyfile.as_ref())),
                ca: read_named(cli.ca_certs.as_ref().or(file.ca_certs.as_ref())),
            },
        }
    }
}

/// The file at `path`, if one is named, as read.
fn read_named(path: Option<&PathBuf>) -> Option<(PathBuf, FileRead)> {
    path.map(|p| (p.clone(), read_with_mode(p)))
}

/// The tokens file's text and mode, from one open file (so both are the
/// same file's, whatever is renamed meanwhile).
fn read_tokens_file(path: &Path) -> TokensRead {
    let (bytes, mode) = read_with_mode(path)?;
    let text = String::from_utf8(bytes).map_err(|e| {
        std::sync::Arc::new(std::io::Error::new(std::io::ErrorKind::InvalidData, e))
    })?;
    Ok((text, mode))
}

/// A file's bytes and mode, from one open file (so both are the same
/// file's, whatever is renamed meanwhile).
fn read_with_mode(path: &Path) -> FileRead {
    use std::io::Read;
    use std::os::unix::fs::PermissionsExt;
    let read = std::fs::File::open(path).and_then(|mut f| {
        let mode = f.metadata()?.permissions().mode();
        let mut bytes = Vec::new();
        f.read_to_end(&mut bytes)?;
        Ok((bytes, mode))
    });
    read.map_err(std::sync::Arc::new)
}

/// Merges CLI/env values over file values over defaults, checks each
/// against its rule, and resolves the derived defaults and the rules
/// between settings. Reads nothing (`env` holds what it depends on) but
/// the address of a host name given as `bind` or `metrics_bind`, which
/// only a lookup can tell.
pub fn resolve(cli: Settings, file: Settings, env: Environment) -> Result<Config, ConfigError> {
    let (mongo_uri, mongo_uri_source) =
        match (cli.mongo_uri.clone(), env.mongo_uri, file.mongo_uri.clone()) {
            (Some(u), _, _) => (Some(u), Some(UriSource::CommandLine)),
            (None, Some(u), _) => (Some(u), Some(UriSource::Environment)),
            (None, None, Some(u)) => (Some(u), Some(UriSource::File)),
            (None, None, None) => (None, None),
        };
    let settings = cli.or(file);
    settings.check()?;
    let s = settings.clone();
    let access_log = access_log(&s);
    let fd_budget = s
        .rlimit_nofile
        .unwrap_or(env.hard_nofile)
        .saturating_sub(RESERVED_FDS)
        .max(1);
    let proxy_protocol = proxy_peers(&s)?;
    let process = ProcessConfig {
        workers: s.workers.unwrap_or(env.cpus.clamp(1, MAX_WORKERS)) as usize,
        bind: parse_bind("bind", &given(s.bind, Defaults::bind))?,
        metrics_bind: match s.metrics_bind.as_deref() {
            Some(m) => Some(parse_bind("metrics_bind", m)?),
            None => None,
        },
        threads: given(s.threads, Defaults::threads) as usize,
        coroutine_stack_size: given(s.coroutine_stack_size, Defaults::coroutine_stack_size)
            as usize,
        graceful_timeout: Duration::from_secs(given(
            s.graceful_timeout,
            Defaults::graceful_timeout,
        )),
        timeout: Duration::from_secs(given(s.timeout, Defaults::timeout)),
        boot_timeout: Duration::from_secs(given(s.boot_timeout, Defaults::boot_timeout)),
        max_requests: given(s.max_requests, Defaults::max_requests),
        max_requests_jitter: given(s.max_requests_jitter, Defaults::max_requests_jitter),
        user: s.user,
        group: s.group,
        pid: s.pid,
        rlimit_nofile: s.rlimit_nofile,
        log_level: given(s.log_level, Defaults::log_level)
            .parse()
            .map_err(|reason: String| invalid("log_level", reason))?,
        log_file: s.log_file,
    };
    let max_body_size = given(s.max_body_size, Defaults::max_body_size);
    let body_memory = s
        .max_buffered_body_bytes
        .unwrap_or(BODY_BUDGET_FLOOR.max(max_body_size));
    if body_memory < max_body_size {
        return Err(invalid(
            "max_buffered_body_bytes",
            format!("{body_memory} is less than max_body_size ({max_body_size})"),
        ));
    }
    let worker_connections = s.worker_connections.unwrap_or(fd_budget);
    if worker_connections > fd_budget {
        return Err(invalid(
            "worker_connections",
            format!("{worker_connections} is more than the open-file limit less {RESERVED_FDS} ({fd_budget})"),
        ));
    }
    let http = HttpConfig {
        limits: HttpLimits {
            head: HeadLimits {
                line: given(s.limit_request_line, Defaults::limit_request_line) as usize,
                fields: given(s.limit_request_fields, Defaults::limit_request_fields) as usize,
                field_size: given(
                    s.limit_request_field_size,
                    Defaults::limit_request_field_size,
                ) as usize,
                max_body: max_body_size,
            },
            list: ListLimits {
                max_page_size: given(s.max_page_size, Defaults::max_page_size) as usize,
                cap_unpaged_list: given(s.cap_unpaged_list, Defaults::cap_unpaged_list),
            },
            response_buffer: given(s.response_buffer_size, Defaults::response_buffer_size) as usize,
            worker_connections: worker_connections as usize,
            max_buffered_body_bytes: body_memory as usize,
        },
        sweep: SweepPolicy {
            keepalive: Duration::from_secs(given(s.keepalive, Defaults::keepalive)),
            client_timeout: Duration::from_secs(given(s.client_timeout, Defaults::client_timeout)),
            min_body_rate: given(s.min_body_rate, Defaults::min_body_rate),
            body_rate_grace: Duration::from_secs(given(
                s.body_rate_grace,
                Defaults::body_rate_grace,
            )),
        },
        backlog: given(s.backlog, Defaults::backlog) as i32,
        tls: tls(env.tls, given(s.cert_reqs, Defaults::cert_reqs))?,
        proxy_protocol,
        access_log,
        tokens: tokens(
            env.tokens_file,
            given(s.api_tokens_for_reads, Defaults::api_tokens_for_reads),
        )?,
    };
    let store = StoreConfig {
        backend: match mongo_uri.filter(|u| !u.is_empty()) {
            Some(uri) => Backend::Mongo(mongo_target(uri, s.mongo_database, s.mongo_collection)?),
            None => Backend::Embedded,
        },
        data_dir: given(s.data_dir, Defaults::data_dir),
        map_size: given(s.map_size, Defaults::map_size) as usize,
        timeout: Duration::from_millis(given(s.store_timeout_ms, Defaults::store_timeout_ms)),
    };
    if process
        .metrics_bind
        .is_some_and(|m| clashes(m, process.bind))
    {
        return Err(invalid(
            "metrics_bind",
            "must not be the API's address (bind): metrics are internals",
        ));
    }
    if process.group.is_some() && process.user.is_none() {
        return Err(invalid("group", "needs user as well"));
    }
    if http.tokens.is_none() && s.api_tokens_for_reads == Some(true) {
        return Err(invalid("api_tokens_for_reads", "needs api_tokens_file"));
    }
    Ok(Config {
        process,
        http,
        store,
        mongo_uri_source,
        config_file: settings.config.clone(),
        settings,
    })
}

/// The API tokens, from the file's text [`Environment::read`] read. Like
/// ssh with a private key, a file that other users may read or write is
/// refused: its tokens may be known already.
fn tokens(
    file: Option<(PathBuf, TokensRead)>,
    for_reads: bool,
) -> Result<Option<Tokens>, ConfigError> {
    let Some((path, read)) = file else {
        return Ok(None);
    };
    let (text, mode) = read.map_err(|e| {
        let e = std::io::Error::new(e.kind(), e.to_string());
        TokensError::Read(path.clone(), e)
    })?;
    if mode & 0o077 != 0 {
        return Err(TokensError::Exposed(path, mode & 0o777).into());
    }
    Ok(Some(Tokens::parse(&path, &text, for_reads)?))
}

/// With the PROXY protocol on, the peers allowed to send it (at least
/// one: an empty list would close every connection).
fn proxy_peers(s: &Settings) -> Result<Option<Peers>, ConfigError> {
    if !given(s.proxy_protocol, Defaults::proxy_protocol) {
        return Ok(None);
    }
    let allowed = given(s.proxy_allow_ips.clone(), Defaults::proxy_allow_ips);
    match Peers::parse(&allowed).expect("proxy_allow_ips follows its rule") {
        Peers::Only(list) if list.is_empty() => Err(invalid(
            "proxy_allow_ips",
            "lists no peer: with proxy_protocol on, every connection would be closed",
        )),
        peers => Ok(Some(peers)),
    }
}

/// The TLS configuration, from the files [`Environment::read`] read: none
/// without certfile; keyfile comes with it; like ssh with a private key, a
/// key file that other users may read or write is refused.
fn tls(files: TlsRead, cert_reqs: u64) -> Result<Option<Arc<rustls::ServerConfig>>, ConfigError> {
    let TlsRead { cert, key, ca } = files;
    let (cert, key) = match (cert, key) {
        (None, None) if ca.is_none() && cert_reqs == 0 => return Ok(None),
        (None, None) => return Err(invalid("ca_certs", "needs certfile and keyfile")),
        (Some(_), None) => return Err(invalid("certfile", "needs keyfile")),
        (None, Some(_)) => return Err(invalid("keyfile", "needs certfile")),
        (Some(cert), Some(key)) => (cert, key),
    };
    let key = loaded(key)?;
    if key.2 & 0o077 != 0 {
        return Err(TlsError::KeyExposed {
            path: key.0,
            mode: key.2 & 0o777,
        }
        .into());
    }
    let client_certs = ClientCerts::from_number(cert_reqs).expect("cert_reqs follows its rule");
    let files = TlsFiles {
        cert: loaded(cert).map(|(path, bytes, _)| (path, bytes))?,
        key: (key.0, key.1),
        ca: ca
            .map(loaded)
            .transpose()?
            .map(|(path, bytes, _)| (path, bytes)),
        client_certs,
    };
    Ok(Some(crate::tls::server_config(&files)?))
}

/// A file that was read, or why it could not be.
fn loaded((path, read): (PathBuf, FileRead)) -> Result<(PathBuf, Vec<u8>, u32), TlsError> {
    match read {
        Ok((bytes, mode)) => Ok((path, bytes, mode)),
        Err(e) => Err(TlsError::Read {
            path,
            source: std::io::Error::new(e.kind(), e.to_string()),
        }),
    }
}

/// Whether two listening addresses would take the same connections: the
/// same port (not 0) on the same IP, or with either IP unspecified.
fn clashes(a: SocketAddr, b: SocketAddr) -> bool {
    a.port() == b.port()
        && a.port() != 0
        && (a.ip() == b.ip() || a.ip().is_unspecified() || b.ip().is_unspecified())
}

/// The access log's settings (their rules are checked already).
fn access_log(s: &Settings) -> Option<AccessLogConfig> {
    let target = s.access_log.as_deref().filter(|t| !t.is_empty())?;
    let format = given(s.access_log_format.clone(), Defaults::access_log_format);
    let allowed = given(s.forwarded_allow_ips.clone(), Defaults::forwarded_allow_ips);
    let trusted = Peers::parse(&allowed).expect("forwarded_allow_ips follows its rule");
    let log = AccessLog::new(&format, trusted).expect("access_log_format follows its rule");
    let path = (target != "-").then(|| PathBuf::from(target));
    Some(AccessLogConfig { path, log })
}

/// Validates a MongoDB URI (synchronously, before any fork) and settles the
/// database: the URI's path, or `mongo_database`, never two different ones.
fn mongo_target(
    uri: String,
    database: Option<String>,
    collection: Option<String>,
) -> Result<MongoTarget, ConfigError> {
    let parsed = mongodb::options::ConnectionString::parse(&uri).map_err(|e| {
        invalid(
            "mongo_uri",
            format!(
                "{} is not a valid MongoDB URI: {}",
                redact_uri(&uri),
                redact_uri(&e.to_string())
            ),
        )
    })?;
    let database = match (parsed.default_database, database) {
        (Some(a), Some(b)) if a != b => {
            return Err(invalid(
                "mongo_database",
                format!("{b:?} conflicts with the database {a:?} named in mongo_uri"),
            ))
        }
        (Some(a), _) => a,
        (None, Some(b)) => b,
        (None, None) => given(None, Defaults::mongo_database),
    };
    check_database_name(&database).map_err(|reason| invalid("mongo_database", reason))?;
    Ok(MongoTarget {
        uri,
        database,
        collection: given(collection, Defaults::mongo_collection),
    })
}

/// Whether a MongoDB URI carries a password.
pub fn uri_has_password(uri: &str) -> bool {
    mongodb::options::ConnectionString::parse(uri)
        .ok()
        .and_then(|c| c.credential)
        .is_some_and(|c| c.password.is_some())
}

/// The value given, or the setting's documented default.
fn given<T>(value: Option<T>, documented: fn() -> Option<T>) -> T {
    value
        .or_else(documented)
        .expect("every setting given here documents a value as its default")
}

/// The hard open-file limit of this process.
pub fn hard_nofile_limit() -> u64 {
    nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
        .map(|(_, hard)| hard)
        .unwrap_or(1024)
}

/// Resolves a HOST:PORT setting to its first address.
fn parse_bind(name: &'static str, s: &str) -> Result<SocketAddr, ConfigError> {
    let mut addrs = s
        .to_socket_addrs()
        .map_err(|e| invalid(name, format!("{s:?} is not a HOST:PORT address ({e})")))?;
    addrs
        .next()
        .ok_or_else(|| invalid(name, format!("{s:?} resolves to no address")))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An environment with no MongoDB URI and no tokens file.
    fn env() -> Environment {
        Environment {
            cpus: 2,
            hard_nofile: 1 << 20,
            ..Environment::default()
        }
    }

    #[test]
    fn cli_beats_file_beats_default() {
        let cli = Settings {
            workers: Some(3),
            ..Settings::default()
        };
        let file = Settings {
            workers: Some(5),
            threads: Some(2),
            ..Settings::default()
        };
        let c = resolve(cli, file, env()).unwrap();
        assert_eq!(c.process.workers, 3);
        assert_eq!(c.process.threads, 2);
        assert_eq!(
            c.http.limits.list.max_page_size as u64,
            Defaults::max_page_size().unwrap()
        );
    }

    #[test]
    fn bad_values_name_the_setting() {
        let cli = Settings {
            workers: Some(0),
            ..Settings::default()
        };
        let e = resolve(cli, Settings::default(), env())
            .unwrap_err()
            .to_string();
        assert!(e.contains("workers"), "{e}");
        let cli = Settings {
            bind: Some("nonsense".into()),
            ..Settings::default()
        };
        let e = resolve(cli, Settings::default(), env())
            .unwrap_err()
            .to_string();
        assert!(e.contains("bind"), "{e}");
    }

    /// What resolve depends on comes in `Environment`: the URI and the
    /// tokens file's text, the CPUs and the open-file limit.
    #[test]
    fn resolve_depends_only_on_what_it_is_given() {
        let given = Environment {
            mongo_uri: Some("mongodb://db.example:27017/shop".into()),
            cpus: 6,
            hard_nofile: 1064,
            tokens_file: Some(("t".into(), Ok(("ci:0123456789abcdef0123".into(), 0o100600)))),
            tls: TlsRead::default(),
        };
        let c = resolve(Settings::default(), Settings::default(), given).unwrap();
        assert_eq!(c.process.workers, 6);
        assert_eq!(c.http.limits.worker_connections, 1000);
        assert_eq!(c.mongo_uri_source, Some(UriSource::Environment));
        assert!(matches!(&c.store.backend, Backend::Mongo(t) if t.database == "shop"));
        assert!(c.http.tokens.is_some());
        let too_many = Settings {
            worker_connections: Some(1001),
            ..Settings::default()
        };
        let small = Environment {
            hard_nofile: 1064,
            ..env()
        };
        let e = resolve(too_many, Settings::default(), small).unwrap_err();
        assert!(e.to_string().contains("worker_connections"), "{e}");
        let exposed = Environment {
            tokens_file: Some((
                "/etc/t".into(),
                Ok(("ci:0123456789abcdef0123".into(), 0o100644)),
            )),
            ..env()
        };
        let e = resolve(Settings::default(), Settings::default(), exposed).unwrap_err();
        assert!(e.to_string().contains("chmod 600 /etc/t"), "{e}");
    }

    /// Each row's rule is checked where the value is given, before any
    /// default or derived value: a file value breaking it is refused.
    #[test]
    fn every_rule_is_checked_for_given_values() {
        for (line, name) in [
            ("threads = 0", "threads"),
            ("timeout = 0", "timeout"),
            ("log_level = \"loud\"", "log_level"),
            ("bind = \"nope\"", "bind"),
            ("metrics_bind = \"1.2.3.4\"", "metrics_bind"),
            ("mongo_collection = \"system.x\"", "mongo_collection"),
            ("access_log_format = \"%(\"", "access_log_format"),
            (
                "forwarded_allow_ips = \"10.0.0.300\"",
                "forwarded_allow_ips",
            ),
            ("user = \"\"", "user"),
        ] {
            let file: Settings = toml::from_str(line).unwrap();
            let e = resolve(Settings::default(), file, env())
                .unwrap_err()
                .to_string();
            assert!(e.starts_with(&format!("setting {name}: ")), "{line}: {e}");
        }
    }

    #[test]
    fn mongo_database_comes_from_the_uri_or_the_setting() {
        let t = mongo_target("mongodb://h:27017/orders_db".into(), None, None).unwrap();
        assert_eq!(
            (t.database.as_str(), t.collection.as_str()),
            ("orders_db", "orders")
        );
        let t = mongo_target("mongodb://h".into(), Some("shop".into()), Some("o".into())).unwrap();
        assert_eq!((t.database.as_str(), t.collection.as_str()), ("shop", "o"));
        let e = mongo_target("mongodb://h/a".into(), Some("b".into()), None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("mongo_database"), "{e}");
        let e = mongo_target("mongodb://u:secret@h:notaport/a".into(), None, None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("mongo_uri") && !e.contains("secret"), "{e}");
        assert!(uri_has_password("mongodb://u:p@h/db"));
        assert!(!uri_has_password("mongodb://h/db"));
    }

    /// Every setting is documented in conf/orders-server.toml: uncommenting
    /// each `# key = value` line there gives a file the server accepts, and
    /// every declared setting appears.
    #[test]
    fn the_shipped_config_documents_every_setting() {
        let shipped = include_str!("../conf/orders-server.toml");
        let mut seen = std::collections::BTreeMap::new();
        for line in shipped.lines() {
            let Some(rest) = line.strip_prefix("# ") else {
                continue;
            };
            let Some((key, _)) = rest.split_once(" = ") else {
                continue;
            };
            if key.chars().all(|c| c.is_ascii_lowercase() || c == '_') {
                seen.insert(key.to_string(), rest.to_string());
            }
        }
        let file: String = seen.values().map(|l| format!("{l}\n")).collect();
        let parsed: Settings = toml::from_str(&file).unwrap_or_else(|e| panic!("{e}\n{file}"));
        let parsed = format!("{parsed:?}");
        assert!(SETTINGS.len() > 25);
        for setting in SETTINGS {
            assert!(
                seen.contains_key(setting.name),
                "{} is not documented in conf/orders-server.toml",
                setting.name
            );
            assert!(
                parsed.contains(&format!("{}: Some(", setting.name)),
                "{} did not parse: {parsed}",
                setting.name
            );
        }
    }

    #[test]
    fn help_shows_every_default_and_the_reload_check_knows_the_fixed_ones() {
        use clap::CommandFactory;
        let help = Settings::command()
            .term_width(0)
            .render_long_help()
            .to_string();
        for setting in SETTINGS {
            let flag = format!("--{}", setting.name.replace('_', "-"));
            assert!(help.contains(&flag), "{flag} missing from --help");
            assert!(
                help.contains(&format!("[default: {}]", setting.default)),
                "{} default missing from --help",
                setting.name
            );
        }
        let old = Settings {
            workers: Some(2),
            bind: Some("127.0.0.1:1".into()),
            ..Settings::default()
        };
        let new = Settings {
            workers: Some(4),
            bind: Some("127.0.0.1:2".into()),
            ..Settings::default()
        };
        assert_eq!(
            old.fixed_changes(&new),
            vec!["bind"],
            "workers may change on reload, bind not"
        );
        let fixed: Vec<&str> = SETTINGS
            .iter()
            .filter(|s| !s.reloadable)
            .map(|s| s.name)
            .collect();
        assert!(
            fixed.contains(&"data_dir") && fixed.contains(&"user") && fixed.contains(&"map_size"),
            "{fixed:?}"
        );
    }

    /// The default a setting documents (in `--help` and SETTINGS) is the
    /// one it gets: setting it to that value changes nothing.
    #[test]
    fn documented_defaults_are_the_defaults() {
        let resolved = |file: Settings| {
            let mut c = resolve(Settings::default(), file, env()).unwrap();
            c.settings = Settings::default();
            format!("{c:?}")
        };
        let base = resolved(Settings::default());
        let mut checked = 0;
        for setting in SETTINGS {
            let d = setting.default;
            let value = if d.parse::<u64>().is_ok() || d == "true" || d == "false" {
                d.to_string()
            } else if !d.contains(' ') {
                format!("{d:?}")
            } else {
                continue; // described, not a value: "number of CPUs", "not set"
            };
            let file: Settings = toml::from_str(&format!("{} = {value}", setting.name)).unwrap();
            assert_eq!(
                resolved(file),
                base,
                "{} documents {d} as its default",
                setting.name
            );
            checked += 1;
        }
        assert!(checked > 20, "{checked}");
    }

    /// The README's configuration table names every flag and variable.
    #[test]
    fn the_readme_lists_every_flag_and_variable() {
        use clap::CommandFactory;
        let readme = include_str!("../README.md");
        for arg in Settings::command().get_arguments() {
            let Some(long) = arg.get_long() else { continue };
            if long == "help" || long == "version" {
                continue;
            }
            assert!(
                readme.contains(&format!("`--{long}`")),
                "README.md does not list --{long}"
            );
            if let Some(env) = arg.get_env() {
                assert!(
                    readme.contains(&format!("`{}`", env.to_string_lossy())),
                    "README.md does not list {env:?}"
                );
            }
        }
    }

    #[test]
    fn the_former_name_of_response_buffer_size_still_works() {
        let file: Settings = toml::from_str("close_after_response_bytes = 8192").unwrap();
        assert_eq!(file.response_buffer_size, Some(8192));
        let cli = <Settings as clap::Parser>::try_parse_from([
            "orders-server",
            "--close-after-response-bytes",
            "8192",
        ])
        .unwrap();
        assert_eq!(cli.response_buffer_size, Some(8192));
    }

    #[test]
    fn unknown_file_key_is_rejected() {
        let e = toml::from_str::<Settings>("wrokers = 2").unwrap_err();
        assert!(e.to_string().contains("wrokers"));
    }
}
