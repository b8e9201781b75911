//! API tokens (off by default, as app.py had none): with `api_tokens_file`
//! set, every write (POST, PUT, DELETE) — and with `api_tokens_for_reads`
//! every read too — needs `Authorization: Bearer <token>`; anything else
//! is a 401 with `WWW-Authenticate: Bearer`. The file holds one token per
//! line as `name:token` (blank lines and `#` comments skipped); it is read
//! at start and on every reload (SIGHUP). Tokens are compared in constant
//! time, and only their names ever appear in logs or errors.

use std::fmt;
use std::path::Path;

/// Shortest token accepted (a guessable token protects nothing).
pub const MIN_TOKEN_LEN: usize = 16;

/// The tokens of `api_tokens_file`.
#[derive(Clone, Default)]
pub struct Tokens {
    entries: Vec<(String, Vec<u8>)>,
    /// Reads need a token too.
    pub for_reads: bool,
}

/// Never the tokens themselves.
impl fmt::Debug for Tokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.entries.iter().map(|(n, _)| n.as_str()).collect();
        f.debug_struct("Tokens")
            .field("names", &names)
            .field("for_reads", &self.for_reads)
            .finish()
    }
}

/// Why the tokens file cannot be used (names the line, never the token).
#[derive(Debug, thiserror::Error)]
pub enum TokensError {
    /// The file cannot be read.
    #[error("api_tokens_file {}", .0.display())]
    Read(std::path::PathBuf, #[source] std::io::Error),
    /// A line is not `name:token` with a long enough token.
    #[error("api_tokens_file {} line {line}: expected name:token, with a token of at least {MIN_TOKEN_LEN} characters", .path.display())]
    Line {
        path: std::path::PathBuf,
        line: usize,
    },
    /// Users other than its owner may read or write it (its mode).
    #[error("api_tokens_file {} may be read or written by other users (mode {:o}): its tokens may be known; make it private with `chmod 600 {}`", .0.display(), .1, .0.display())]
    Exposed(std::path::PathBuf, u32),
    /// No token at all: nothing could ever be written.
    #[error("api_tokens_file {} holds no token", .0.display())]
    Empty(std::path::PathBuf),
}

impl Tokens {
    /// Reads the tokens file.
    pub fn load(path: &Path, for_reads: bool) -> Result<Tokens, TokensError> {
        let text =
            std::fs::read_to_string(path).map_err(|e| TokensError::Read(path.to_path_buf(), e))?;
        Tokens::parse(path, &text, for_reads)
    }

    /// Parses the text of the tokens file at `path` (named in errors).
    pub fn parse(path: &Path, text: &str, for_reads: bool) -> Result<Tokens, TokensError> {
        let mut entries = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let bad = || TokensError::Line {
                path: path.to_path_buf(),
                line: i + 1,
            };
            let (name, token) = line.split_once(':').ok_or_else(bad)?;
            let (name, token) = (name.trim(), token.trim());
            if name.is_empty() || token.len() < MIN_TOKEN_LEN || token.contains(char::is_whitespace)
            {
                return Err(bad());
            }
            entries.push((name.to_string(), token.as_bytes().to_vec()));
        }
        if entries.is_empty() {
            return Err(TokensError::Empty(path.to_path_buf()));
        }
        Ok(Tokens { entries, for_reads })
    }

    /// Whether a request with this method needs a token.
    pub fn required_for(&self, method_is_read: bool) -> bool {
        !method_is_read || self.for_reads
    }

    /// The name of the token an `Authorization` header value presents, if
    /// it is one of ours. Every token is compared, each in constant time.
    pub fn check(&self, authorization: &[u8]) -> Option<&str> {
        let presented = bearer(authorization)?;
        let mut found = None;
        for (name, token) in &self.entries {
            if constant_time_eq(presented, token) && found.is_none() {
                found = Some(name.as_str());
            }
        }
        found
    }
}

/// The token of `Bearer <token>` (the scheme is case-insensitive).
fn bearer(value: &[u8]) -> Option<&[u8]> {
    let value = value.trim_ascii();
    let (scheme, rest) = value.split_at(value.iter().position(|b| *b == b' ')?);
    scheme
        .eq_ignore_ascii_case(b"bearer")
        .then(|| rest.trim_ascii())
}

/// Equality whose time does not depend on where the bytes differ (it still
/// depends on the lengths, which a token's length does not betray: every
/// presented token is compared with every stored one).
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = a.len() ^ b.len();
    for i in 0..a.len().max(b.len()) {
        diff |= usize::from(a.get(i).copied().unwrap_or(0) ^ b.get(i).copied().unwrap_or(0));
    }
    diff == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_file_and_checks() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens");
        std::fs::write(
            &path,
            "# ops\nalice: 0123456789abcdef0123\n\nci:fedcba9876543210fedc\n",
        )
        .unwrap();
        let t = Tokens::load(&path, false).unwrap();
        assert_eq!(t.check(b"Bearer 0123456789abcdef0123"), Some("alice"));
        assert_eq!(t.check(b"bearer  fedcba9876543210fedc "), Some("ci"));
        assert_eq!(t.check(b"Bearer 0123456789abcdef012"), None);
        assert_eq!(t.check(b"Basic 0123456789abcdef0123"), None);
        assert_eq!(t.check(b""), None);
        assert!(t.required_for(false) && !t.required_for(true));
        assert!(
            !format!("{t:?}").contains("0123"),
            "Debug shows names only: {t:?}"
        );
        std::fs::write(&path, "alice:short\n").unwrap();
        let e = Tokens::load(&path, false).unwrap_err().to_string();
        assert!(e.contains("line 1") && !e.contains("short"), "{e}");
        std::fs::write(&path, "# nothing\n").unwrap();
        assert!(matches!(
            Tokens::load(&path, false),
            Err(TokensError::Empty(_))
        ));
    }
}
