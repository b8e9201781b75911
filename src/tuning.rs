//! `orders-server check`: compares the running kernel's settings with the
//! recommended ones shipped in tuning/sysctl.d/99-orders-server.conf (built
//! into the binary, so the file stays the one source) and prints what
//! differs.

use std::path::Path;

/// The recommended settings, as shipped.
pub const RECOMMENDED: &str = include_str!("../tuning/sysctl.d/99-orders-server.conf");

/// One setting that differs from the recommendation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Difference {
    /// sysctl name, e.g. `net.core.somaxconn`.
    pub key: String,
    /// The recommended value.
    pub want: String,
    /// The running value, or None when the kernel has no such setting.
    pub have: Option<String>,
}

/// `key = value` pairs of a sysctl.d file (comments and blanks skipped).
pub fn parse(text: &str) -> Vec<(String, String)> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#') && !l.starts_with(';'))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), normalize(v)))
        .collect()
}

/// Whitespace-insensitive form of a value ("4096\t87380" == "4096 87380").
fn normalize(v: &str) -> String {
    v.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Compares every recommended setting with `proc_sys` (normally /proc/sys).
/// Settings the machine already exceeds in the right direction
/// (larger limits and buffers) count as fine.
pub fn differences(proc_sys: &Path) -> Vec<Difference> {
    parse(RECOMMENDED)
        .into_iter()
        .filter_map(|(key, want)| {
            let path = proc_sys.join(key.replace('.', "/"));
            let have = std::fs::read_to_string(&path).ok().map(|s| normalize(&s));
            let ok = have.as_deref().is_some_and(|h| good_enough(&key, &want, h));
            (!ok).then_some(Difference { key, want, have })
        })
        .collect()
}

/// Equal, or for a single-number limit, at least the recommended value
/// (except tcp_fin_timeout, where lower is the recommendation).
fn good_enough(key: &str, want: &str, have: &str) -> bool {
    if want == have {
        return true;
    }
    match (want.parse::<u64>(), have.parse::<u64>()) {
        (Ok(w), Ok(h)) if key.ends_with("tcp_fin_timeout") => h <= w,
        (Ok(w), Ok(h)) if !key.ends_with("tcp_tw_reuse") && !key.ends_with("tcp_migrate_req") => h >= w,
        _ => false,
    }
}

/// Runs the check, prints a report; returns the exit status (0: all good).
pub fn run(proc_sys: &Path) -> i32 {
    let diffs = differences(proc_sys);
    let total = parse(RECOMMENDED).len();
    for d in &diffs {
        match &d.have {
            Some(have) => println!("{}: running {have}, recommended {}", d.key, d.want),
            None => println!("{}: not available on this kernel, recommended {}", d.key, d.want),
        }
    }
    if let Ok((soft, hard)) = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE) {
        println!("open-file limit of this process: soft {soft}, hard {hard} (the systemd unit sets 1048576)");
    }
    if diffs.is_empty() {
        println!("all {total} kernel settings match tuning/sysctl.d/99-orders-server.conf");
        crate::exit::SUCCESS
    } else {
        println!(
            "{} of {total} kernel settings differ; install tuning/sysctl.d/99-orders-server.conf in /etc/sysctl.d/ and run `sysctl --system`",
            diffs.len()
        );
        crate::exit::CHECK_FOUND
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_file_parses() {
        let settings = parse(RECOMMENDED);
        assert!(settings.iter().any(|(k, v)| k == "net.ipv4.tcp_migrate_req" && v == "1"));
        assert!(settings.iter().any(|(k, v)| k == "net.ipv4.ip_local_port_range" && v == "1024 65535"));
        assert!(settings.len() >= 10);
    }

    #[test]
    fn larger_limits_are_fine_other_values_differ() {
        assert!(good_enough("net.core.somaxconn", "65535", "100000"));
        assert!(!good_enough("net.core.somaxconn", "65535", "4096"));
        assert!(good_enough("net.ipv4.tcp_fin_timeout", "15", "10"));
        assert!(!good_enough("net.ipv4.tcp_migrate_req", "1", "0"));
        assert!(!good_enough("net.ipv4.tcp_migrate_req", "1", "2"));
    }
}
