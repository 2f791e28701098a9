//! Criterion micro-benchmarks of the protocol core (filled in by issue 6).
fn main() {}
