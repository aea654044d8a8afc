//! The edge's HTTP cache (issue "The edge as a CDN"). The pure logic, kept apart from I/O so
//! it can be tested and fuzzed alone, the storage, and the flow that puts them in front of
//! the proxy ([`layer`]):
//! - [`key`]: what a cached response is filed under (host, path and query, and for
//!   `Vary: Accept` the image endpoint's own Accept class, never the raw header);
//! - [`directives`]: the `Cache-Control` extensions RFC 5861 adds
//!   (`stale-while-revalidate`, `stale-if-error`), which the RFC 9111 crate leaves out;
//! - [`policy`]: RFC 9111 for a shared cache (through `http-cache-semantics`), by Accept
//!   class, with the staleness extensions;
//! - [`status`]: the RFC 9211 `Cache-Status` header every edge response carries;
//! - [`meta`]: an entry's head (policy, URL, surrogate tags);
//! - [`range`]: `Range` answered from a cached full object;
//! - [`index`]: which entries a purge names (URL, prefix, tag, hostname, everything);
//! - [`fill`]: request collapsing, one appliance request shared as it streams;
//! - [`segments`]: the disk tier, a log of segment files (oldest out first, entries still
//!   read kept, removals as tombstones);
//! - [`store`]: memory in front of disk, each bounded, memory behind an eviction trait (LRU);
//! - [`layer`]: the flow: lookup, serve, collapse, store, revalidate, purge.

pub mod directives;
pub mod fill;
pub mod index;
pub mod key;
pub mod layer;
pub mod meta;
pub mod policy;
pub mod range;
pub mod segments;
pub mod status;
pub mod store;
