//! Entity tags and the preconditions built on them (RFC 9110 §8.8.3,
//! §13): the server's strong tags, the `If-Match` and `If-None-Match`
//! fields of a request, and their evaluation.
//!
//! A tag is the XXH3 64-bit hash of the bytes it stands for, written as
//! 16 hex digits in quotes: the same bytes give the same tag on every
//! worker and host, after every restart and upgrade (XXH3's output is
//! fixed by its specification, not a library's choice that could change
//! between builds; a test pins known values). It reads 8 bytes at a step
//! (FNV-1a, one byte at a time with a multiply between, cost 17 µs for a
//! 13 KB page). Who hashes which bytes is the application's business.

use std::fmt;

/// Hex digits of a tag.
const TAG_DIGITS: usize = 16;

/// A strong entity tag of ours.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct EntityTag(pub u64);

impl EntityTag {
    /// The tag of `bytes`.
    pub fn of(bytes: &[u8]) -> EntityTag {
        EntityTag(xxhash_rust::xxh3::xxh3_64(bytes))
    }

    /// The tag of several pieces of bytes, as if they were one.
    pub fn of_parts(parts: &[&[u8]]) -> EntityTag {
        let mut hasher = xxhash_rust::xxh3::Xxh3::new();
        for part in parts {
            hasher.update(part);
        }
        EntityTag(hasher.digest())
    }

    /// Appends the field value, `"0123456789abcdef"` (quotes included).
    pub fn write(&self, out: &mut Vec<u8>) {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        out.push(b'"');
        for i in (0..TAG_DIGITS).rev() {
            out.push(HEX[((self.0 >> (i * 4)) & 0xf) as usize]);
        }
        out.push(b'"');
    }

    /// The tag an opaque-tag (the part between the quotes) names, if it is
    /// one of ours.
    fn parse_opaque(opaque: &[u8]) -> Option<EntityTag> {
        if opaque.len() != TAG_DIGITS {
            return None;
        }
        let text = std::str::from_utf8(opaque).ok()?;
        if !text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return None;
        }
        u64::from_str_radix(text, 16).ok().map(EntityTag)
    }
}

impl fmt::Display for EntityTag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut out = Vec::with_capacity(TAG_DIGITS + 2);
        self.write(&mut out);
        f.write_str(std::str::from_utf8(&out).expect("hex digits and quotes"))
    }
}

/// One member of an `If-Match` or `If-None-Match` list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Listed {
    /// The tag, when it is one of ours (a tag we never made matches
    /// nothing, and neither does a member that is not an entity-tag).
    tag: Option<EntityTag>,
    /// `W/"..."`: a weak tag (never matches in a strong comparison).
    weak: bool,
}

/// The current representation a precondition is compared with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Current {
    /// There is none (no such order).
    Absent,
    /// There is one, without a tag of ours (a streamed list, a collection).
    Untagged,
    /// There is one, with this tag.
    Tagged(EntityTag),
}

impl From<Option<EntityTag>> for Current {
    fn from(tag: Option<EntityTag>) -> Current {
        tag.map_or(Current::Absent, Current::Tagged)
    }
}

/// The value of an `If-Match` or `If-None-Match` field (every line of it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Condition {
    /// `*`: any current representation.
    Any,
    /// A list of tags.
    Tags(Vec<Listed>),
}

/// A field that is neither `*` nor a list of entity-tags.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InvalidCondition(pub &'static str);

impl Condition {
    /// Parses the field's lines: `*`, or a comma-separated list of
    /// entity-tags (`"opaque"` or `W/"opaque"`). None when they name
    /// nothing at all (empty): the field then counts as not sent.
    pub fn parse<'a>(
        name: &'static str,
        lines: impl IntoIterator<Item = &'a [u8]>,
    ) -> Result<Option<Condition>, InvalidCondition> {
        let mut tags = Vec::new();
        let mut any = false;
        for line in lines {
            for member in members(line) {
                match member {
                    b"" => {}
                    b"*" => any = true,
                    _ => tags.push(listed(member).ok_or(InvalidCondition(name))?),
                }
            }
        }
        Ok(match (any, tags.is_empty()) {
            // `*` stands alone (RFC 9110 §13.1.1).
            (true, false) => return Err(InvalidCondition(name)),
            (true, true) => Some(Condition::Any),
            (false, true) => None,
            (false, false) => Some(Condition::Tags(tags)),
        })
    }

    /// Strong comparison (`If-Match`): the field is `*` and a current
    /// representation exists, or its tag is listed as a strong tag.
    fn strong_match(&self, current: Current) -> bool {
        match (self, current) {
            (_, Current::Absent) => false,
            (Condition::Any, _) => true,
            (Condition::Tags(_), Current::Untagged) => false,
            (Condition::Tags(tags), Current::Tagged(t)) => {
                tags.iter().any(|l| !l.weak && l.tag == Some(t))
            }
        }
    }

    /// Weak comparison (`If-None-Match`): the field is `*` and a current
    /// representation exists, or its tag is listed, weak or strong.
    fn weak_match(&self, current: Current) -> bool {
        match (self, current) {
            (_, Current::Absent) => false,
            (Condition::Any, _) => true,
            (Condition::Tags(_), Current::Untagged) => false,
            (Condition::Tags(tags), Current::Tagged(t)) => tags.iter().any(|l| l.tag == Some(t)),
        }
    }
}

/// The comma-separated members of a field line, trimmed; a comma inside
/// quotes is part of an entity-tag (RFC 9110 allows it there).
fn members(line: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut quoted = false;
    line.split(move |&b| {
        if b == b'"' {
            quoted = !quoted;
        }
        b == b',' && !quoted
    })
    .map(<[u8]>::trim_ascii)
}

/// `W/"opaque"` or `"opaque"` (opaque: visible characters but `"`, RFC
/// 9110 §8.8.3); None when the member is not an entity-tag.
fn listed(member: &[u8]) -> Option<Listed> {
    let (weak, quoted) = match member.strip_prefix(b"W/") {
        Some(rest) => (true, rest),
        None => (false, member),
    };
    let opaque = quoted.strip_prefix(b"\"")?.strip_suffix(b"\"")?;
    if !opaque
        .iter()
        .all(|&b| b == 0x21 || (0x23..=0x7e).contains(&b) || b >= 0x80)
    {
        return None;
    }
    Some(Listed {
        tag: EntityTag::parse_opaque(opaque),
        weak,
    })
}

/// The preconditions of a request (RFC 9110 §13.1): `If-Match` and
/// `If-None-Match`. (The server sends no `Last-Modified`, so the date
/// preconditions have nothing to compare with and are ignored, as §13.1.3
/// and §13.1.4 allow.)
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Preconditions {
    /// `If-Match`, if sent.
    pub if_match: Option<Condition>,
    /// `If-None-Match`, if sent.
    pub if_none_match: Option<Condition>,
}

/// What evaluating a read's preconditions says (RFC 9110 §13.2.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Perform the method.
    Proceed,
    /// `If-None-Match` matched on a GET or HEAD: 304.
    NotModified,
    /// A precondition is false: 412.
    Failed,
}

impl Preconditions {
    /// From a request's header fields (every line of each), in one pass
    /// that compares names only when their length fits (this runs for
    /// every request, most of which carry neither field).
    pub fn from_fields<'a>(
        fields: impl Iterator<Item = (&'a str, &'a [u8])>,
    ) -> Result<Self, InvalidCondition> {
        let (mut if_match, mut if_none_match): (Vec<&[u8]>, Vec<&[u8]>) = (Vec::new(), Vec::new());
        for (name, value) in fields {
            match name.len() {
                8 if name.eq_ignore_ascii_case("if-match") => if_match.push(value),
                13 if name.eq_ignore_ascii_case("if-none-match") => if_none_match.push(value),
                _ => {}
            }
        }
        let parse = |name, lines: Vec<&[u8]>| match lines.is_empty() {
            true => Ok(None),
            false => Condition::parse(name, lines),
        };
        Ok(Preconditions {
            if_match: parse("If-Match", if_match)?,
            if_none_match: parse("If-None-Match", if_none_match)?,
        })
    }

    /// Whether the request carries none.
    pub fn is_empty(&self) -> bool {
        self.if_match.is_none() && self.if_none_match.is_none()
    }

    /// A GET or HEAD of the `current` representation (RFC 9110 §13.2.2).
    pub fn for_read(&self, current: impl Into<Current>) -> Verdict {
        let current = current.into();
        if self
            .if_match
            .as_ref()
            .is_some_and(|c| !c.strong_match(current))
        {
            return Verdict::Failed;
        }
        if self
            .if_none_match
            .as_ref()
            .is_some_and(|c| c.weak_match(current))
        {
            return Verdict::NotModified;
        }
        Verdict::Proceed
    }

    /// Whether a state-changing method may be performed on the resource
    /// whose representation is `current` (a false `If-None-Match` is a 412
    /// for these methods, never a 304).
    pub fn allow_write(&self, current: impl Into<Current>) -> bool {
        self.for_read(current) == Verdict::Proceed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The tag this build gives the order in the test below (see there).
    const PINNED_ORDER_TAG: &str = "\"47d0c427f191fbb0\"";

    fn pre(if_match: Option<&str>, if_none_match: Option<&str>) -> Preconditions {
        let mut fields = Vec::new();
        fields.extend(if_match.map(|v| ("If-Match", v.as_bytes())));
        fields.extend(if_none_match.map(|v| ("if-none-match", v.as_bytes())));
        Preconditions::from_fields(fields.into_iter()).unwrap()
    }

    #[test]
    fn tags_are_fixed_hashes_written_as_sixteen_hex_digits() {
        // XXH3-64 of the empty input (the reference implementation's value),
        // and of an order as this build tags it: a tag must never change
        // across releases, or every cache would refetch everything.
        assert_eq!(EntityTag::of(b"").0, 0x2d06_8005_38d3_94c2);
        assert_eq!(
            EntityTag::of(br#"{"_id":"6566f0c2a1b2c3d4e5f60718","product":"P"}"#).to_string(),
            PINNED_ORDER_TAG
        );
        assert_eq!(EntityTag::of_parts(&[b"ab", b"c"]), EntityTag::of(b"abc"));
        assert_eq!(EntityTag(0xab).to_string(), "\"00000000000000ab\"");
    }

    #[test]
    fn if_match_compares_strongly_and_if_none_match_weakly() {
        let t = EntityTag(0x1234);
        let ours = t.to_string();
        assert_eq!(pre(Some(&ours), None).for_read(Some(t)), Verdict::Proceed);
        assert_eq!(
            pre(Some(&format!("W/{ours}")), None).for_read(Some(t)),
            Verdict::Failed,
            "a weak tag never matches If-Match"
        );
        assert_eq!(
            pre(None, Some(&format!("W/{ours}"))).for_read(Some(t)),
            Verdict::NotModified
        );
        assert_eq!(
            pre(None, Some(&format!("\"x\", {ours}"))).for_read(Some(t)),
            Verdict::NotModified,
            "a list"
        );
        assert_eq!(pre(None, Some("\"x\"")).for_read(Some(t)), Verdict::Proceed);
        assert_eq!(pre(None, Some("*")).for_read(Some(t)), Verdict::NotModified);
        assert_eq!(
            pre(None, Some("*")).for_read(Current::Absent),
            Verdict::Proceed
        );
        assert_eq!(
            pre(Some("*"), None).for_read(Current::Absent),
            Verdict::Failed
        );
        assert_eq!(pre(Some("*"), None).for_read(Some(t)), Verdict::Proceed);
        assert_eq!(pre(Some("\"x\""), None).for_read(Some(t)), Verdict::Failed);
        assert_eq!(
            pre(Some("*"), None).for_read(Current::Untagged),
            Verdict::Proceed
        );
        assert_eq!(
            pre(Some(&ours), None).for_read(Current::Untagged),
            Verdict::Failed
        );
        assert_eq!(
            pre(None, Some(&ours)).for_read(Current::Untagged),
            Verdict::Proceed
        );
        assert!(pre(None, None).is_empty());
        assert!(pre(None, None).allow_write(Current::Absent));
    }

    #[test]
    fn if_match_is_evaluated_before_if_none_match() {
        let t = EntityTag(7);
        let p = pre(Some("\"0000000000000008\""), Some("*"));
        assert_eq!(p.for_read(Some(t)), Verdict::Failed);
        assert!(!p.allow_write(Some(t)));
        assert!(
            !pre(None, Some("*")).allow_write(Some(t)),
            "If-None-Match: * on an existing one"
        );
    }

    #[test]
    fn every_line_of_a_field_counts() {
        let t = EntityTag(9);
        let ours = t.to_string();
        let fields = [
            ("If-Match", &b"\"0000000000000001\""[..]),
            ("If-Match", ours.as_bytes()),
        ];
        let p = Preconditions::from_fields(fields.iter().map(|(n, v)| (*n, *v))).unwrap();
        assert_eq!(p.for_read(Some(t)), Verdict::Proceed);
    }

    #[test]
    fn a_comma_inside_a_tag_is_part_of_it() {
        let t = EntityTag(3);
        let p = pre(Some(&format!("\"a,b\", {t}")), None);
        assert_eq!(p.for_read(Some(t)), Verdict::Proceed);
        assert_eq!(
            pre(Some("\"a,b\""), None).for_read(Some(t)),
            Verdict::Failed
        );
    }

    #[test]
    fn empty_fields_count_as_not_sent_and_malformed_ones_are_refused() {
        assert!(pre(Some(""), Some(" , ")).is_empty());
        for bad in ["garbage", "\"unterminated", "W/x", "*, \"a\"", "\"a b\""] {
            let fields = [("If-Match", bad.as_bytes())];
            assert_eq!(
                Preconditions::from_fields(fields.iter().map(|(n, v)| (*n, *v))),
                Err(InvalidCondition("If-Match")),
                "{bad:?}"
            );
        }
    }
}
