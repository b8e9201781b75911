//! The orders API over HTTP, on the protocol engine (`proto`): a worker's
//! listener and the admission of its connections (`server`), the service
//! every connection calls (`dispatch`: routing, authentication, metrics,
//! access log, panics), the routes and their handlers (`routes`, by the
//! route table of `api`; `list` streams long lists), API tokens (`auth`),
//! the access log (`access_log`), and the one mapping of errors to statuses
//! and error responses (`error`).

pub mod access_log;
pub mod auth;
pub mod dispatch;
pub mod error;
pub mod list;
pub mod routes;
pub mod server;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use crate::net::Peers;
use crate::proto::body::BodyMemory;
use crate::proto::idle::IdleSet;
use crate::proto::request::HeadLimits;
use crate::proto::sweep::{Registry, SweepPolicy};
use crate::store::Store;
use routes::ListLimits;

/// What the HTTP layer is told by the configuration (`config` resolves it).
#[derive(Debug, Clone)]
pub struct HttpConfig {
    /// Request limits and response policy.
    pub limits: HttpLimits,
    /// The connection timeouts and the bodies' minimum rate.
    pub sweep: SweepPolicy,
    /// Accept backlog of each listener.
    pub backlog: i32,
    /// With the PROXY protocol: the peers that may send it (every
    /// connection must begin with its header).
    pub proxy_protocol: Option<Peers>,
    /// With TLS: its configuration (every connection speaks HTTPS).
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// The access log, if one is written.
    pub access_log: Option<access_log::AccessLogConfig>,
    /// API tokens, when requests need them.
    pub tokens: Option<auth::Tokens>,
}

/// Request limits and response policy.
#[derive(Debug, Clone, Copy)]
pub struct HttpLimits {
    /// What a request head may be, and the largest body.
    pub head: HeadLimits,
    /// Pagination limits, for routing.
    pub list: ListLimits,
    /// Largest response body built in memory; a longer list is streamed
    /// in chunks of about this size.
    pub response_buffer: usize,
    /// Most open connections; over it a new one gets a 503 and is closed.
    pub worker_connections: usize,
    /// Bytes of request bodies the worker holds at once.
    pub max_buffered_body_bytes: usize,
}

/// Counters and flags shared by a worker's connections and its lifecycle.
#[derive(Debug)]
pub struct ServerState {
    /// Set when the worker stops: every response closes its connection.
    draining: AtomicBool,
    /// Open connections.
    pub registry: Arc<Registry>,
    /// Requests handled since start.
    requests: AtomicU64,
    /// The request bodies held now.
    pub body_memory: BodyMemory,
    /// The last answer of `/readyz`.
    pub ready: routes::ReadyCache,
}

impl ServerState {
    /// State for a worker with these limits (fails without an eventfd).
    pub fn new(limits: &HttpLimits) -> std::io::Result<ServerState> {
        Ok(ServerState {
            draining: AtomicBool::new(false),
            registry: Arc::new(Registry::new()?),
            requests: AtomicU64::new(0),
            body_memory: BodyMemory::for_bodies(
                limits.max_buffered_body_bytes,
                limits.head.max_body as usize,
            ),
            ready: routes::ReadyCache::default(),
        })
    }

    /// Makes every further response close its connection.
    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::SeqCst);
    }

    /// Whether the worker is draining.
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    /// Counts one request.
    pub fn count_request(&self) {
        self.requests.fetch_add(1, Ordering::Relaxed);
    }

    /// Requests handled since start.
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }
}

/// What every connection of a worker shares.
pub struct App {
    /// The store (open before the worker listens).
    pub store: Box<dyn Store>,
    /// Limits.
    pub limits: HttpLimits,
    /// Lifecycle state.
    pub state: ServerState,
    /// API tokens, when requests need them (`auth`).
    pub tokens: Option<auth::Tokens>,
    /// The access log, when one is written.
    pub access: Option<access_log::AccessLog>,
    /// The connections parked between requests (`server`).
    pub idle: Arc<IdleSet<server::Parked>>,
    /// With the PROXY protocol: the peers that may send it.
    pub proxy_protocol: Option<Peers>,
    /// With TLS: its configuration.
    pub tls: Option<Arc<rustls::ServerConfig>>,
}
