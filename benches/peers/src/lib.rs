//! What the peer echo servers share: the command line.
//!
//! Every binary takes `--listen ADDR` (or the address as its first
//! argument), defaults to `127.0.0.1:9001`, refuses anything but a loopback
//! address, and prints `listening on ADDR` to stderr once bound.

use std::net::SocketAddr;

/// The address to listen on, from `--listen ADDR`, `--listen=ADDR` or the
/// first positional argument.
pub fn listen_addr() -> SocketAddr {
    let mut args = std::env::args().skip(1);
    let mut addr = None;
    while let Some(a) = args.next() {
        if a == "--listen" {
            addr = args.next();
        } else if let Some(v) = a.strip_prefix("--listen=") {
            addr = Some(v.to_string());
        } else if a == "-h" || a == "--help" {
            eprintln!(
                "usage: {} [--listen] 127.0.0.1:PORT",
                std::env::args().next().unwrap_or_default()
            );
            std::process::exit(0);
        } else if addr.is_none() && !a.starts_with('-') {
            addr = Some(a);
        } else {
            eprintln!("unknown argument {a:?}");
            std::process::exit(2);
        }
    }
    let addr: SocketAddr = addr.as_deref().unwrap_or("127.0.0.1:9001").parse().unwrap_or_else(|e| {
        eprintln!("bad listen address: {e}");
        std::process::exit(2)
    });
    if !addr.ip().is_loopback() {
        eprintln!("refusing to listen on {addr}: benchmark peers are loopback only");
        std::process::exit(2);
    }
    addr
}

/// The line the comparison runner (and a person) waits for.
pub fn announce(addr: SocketAddr) {
    eprintln!("listening on {addr}");
}
