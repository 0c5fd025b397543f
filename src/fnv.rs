//! FNV-1a, 64 bits: a hash that is the same in every process, version and machine, for names
//! that several processes must agree on (a cluster channel's hash tag, the tag of a stream's
//! channels in its position id). Not for maps an attacker fills: it has no key.

/// The FNV-1a hash of the bytes of `parts`, each followed by a `\n` unless it is the last.
pub(crate) fn fnv1a<'a>(parts: impl IntoIterator<Item = &'a [u8]>) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let mut step = |byte: u8| {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    };
    for (i, part) in parts.into_iter().enumerate() {
        if i > 0 {
            step(b'\n');
        }
        part.iter().copied().for_each(&mut step);
    }
    hash
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_values() {
        // The published test vectors of FNV-1a 64.
        assert_eq!(fnv1a([&b""[..]]), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a([&b"a"[..]]), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a([&b"foobar"[..]]), 0x8594_4171_f739_67e8);
        // Parts are joined with a newline.
        assert_eq!(fnv1a([&b"a"[..], b"b"]), fnv1a([&b"a\nb"[..]]));
    }
}
