//! What the master and its workers say to each other, and nothing else: a
//! leaf both import, so that neither imports the other for it.
//!
//! - [`heartbeat`]: each worker's proof of life, in a shared mapping the
//!   master reads (and its slots, which the metrics share);
//! - [`signals`]: the one table of signals, what the master and what a
//!   worker does with each;
//! - [`Report`]: the bytes a worker writes on its status pipe.

pub mod heartbeat;
pub mod signals;

/// What a worker tells the master on its status pipe, one byte each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Report {
    /// It serves (`R`).
    Ready,
    /// It reached max_requests and asks to be replaced (`Q`).
    Retire,
}

impl Report {
    /// The byte on the pipe.
    pub const fn byte(self) -> u8 {
        match self {
            Report::Ready => b'R',
            Report::Retire => b'Q',
        }
    }

    /// The report a byte stands for (None: not one of ours).
    pub fn from_byte(byte: u8) -> Option<Report> {
        [Report::Ready, Report::Retire]
            .into_iter()
            .find(|r| r.byte() == byte)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_survive_the_pipe() {
        for r in [Report::Ready, Report::Retire] {
            assert_eq!(Report::from_byte(r.byte()), Some(r));
        }
        assert_eq!(Report::from_byte(b'x'), None);
    }
}
