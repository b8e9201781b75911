//! orders-server: the seed's orders API (Flask app.py behind gunicorn) as a
//! prefork Rust server. A master forks workers; each binds the address with
//! SO_REUSEPORT and serves with may coroutines through an HTTP/1.1 engine
//! of its own ([`http`]), on an embedded LMDB store shared by all workers
//! (or MongoDB). Why it is built so: docs/design.md.
//!
//! Modules, one concern each, in layers: a module imports only from the
//! layers below it (docs/design.md draws them; tests/layers.rs fails when an
//! import runs upwards).
//! - leaves: [`clock`], [`exit`] (exit statuses), [`net`] (sockets and
//!   descriptors), [`shared_memory`], [`faults`] (test-only, behind the
//!   `test-hooks` feature), [`logging`], [`tuning`] (the `check` command),
//!   [`lifecycle`] (what the master and its workers say to each other),
//!   [`proto`] (HTTP/1.1 as a protocol: it knows no application), [`tls`]
//!   (certificate files made into a rustls configuration), [`api`] (the
//!   route table);
//! - [`metrics`] (Prometheus, in shared memory);
//! - [`orders`] (domain, validation);
//! - [`store`] (backends);
//! - [`http`] (the API over HTTP: accept, dispatch, routes, handlers);
//! - [`config`] (settings);
//! - [`worker`] (serving);
//! - [`master`] (fork, supervise, signals).

pub mod api;
pub mod clock;
pub mod config;
pub mod exit;
pub mod faults;
pub mod http;
pub mod lifecycle;
pub mod logging;
pub mod master;
pub mod metrics;
pub mod net;
pub mod orders;
pub mod proto;
pub mod shared_memory;
pub mod store;
pub mod tls;
pub mod tuning;
pub mod worker;
