//! The benchmark ceiling: a bare may_minihttp server answering every request
//! with one fixed order, as `GET /orders/<id>` would, with no routing, no
//! checks and no store. `bench/http.sh` compares orders-server against it.
//!
//! Usage: `ceiling ADDR` (one scheduler thread, no CPU pinning, like a worker).

use std::io;

use may_minihttp::{HttpService, HttpServiceFactory, Request, Response};

const ORDER: &str = r#"{"order":{"_id":"6566f0c2a1b2c3d4e5f60718","product":"ProductY","quantity":2,"customer_name":"Bob Anderson","customer_address":"101 Pine St"}}"#;

struct Fixed;

impl HttpService for Fixed {
    fn call(&mut self, _req: Request, rsp: &mut Response) -> io::Result<()> {
        rsp.header("Content-Type: application/json");
        rsp.body(ORDER);
        Ok(())
    }
}

struct Factory;

impl HttpServiceFactory for Factory {
    type Service = Fixed;
    fn new_service(&self, _id: usize) -> Fixed {
        Fixed
    }
}

fn main() {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:8001".into());
    may::config().set_workers(1).set_worker_pin(false);
    let server = Factory.start(&addr).expect("bind");
    eprintln!("listening on {addr}");
    server.join().ok();
}
