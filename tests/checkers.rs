//! The server as HTTP checkers no one here wrote see it: REDbot (which
//! also sends its own conditional, HEAD, Range and gzip requests) and
//! httplint (on `curl -si --raw`), both pinned in `.venv-lint` by
//! scripts/test.sh. No finding may be at the error ("bad") level on an
//! order, a page, a streamed list, a POST's answer or an error; the
//! warnings that remain are listed, each with its reason, in docs/api.md
//! (checked here: a new warning fails until it is explained there).

use orders_harness as support;

use std::path::PathBuf;
use std::process::{Command, Stdio};

use support::{order_json, Server};

fn tool(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join(".venv-lint/bin")
        .join(name)
}

/// Runs `cmd`, its stdout as text (panics naming the venv when missing).
fn output(cmd: &mut Command) -> String {
    let out = cmd.stderr(Stdio::inherit()).output().unwrap_or_else(|e| {
        panic!("{cmd:?}: {e} (scripts/test.sh installs redbot and httplint in .venv-lint)")
    });
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// REDbot's notes on `url`, as (level, id, summary), from its HAR output.
fn redbot(url: &str) -> Vec<(String, String, String)> {
    let har = output(Command::new(tool("redbot")).args(["-o", "har", url]));
    let har: serde_json::Value =
        serde_json::from_str(&har).unwrap_or_else(|e| panic!("redbot {url}: {e}: {har}"));
    let mut notes = Vec::new();
    for entry in har["log"]["entries"].as_array().expect("entries") {
        for n in entry["_red_messages"].as_array().into_iter().flatten() {
            let text = |k: &str| n[k].as_str().unwrap_or_default().to_string();
            notes.push((text("level"), text("note_id"), text("summary")));
        }
    }
    assert!(!notes.is_empty(), "redbot said nothing about {url}");
    notes
}

/// httplint's findings on the raw response curl reads for `args`, as
/// (level, line).
fn httplint(args: &[&str]) -> Vec<(String, String)> {
    let raw = Command::new("curl")
        .args(["-si", "--raw"])
        .args(args)
        .output()
        .expect("curl")
        .stdout;
    let mut child = Command::new(tool("httplint"))
        .arg("-n")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("httplint (scripts/test.sh installs it in .venv-lint)");
    std::io::Write::write_all(child.stdin.as_mut().unwrap(), &raw).unwrap();
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let findings: Vec<(String, String)> = text
        .lines()
        .filter_map(|l| l.trim().strip_prefix("* ["))
        .filter_map(|l| l.split_once("] "))
        .map(|(level, what)| (level.to_string(), what.to_string()))
        .collect();
    assert!(
        !findings.is_empty(),
        "httplint said nothing on {args:?}: {text}"
    );
    findings
}

#[test]
fn redbot_and_httplint_find_nothing_bad() {
    // A 4 KiB response buffer makes the bare list of 60 orders stream.
    let s = Server::start(&["--response-buffer-size", "4096"]);
    let id = s.create("ProductY");
    for i in 0..60 {
        s.create(&format!("P{i}"));
    }
    let base = format!("http://{}", s.addr);
    // Words as docs/api.md has them, whatever its line breaks.
    let api_md = include_str!("../docs/api.md")
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    let mut warnings = Vec::new();
    for path in [
        format!("/orders/{id}"),
        "/orders?limit=10".to_string(),
        "/orders".to_string(),
        "/orders/ffffffffffffffffffffffff".to_string(),
    ] {
        for (level, id, summary) in redbot(&format!("{base}{path}")) {
            assert_ne!(
                level.to_lowercase(),
                "bad",
                "REDbot on {path}: {id}: {summary}"
            );
            if level.to_lowercase() == "warn" {
                warnings.push(format!("REDbot {id} ({path}): {summary}"));
                assert!(
                    api_md.contains(&id),
                    "REDbot warning {id} on {path} ({summary}) is not explained in docs/api.md"
                );
            }
        }
    }
    let body = order_json("Linted", 1);
    let orders = format!("{base}/orders");
    let page = format!("{base}/orders?limit=10");
    let order = format!("{base}/orders/{id}");
    let missing = format!("{base}/orders/nothex");
    let post = [
        "-X",
        "POST",
        "-H",
        "Content-Type: application/json",
        "--data",
        &body,
        &orders,
    ];
    let runs: [&[&str]; 4] = [&post, &[&page], &[&order], &[&missing]];
    for args in runs {
        for (level, what) in httplint(args) {
            assert_ne!(level, "BAD", "httplint on {args:?}: {what}");
            if level == "WARN" {
                warnings.push(format!("httplint ({args:?}): {what}"));
                assert!(
                    api_md.contains(&what),
                    "httplint warning on {args:?} ({what}) is not explained in docs/api.md"
                );
            }
        }
    }
    eprintln!("warnings, all explained in docs/api.md: {warnings:#?}");
}
