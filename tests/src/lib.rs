//! Helpers shared by the kernel verdict tests, the end-to-end tests and the benchmarks.

pub mod frames;
pub mod kernel;
