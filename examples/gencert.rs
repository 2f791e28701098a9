//! Writes a fresh self-signed certificate and its private key for
//! `localhost` and 127.0.0.1 (PEM), for local TLS runs and CI:
//!
//!   cargo run --example gencert -- DIR     # DIR/cert.pem, DIR/key.pem
//!
//! No private key is ever committed: CI makes one per run.

use std::path::PathBuf;

fn main() {
    let dir = PathBuf::from(std::env::args().nth(1).unwrap_or_else(|| ".".into()));
    let names = vec!["localhost".to_string(), "127.0.0.1".to_string()];
    let cert = match rcgen::generate_simple_self_signed(names) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("gencert: {e}");
            std::process::exit(1);
        }
    };
    for (name, pem) in [
        ("cert.pem", cert.cert.pem()),
        ("key.pem", cert.key_pair.serialize_pem()),
    ] {
        let path = dir.join(name);
        if let Err(e) = std::fs::write(&path, pem) {
            eprintln!("gencert: {}: {e}", path.display());
            std::process::exit(1);
        }
    }
    println!("{}", dir.join("cert.pem").display());
}
