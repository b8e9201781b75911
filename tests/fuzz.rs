//! The contract, fuzzed: schemathesis generates requests from
//! docs/openapi.yaml (valid ones, invalid ones, sequences that follow the
//! API's links) and runs every check it has against the real server: no
//! 5xx, statuses and bodies as documented, valid data accepted, invalid
//! data refused. Bounded (`--max-examples`), with a fixed seed so a failure
//! reproduces (`SCHEMATHESIS_SEED` picks another). The one known
//! divergence of JSON Schema from the contract is filtered in
//! tests/schemathesis_hooks.py.

use orders_harness as support;

use std::path::PathBuf;
use std::process::Command;

use support::Server;

fn schemathesis() -> PathBuf {
    std::env::var("SCHEMATHESIS")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".venv-contract/bin/st"))
}

#[test]
fn the_openapi_contract_holds_under_fuzzing() {
    let s = Server::start(&["-w", "1"]);
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let seed = std::env::var("SCHEMATHESIS_SEED").unwrap_or_else(|_| "1".to_string());
    let st = schemathesis();
    let out = Command::new(&st)
        .args([
            "run",
            "docs/openapi.yaml",
            "--checks",
            "all",
            "--max-examples",
            "30",
            "--no-color",
            "--seed",
            &seed,
        ])
        .arg("--url")
        .arg(format!("http://{}", s.addr))
        .current_dir(&root)
        .env("PYTHONPATH", root.join("tests"))
        .env("SCHEMATHESIS_HOOKS", "schemathesis_hooks")
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "{}: {e} (scripts/test.sh installs schemathesis in .venv-contract)",
                st.display()
            )
        });
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "schemathesis found failures:\n{text}");
    assert!(text.contains("No issues found"), "{text}");
    assert!(!s.log().contains("panic"), "{}", s.log());
}
