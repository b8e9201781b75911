//! `orders-server check`: compares the running kernel's settings with the
//! recommended ones shipped in tuning/sysctl.d/99-orders-server.conf (built
//! into the binary, so the file stays the one source, reasons included:
//! the comment line above each setting) and prints one line per setting
//! and a summary an operator can act on.
//!
//! A value with a clear direction (a limit, a backlog, a buffer) is a
//! finding only when it is lower than recommended; higher is "ok
//! (higher)". A timeout is a finding only when longer; a list of reserved
//! ports only when it lacks one of ours; anything else must be equal.

use std::path::Path;

/// The recommended settings, as shipped.
pub const RECOMMENDED: &str = include_str!("../tuning/sysctl.d/99-orders-server.conf");

/// One recommended setting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Setting {
    /// sysctl name, e.g. `net.core.somaxconn`.
    pub key: String,
    /// The recommended value (whitespace normalized).
    pub want: String,
    /// Why: the comment line above it in the file (shared by a group).
    pub reason: String,
}

/// Which way a setting may differ without harm.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Direction {
    /// Limits, backlogs, buffers: more is fine (each number of a triple).
    AtLeast,
    /// Timeouts: less is fine.
    AtMost,
    /// Port lists: a superset is fine.
    Contains,
    /// Anything else.
    Exact,
}

/// The direction of each setting that has one (the rest are exact).
fn direction(key: &str) -> Direction {
    match key {
        "net.core.somaxconn"
        | "net.ipv4.tcp_max_syn_backlog"
        | "net.core.netdev_max_backlog"
        | "fs.file-max"
        | "net.core.rmem_max"
        | "net.core.wmem_max"
        | "net.ipv4.tcp_rmem"
        | "net.ipv4.tcp_wmem" => Direction::AtLeast,
        "net.ipv4.tcp_fin_timeout" => Direction::AtMost,
        "net.ipv4.ip_local_reserved_ports" => Direction::Contains,
        _ => Direction::Exact,
    }
}

/// How the running value compares with the recommendation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// The same.
    Equal,
    /// Different in the harmless direction.
    Better,
    /// Lower than recommended (a limit, a backlog, a buffer; or a
    /// reserved-ports list that lacks some).
    Lower,
    /// Different (no direction), or a timeout that is longer.
    Differs,
    /// The kernel has no such setting.
    Missing,
}

impl Verdict {
    /// Whether the operator should act.
    pub fn is_finding(&self) -> bool {
        matches!(self, Verdict::Lower | Verdict::Differs | Verdict::Missing)
    }
}

/// The settings of a sysctl.d file, each with the comment line above it
/// (a setting with none takes its group's, the last one given).
pub fn parse(text: &str) -> Vec<Setting> {
    let mut reason = String::new();
    let mut comment: Option<String> = None;
    let mut settings = Vec::new();
    for line in text.lines().map(str::trim) {
        if let Some(c) = line.strip_prefix('#').or_else(|| line.strip_prefix(';')) {
            comment = Some(c.trim().to_string());
        } else if let Some((k, v)) = line.split_once('=') {
            if let Some(c) = comment.take() {
                reason = c;
            }
            settings.push(Setting {
                key: k.trim().to_string(),
                want: normalize(v),
                reason: reason.clone(),
            });
        } else if line.is_empty() {
            comment = None;
        }
    }
    settings
}

/// Whitespace-insensitive form of a value ("4096\t87380" == "4096 87380").
fn normalize(v: &str) -> String {
    v.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Compares a running value with the recommendation.
fn judge(key: &str, want: &str, have: Option<&str>) -> Verdict {
    let Some(have) = have else {
        return Verdict::Missing;
    };
    if want == have {
        return Verdict::Equal;
    }
    let numbers = |s: &str| {
        s.split_whitespace()
            .map(|n| n.parse::<u64>().ok())
            .collect::<Option<Vec<_>>>()
    };
    match (direction(key), numbers(want), numbers(have)) {
        (Direction::AtLeast, Some(w), Some(h)) if w.len() == h.len() => {
            if h.iter().zip(&w).all(|(h, w)| h >= w) {
                Verdict::Better
            } else {
                Verdict::Lower
            }
        }
        (Direction::AtMost, Some(w), Some(h))
            if w.len() == h.len() && h.iter().zip(&w).all(|(h, w)| h <= w) =>
        {
            Verdict::Better
        }
        (Direction::Contains, _, _) => match (ports(want), ports(have)) {
            (Some(w), Some(h))
                if w.iter()
                    .all(|p| h.iter().any(|(lo, hi)| lo <= &p.0 && p.1 <= *hi)) =>
            {
                Verdict::Better
            }
            _ => Verdict::Lower,
        },
        _ => Verdict::Differs,
    }
}

/// A port list as the kernel writes it: `80,8000,27017-27019`.
fn ports(list: &str) -> Option<Vec<(u16, u16)>> {
    list.split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('-') {
            Some((lo, hi)) => Some((lo.parse().ok()?, hi.parse().ok()?)),
            None => p.parse().ok().map(|n| (n, n)),
        })
        .collect()
}

/// Every recommended setting with its running value (from `proc_sys`,
/// normally /proc/sys) and verdict.
pub fn review(proc_sys: &Path) -> Vec<(Setting, Option<String>, Verdict)> {
    parse(RECOMMENDED)
        .into_iter()
        .map(|s| {
            let path = proc_sys.join(s.key.replace('.', "/"));
            let have = std::fs::read_to_string(&path).ok().map(|v| normalize(&v));
            let verdict = judge(&s.key, &s.want, have.as_deref());
            (s, have, verdict)
        })
        .collect()
}

/// The report's line for one setting.
fn line(s: &Setting, have: Option<&str>, verdict: &Verdict) -> String {
    let have = have.filter(|h| !h.is_empty()).unwrap_or("(none)");
    match verdict {
        Verdict::Equal => format!("ok           {} = {}", s.key, s.want),
        Verdict::Better => format!("ok (better)  {} = {have} (recommended {})", s.key, s.want),
        Verdict::Lower => format!(
            "LOWER        {} = {have}, recommended {}: {}",
            s.key, s.want, s.reason
        ),
        Verdict::Differs => format!(
            "DIFFERS      {} = {have}, recommended {}: {}",
            s.key, s.want, s.reason
        ),
        Verdict::Missing => format!(
            "MISSING      {}: not on this kernel, recommended {}: {}",
            s.key, s.want, s.reason
        ),
    }
}

/// What the check found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Every setting is as recommended or better.
    AsRecommended,
    /// This many settings need attention.
    Findings(usize),
}

/// Runs the check and prints a report.
pub fn run(proc_sys: &Path) -> Outcome {
    let reviewed = review(proc_sys);
    for (s, have, verdict) in &reviewed {
        println!("{}", line(s, have.as_deref(), verdict));
    }
    if let Ok((soft, hard)) =
        nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
    {
        println!("open-file limit of this process: soft {soft}, hard {hard} (the systemd unit sets 1048576)");
    }
    let findings: Vec<&str> = reviewed
        .iter()
        .filter(|(_, _, v)| v.is_finding())
        .map(|(s, _, _)| s.key.as_str())
        .collect();
    if findings.is_empty() {
        println!(
            "all {} kernel settings are as recommended or better: nothing to do",
            reviewed.len()
        );
        Outcome::AsRecommended
    } else {
        println!(
            "{} of {} kernel settings need attention ({}): install tuning/sysctl.d/99-orders-server.conf in /etc/sysctl.d/ and run `sysctl --system` (a value you raised on purpose can stay: edit the file to match)",
            findings.len(),
            reviewed.len(),
            findings.join(", ")
        );
        Outcome::Findings(findings.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_file_parses_with_reasons() {
        let settings = parse(RECOMMENDED);
        assert!(settings
            .iter()
            .any(|s| s.key == "net.ipv4.tcp_migrate_req" && s.want == "1"));
        assert!(settings.len() >= 13);
        assert!(
            settings.iter().all(|s| !s.reason.is_empty()),
            "every setting has a reason"
        );
        let wmem = settings
            .iter()
            .find(|s| s.key == "net.core.wmem_max")
            .unwrap();
        assert!(
            wmem.reason.starts_with("Socket buffer ceilings"),
            "grouped settings share the reason"
        );
    }

    #[test]
    fn the_port_range_stays_clear_of_the_listening_ports() {
        let settings = parse(RECOMMENDED);
        let range = &settings
            .iter()
            .find(|s| s.key == "net.ipv4.ip_local_port_range")
            .unwrap()
            .want;
        let (lo, hi) = range.split_once(' ').unwrap();
        let (lo, hi): (u16, u16) = (lo.parse().unwrap(), hi.parse().unwrap());
        let reserved = ports(
            &settings
                .iter()
                .find(|s| s.key == "net.ipv4.ip_local_reserved_ports")
                .unwrap()
                .want,
        )
        .unwrap();
        for listening in [80u16, 8000, 9180, 27017] {
            let in_range = (lo..=hi).contains(&listening);
            assert!(
                !in_range || reserved.contains(&(listening, listening)),
                "{listening} could be a source port"
            );
        }
    }

    #[test]
    fn only_the_harmful_direction_is_a_finding() {
        assert_eq!(
            judge("net.core.somaxconn", "65535", Some("65535")),
            Verdict::Equal
        );
        assert_eq!(
            judge("net.core.somaxconn", "65535", Some("100000")),
            Verdict::Better
        );
        assert_eq!(
            judge("net.core.somaxconn", "65535", Some("4096")),
            Verdict::Lower
        );
        assert_eq!(
            judge(
                "net.ipv4.tcp_rmem",
                "4096 87380 16777216",
                Some("4096 131072 33554432")
            ),
            Verdict::Better
        );
        assert_eq!(
            judge(
                "net.ipv4.tcp_rmem",
                "4096 87380 16777216",
                Some("4096 87380 6291456")
            ),
            Verdict::Lower
        );
        assert_eq!(
            judge("net.ipv4.tcp_fin_timeout", "15", Some("10")),
            Verdict::Better
        );
        assert_eq!(
            judge("net.ipv4.tcp_fin_timeout", "15", Some("60")),
            Verdict::Differs
        );
        assert_eq!(
            judge("net.ipv4.tcp_tw_reuse", "1", Some("2")),
            Verdict::Differs
        );
        assert_eq!(
            judge("net.ipv4.tcp_migrate_req", "1", Some("0")),
            Verdict::Differs
        );
        assert_eq!(
            judge(
                "net.ipv4.ip_local_port_range",
                "10240 65000",
                Some("1024 65535")
            ),
            Verdict::Differs
        );
        assert_eq!(
            judge(
                "net.ipv4.ip_local_reserved_ports",
                "80,8000",
                Some("80,443,8000-8010")
            ),
            Verdict::Better
        );
        assert_eq!(
            judge("net.ipv4.ip_local_reserved_ports", "80,8000", Some("80")),
            Verdict::Lower
        );
        assert_eq!(
            judge("net.ipv4.ip_local_reserved_ports", "80,8000", Some("")),
            Verdict::Lower
        );
        assert_eq!(judge("net.core.somaxconn", "65535", None), Verdict::Missing);
    }
}
