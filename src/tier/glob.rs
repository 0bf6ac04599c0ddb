//! Redis-style glob matching (`*`, `?`, `[a-z]`, `[^x]`, `\` escapes) on raw key bytes,
//! ported from Redis' `stringmatchlen` so tier patterns mean what `KEYS` and `SCAN MATCH`
//! mean. Path-oriented glob crates treat `/` and `{a,b}` differently, hence this port.

/// True when `key` matches the Redis glob `pattern`.
pub fn matches(pattern: &[u8], key: &[u8]) -> bool {
    match_from(pattern, key, 0, &mut false)
}

/// Redis caps recursion on `*` runs; so do we, so a hostile pattern cannot blow the stack.
const MAX_NESTING: u32 = 1000;

/// `give_up` is Redis' `skipLongerMatches`: once a `*` has tried every remaining suffix
/// and failed, an outer `*` trying shorter suffixes cannot succeed either, which keeps
/// patterns like `*a*a*a*b` linear instead of exponential.
fn match_from(mut p: &[u8], mut s: &[u8], nesting: u32, give_up: &mut bool) -> bool {
    if nesting > MAX_NESTING {
        return false;
    }
    while let Some(&c) = p.first() {
        match c {
            b'*' => {
                while p.len() > 1 && p[1] == b'*' {
                    p = &p[1..];
                }
                if p.len() == 1 {
                    return true;
                }
                for i in 0..s.len() {
                    if match_from(&p[1..], &s[i..], nesting + 1, give_up) {
                        return true;
                    }
                    if *give_up {
                        return false;
                    }
                }
                *give_up = true;
                return false;
            }
            b'?' => {
                if s.is_empty() {
                    return false;
                }
                s = &s[1..];
            }
            b'[' => {
                let Some((&ch, rest)) = s.split_first() else { return false };
                let (matched, after) = class(&p[1..], ch);
                if !matched {
                    return false;
                }
                p = after;
                s = rest;
                continue;
            }
            b'\\' if p.len() >= 2 => {
                p = &p[1..];
                if s.first() != Some(&p[0]) {
                    return false;
                }
                s = &s[1..];
            }
            _ => {
                if s.first() != Some(&c) {
                    return false;
                }
                s = &s[1..];
            }
        }
        p = &p[1..];
    }
    s.is_empty()
}

/// Matches `ch` against a `[...]` class whose body starts at `p`; returns the verdict and
/// the pattern after the closing `]`.
fn class(mut p: &[u8], ch: u8) -> (bool, &[u8]) {
    let negate = p.first() == Some(&b'^');
    if negate {
        p = &p[1..];
    }
    let mut matched = false;
    loop {
        match p {
            [] => break,
            [b']', rest @ ..] => {
                p = rest;
                break;
            }
            [b'\\', c, rest @ ..] => {
                matched |= *c == ch;
                p = rest;
            }
            [lo, b'-', hi, rest @ ..] if *hi != b']' => {
                let (lo, hi) = if lo <= hi { (*lo, *hi) } else { (*hi, *lo) };
                matched |= (lo..=hi).contains(&ch);
                p = rest;
            }
            [c, rest @ ..] => {
                matched |= *c == ch;
                p = rest;
            }
        }
    }
    (matched != negate, p)
}

#[cfg(test)]
mod tests {
    use super::matches;

    #[test]
    fn like_redis_keys() {
        assert!(matches(b"user:*:prefs", b"user:42:prefs"));
        assert!(!matches(b"user:*:prefs", b"user:42:cart"));
        assert!(matches(b"h?llo", b"hello"));
        assert!(matches(b"h[ae]llo", b"hallo"));
        assert!(!matches(b"h[^e]llo", b"hello"));
        assert!(matches(b"h[a-b]llo", b"hbllo"));
        assert!(matches(b"a\\*b", b"a*b"));
        assert!(!matches(b"a\\*b", b"axb"));
        assert!(matches(b"*", b""));
        assert!(matches(b"k\0*", b"k\0\r\n"));
    }

    #[test]
    fn hostile_patterns_end() {
        let pattern = b"*a*a*a*a*a*a*a*a*a*a*b".to_vec();
        assert!(!matches(&pattern, &[b'a'; 40]));
    }
}
