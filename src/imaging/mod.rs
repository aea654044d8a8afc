//! The image endpoint's logic (imgproxy's URL language). Pure modules first: `url` splits a
//! request path and decodes the source, `signature` checks imgproxy-style HMAC signatures,
//! `options` parses processing options into a typed canonical value, `geometry` computes
//! sizes and crops. None of them do I/O, so they are table-tested (and fuzzable) alone.
//! `picture` is the decoded image that the pixel steps (`decode`, `transform`, `encode`)
//! hand to one another.

pub mod decode;
pub mod encode;
pub mod geometry;
pub mod options;
pub mod picture;
pub mod signature;
pub mod url;
