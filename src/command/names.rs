//! Case-insensitive lookup of commands by name. It runs for every request, so a name of
//! up to 15 bytes (every Redis command but a handful of long GEO and sorted-set ones) is
//! packed with its length into one integer: lower-casing, hashing and comparing it is a
//! few instructions, with no byte-slice compare.

use std::sync::Arc;

use super::{CommandInfo, HashMap};

/// Names of up to this many bytes are packed; the 16th byte holds the length.
const PACKED: usize = 15;
/// Longer names are not looked up (Redis' longest is 20 bytes).
const LONGEST: usize = 64;

/// Commands (or one command's subcommands) by lower-case name.
#[derive(Debug, Clone, Default)]
pub struct Names {
    /// Open addressing over packed names, at most half full, so a lookup is one multiply
    /// and usually one slot: cheaper than a general hash map's probe on this path.
    slots: Box<[Slot]>,
    used: usize,
    long: HashMap<Box<[u8]>, Arc<CommandInfo>>,
}

#[derive(Debug, Clone, Default)]
struct Slot {
    key: u128,
    info: Option<Arc<CommandInfo>>,
}

impl Names {
    /// Adds `info` under `name` (any case), replacing a command of that name.
    pub fn insert(&mut self, name: &[u8], info: Arc<CommandInfo>) {
        let Some(key) = pack(name) else {
            self.long.insert(name.to_ascii_lowercase().into(), info);
            return;
        };
        if 2 * (self.used + 1) > self.slots.len() {
            self.grow();
        }
        let at = self.find(key);
        if self.slots[at].info.is_none() {
            self.used += 1;
        }
        self.slots[at] = Slot { key, info: Some(info) };
    }

    /// The command called `name`, in any case.
    #[inline]
    pub fn get(&self, name: &[u8]) -> Option<&Arc<CommandInfo>> {
        match pack(name) {
            Some(_) if self.slots.is_empty() => None,
            Some(key) => self.slots[self.find(key)].info.as_ref(),
            None => {
                // Lower-cased on the stack: this runs per request, and a client may send any
                // length as a command name. No command name comes near `LONGEST`.
                let mut buf = [0u8; LONGEST];
                let lower = buf.get_mut(..name.len())?;
                lower.copy_from_slice(name);
                lower.make_ascii_lowercase();
                self.long.get(&*lower)
            }
        }
    }

    /// Number of names.
    pub fn len(&self) -> usize {
        self.used + self.long.len()
    }

    /// True when there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The slot holding `key`, or the empty slot where it would go. Never loops forever:
    /// the table is at most half full.
    #[inline]
    fn find(&self, key: u128) -> usize {
        let mask = self.slots.len() - 1;
        let mixed = (key as u64 ^ (key >> 64) as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        let mut at = (mixed >> 32) as usize & mask;
        loop {
            let slot = &self.slots[at];
            if slot.info.is_none() || slot.key == key {
                return at;
            }
            at = (at + 1) & mask;
        }
    }

    fn grow(&mut self) {
        let size = (self.slots.len() * 2).max(64);
        let old = std::mem::replace(&mut self.slots, vec![Slot::default(); size].into_boxed_slice());
        self.used = 0;
        for slot in old.into_vec() {
            if let Some(info) = slot.info {
                let at = self.find(slot.key);
                self.slots[at] = Slot { key: slot.key, info: Some(info) };
                self.used += 1;
            }
        }
    }
}

/// `name` lower-cased, zero-padded and tagged with its length (so `get` and `get\0` differ).
/// Built in registers: copying into a stack buffer and loading it back as one integer
/// stalls the CPU's store forwarding, which made the lookup twice as slow.
#[inline]
fn pack(name: &[u8]) -> Option<u128> {
    if name.len() > PACKED {
        return None;
    }
    let (mut low, mut high) = (0u64, (name.len() as u64) << (8 * (PACKED - 8)));
    for (i, &b) in name.iter().enumerate() {
        match i {
            0..8 => low |= (b as u64) << (8 * i),
            _ => high |= (b as u64) << (8 * (i - 8)),
        }
    }
    Some(ascii_lowercase(((high as u128) << 64) | low as u128))
}

/// Lower-cases the ASCII letters among the 16 bytes of `x` at once.
fn ascii_lowercase(x: u128) -> u128 {
    const EACH: u128 = u128::from_le_bytes([1; 16]);
    let low7 = x & (EACH * 0x7f);
    // Per byte, the top bit says "at least 'A'" and "above 'Z'"; no sum carries into
    // the next byte, since 0x7f + 0x3f < 0x100.
    let from_a = low7 + EACH * (0x80 - b'A' as u128);
    let past_z = low7 + EACH * (0x80 - b'Z' as u128 - 1);
    let upper = from_a & !past_z & !x & (EACH * 0x80);
    x | (upper >> 2)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(name: &str) -> Arc<CommandInfo> {
        Arc::new(CommandInfo::new(name.into(), 1, 0, Vec::new(), Names::default()))
    }

    #[test]
    fn any_case_finds_short_and_long_names_and_nothing_else() {
        let mut names = Names::default();
        for name in ["get", "zremrangebyscore", "georadiusbymember_ro", "abcdefghijklmno"] {
            names.insert(name.as_bytes(), info(name));
        }
        for (asked, found) in [
            (&b"GET"[..], Some("get")),
            (b"gEt", Some("get")),
            (b"get\0", None),
            (b"ge", None),
            (b"ZRemRangeByScore", Some("zremrangebyscore")),
            (b"GEORADIUSBYMEMBER_RO", Some("georadiusbymember_ro")),
            (b"ABCDEFGHIJKLMNO", Some("abcdefghijklmno")),
            (b"abcdefghijklmnop", None),
            (&[b'g'; 100_000][..], None),
            (b"", None),
        ] {
            assert_eq!(names.get(asked).map(|i| i.name.as_str()), found, "{asked:?}");
        }
        assert_eq!(names.len(), 4);
    }

    #[test]
    fn lowercasing_touches_only_ascii_letters() {
        for b in 0..=255u8 {
            let packed = ascii_lowercase(u128::from_le_bytes([b; 16]));
            assert_eq!(packed, u128::from_le_bytes([b.to_ascii_lowercase(); 16]), "byte {b}");
        }
    }
}
