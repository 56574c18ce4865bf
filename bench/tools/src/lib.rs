//! Benchmark tools for `bench/run` (see docs/performance.md).
//!
//! # Layout
//! - [`fake`]: the fake MCP upstream's behaviour, pure (the `fake-upstream` binary serves it);
//! - [`client`]: one keep-alive HTTP/1.1 connection that posts MCP messages;
//! - [`messages`]: the MCP request bodies the load generator sends;
//! - [`stats`]: latency percentiles and the `BENCH` line `bench/table.py` reads (the same one
//!   `bench/call.lua` prints for wrk).

pub mod client;
pub mod fake;
pub mod messages;
pub mod stats;
