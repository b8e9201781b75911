//! Configuration: raw values from the command line, the environment and a
//! TOML file, merged with precedence CLI > env > file > default, then
//! validated into one resolved [`Config`] that is passed down.
//!
//! Every setting is documented once, in `conf/orders-server.toml`.

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Parser;
use serde::Deserialize;

pub use crate::store::mongo::MongoTarget;

/// Default address, as gunicorn's.
pub const DEFAULT_BIND: &str = "127.0.0.1:8000";
/// Default data directory of the embedded store.
pub const DEFAULT_DATA_DIR: &str = "data";
/// Default request body limit (1 MiB).
pub const DEFAULT_MAX_BODY_SIZE: u64 = 1024 * 1024;
/// Default cap on `limit` in `GET /orders?limit=N`.
pub const DEFAULT_MAX_PAGE_SIZE: u64 = 1000;
/// Default largest response built in memory; a longer list is streamed in
/// chunks of about this size (256 KiB: ~2,000 orders).
pub const DEFAULT_RESPONSE_BUFFER_SIZE: u64 = 256 * 1024;
/// Default bytes of request bodies one worker holds at once (64 MiB: 64
/// bodies of the default largest size).
pub const DEFAULT_MAX_BUFFERED_BODY_BYTES: u64 = 64 * 1024 * 1024;
/// Default LMDB map size: the most the store file may grow to (4 GiB).
pub const DEFAULT_MAP_SIZE: u64 = 4 * 1024 * 1024 * 1024;
/// Default deadline for one store operation.
pub const DEFAULT_STORE_TIMEOUT_MS: u64 = 2000;
/// Default time a graceful stop may take before stragglers are killed.
pub const DEFAULT_GRACEFUL_TIMEOUT_S: u64 = 30;
/// Default coroutine stack size in bytes (may's own default is 32 KiB, which
/// JSON handlers can overflow: an overflow is a segfault, not an error).
pub const DEFAULT_STACK_SIZE: u64 = 256 * 1024;
/// Default MongoDB database (the seed's).
pub const DEFAULT_MONGO_DATABASE: &str = "orders_db";
/// Default MongoDB collection (the seed's).
pub const DEFAULT_MONGO_COLLECTION: &str = "orders";
/// Env var for the MongoDB URI.
pub const MONGO_URI_ENV: &str = "ORDERS_MONGO_URI";
/// The seed's env var for the MongoDB URI, read below ORDERS_MONGO_URI.
pub const SEED_MONGO_URI_ENV: &str = "MONGO_URI";
/// Default worker heartbeat timeout (gunicorn's `timeout`).
pub const DEFAULT_TIMEOUT_S: u64 = 30;
/// Default idle keep-alive time: well above common client idle gaps (nginx
/// uses 75 s; gunicorn's 2 s resets clients that are about to reuse a connection).
pub const DEFAULT_KEEPALIVE_S: u64 = 75;
/// Default time a client may take to send one request (headers and body).
pub const DEFAULT_CLIENT_TIMEOUT_S: u64 = 30;
/// Default longest request line (gunicorn's).
pub const DEFAULT_LIMIT_REQUEST_LINE: u64 = 4094;
/// Default most request headers (gunicorn's).
pub const DEFAULT_LIMIT_REQUEST_FIELDS: u64 = 100;
/// Largest limit_request_fields accepted (gunicorn's).
pub const MAX_REQUEST_FIELDS: u64 = 32768;
/// Default longest header line (gunicorn's).
pub const DEFAULT_LIMIT_REQUEST_FIELD_SIZE: u64 = 8190;
/// Default accept backlog per worker.
pub const DEFAULT_BACKLOG: u64 = 2048;
/// Descriptors a worker keeps for itself (store, pipes, logs) out of the
/// open-file limit when deriving worker_connections.
pub const RESERVED_FDS: u64 = 64;
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

/// Command line. Each option also reads `ORDERS_<NAME>` from the environment.
#[derive(Debug, Clone, Parser, Default)]
#[command(name = "orders-server", version, about = "A prefork HTTP API server for orders", long_about = None)]
pub struct Cli {
    /// A command instead of serving.
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Configuration file (TOML); see conf/orders-server.toml.
    #[arg(short = 'c', long = "config", env = "ORDERS_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Number of worker processes [default: number of CPUs].
    #[arg(short = 'w', long, env = "ORDERS_WORKERS")]
    pub workers: Option<u64>,
    /// Address to listen on, HOST:PORT (port 0 picks a free port) [default: 127.0.0.1:8000].
    #[arg(short = 'b', long, env = "ORDERS_BIND", value_name = "ADDR")]
    pub bind: Option<String>,
    /// Directory of the embedded store [default: data].
    #[arg(long, env = "ORDERS_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Coroutine scheduler threads per worker [default: 1].
    #[arg(long, env = "ORDERS_THREADS")]
    pub threads: Option<u64>,
    /// Coroutine stack size in bytes [default: 262144].
    #[arg(long, env = "ORDERS_COROUTINE_STACK_SIZE", value_name = "BYTES")]
    pub coroutine_stack_size: Option<u64>,
    /// Largest request body in bytes [default: 1048576].
    #[arg(long, env = "ORDERS_MAX_BODY_SIZE", value_name = "BYTES")]
    pub max_body_size: Option<u64>,
    /// Largest `limit` a client may ask for [default: 1000].
    #[arg(long, env = "ORDERS_MAX_PAGE_SIZE", value_name = "N")]
    pub max_page_size: Option<u64>,
    /// Apply max_page_size to a bare GET /orders too [default: false].
    #[arg(long, env = "ORDERS_CAP_UNPAGED_LIST", value_name = "BOOL")]
    pub cap_unpaged_list: Option<bool>,
    /// Largest response built in memory; a longer list is streamed in
    /// chunks of about this size [default: 262144].
    #[arg(long, env = "ORDERS_RESPONSE_BUFFER_SIZE", value_name = "BYTES", alias = "close-after-response-bytes")]
    pub response_buffer_size: Option<u64>,
    /// Bytes of request bodies one worker holds at once; more bodies wait,
    /// then get 503 [default: 67108864, at least max_body_size].
    #[arg(long, env = "ORDERS_MAX_BUFFERED_BODY_BYTES", value_name = "BYTES")]
    pub max_buffered_body_bytes: Option<u64>,
    /// Largest size the embedded store may grow to, in bytes [default: 4 GiB].
    #[arg(long, env = "ORDERS_MAP_SIZE", value_name = "BYTES")]
    pub map_size: Option<u64>,
    /// Deadline of one store operation in milliseconds [default: 2000].
    #[arg(long, env = "ORDERS_STORE_TIMEOUT_MS", value_name = "MS")]
    pub store_timeout_ms: Option<u64>,
    /// Seconds a graceful stop may take [default: 30].
    #[arg(long, env = "ORDERS_GRACEFUL_TIMEOUT", value_name = "SECONDS")]
    pub graceful_timeout: Option<u64>,
    /// Log level: error, warn, info, debug [default: info].
    #[arg(long, env = "ORDERS_LOG_LEVEL", value_name = "LEVEL")]
    pub log_level: Option<String>,
    /// Seconds without a heartbeat before a worker is killed and replaced [default: 30].
    #[arg(short = 't', long, env = "ORDERS_TIMEOUT", value_name = "SECONDS")]
    pub timeout: Option<u64>,
    /// Seconds an idle keep-alive connection is kept open [default: 75].
    #[arg(long, env = "ORDERS_KEEPALIVE", value_name = "SECONDS")]
    pub keepalive: Option<u64>,
    /// Seconds a client may take to send one request [default: 30].
    #[arg(long, env = "ORDERS_CLIENT_TIMEOUT", value_name = "SECONDS")]
    pub client_timeout: Option<u64>,
    /// Recycle a worker after this many requests; 0 = never [default: 0].
    #[arg(long, env = "ORDERS_MAX_REQUESTS", value_name = "N")]
    pub max_requests: Option<u64>,
    /// Add up to this many requests at random to max_requests, per worker [default: 0].
    #[arg(long, env = "ORDERS_MAX_REQUESTS_JITTER", value_name = "N")]
    pub max_requests_jitter: Option<u64>,
    /// Most connections per worker; over it, new ones are closed at once
    /// [default: the open-file limit less a reserve].
    #[arg(long, env = "ORDERS_WORKER_CONNECTIONS", value_name = "N")]
    pub worker_connections: Option<u64>,
    /// Longest request line in bytes [default: 4094].
    #[arg(long, env = "ORDERS_LIMIT_REQUEST_LINE", value_name = "BYTES")]
    pub limit_request_line: Option<u64>,
    /// Most request headers [default: 100].
    #[arg(long, env = "ORDERS_LIMIT_REQUEST_FIELDS", value_name = "N")]
    pub limit_request_fields: Option<u64>,
    /// Longest request header line in bytes [default: 8190].
    #[arg(long, env = "ORDERS_LIMIT_REQUEST_FIELD_SIZE", value_name = "BYTES")]
    pub limit_request_field_size: Option<u64>,
    /// Accept backlog of each worker's listener [default: 2048].
    #[arg(long, env = "ORDERS_BACKLOG", value_name = "N")]
    pub backlog: Option<u64>,
    /// Serve as this user after binding (the master keeps its own).
    #[arg(short = 'u', long, env = "ORDERS_USER", value_name = "USER")]
    pub user: Option<String>,
    /// Serve as this group after binding [default: the user's group].
    #[arg(short = 'g', long, env = "ORDERS_GROUP", value_name = "GROUP")]
    pub group: Option<String>,
    /// Write the master's pid to this file.
    #[arg(short = 'p', long = "pid", env = "ORDERS_PID", value_name = "FILE")]
    pub pid: Option<PathBuf>,
    /// Raise the open-file limit to this at start [default: the hard limit].
    #[arg(long, env = "ORDERS_RLIMIT_NOFILE", value_name = "N")]
    pub rlimit_nofile: Option<u64>,
    /// Write logs to this file instead of stderr (reopened on SIGUSR1).
    #[arg(long, env = "ORDERS_LOG_FILE", value_name = "FILE")]
    pub log_file: Option<PathBuf>,
    /// Store orders in MongoDB at this URI instead of the embedded store
    /// (also read from MONGO_URI). Prefer the environment: a password on the
    /// command line is visible to every local user.
    #[arg(long, value_name = "URI")]
    pub mongo_uri: Option<String>,
    /// MongoDB database, when the URI names none [default: orders_db].
    #[arg(long, env = "ORDERS_MONGO_DATABASE", value_name = "NAME")]
    pub mongo_database: Option<String>,
    /// MongoDB collection [default: orders].
    #[arg(long, env = "ORDERS_MONGO_COLLECTION", value_name = "NAME")]
    pub mongo_collection: Option<String>,
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
}

/// The configuration file: every key optional, unknown keys rejected.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// See [`Cli::workers`].
    pub workers: Option<u64>,
    /// See [`Cli::bind`].
    pub bind: Option<String>,
    /// See [`Cli::data_dir`].
    pub data_dir: Option<PathBuf>,
    /// See [`Cli::threads`].
    pub threads: Option<u64>,
    /// See [`Cli::coroutine_stack_size`].
    pub coroutine_stack_size: Option<u64>,
    /// See [`Cli::max_body_size`].
    pub max_body_size: Option<u64>,
    /// See [`Cli::max_page_size`].
    pub max_page_size: Option<u64>,
    /// See [`Cli::cap_unpaged_list`].
    pub cap_unpaged_list: Option<bool>,
    /// See [`Cli::response_buffer_size`] (`close_after_response_bytes`
    /// is its former name).
    #[serde(alias = "close_after_response_bytes")]
    pub response_buffer_size: Option<u64>,
    /// See [`Cli::max_buffered_body_bytes`].
    pub max_buffered_body_bytes: Option<u64>,
    /// See [`Cli::map_size`].
    pub map_size: Option<u64>,
    /// See [`Cli::store_timeout_ms`].
    pub store_timeout_ms: Option<u64>,
    /// See [`Cli::graceful_timeout`].
    pub graceful_timeout: Option<u64>,
    /// See [`Cli::log_level`].
    pub log_level: Option<String>,
    /// See [`Cli::timeout`].
    pub timeout: Option<u64>,
    /// See [`Cli::keepalive`].
    pub keepalive: Option<u64>,
    /// See [`Cli::client_timeout`].
    pub client_timeout: Option<u64>,
    /// See [`Cli::max_requests`].
    pub max_requests: Option<u64>,
    /// See [`Cli::max_requests_jitter`].
    pub max_requests_jitter: Option<u64>,
    /// See [`Cli::worker_connections`].
    pub worker_connections: Option<u64>,
    /// See [`Cli::limit_request_line`].
    pub limit_request_line: Option<u64>,
    /// See [`Cli::limit_request_fields`].
    pub limit_request_fields: Option<u64>,
    /// See [`Cli::limit_request_field_size`].
    pub limit_request_field_size: Option<u64>,
    /// See [`Cli::backlog`].
    pub backlog: Option<u64>,
    /// See [`Cli::user`].
    pub user: Option<String>,
    /// See [`Cli::group`].
    pub group: Option<String>,
    /// See [`Cli::pid`].
    pub pid: Option<PathBuf>,
    /// See [`Cli::rlimit_nofile`].
    pub rlimit_nofile: Option<u64>,
    /// See [`Cli::log_file`].
    pub log_file: Option<PathBuf>,
    /// See [`Cli::mongo_uri`].
    pub mongo_uri: Option<String>,
    /// See [`Cli::mongo_database`].
    pub mongo_database: Option<String>,
    /// See [`Cli::mongo_collection`].
    pub mongo_collection: Option<String>,
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
}

fn invalid(name: &'static str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid { name, reason: reason.into() }
}

/// Where orders are stored.
#[derive(Debug, Clone)]
pub enum Backend {
    /// LMDB in `data_dir` (the default).
    Embedded,
    /// MongoDB.
    Mongo(MongoTarget),
}

/// Where the mongo_uri setting came from (a password on the command line
/// is visible in the process list: the server warns about it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UriSource {
    CommandLine,
    Environment,
    File,
}

/// Log verbosity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum LogLevel {
    Error,
    Warn,
    Info,
    Debug,
}

impl LogLevel {
    fn parse(s: &str) -> Option<LogLevel> {
        match s.to_ascii_lowercase().as_str() {
            "error" => Some(LogLevel::Error),
            "warn" | "warning" => Some(LogLevel::Warn),
            "info" => Some(LogLevel::Info),
            "debug" => Some(LogLevel::Debug),
            _ => None,
        }
    }
}

/// The resolved, validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Worker processes.
    pub workers: usize,
    /// The address as the operator wrote it (port 0 allowed).
    pub bind: SocketAddr,
    /// Data directory of the embedded store.
    pub data_dir: PathBuf,
    /// may scheduler threads per worker.
    pub threads: usize,
    /// Coroutine stack size in bytes.
    pub coroutine_stack_size: usize,
    /// Request body limit in bytes.
    pub max_body_size: u64,
    /// Cap on `limit`.
    pub max_page_size: usize,
    /// Whether the cap applies to a bare `GET /orders`.
    pub cap_unpaged_list: bool,
    /// Largest response body built in memory (longer lists stream).
    pub response_buffer_size: usize,
    /// Bytes of request bodies one worker holds at once.
    pub max_buffered_body_bytes: usize,
    /// LMDB map size in bytes.
    pub map_size: usize,
    /// Deadline of one store operation.
    pub store_timeout: Duration,
    /// Time a graceful stop may take.
    pub graceful_timeout: Duration,
    /// Log verbosity.
    pub log_level: LogLevel,
    /// Heartbeat timeout of a worker.
    pub timeout: Duration,
    /// Idle keep-alive time.
    pub keepalive: Duration,
    /// Time a client may take to send one request.
    pub client_timeout: Duration,
    /// Recycle a worker after this many requests (0: never).
    pub max_requests: u64,
    /// Random extra requests per worker before recycling.
    pub max_requests_jitter: u64,
    /// Connections per worker.
    pub worker_connections: usize,
    /// Longest request line.
    pub limit_request_line: usize,
    /// Most request headers.
    pub limit_request_fields: usize,
    /// Longest header line.
    pub limit_request_field_size: usize,
    /// Accept backlog per worker.
    pub backlog: i32,
    /// Unprivileged user and group to serve as.
    pub user: Option<String>,
    /// See `user`.
    pub group: Option<String>,
    /// Pid file of the master.
    pub pid: Option<PathBuf>,
    /// Open-file limit to raise to (None: the hard limit).
    pub rlimit_nofile: Option<u64>,
    /// Log file (None: stderr).
    pub log_file: Option<PathBuf>,
    /// The store backend.
    pub backend: Backend,
    /// Where mongo_uri came from, when set.
    pub mongo_uri_source: Option<UriSource>,
    /// The config file the settings came from, if any.
    pub config_file: Option<PathBuf>,
}

impl Config {
    /// Reads the file named by `cli.config`, merges, and validates.
    pub fn load(cli: Cli) -> Result<Config, ConfigError> {
        let file = match &cli.config {
            Some(path) => read_file(path)?,
            None => FileConfig::default(),
        };
        resolve(cli, file)
    }
}

/// Reads and parses a config file.
pub fn read_file(path: &Path) -> Result<FileConfig, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError::ReadFile(path.into(), e))?;
    toml::from_str(&text).map_err(|e| ConfigError::ParseFile(path.into(), e.message().to_string()))
}

/// Merges CLI/env values over file values over defaults, then validates.
pub fn resolve(cli: Cli, file: FileConfig) -> Result<Config, ConfigError> {
    let cpus = std::thread::available_parallelism().map(|n| n.get() as u64).unwrap_or(1);
    let workers = cli.workers.or(file.workers).unwrap_or(cpus);
    let bind = cli.bind.or(file.bind).unwrap_or_else(|| DEFAULT_BIND.to_string());
    let threads = cli.threads.or(file.threads).unwrap_or(1);
    let stack = cli.coroutine_stack_size.or(file.coroutine_stack_size).unwrap_or(DEFAULT_STACK_SIZE);
    let max_page_size = cli.max_page_size.or(file.max_page_size).unwrap_or(DEFAULT_MAX_PAGE_SIZE);
    let max_body_size = cli.max_body_size.or(file.max_body_size).unwrap_or(DEFAULT_MAX_BODY_SIZE);
    let response_buffer =
        cli.response_buffer_size.or(file.response_buffer_size).unwrap_or(DEFAULT_RESPONSE_BUFFER_SIZE);
    let body_memory = cli
        .max_buffered_body_bytes
        .or(file.max_buffered_body_bytes)
        .unwrap_or(DEFAULT_MAX_BUFFERED_BODY_BYTES.max(max_body_size));
    let map_size = cli.map_size.or(file.map_size).unwrap_or(DEFAULT_MAP_SIZE);
    let store_timeout_ms = cli.store_timeout_ms.or(file.store_timeout_ms).unwrap_or(DEFAULT_STORE_TIMEOUT_MS);
    let graceful = cli.graceful_timeout.or(file.graceful_timeout).unwrap_or(DEFAULT_GRACEFUL_TIMEOUT_S);
    let log_level = cli.log_level.or(file.log_level).unwrap_or_else(|| "info".into());
    let nofile = cli.rlimit_nofile.or(file.rlimit_nofile);
    let fd_budget = nofile.unwrap_or_else(hard_nofile_limit).saturating_sub(RESERVED_FDS).max(1);
    let env_uri = std::env::var(MONGO_URI_ENV).ok().or_else(|| std::env::var(SEED_MONGO_URI_ENV).ok());
    let (mongo_uri, mongo_uri_source) = match (cli.mongo_uri, env_uri, file.mongo_uri) {
        (Some(u), _, _) => (Some(u), Some(UriSource::CommandLine)),
        (None, Some(u), _) => (Some(u), Some(UriSource::Environment)),
        (None, None, Some(u)) => (Some(u), Some(UriSource::File)),
        (None, None, None) => (None, None),
    };
    let backend = match mongo_uri.filter(|u| !u.is_empty()) {
        Some(uri) => Backend::Mongo(mongo_target(
            uri,
            cli.mongo_database.or(file.mongo_database),
            cli.mongo_collection.or(file.mongo_collection),
        )?),
        None => Backend::Embedded,
    };

    let config = Config {
        workers: in_range("workers", workers, 1, MAX_WORKERS)? as usize,
        bind: parse_bind(&bind)?,
        data_dir: cli.data_dir.or(file.data_dir).unwrap_or_else(|| DEFAULT_DATA_DIR.into()),
        threads: in_range("threads", threads, 1, MAX_THREADS)? as usize,
        coroutine_stack_size: in_range("coroutine_stack_size", stack, MIN_STACK_SIZE, 64 << 20)? as usize,
        max_body_size: in_range("max_body_size", max_body_size, 1, 1 << 30)?,
        max_page_size: in_range("max_page_size", max_page_size, 1, MAX_MAX_PAGE_SIZE)? as usize,
        cap_unpaged_list: cli.cap_unpaged_list.or(file.cap_unpaged_list).unwrap_or(false),
        response_buffer_size: in_range("response_buffer_size", response_buffer, 4096, 1 << 30)? as usize,
        max_buffered_body_bytes: in_range("max_buffered_body_bytes", body_memory, max_body_size, 1 << 40)? as usize,
        map_size: in_range("map_size", map_size, 1 << 20, 1 << 44)? as usize,
        store_timeout: Duration::from_millis(in_range("store_timeout_ms", store_timeout_ms, 10, 600_000)?),
        graceful_timeout: Duration::from_secs(in_range("graceful_timeout", graceful, 0, 3600)?),
        log_level: LogLevel::parse(&log_level)
            .ok_or_else(|| invalid("log_level", format!("{log_level:?} is not one of error, warn, info, debug")))?,
        timeout: secs("timeout", cli.timeout.or(file.timeout).unwrap_or(DEFAULT_TIMEOUT_S), 1)?,
        keepalive: secs("keepalive", cli.keepalive.or(file.keepalive).unwrap_or(DEFAULT_KEEPALIVE_S), 1)?,
        client_timeout: secs(
            "client_timeout",
            cli.client_timeout.or(file.client_timeout).unwrap_or(DEFAULT_CLIENT_TIMEOUT_S),
            1,
        )?,
        max_requests: in_range("max_requests", cli.max_requests.or(file.max_requests).unwrap_or(0), 0, MAX_REQUESTS)?,
        max_requests_jitter: in_range(
            "max_requests_jitter",
            cli.max_requests_jitter.or(file.max_requests_jitter).unwrap_or(0),
            0,
            MAX_REQUESTS,
        )?,
        worker_connections: in_range(
            "worker_connections",
            cli.worker_connections.or(file.worker_connections).unwrap_or(fd_budget),
            1,
            fd_budget,
        )? as usize,
        limit_request_line: in_range(
            "limit_request_line",
            cli.limit_request_line.or(file.limit_request_line).unwrap_or(DEFAULT_LIMIT_REQUEST_LINE),
            16,
            1 << 20,
        )? as usize,
        limit_request_fields: in_range(
            "limit_request_fields",
            cli.limit_request_fields.or(file.limit_request_fields).unwrap_or(DEFAULT_LIMIT_REQUEST_FIELDS),
            1,
            MAX_REQUEST_FIELDS,
        )? as usize,
        limit_request_field_size: in_range(
            "limit_request_field_size",
            cli.limit_request_field_size.or(file.limit_request_field_size).unwrap_or(DEFAULT_LIMIT_REQUEST_FIELD_SIZE),
            16,
            1 << 20,
        )? as usize,
        backlog: in_range("backlog", cli.backlog.or(file.backlog).unwrap_or(DEFAULT_BACKLOG), 1, 1 << 20)? as i32,
        user: cli.user.or(file.user),
        group: cli.group.or(file.group),
        pid: cli.pid.or(file.pid),
        rlimit_nofile: nofile,
        log_file: cli.log_file.or(file.log_file),
        backend,
        mongo_uri_source,
        config_file: cli.config,
    };
    if config.group.is_some() && config.user.is_none() {
        return Err(invalid("group", "needs user as well"));
    }
    Ok(config)
}

/// Validates a MongoDB URI (synchronously, before any fork) and settles the
/// database: the URI's path, or `mongo_database`, never two different ones.
fn mongo_target(uri: String, database: Option<String>, collection: Option<String>) -> Result<MongoTarget, ConfigError> {
    use crate::store::mongo::redact_uri;
    let parsed = mongodb::options::ConnectionString::parse(&uri)
        .map_err(|e| invalid("mongo_uri", format!("{} is not a valid MongoDB URI: {}", redact_uri(&uri), redact_uri(&e.to_string()))))?;
    let database = match (parsed.default_database, database) {
        (Some(a), Some(b)) if a != b => {
            return Err(invalid(
                "mongo_database",
                format!("{b:?} conflicts with the database {a:?} named in mongo_uri"),
            ))
        }
        (Some(a), _) => a,
        (None, Some(b)) => b,
        (None, None) => DEFAULT_MONGO_DATABASE.to_string(),
    };
    if database.is_empty() || database.contains(['/', '.', ' ', '"', '$', '\\']) {
        return Err(invalid("mongo_database", format!("{database:?} is not a valid database name")));
    }
    let collection = collection.unwrap_or_else(|| DEFAULT_MONGO_COLLECTION.to_string());
    if collection.is_empty() || collection.starts_with("system.") || collection.contains('$') {
        return Err(invalid("mongo_collection", format!("{collection:?} is not a valid collection name")));
    }
    Ok(MongoTarget { uri, database, collection })
}

/// Whether a MongoDB URI carries a password.
pub fn uri_has_password(uri: &str) -> bool {
    mongodb::options::ConnectionString::parse(uri)
        .ok()
        .and_then(|c| c.credential)
        .is_some_and(|c| c.password.is_some())
}

fn secs(name: &'static str, value: u64, min: u64) -> Result<Duration, ConfigError> {
    Ok(Duration::from_secs(in_range(name, value, min, 86_400)?))
}

/// The hard open-file limit of this process.
pub fn hard_nofile_limit() -> u64 {
    nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
        .map(|(_, hard)| hard)
        .unwrap_or(1024)
}

fn in_range(name: &'static str, value: u64, min: u64, max: u64) -> Result<u64, ConfigError> {
    if value < min || value > max {
        return Err(invalid(name, format!("{value} is outside {min}..={max}")));
    }
    Ok(value)
}

fn parse_bind(s: &str) -> Result<SocketAddr, ConfigError> {
    let mut addrs = s
        .to_socket_addrs()
        .map_err(|e| invalid("bind", format!("{s:?} is not a HOST:PORT address ({e})")))?;
    addrs.next().ok_or_else(|| invalid("bind", format!("{s:?} resolves to no address")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cli_beats_file_beats_default() {
        let cli = Cli { workers: Some(3), ..Cli::default() };
        let file = FileConfig { workers: Some(5), threads: Some(2), ..FileConfig::default() };
        let c = resolve(cli, file).unwrap();
        assert_eq!(c.workers, 3);
        assert_eq!(c.threads, 2);
        assert_eq!(c.max_page_size, DEFAULT_MAX_PAGE_SIZE as usize);
    }

    #[test]
    fn bad_values_name_the_setting() {
        let cli = Cli { workers: Some(0), ..Cli::default() };
        let e = resolve(cli, FileConfig::default()).unwrap_err().to_string();
        assert!(e.contains("workers"), "{e}");
        let cli = Cli { bind: Some("nonsense".into()), ..Cli::default() };
        let e = resolve(cli, FileConfig::default()).unwrap_err().to_string();
        assert!(e.contains("bind"), "{e}");
    }

    #[test]
    fn mongo_database_comes_from_the_uri_or_the_setting() {
        let t = mongo_target("mongodb://h:27017/orders_db".into(), None, None).unwrap();
        assert_eq!((t.database.as_str(), t.collection.as_str()), ("orders_db", "orders"));
        let t = mongo_target("mongodb://h".into(), Some("shop".into()), Some("o".into())).unwrap();
        assert_eq!((t.database.as_str(), t.collection.as_str()), ("shop", "o"));
        let e = mongo_target("mongodb://h/a".into(), Some("b".into()), None).unwrap_err().to_string();
        assert!(e.contains("mongo_database"), "{e}");
        let e = mongo_target("mongodb://u:secret@h:notaport/a".into(), None, None).unwrap_err().to_string();
        assert!(e.contains("mongo_uri") && !e.contains("secret"), "{e}");
        assert!(uri_has_password("mongodb://u:p@h/db"));
        assert!(!uri_has_password("mongodb://h/db"));
    }

    /// Every setting is documented in conf/orders-server.toml: uncommenting
    /// each `# key = value` line there gives a file the server accepts, and
    /// every key of the file format appears.
    #[test]
    fn the_shipped_config_documents_every_setting() {
        let shipped = include_str!("../conf/orders-server.toml");
        let mut seen = std::collections::BTreeMap::new();
        for line in shipped.lines() {
            let Some(rest) = line.strip_prefix("# ") else { continue };
            let Some((key, _)) = rest.split_once(" = ") else { continue };
            if key.chars().all(|c| c.is_ascii_lowercase() || c == '_') {
                seen.insert(key.to_string(), rest.to_string());
            }
        }
        let file: String = seen.values().map(|l| format!("{l}\n")).collect();
        let parsed: FileConfig = toml::from_str(&file).unwrap_or_else(|e| panic!("{e}\n{file}"));
        let as_json = serde_json::to_value(format!("{parsed:?}")).unwrap().to_string();
        // Every field of the file format, from its Debug form.
        let all = format!("{:?}", FileConfig::default());
        let keys: Vec<&str> = all
            .trim_start_matches("FileConfig { ")
            .trim_end_matches(" }")
            .split(", ")
            .filter_map(|kv| kv.split_once(": ").map(|(k, _)| k))
            .collect();
        assert!(keys.len() > 25, "{all}");
        for key in keys {
            assert!(seen.contains_key(key), "{key} is not documented in conf/orders-server.toml");
            assert!(as_json.contains(&format!("{key}: Some(")), "{key} did not parse: {as_json}");
        }
    }

    #[test]
    fn unknown_file_key_is_rejected() {
        let e = toml::from_str::<FileConfig>("wrokers = 2").unwrap_err();
        assert!(e.to_string().contains("wrokers"));
    }
}
