//! What a connection's bytes travel over. The loop reads and writes a
//! [`Transport`]; plain TCP is one, and the tests' in-memory pipes another.

use std::io::{self, Read, Write};
use std::net::Shutdown;

/// A non-blocking byte stream: reads and writes return `WouldBlock` rather
/// than wait.
pub trait Transport: Read + Write {
    /// Ends our sending side (TCP: a FIN after what is already written).
    fn shutdown_write(&mut self) -> io::Result<()>;
}

impl Transport for mio::net::TcpStream {
    fn shutdown_write(&mut self) -> io::Result<()> {
        self.shutdown(Shutdown::Write)
    }
}
