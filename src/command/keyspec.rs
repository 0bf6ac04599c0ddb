//! Redis 7 key specifications: where a command's keys are, and what it does to them.
//!
//! This is Redis' own `getKeysUsingKeySpecs` algorithm, fed from the upstream's
//! `COMMAND` reply, so numkeys (EVAL, ZUNIONSTORE), keywords (XREAD STREAMS, SORT STORE)
//! and strided ranges (MSET) come out exactly as Redis would find them.

use redis_protocol::resp2::types::OwnedFrame;

use super::TableError;

/// Key-spec flags, as bits.
pub mod flag {
    /// Read-only access to the key.
    pub const RO: u16 = 1;
    /// Read-write access.
    pub const RW: u16 = 1 << 1;
    /// Overwrite: the value is replaced without being read.
    pub const OW: u16 = 1 << 2;
    /// The key is removed.
    pub const RM: u16 = 1 << 3;
    /// The value is returned to the client.
    pub const ACCESS: u16 = 1 << 4;
    /// The value is updated in place.
    pub const UPDATE: u16 = 1 << 5;
    /// Data is added to the value.
    pub const INSERT: u16 = 1 << 6;
    /// Data is removed from the value.
    pub const DELETE: u16 = 1 << 7;
    /// The spec may not find every key.
    pub const INCOMPLETE: u16 = 1 << 8;
}

/// Where the key search starts.
#[derive(Debug, Clone, PartialEq)]
pub enum BeginSearch {
    /// At a fixed argument index.
    Index(usize),
    /// After the first argument equal to `keyword`, searching from `start_from`
    /// (negative: from the end, backwards).
    Keyword { keyword: Vec<u8>, start_from: i64 },
    /// Not describable; the command's keys cannot be found from the spec.
    Unknown,
}

/// How many keys follow the start.
#[derive(Debug, Clone, PartialEq)]
pub enum FindKeys {
    /// Keys up to `last_key` (relative; negative counts from the end) every `step`;
    /// with a negative `last_key`, `limit` divides the remaining arguments.
    Range { last_key: i64, step: usize, limit: i64 },
    /// The number of keys is an argument (`numkeys`).
    KeyNum { key_num_idx: usize, first_key: usize, step: usize },
    /// Not describable.
    Unknown,
}

/// One key specification of a command.
#[derive(Debug, Clone, PartialEq)]
pub struct KeySpec {
    /// `flag::*` bits.
    pub flags: u16,
    /// Start of the search.
    pub begin: BeginSearch,
    /// Extent of the keys.
    pub find: FindKeys,
}

/// A request's keys; on the stack for the usual few (found for every tiered request).
pub type Keys = smallvec::SmallVec<[KeyRef; 4]>;

/// One key found in a request: its argument index and its spec's flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyRef {
    /// Index into the request's arguments (0 is the command name).
    pub index: usize,
    /// `flag::*` bits of the spec that found it.
    pub flags: u16,
}

/// Why a request's keys could not be found.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// A numkeys argument is not a non-negative integer or points past the arguments.
    #[error("the number of keys is not a valid count")]
    BadKeyCount,
    /// The command declares a spec strata cannot evaluate.
    #[error("the command's key positions are not described by its key specs")]
    Undescribed,
}

impl KeySpec {
    /// Appends the keys this spec finds in `args` to `out`.
    pub fn find(&self, args: &[&[u8]], out: &mut Keys) -> Result<(), KeyError> {
        let argc = args.len();
        let Some(mut first) = self.begin_index(args) else {
            return match self.begin {
                BeginSearch::Unknown => Err(KeyError::Undescribed),
                _ => Ok(()),
            };
        };
        let (last, step) = match &self.find {
            FindKeys::Range { last_key, step, limit } => {
                let last = if *last_key >= 0 {
                    first as i64 + last_key
                } else if *limit <= 1 {
                    argc as i64 + last_key
                } else {
                    first as i64 + ((argc as i64 - first as i64) / limit + last_key)
                };
                (last, *step)
            }
            FindKeys::KeyNum { key_num_idx, first_key, step } => {
                let count = args
                    .get(first + key_num_idx)
                    .and_then(|a| std::str::from_utf8(a).ok())
                    .and_then(|a| a.parse::<u64>().ok())
                    .ok_or(KeyError::BadKeyCount)?;
                first += first_key;
                (first as i64 + count as i64 - 1, *step)
            }
            FindKeys::Unknown => return Err(KeyError::Undescribed),
        };
        let mut i = first as i64;
        while i <= last {
            if i as usize >= argc {
                if self.flags & flag::INCOMPLETE != 0 {
                    break;
                }
                return Err(KeyError::BadKeyCount);
            }
            out.push(KeyRef { index: i as usize, flags: self.flags });
            i += step.max(1) as i64;
        }
        Ok(())
    }

    fn begin_index(&self, args: &[&[u8]]) -> Option<usize> {
        match &self.begin {
            BeginSearch::Index(i) => Some(*i),
            BeginSearch::Keyword { keyword, start_from } => {
                let argc = args.len() as i64;
                let (start, backwards) =
                    if *start_from > 0 { (*start_from, false) } else { (argc + start_from, true) };
                let mut i = start;
                while i >= 1 && i < argc {
                    if args[i as usize].eq_ignore_ascii_case(keyword) {
                        return Some(i as usize + 1);
                    }
                    i += if backwards { -1 } else { 1 };
                }
                None
            }
            BeginSearch::Unknown => None,
        }
    }

    /// Parses one key spec from the flat field/value array of a `COMMAND` reply.
    pub fn parse(frame: &OwnedFrame) -> Result<KeySpec, TableError> {
        let fields = pairs(frame)?;
        let mut spec = KeySpec { flags: 0, begin: BeginSearch::Unknown, find: FindKeys::Unknown };
        for (name, value) in fields {
            match name.as_slice() {
                b"flags" => spec.flags = parse_flags(value)?,
                b"begin_search" => spec.begin = parse_begin(value)?,
                b"find_keys" => spec.find = parse_find(value)?,
                _ => {}
            }
        }
        Ok(spec)
    }
}

fn parse_flags(frame: &OwnedFrame) -> Result<u16, TableError> {
    let OwnedFrame::Array(items) = frame else { return Err(TableError::Shape("key spec flags")) };
    Ok(items.iter().filter_map(text).fold(0, |bits, name| {
        bits | match name.as_slice() {
            b"RO" => flag::RO,
            b"RW" => flag::RW,
            b"OW" => flag::OW,
            b"RM" => flag::RM,
            b"access" => flag::ACCESS,
            b"update" => flag::UPDATE,
            b"insert" => flag::INSERT,
            b"delete" => flag::DELETE,
            b"incomplete" => flag::INCOMPLETE,
            _ => 0,
        }
    }))
}

/// Splits a `type X spec {…}` section into its type and spec fields.
/// Field name/value pairs of a flat RESP2 map.
type Fields<'a> = Vec<(Vec<u8>, &'a OwnedFrame)>;

fn typed_section(frame: &OwnedFrame) -> Result<(Vec<u8>, Fields<'_>), TableError> {
    let mut kind = Vec::new();
    let mut spec = Vec::new();
    for (name, value) in pairs(frame)? {
        match name.as_slice() {
            b"type" => kind = text(value).ok_or(TableError::Shape("key spec type"))?,
            b"spec" => spec = pairs(value)?,
            _ => {}
        }
    }
    Ok((kind, spec))
}

fn parse_begin(frame: &OwnedFrame) -> Result<BeginSearch, TableError> {
    let (kind, spec) = typed_section(frame)?;
    Ok(match kind.as_slice() {
        b"index" => BeginSearch::Index(int_field(&spec, b"index")? as usize),
        b"keyword" => BeginSearch::Keyword {
            keyword: spec
                .iter()
                .find(|(n, _)| n == b"keyword")
                .and_then(|(_, v)| text(v))
                .ok_or(TableError::Shape("keyword"))?,
            start_from: int_field(&spec, b"startfrom")?,
        },
        _ => BeginSearch::Unknown,
    })
}

fn parse_find(frame: &OwnedFrame) -> Result<FindKeys, TableError> {
    let (kind, spec) = typed_section(frame)?;
    Ok(match kind.as_slice() {
        b"range" => FindKeys::Range {
            last_key: int_field(&spec, b"lastkey")?,
            step: int_field(&spec, b"keystep")? as usize,
            limit: int_field(&spec, b"limit")?,
        },
        b"keynum" => FindKeys::KeyNum {
            key_num_idx: int_field(&spec, b"keynumidx")? as usize,
            first_key: int_field(&spec, b"firstkey")? as usize,
            step: int_field(&spec, b"keystep")? as usize,
        },
        _ => FindKeys::Unknown,
    })
}

fn int_field(fields: &[(Vec<u8>, &OwnedFrame)], name: &[u8]) -> Result<i64, TableError> {
    match fields.iter().find(|(n, _)| n == name) {
        Some((_, OwnedFrame::Integer(n))) => Ok(*n),
        _ => Err(TableError::Shape("integer key spec field")),
    }
}

/// Reads a flat `[name, value, name, value…]` array.
pub(super) fn pairs(frame: &OwnedFrame) -> Result<Vec<(Vec<u8>, &OwnedFrame)>, TableError> {
    let OwnedFrame::Array(items) = frame else { return Err(TableError::Shape("field array")) };
    items
        .chunks(2)
        .map(|pair| match pair {
            [name, value] => Ok((text(name).ok_or(TableError::Shape("field name"))?, value)),
            _ => Err(TableError::Shape("odd field array")),
        })
        .collect()
}

/// The bytes of a simple or bulk string frame.
pub(super) fn text(frame: &OwnedFrame) -> Option<Vec<u8>> {
    match frame {
        OwnedFrame::SimpleString(s) | OwnedFrame::BulkString(s) => Some(s.clone()),
        _ => None,
    }
}
