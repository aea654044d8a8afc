//! The image endpoint's logic (imgproxy's URL language). Pure modules first: `url` splits a
//! request path and decodes the source, `signature` checks imgproxy-style HMAC signatures,
//! `options` parses processing options into a typed canonical value, `geometry` computes
//! sizes and crops, `negotiate` picks the output format. None of them do I/O, so they are
//! table-tested (and fuzzable) alone. `picture` is the decoded image that the pixel steps
//! (`decode`, `transform`, `encode`; `avif` is both codec directions of AVIF,
//! `webp_animation` the animated WebP encoder) hand to one
//! another; `pipeline` runs them in order on
//! the bounded `pool`; `source` and `http_source` fetch originals; `config` is `[images]`.

pub mod allow_list;
pub mod avif;
pub mod client_hints;
pub mod config;
pub mod decode;
pub mod encode;
pub mod exif;
pub mod geometry;
pub mod heif;
pub mod http_source;
pub mod info;
pub mod jxl;
pub mod negotiate;
pub mod options;
pub mod picture;
pub mod pipeline;
pub mod pool;
pub mod signature;
pub mod source;
pub mod svg;
pub mod svg_opacity;
pub mod svg_sanitize;
pub mod transform;
pub mod url;
pub mod watermark;
pub mod webp_animation;
