//! JWTs as an app mints them for the hub (HS256 with the hub's key), and the time they are
//! read against. Used through `#[path]` by the tests of JWT rights and of Mercure.

#![allow(dead_code)] // each test uses its part

use std::time::{SystemTime, UNIX_EPOCH};

use jsonwebtoken::{EncodingKey, Header, encode};
use serde_json::Value;

/// The key of Mercure's own examples, given to the hub with `--jwt-key`.
pub const KEY: &str = "!ChangeThisMercureHubJWTSecretKey!";

/// Now, in seconds since the Unix epoch (what `exp` counts).
pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// An HS256 token for `claims`, signed with `key`.
pub fn hs256(key: &str, claims: &Value) -> String {
    encode(
        &Header::default(),
        claims,
        &EncodingKey::from_secret(key.as_bytes()),
    )
    .unwrap()
}
