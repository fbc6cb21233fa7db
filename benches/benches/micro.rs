//! Criterion microbenchmarks (placeholder until written).
fn main() {}
