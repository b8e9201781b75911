//! Process titles, as gunicorn's setproctitle shows them in `ps`:
//! `orders-server: master [gen 2] 0.0.0.0:80`, `orders-server: worker 3
//! [gen 2]`.
//!
//! Linux shows a process's command line from the memory that held its
//! argument strings (`/proc/PID/cmdline` reads `arg_start..arg_end`); this
//! overwrites that memory in place and pads it with NULs. The title is cut
//! to the original command line's length: growing it would mean moving the
//! environment strings that follow, which `getenv` still points into. After
//! a title is set, `std::env::args` returns it, so the arguments are parsed
//! before (in `main`).

/// Shows `title` as this process's command line.
pub fn set(title: &str) {
    let Some((start, end)) = argv_area() else {
        return;
    };
    let len = end.saturating_sub(start);
    if len < 2 {
        return;
    }
    let bytes = title.as_bytes();
    let n = bytes.len().min(len - 1);
    // SAFETY: `start..end` is this process's own argument area as the
    // kernel reports it (/proc/self/stat): writable memory of the initial
    // stack that holds only the argument strings. Writing within it, and
    // leaving its last byte NUL, keeps every argv string NUL-terminated.
    unsafe {
        std::ptr::copy_nonoverlapping(bytes.as_ptr(), start as *mut u8, n);
        std::ptr::write_bytes((start + n) as *mut u8, 0, len - n);
    }
}

/// `arg_start` and `arg_end` of this process (fields 48 and 49 of
/// /proc/self/stat, counted from 1; the second field, the command name in
/// parentheses, may hold spaces, so fields are counted after its `)`).
fn argv_area() -> Option<(usize, usize)> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let after_name = &stat[stat.rfind(')')? + 1..];
    let mut fields = after_name.split_whitespace().skip(48 - 3);
    let start = fields.next()?.parse().ok()?;
    let end = fields.next()?.parse().ok()?;
    Some((start, end))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_argument_area_is_found() {
        let (start, end) = argv_area().expect("arg_start and arg_end");
        assert!(end > start);
    }
}
