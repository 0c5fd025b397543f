//! Listening for many connections at once. Shared by the examples, tests and benches through
//! `#[path = ".../examples/support/net.rs"] mod net;`.

use std::io;

use tokio::net::{lookup_host, TcpListener, TcpSocket};

/// The listen backlog: `TcpListener::bind` asks for 128, too few for thousands of clients
/// connecting at once (Linux caps it at `net.core.somaxconn`, 4096 by default).
pub const BACKLOG: u32 = 1024;

/// Listens on `addr` with a backlog of [`BACKLOG`]: after a restart, thousands of
/// `EventSource`s reconnect at once, and each connection the backlog drops costs its client a
/// one-second SYN retry.
///
/// # Errors
///
/// `addr` does not resolve, or none of its addresses can be bound.
pub async fn listen(addr: &str) -> io::Result<TcpListener> {
    let mut failed = None;
    for addr in lookup_host(addr).await? {
        let socket = if addr.is_ipv4() {
            TcpSocket::new_v4()?
        } else {
            TcpSocket::new_v6()?
        };
        socket.set_reuseaddr(true)?;
        if let Err(err) = socket.bind(addr) {
            failed = Some(err);
            continue;
        }
        return socket.listen(BACKLOG);
    }
    Err(failed.unwrap_or_else(|| io::Error::other(format!("{addr}: no address"))))
}
