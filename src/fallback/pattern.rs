//! Key patterns of read-through rules, such as `product:details:{id}`: literal text and
//! named captures. A capture takes the bytes up to the next literal (at least one byte);
//! a capture at the end takes the rest of the key.

/// One piece of a pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Literal(Vec<u8>),
    Capture(String),
}

/// A parsed key pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyPattern {
    segments: Vec<Segment>,
}

impl KeyPattern {
    /// Parses `text`; the error says what is wrong for the config message.
    pub fn parse(text: &str) -> Result<KeyPattern, String> {
        let mut segments = Vec::new();
        let mut rest = text;
        while !rest.is_empty() {
            match rest.find('{') {
                Some(0) => {
                    let end = rest.find('}').ok_or_else(|| format!("'{text}' has a '{{' without '}}'"))?;
                    let name = &rest[1..end];
                    if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
                        return Err(format!(
                            "'{text}': capture names are letters, digits or _, got '{{{name}}}'"
                        ));
                    }
                    if matches!(segments.last(), Some(Segment::Capture(_))) {
                        return Err(format!("'{text}': two captures need literal text between them"));
                    }
                    segments.push(Segment::Capture(name.to_string()));
                    rest = &rest[end + 1..];
                }
                found => {
                    let end = found.unwrap_or(rest.len());
                    if rest[..end].contains('}') {
                        return Err(format!("'{text}' has a '}}' without '{{'"));
                    }
                    segments.push(Segment::Literal(rest.as_bytes()[..end].to_vec()));
                    rest = &rest[end..];
                }
            }
        }
        let pattern = KeyPattern { segments };
        let names = pattern.captures();
        if names.is_empty() {
            return Err(format!("'{text}' has no {{capture}}"));
        }
        if (1..names.len()).any(|i| names[..i].contains(&names[i])) {
            return Err(format!("'{text}' uses a capture name twice"));
        }
        Ok(pattern)
    }

    /// Capture names in order; capture i is bound as `$(i+1)`.
    pub fn captures(&self) -> Vec<&str> {
        self.segments
            .iter()
            .filter_map(|s| match s {
                Segment::Capture(name) => Some(name.as_str()),
                Segment::Literal(_) => None,
            })
            .collect()
    }

    /// The literal text before the first capture.
    pub fn prefix(&self) -> &[u8] {
        match self.segments.first() {
            Some(Segment::Literal(l)) => l,
            _ => b"",
        }
    }

    /// True when `key` matches (no captures collected: this runs on the hit path).
    pub fn is_match(&self, key: &[u8]) -> bool {
        self.walk(key, |_| {})
    }

    /// The captured values when `key` matches.
    pub fn matches<'k>(&self, key: &'k [u8]) -> Option<Vec<&'k [u8]>> {
        let mut captured = Vec::new();
        self.walk(key, |range| captured.push(&key[range])).then_some(captured)
    }

    /// Matches `key`, handing each capture's range to `capture`.
    fn walk(&self, key: &[u8], mut capture: impl FnMut(std::ops::Range<usize>)) -> bool {
        let mut pos = 0;
        for (i, segment) in self.segments.iter().enumerate() {
            match segment {
                Segment::Literal(lit) => {
                    if !key[pos..].starts_with(lit) {
                        return false;
                    }
                    pos += lit.len();
                }
                Segment::Capture(_) => {
                    let end = match self.segments.get(i + 1) {
                        Some(Segment::Literal(next)) => match find(&key[(pos + 1).min(key.len())..], next) {
                            Some(at) => pos + 1 + at,
                            None => return false,
                        },
                        _ => key.len(),
                    };
                    if end <= pos {
                        return false;
                    }
                    capture(pos..end);
                    pos = end;
                }
            }
        }
        pos == key.len()
    }

    /// The key for captured values (for invalidations naming a rule and its captures).
    pub fn render(&self, values: &[&[u8]]) -> Option<Vec<u8>> {
        let mut out = Vec::new();
        let mut values = values.iter();
        for segment in &self.segments {
            match segment {
                Segment::Literal(l) => out.extend_from_slice(l),
                Segment::Capture(_) => out.extend_from_slice(values.next()?),
            }
        }
        values.next().is_none().then_some(out)
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    memchr::memmem::find(haystack, needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn captures_match_and_render() {
        let p = KeyPattern::parse("product:details:{id}").unwrap();
        assert_eq!(p.captures(), vec!["id"]);
        assert_eq!(p.matches(b"product:details:42"), Some(vec![&b"42"[..]]));
        assert_eq!(p.matches(b"product:details:"), None);
        assert_eq!(p.matches(b"product:other:42"), None);
        assert_eq!(
            p.matches(b"product:details:1'; DROP TABLE x;--\0"),
            Some(vec![&b"1'; DROP TABLE x;--\0"[..]])
        );
        let two = KeyPattern::parse("discount:{rule}:v{version}").unwrap();
        assert_eq!(two.matches(b"discount:summer:v3"), Some(vec![&b"summer"[..], &b"3"[..]]));
        assert_eq!(two.matches(b"discount::v3"), None);
        assert_eq!(two.render(&[b"a", b"9"]), Some(b"discount:a:v9".to_vec()));
        assert_eq!(p.prefix(), b"product:details:");
    }

    #[test]
    fn bad_patterns_say_why() {
        assert!(KeyPattern::parse("plain").unwrap_err().contains("no {capture}"));
        assert!(KeyPattern::parse("a:{id").unwrap_err().contains("without"));
        assert!(KeyPattern::parse("a:{x}{y}").unwrap_err().contains("literal text"));
        assert!(KeyPattern::parse("a:{x}:{x}").unwrap_err().contains("twice"));
        assert!(KeyPattern::parse("a:{}").is_err());
    }
}
