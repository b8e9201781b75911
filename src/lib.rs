//! orders-server: the seed's orders API (Flask app.py behind gunicorn) as a
//! prefork Rust server. A master forks workers; each binds the address with
//! SO_REUSEPORT and serves with may coroutines through an HTTP/1.1 engine
//! of its own ([`http`]), on an embedded LMDB store shared by all workers
//! (or MongoDB). Why it is built so: docs/design.md.
//!
//! Modules, one concern each: [`config`] (settings), [`master`] (fork,
//! supervise, signals), [`worker`] (serving), [`http`] (the HTTP engine,
//! routing, responses), [`orders`] (domain, validation), [`store`]
//! (backends), [`metrics`] (Prometheus, in shared memory), [`exit`] (exit
//! statuses), [`logging`], [`clock`], [`shared_memory`],
//! [`tuning`] (the `check` command), [`faults`] (test-only, behind the
//! `test-hooks` feature).

pub mod clock;
pub mod config;
pub mod exit;
pub mod faults;
pub mod http;
pub mod logging;
pub mod master;
pub mod metrics;
pub mod orders;
pub mod shared_memory;
pub mod store;
pub mod tuning;
pub mod worker;
