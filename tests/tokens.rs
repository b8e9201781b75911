//! API tokens over real HTTP: writes need a token when a tokens file is
//! set (reads too when asked), a wrong or missing one is a 401 with
//! `WWW-Authenticate`, a reload picks up a changed file, and no token ever
//! reaches the log.

use orders_harness as support;

use std::time::Duration;

use support::{order_json, wait_until, Server};

const ALICE: &str = "alice-0123456789abcdef";
const BOB: &str = "bob-fedcba9876543210";

fn bearer(token: &str) -> String {
    format!("Authorization: Bearer {token}")
}

#[test]
fn writes_need_a_token_and_reads_do_not() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("tokens");
    support::write_private(&file, &format!("# the team\nalice:{ALICE}\n"));
    let s = Server::start(&["--api-tokens-file", &file.display().to_string()]);
    let body = order_json("P", 1);
    let mut c = s.connect();
    let r = c.request("POST", "/orders", Some(&body));
    assert_eq!(r.status, 401);
    assert_eq!(r.header("www-authenticate"), Some("Bearer"));
    assert!(
        r.message().contains("Authorization: Bearer"),
        "{}",
        r.message()
    );
    assert!(
        r.closes(),
        "a write's body is never read for an unauthorized client"
    );
    let mut c = s.connect();
    let r = c.request_with(
        "POST",
        "/orders",
        &[&bearer("alice-0123456789abcdeX")],
        Some(&body),
    );
    assert_eq!(r.status, 401, "a wrong token");
    let mut c = s.connect();
    let r = c.request_with("POST", "/orders", &[&bearer(ALICE)], Some(&body));
    assert_eq!(r.status, 200, "{}", r.text());
    let id = r.json()["order"]["_id"].as_str().unwrap().to_string();
    let r = c.request("DELETE", &format!("/orders/{id}"), None);
    assert_eq!(r.status, 401, "a DELETE needs one too");
    assert!(!r.closes(), "no body: the connection is kept");
    assert_eq!(
        c.request("GET", &format!("/orders/{id}"), None).status,
        200,
        "reads need none"
    );
    assert_eq!(c.request("GET", "/orders", None).status, 200);

    // A reload reads the file again: bob in, alice out.
    support::write_private(&file, &format!("bob:{BOB}\n"));
    s.signal(libc::SIGHUP);
    assert!(
        wait_until(Duration::from_secs(10), || s
            .log()
            .contains("reloaded: generation 2")),
        "{}",
        s.log()
    );
    assert!(wait_until(Duration::from_secs(5), || {
        s.connect()
            .request_with("POST", "/orders", &[&bearer(BOB)], Some(&body))
            .status
            == 200
    }));
    assert_eq!(
        s.connect()
            .request_with("POST", "/orders", &[&bearer(ALICE)], Some(&body))
            .status,
        401
    );
    assert!(
        !s.log().contains(ALICE) && !s.log().contains(BOB),
        "a token reached the log"
    );
}

#[test]
fn reads_can_need_a_token_too_and_bad_files_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("tokens");
    support::write_private(&file, &format!("alice:{ALICE}\n"));
    let f = file.display().to_string();
    let s = Server::start(&["--api-tokens-file", &f, "--api-tokens-for-reads", "true"]);
    assert_eq!(s.request("GET", "/orders", None).status, 401);
    // OPTIONS tells what docs/api.md does, but of an order whether it
    // exists: that is a read.
    assert_eq!(s.request("OPTIONS", "/orders", None).status, 204);
    let order = "/orders/6566f0c2a1b2c3d4e5f60718";
    assert_eq!(s.request("OPTIONS", order, None).status, 401);
    assert_eq!(
        s.connect()
            .request_with("OPTIONS", order, &[&bearer(ALICE)], None)
            .status,
        404
    );
    assert_eq!(
        s.connect()
            .request_with("GET", "/orders", &[&bearer(ALICE)], None)
            .status,
        200
    );

    support::write_private(&file, "alice:short\n");
    let (code, out) = support::run_to_exit(
        &["-b", "127.0.0.1:0", "--api-tokens-file", &f],
        &[],
        Duration::from_secs(15),
    );
    assert_eq!(code, Some(2), "{out}");
    assert!(out.contains("line 1") && !out.contains("short"), "{out}");

    // Readable by others: refused, as ssh refuses such a key, with the fix.
    support::write_private(&file, &format!("alice:{ALICE}\n"));
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let (code, out) = support::run_to_exit(
        &["-b", "127.0.0.1:0", "--api-tokens-file", &f],
        &[],
        Duration::from_secs(15),
    );
    assert_eq!(code, Some(2), "{out}");
    assert!(out.contains(&format!("chmod 600 {f}")), "{out}");
    assert!(!out.contains(ALICE), "{out}");
}
