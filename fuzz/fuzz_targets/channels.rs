//! Fuzz target `channels`: [`ChannelRules::parse_query`] on arbitrary query strings.
//!
//! The parser is what the access layer and the service trust to say which channels a stream
//! carries, so it is checked against a small independent model of its documented contract
//! (strict `x-www-form-urlencoded` decoding of keys and values, `channel` keys only, comma
//! lists, repeated names once, the first error wins, the default channel when none is named),
//! not only for panics. On `Ok` the list must also be non-empty, within `max_channels`,
//! without duplicates, every name must pass [`ChannelRules::check_name`], parsing must be
//! deterministic, and the list re-encoded (every byte `%XX`) must parse to the same list.
//!
//! The input bytes are lossy-decoded (the same string when they are UTF-8) and parsed with the
//! default rules and with tight ones (2 channels of 4 bytes), so the limits are reached often.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tower_sse::{ChannelError, ChannelRules};

/// The limits a [`ChannelRules`] was built with, for the model.
struct Limits {
    max_channels: usize,
    max_len: usize,
}

fuzz_target!(|data: &[u8]| {
    let lossy = String::from_utf8_lossy(data);
    let rules = [
        (
            ChannelRules::default(),
            Limits {
                max_channels: 32,
                max_len: 256,
            },
        ),
        (
            ChannelRules::default().max_channels(2).max_len(4),
            Limits {
                max_channels: 2,
                max_len: 4,
            },
        ),
    ];
    for (rules, limits) in &rules {
        check(rules, limits, &lossy);
    }
});

fn check(rules: &ChannelRules, limits: &Limits, query: &str) {
    let got = rules.parse_query(Some(query));
    assert_eq!(got, rules.parse_query(Some(query)), "not deterministic");
    let got_names = got
        .clone()
        .map(|c| c.iter().map(str::to_owned).collect::<Vec<_>>());
    assert_eq!(got_names, model(limits, query), "differs from the model");
    let Ok(channels) = got else { return };
    assert!(channels.len() >= 1 && channels.len() <= limits.max_channels);
    assert_eq!(channels.iter().len(), channels.len());
    let names: Vec<&str> = channels.iter().collect();
    for (i, name) in names.iter().enumerate() {
        assert_eq!(rules.check_name(name), Ok(()), "bad name {name:?}");
        assert!(!names[..i].contains(name), "duplicate {name:?}");
        assert!(channels.contains(name));
    }
    // The same list, spelled as differently as possible, means the same channels.
    let respelled: String = names
        .iter()
        .map(|name| {
            let encoded: String = name.bytes().map(|b| format!("%{b:02X}")).collect();
            format!("&other=1&%63hannel={encoded}")
        })
        .collect();
    assert_eq!(rules.parse_query(Some(&respelled)).as_ref(), Ok(&channels));
}

/// The contract, written out directly: each `key=value` pair whose key decodes to `channel`
/// contributes its decoded value split at commas.
fn model(limits: &Limits, query: &str) -> Result<Vec<String>, ChannelError> {
    let mut names: Vec<String> = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = match pair.find('=') {
            Some(i) => (&pair[..i], &pair[i + 1..]),
            None => (pair, ""),
        };
        if form_decode(key).as_deref() != Some("channel") {
            continue;
        }
        let value = form_decode(value).ok_or(ChannelError::InvalidEncoding)?;
        for name in value.split(',') {
            if name.is_empty() {
                return Err(ChannelError::Empty);
            }
            if name.len() > limits.max_len {
                return Err(ChannelError::TooLong(limits.max_len));
            }
            if name.chars().any(|c| c.is_control() || c.is_whitespace()) {
                return Err(ChannelError::InvalidChar);
            }
            if names.iter().any(|n| n == name) {
                continue;
            }
            if names.len() == limits.max_channels {
                return Err(ChannelError::TooMany(limits.max_channels));
            }
            names.push(name.to_owned());
        }
    }
    if names.is_empty() {
        names.push("sse".to_owned());
    }
    Ok(names)
}

/// `+` is a space, `%` takes exactly two hex digits, the result must be UTF-8.
fn form_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b'%' => {
                let digits = bytes.get(i + 1..i + 3)?;
                if !digits.iter().all(u8::is_ascii_hexdigit) {
                    return None;
                }
                let digits = std::str::from_utf8(digits).ok()?;
                out.push(u8::from_str_radix(digits, 16).ok()?);
                i += 3;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}
