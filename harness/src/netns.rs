//! Private network namespaces for load tests: they set
//! `net.ipv4.tcp_migrate_req` without touching the host; named namespaces
//! (`ip netns`) of a test topology, entered per thread. Shared by the
//! server's tests and orders-loadtest's (through this crate).

/// Runs `f` on a thread of its own in a new network namespace (loopback up,
/// `net.ipv4.tcp_migrate_req` set as asked); the processes it starts (server,
/// wrk) and the sockets it opens live there too. Needs root (CAP_SYS_ADMIN),
/// as on the development and CI machines. Isolates the sysctl from the host.
pub fn in_netns<T: Send + 'static>(migrate_req: bool, f: impl FnOnce() -> T + Send + 'static) -> T {
    std::thread::spawn(move || {
        // CLONE_NEWNET alone affects only this thread.
        if let Err(e) = nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET) {
            panic!(
                "unshare(CLONE_NEWNET) failed ({e}): these tests need root, as on the dev and CI machines"
            );
        }
        loopback_up();
        std::fs::write("/proc/sys/net/ipv4/tcp_migrate_req", if migrate_req { "1" } else { "0" })
            .expect("set net.ipv4.tcp_migrate_req in the namespace");
        f()
    })
    .join()
    .unwrap_or_else(|e| std::panic::resume_unwind(e))
}

/// `ip link set lo up`, with ioctls.
fn loopback_up() {
    // SAFETY: plain socket/ioctl calls on a zeroed ifreq naming "lo".
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_DGRAM, 0);
        assert!(fd >= 0);
        let mut ifr: libc::ifreq = std::mem::zeroed();
        for (i, b) in b"lo\0".iter().enumerate() {
            ifr.ifr_name[i] = *b as libc::c_char;
        }
        assert_eq!(libc::ioctl(fd, libc::SIOCGIFFLAGS, &mut ifr), 0);
        ifr.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
        assert_eq!(libc::ioctl(fd, libc::SIOCSIFFLAGS, &mut ifr), 0);
        libc::close(fd);
    }
}

/// Runs `f` in the named network namespace (`ip netns add NAME`, found at
/// /run/netns/NAME) on a thread of its own, or here when `netns` is `None`.
pub fn run_in<T: Send + 'static>(
    netns: Option<String>,
    f: impl FnOnce() -> T + Send + 'static,
) -> T {
    let Some(name) = netns else { return f() };
    std::thread::spawn(move || {
        enter(&name);
        f()
    })
    .join()
    .unwrap_or_else(|e| std::panic::resume_unwind(e))
}

/// Moves the calling thread into the named network namespace.
pub fn enter(name: &str) {
    let path = format!("/run/netns/{name}");
    let file = std::fs::File::open(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    // Affects this thread only.
    if let Err(e) = nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET) {
        panic!("setns into {name}: {e}");
    }
}

/// A command for `program`, run in the named network namespace when given
/// (`ip netns exec` execs it: the child's pid is the program's).
pub fn command(netns: Option<&str>, program: impl AsRef<std::ffi::OsStr>) -> std::process::Command {
    match netns {
        Some(ns) => {
            let mut c = std::process::Command::new("ip");
            c.args(["netns", "exec", ns]).arg(program);
            c
        }
        None => std::process::Command::new(program),
    }
}
