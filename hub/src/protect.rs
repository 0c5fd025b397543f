//! Protected by default, like Redis's protected mode: a hub that other machines can reach
//! does not let them publish anonymously unless told to.

use std::{fmt, net::SocketAddr};

use super::Args;

/// Why the hub refused to start: it would listen beyond loopback with no publish
/// authentication, and was not told that this is meant.
#[derive(Debug)]
pub(super) struct Unprotected {
    bind: String,
}

impl fmt::Display for Unprotected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "refusing to start: --bind {} is not a loopback address and publishing needs no \
             token, so anyone who can reach it could publish; add --token SECRET \
             (SSE_HUB_TOKEN) to require a bearer token, --publisher-jwt-key KEY (or \
             --jwt-key, MERCURE_PUBLISHER_JWT_KEY) to require a JWT, or --allow-anonymous-publish \
             (SSE_HUB_ALLOW_ANONYMOUS_PUBLISH=true) to let anyone publish",
            self.bind
        )
    }
}

impl std::error::Error for Unprotected {}

/// `Ok` when every address `--bind` resolves to is loopback, or publishing needs the token
/// or a JWT (`publisher_key`: a publisher key is set, by a flag or Mercure's variable), or
/// `--allow-anonymous-publish` says anonymous publishing is meant.
pub(super) fn check(
    args: &Args,
    publisher_key: bool,
    addrs: &[SocketAddr],
) -> Result<(), Unprotected> {
    let beyond_loopback = addrs
        .iter()
        .any(|addr| !addr.ip().to_canonical().is_loopback());
    let protected = args.token.is_some() || publisher_key;
    if beyond_loopback && !protected && !args.allow_anonymous_publish {
        return Err(Unprotected {
            bind: args.bind.clone(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    fn check_on(flags: &[&str], addr: &str) -> Result<(), Unprotected> {
        let args = Args::parse_from([&["tower-sse-hub", "--bind", addr][..], flags].concat());
        let rights = crate::rights(&args, &crate::MercureEnv::default()).unwrap();
        let publisher_key = rights.is_some_and(|rights| rights.has_publisher());
        check(&args, publisher_key, &[addr.parse().unwrap()])
    }

    #[test]
    fn beyond_loopback_needs_a_token_or_the_flag() {
        for addr in ["127.0.0.1:80", "[::1]:80", "[::ffff:127.0.0.1]:80"] {
            assert!(check_on(&[], addr).is_ok(), "{addr}");
        }
        for addr in ["0.0.0.0:80", "[::]:80", "192.0.2.1:80"] {
            let refused = check_on(&[], addr).unwrap_err().to_string();
            assert!(refused.contains("--token") && refused.contains("--allow-anonymous-publish"));
            assert!(check_on(&["--token", "t"], addr).is_ok(), "{addr}");
            assert!(check_on(&["--jwt-key", "k"], addr).is_ok(), "{addr}");
            assert!(check_on(&["--publisher-jwt-key", "k"], addr).is_ok());
            // Subscribers' rights don't guard publishing.
            assert!(check_on(&["--subscriber-jwt-key", "k"], addr).is_err());
            assert!(
                check_on(&["--allow-anonymous-publish"], addr).is_ok(),
                "{addr}"
            );
        }
    }
}
