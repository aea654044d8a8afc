//! Brotli and gzip for text responses at the edge (the admin UI's assets, JSON, SVG, XML
//! error bodies), negotiated by `Accept-Encoding`. Images other than SVG are never
//! recompressed, and neither is anything already encoded.
//!
//! Pure: negotiation, what is compressible, the codecs, and the headers of the encoded
//! representation; the edge applies them ([`super::proxy`], [`super::cache::layer`]).

use std::io::Write;

use http::{HeaderMap, HeaderValue, header};

/// Bodies up to this size are compressed (larger ones pass as they are).
pub const MAX_BODY: u64 = 4 << 20;
/// Smaller bodies gain nothing.
pub const MIN_BODY: u64 = 256;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    Brotli,
    Gzip,
}

impl Encoding {
    pub fn token(self) -> &'static str {
        match self {
            Encoding::Brotli => "br",
            Encoding::Gzip => "gzip",
        }
    }
}

/// The encoding for a request's `Accept-Encoding`: Brotli when admitted, else gzip. A
/// coding refused anywhere (`q=0`) stays refused; `*` admits what is not named.
pub fn negotiate(accept_encoding: Option<&str>) -> Option<Encoding> {
    // None: not named; Some(false): refused; Some(true): admitted.
    let (mut br, mut gzip, mut star) = (None, None, None);
    for part in accept_encoding?.split(',') {
        let mut it = part.split(';');
        let name = it.next().unwrap_or("").trim().to_ascii_lowercase();
        let q = it
            .filter_map(|p| p.trim().strip_prefix("q="))
            .find_map(|q| q.trim().parse::<f32>().ok())
            .unwrap_or(1.0);
        let slot = match name.as_str() {
            "br" => &mut br,
            "gzip" | "x-gzip" => &mut gzip,
            "*" => &mut star,
            _ => continue,
        };
        *slot = Some(q > 0.0 && *slot != Some(false));
    }
    let admitted = |named: Option<bool>| named.unwrap_or(star == Some(true));
    if admitted(br) {
        Some(Encoding::Brotli)
    } else if admitted(gzip) {
        Some(Encoding::Gzip)
    } else {
        None
    }
}

/// Whether a response with these headers and status is worth compressing.
pub fn compressible(status: http::StatusCode, headers: &HeaderMap) -> bool {
    if matches!(status.as_u16(), 204 | 206 | 304) || headers.contains_key(header::CONTENT_ENCODING)
    {
        return false;
    }
    let Some(len) = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
    else {
        return false;
    };
    if !(MIN_BODY..=MAX_BODY).contains(&len) {
        return false;
    }
    let kind = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    kind.starts_with("text/")
        || matches!(
            kind.as_str(),
            "application/json"
                | "application/javascript"
                | "application/xml"
                | "application/manifest+json"
                | "application/problem+json"
                | "image/svg+xml"
        )
        || kind.ends_with("+json")
        || kind.ends_with("+xml")
}

/// `body` encoded (Brotli quality 5, gzip level 6: fast enough for responses on the fly).
pub fn encode(enc: Encoding, body: &[u8]) -> std::io::Result<Vec<u8>> {
    match enc {
        Encoding::Brotli => {
            let mut out = Vec::with_capacity(body.len() / 3);
            {
                let mut w = brotli::CompressorWriter::new(&mut out, 32 * 1024, 5, 22);
                w.write_all(body)?;
                w.flush()?;
            }
            Ok(out)
        }
        Encoding::Gzip => {
            let mut w = flate2::write::GzEncoder::new(
                Vec::with_capacity(body.len() / 3),
                flate2::Compression::new(6),
            );
            w.write_all(body)?;
            w.finish()
        }
    }
}

/// The headers of the encoded representation: `Content-Encoding`, the new length, `Vary`
/// naming `Accept-Encoding`, a strong ETag of its own, no ranges.
pub fn encoded_headers(headers: &mut HeaderMap, enc: Encoding, length: usize) {
    headers.insert(
        header::CONTENT_ENCODING,
        HeaderValue::from_static(enc.token()),
    );
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(length));
    headers.remove(header::ACCEPT_RANGES);
    add_vary(headers);
    if let Some(etag) = headers.get(header::ETAG).and_then(|v| v.to_str().ok())
        && let Some(inner) = etag.strip_suffix('"')
        && let Ok(v) = HeaderValue::from_str(&format!("{inner}-{}\"", enc.token()))
    {
        headers.insert(header::ETAG, v);
    }
}

/// `Vary: Accept-Encoding` on every compressible response, encoded or not, so caches
/// downstream keep the representations apart.
pub fn add_vary(headers: &mut HeaderMap) {
    let present = headers
        .get_all(header::VARY)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|v| v.trim().eq_ignore_ascii_case("accept-encoding") || v.trim() == "*");
    if !present {
        headers.append(header::VARY, HeaderValue::from_static("Accept-Encoding"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn h(kind: &str, len: usize) -> HeaderMap {
        let mut m = HeaderMap::new();
        m.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_str(kind).unwrap_or(HeaderValue::from_static("x/x")),
        );
        m.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
        m
    }

    #[test]
    fn brotli_is_preferred_and_q0_refuses() {
        assert_eq!(
            negotiate(Some("gzip, deflate, br, zstd")),
            Some(Encoding::Brotli)
        );
        assert_eq!(negotiate(Some("gzip;q=0.5, br;q=0")), Some(Encoding::Gzip));
        assert_eq!(negotiate(Some("identity")), None);
        assert_eq!(negotiate(Some("*")), Some(Encoding::Brotli));
        assert_eq!(negotiate(Some("br, br;q=0, gzip")), Some(Encoding::Gzip));
        assert_eq!(negotiate(Some("*, br;q=0")), Some(Encoding::Gzip));
        assert_eq!(negotiate(None), None);
    }

    #[test]
    fn text_is_compressed_and_images_are_not() {
        let ok = http::StatusCode::OK;
        for kind in [
            "text/javascript; charset=utf-8",
            "application/json",
            "image/svg+xml",
            "application/xml",
            "text/css",
        ] {
            assert!(compressible(ok, &h(kind, 5000)), "{kind}");
        }
        for kind in [
            "image/jpeg",
            "image/webp",
            "image/avif",
            "application/octet-stream",
        ] {
            assert!(!compressible(ok, &h(kind, 5000)), "{kind}");
        }
        assert!(!compressible(ok, &h("text/plain", 10)));
        assert!(!compressible(
            http::StatusCode::PARTIAL_CONTENT,
            &h("text/plain", 5000)
        ));
        let mut encoded = h("text/plain", 5000);
        encoded.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
        assert!(!compressible(ok, &encoded));
        assert!(compressible(
            http::StatusCode::NOT_FOUND,
            &h("application/xml", 400)
        ));
    }

    #[test]
    fn both_codecs_round_trip() {
        let body = b"function pixelport() { return 'edge'; }\n".repeat(200);
        let br = encode(Encoding::Brotli, &body).expect("br");
        assert!(br.len() < body.len() / 5);
        let mut back = Vec::new();
        brotli::Decompressor::new(br.as_slice(), 4096)
            .read_to_end(&mut back)
            .expect("unbrotli");
        assert_eq!(back, body);
        let gz = encode(Encoding::Gzip, &body).expect("gzip");
        let mut back = Vec::new();
        flate2::read::GzDecoder::new(gz.as_slice())
            .read_to_end(&mut back)
            .expect("gunzip");
        assert_eq!(back, body);
        let mut headers = h("text/javascript", body.len());
        headers.insert(header::ETAG, HeaderValue::from_static("\"abc\""));
        headers.insert(header::VARY, HeaderValue::from_static("Accept"));
        encoded_headers(&mut headers, Encoding::Brotli, br.len());
        assert_eq!(headers[header::ETAG], "\"abc-br\"");
        assert_eq!(
            headers[header::CONTENT_LENGTH],
            br.len().to_string().as_str()
        );
        assert_eq!(headers.get_all(header::VARY).iter().count(), 2);
    }
}
