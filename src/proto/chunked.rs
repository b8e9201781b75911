//! The chunked transfer coding of a request body (RFC 9112 §7.1), decoded
//! as it arrives. A [`Decoder`] reads the coding's own bytes (the size
//! lines, the CRLF after each chunk's data, the trailer section) from the
//! start of the connection's input and says what comes next; the chunk data
//! itself is moved into the body by the connection (a long chunk straight
//! from the socket), so the decoder never copies a body byte.
//!
//! The rules are strict, because a proxy in front that frames a body
//! differently than this server could smuggle a request past it: a size
//! line is hex digits first, then extensions without control bytes (which
//! are ignored); chunk data ends in CRLF; a trailer line is `name: value`
//! as in a head, within the head's limits; the total stays within the
//! largest body.

use httparse::Status;

use super::request::HeadLimits;
use super::Error;

/// Longest chunk-size line (size and extensions).
pub const MAX_CHUNK_LINE: usize = 4096;

/// What comes next in a chunked body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// More input is needed before anything else can be decoded.
    More,
    /// This many bytes of chunk data come next: move them into the body,
    /// then step again.
    Data(usize),
    /// The body is complete (its trailer section read and discarded).
    Done,
}

/// Where the decoder is in the coding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Before a chunk-size line.
    Size,
    /// After a chunk's data: its CRLF.
    DataEnd,
    /// After the last chunk: trailer lines so far.
    Trailers(usize),
    /// The body is complete.
    Done,
}

/// Decodes one chunked body.
#[derive(Debug)]
pub struct Decoder {
    state: State,
    /// Data bytes announced so far.
    received: u64,
    limits: HeadLimits,
}

impl Decoder {
    /// A decoder for a body within `limits` (its size, its trailers).
    pub fn new(limits: &HeadLimits) -> Decoder {
        Decoder {
            state: State::Size,
            received: 0,
            limits: *limits,
        }
    }

    /// Decodes the coding's bytes at the start of `input`: how many it
    /// took (consume them), and what comes next. After [`Next::Data`] the
    /// caller moves that many data bytes before stepping again.
    pub fn step(&mut self, input: &[u8]) -> Result<(usize, Next), Error> {
        let mut used = 0;
        loop {
            let data = &input[used..];
            let (taken, next) = match self.state {
                State::Size => self.size_line(data)?,
                State::DataEnd => self.data_end(data)?,
                State::Trailers(lines) => self.trailer_line(data, lines)?,
                State::Done => (0, Some(Next::Done)),
            };
            used += taken;
            if let Some(next) = next {
                return Ok((used, next));
            }
        }
    }

    /// A chunk-size line: the size (extensions are ignored).
    fn size_line(&mut self, data: &[u8]) -> Result<(usize, Option<Next>), Error> {
        let invalid = Error::Malformed("invalid chunk size line");
        match httparse::parse_chunk_size(data) {
            Ok(Status::Complete((used, size))) => {
                // httparse takes an empty line for 0, and any byte in an
                // extension, a bare LF included: a proxy in front might
                // end the line there and frame the body differently.
                let line = &data[..used - 2];
                if !line.first().is_some_and(u8::is_ascii_hexdigit)
                    || line.iter().any(|b| is_ctl(*b))
                {
                    return Err(invalid);
                }
                if size == 0 {
                    self.state = State::Trailers(0);
                    return Ok((used, None));
                }
                let max = self.limits.max_body;
                if size > max.saturating_sub(self.received) {
                    return Err(Error::BodyTooLarge(max));
                }
                self.received += size;
                self.state = State::DataEnd;
                Ok((used, Some(Next::Data(size as usize))))
            }
            Ok(Status::Partial) if data.len() > MAX_CHUNK_LINE => Err(invalid),
            Ok(Status::Partial) => Ok((0, Some(Next::More))),
            Err(_) => Err(invalid),
        }
    }

    /// The CRLF after a chunk's data.
    fn data_end(&mut self, data: &[u8]) -> Result<(usize, Option<Next>), Error> {
        if data.len() < 2 {
            return Ok((0, Some(Next::More)));
        }
        if &data[..2] != b"\r\n" {
            return Err(Error::Malformed("chunk data not followed by CRLF"));
        }
        self.state = State::Size;
        Ok((2, None))
    }

    /// One line of the trailer section (discarded), within the head limits;
    /// the blank line ends the body.
    fn trailer_line(&mut self, data: &[u8], lines: usize) -> Result<(usize, Option<Next>), Error> {
        let limits = &self.limits;
        let Some(end) = data.iter().position(|b| *b == b'\n') else {
            if data.len() > limits.field_size + 2 {
                return Err(Error::HeaderTooLong(limits.field_size));
            }
            return Ok((0, Some(Next::More)));
        };
        let blank = end == 1 && data[0] == b'\r';
        if !blank && !is_field_line(&data[..end]) {
            return Err(Error::Malformed("invalid trailer line"));
        }
        if blank {
            self.state = State::Done;
            return Ok((end + 1, Some(Next::Done)));
        }
        if lines + 1 > limits.fields {
            return Err(Error::TooManyHeaders(limits.fields));
        }
        if end + 1 > limits.field_size + 2 {
            return Err(Error::HeaderTooLong(limits.field_size));
        }
        self.state = State::Trailers(lines + 1);
        Ok((end + 1, None))
    }
}

/// A control character other than horizontal tab.
fn is_ctl(b: u8) -> bool {
    (b < 0x20 && b != b'\t') || b == 0x7f
}

/// A header field line as the head's parser accepts one (the trailer
/// section gets the same rules): `name: value` ending in CRLF, the name a
/// token, no control byte, no folded continuation.
fn is_field_line(line: &[u8]) -> bool {
    let Some(line) = line.strip_suffix(b"\r") else {
        return false;
    };
    let Some(colon) = line.iter().position(|b| *b == b':') else {
        return false;
    };
    let name = &line[..colon];
    !name.is_empty()
        && name
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(b))
        && !line.iter().any(|b| is_ctl(*b))
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: HeadLimits = HeadLimits {
        line: 100,
        fields: 2,
        field_size: 20,
        max_body: 10,
    };

    /// Decodes `input` fed in pieces of `piece` bytes: the body, or the error.
    fn decode(input: &[u8], piece: usize) -> Result<Vec<u8>, Error> {
        let mut d = Decoder::new(&LIMITS);
        let (mut buffered, mut rest) = (Vec::new(), input);
        let mut body = Vec::new();
        loop {
            let (used, next) = d.step(&buffered)?;
            buffered.drain(..used);
            match next {
                Next::Done => return Ok(body),
                Next::Data(mut n) => {
                    while n > 0 {
                        if buffered.is_empty() {
                            let take = piece.min(rest.len()).max(1);
                            buffered.extend_from_slice(&rest[..take]);
                            rest = &rest[take..];
                        }
                        let k = n.min(buffered.len());
                        body.extend(buffered.drain(..k));
                        n -= k;
                    }
                }
                Next::More => {
                    assert!(!rest.is_empty(), "asked for more after the end");
                    let take = piece.min(rest.len());
                    buffered.extend_from_slice(&rest[..take]);
                    rest = &rest[take..];
                }
            }
        }
    }

    #[test]
    fn bodies_decode_whole_or_a_byte_at_a_time() {
        let input = b"3;ext=1\r\nabc\r\n2\r\nde\r\n0\r\nX-T: 1\r\n\r\n";
        for piece in [1, 2, 7, input.len()] {
            assert_eq!(decode(input, piece).unwrap(), b"abcde", "pieces of {piece}");
        }
        assert_eq!(decode(b"0\r\n\r\n", 1).unwrap(), b"");
    }

    #[test]
    fn what_a_proxy_could_read_otherwise_is_refused() {
        for bad in [
            &b"\r\n"[..],
            b";x\r\n",
            b"3\nabc\r\n0\r\n\r\n",
            b"3 ;\x01\r\nabc\r\n0\r\n\r\n",
            b"3\r\nabcX\r\n0\r\n\r\n",
            b"0\r\nno colon\r\n\r\n",
            b"0\r\nA: b\nC: d\r\n\r\n",
        ] {
            assert!(
                matches!(decode(bad, 64), Err(Error::Malformed(_))),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn limits() {
        assert_eq!(
            decode(b"6\r\nabcdef\r\n5\r\nghijk\r\n0\r\n\r\n", 64),
            Err(Error::BodyTooLarge(10)),
            "the total, not one chunk"
        );
        assert_eq!(
            decode(b"0\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n", 64),
            Err(Error::TooManyHeaders(2))
        );
        assert_eq!(
            decode(b"0\r\nA: 123456789012345678901\r\n\r\n", 64),
            Err(Error::HeaderTooLong(20))
        );
        let endless_line = [b'1'; MAX_CHUNK_LINE + 1];
        assert!(matches!(
            Decoder::new(&LIMITS).step(&endless_line),
            Err(Error::Malformed(_))
        ));
    }
}
