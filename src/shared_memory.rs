//! Anonymous shared mappings, made by the master before it forks so that
//! every worker inherits them: the heartbeats (`master::heartbeat`) and the
//! metrics (`metrics`). Never unmapped: they live as long as the process.

use std::io;

/// Maps `len` zeroed bytes shared with every process forked afterwards;
/// the start is page-aligned.
pub fn map(len: usize) -> io::Result<*mut u8> {
    // SAFETY: an anonymous shared mapping (no file), checked for failure.
    let ptr = unsafe {
        libc::mmap(std::ptr::null_mut(), len, libc::PROT_READ | libc::PROT_WRITE, libc::MAP_SHARED | libc::MAP_ANONYMOUS, -1, 0)
    };
    if ptr == libc::MAP_FAILED {
        return Err(io::Error::last_os_error());
    }
    Ok(ptr.cast())
}
