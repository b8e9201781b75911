//! Shared mappings made by the master before it forks, so that every worker
//! inherits them: the heartbeats (`master::heartbeat`) and the metrics
//! (`metrics`). Each is backed by a memfd rather than anonymous memory:
//! a binary upgrade re-executes the master in place (`master::upgrade`), and
//! the new image maps the same memory again from the descriptor it
//! inherits, so the workers it adopts keep their heartbeats and counters.
//! Never unmapped, and the descriptor never closed: they live as long as
//! the process.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// A shared mapping and the memfd behind it.
#[derive(Debug, Clone, Copy)]
pub struct Mapping {
    /// The page-aligned start.
    pub ptr: *mut u8,
    /// The memfd (close-on-exec until an upgrade hands it on).
    pub fd: RawFd,
}

/// Maps `len` zeroed bytes, backed by a new memfd named `name`, shared
/// with every process forked afterwards.
pub fn map(name: &str, len: usize) -> io::Result<Mapping> {
    let fd = memfd(name)?;
    nix::unistd::ftruncate(&fd, len as libc::off_t)?;
    map_fd(fd, len)
}

/// Maps the memfd `fd` (inherited across a binary upgrade) again; it must
/// be a memfd of at least `len` bytes, else the descriptor is left alone.
pub fn map_inherited(fd: RawFd, len: usize) -> io::Result<Mapping> {
    let stat = nix::sys::stat::fstat(fd)?;
    if stat.st_mode & libc::S_IFMT != libc::S_IFREG || (stat.st_size as usize) < len {
        return Err(io::Error::other(format!(
            "descriptor {fd} is not the shared region (size {})",
            stat.st_size
        )));
    }
    // SAFETY: `fd` is open (fstat succeeded) and was handed to this process
    // for this region alone; nothing else here owns it.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    crate::net::set_close_on_exec(fd.as_raw_fd(), true)?;
    map_fd(fd, len)
}

fn map_fd(fd: OwnedFd, len: usize) -> io::Result<Mapping> {
    // SAFETY: a shared mapping of `len` bytes of a file of at least that
    // size, checked for failure.
    let ptr = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            fd.as_raw_fd(),
            0,
        )
    };
    if ptr == libc::MAP_FAILED {
        return Err(io::Error::last_os_error());
    }
    // Kept open for the process's lifetime (an upgrade passes it on).
    let fd = std::os::fd::IntoRawFd::into_raw_fd(fd);
    Ok(Mapping {
        ptr: ptr.cast(),
        fd,
    })
}

/// An anonymous scratch file in memory (a memfd, close-on-exec).
pub fn scratch_file(name: &str) -> io::Result<std::fs::File> {
    Ok(memfd(name)?.into())
}

/// A new, empty memfd named `orders-server NAME` (close-on-exec).
fn memfd(name: &str) -> io::Result<OwnedFd> {
    let name = std::ffi::CString::new(format!("orders-server {name}")).map_err(io::Error::other)?;
    Ok(nix::sys::memfd::memfd_create(
        &name,
        nix::sys::memfd::MemFdCreateFlag::MFD_CLOEXEC,
    )?)
}
