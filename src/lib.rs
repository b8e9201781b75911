//! orders-server: the seed's orders API (Flask app.py behind gunicorn) as a
//! prefork Rust server. A master forks workers; each binds the address with
//! SO_REUSEPORT and serves with may coroutines through may_minihttp, on an
//! embedded LMDB store shared by all workers.
//!
//! Modules, one concern each: [`config`] (settings), [`exit`] (exit statuses), [`master`] (fork,
//! supervise, signals), [`worker`] (serving), [`http`] (routing, framing,
//! responses), [`orders`] (domain, validation), [`store`] (backends),
//! [`logging`], [`tuning`] (the `check` command), [`faults`] (test-only,
//! behind the `test-hooks` feature).

pub mod config;
pub mod exit;
pub mod faults;
pub mod http;
pub mod logging;
pub mod master;
pub mod orders;
pub mod store;
pub mod tuning;
pub mod worker;
