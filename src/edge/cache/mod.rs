//! The edge's HTTP cache (issue "The edge as a CDN"). So far the parts it is built on: the
//! pure logic, kept apart from I/O so it can be tested and fuzzed alone, and the storage:
//! - [`key`]: what a cached response is filed under (host, path and query, and for
//!   `Vary: Accept` the image endpoint's own Accept class, never the raw header);
//! - [`directives`]: the `Cache-Control` extensions RFC 5861 adds
//!   (`stale-while-revalidate`, `stale-if-error`), which the RFC 9111 crate leaves out;
//! - [`policy`]: RFC 9111 for a shared cache (through `http-cache-semantics`), by Accept
//!   class, with the staleness extensions;
//! - [`status`]: the RFC 9211 `Cache-Status` header every edge response carries;
//! - [`store`]: memory in front of disk, each bounded, behind an eviction trait (LRU).

pub mod directives;
pub mod key;
pub mod policy;
pub mod status;
pub mod store;
