//! Reading encrypted blobs (the format is `store::sealing`'s; the spool writes them): a
//! plaintext range of a sealed blob streamed back, opening only the chunks it touches.

use std::io::SeekFrom;
use std::ops::Range;
use std::path::Path;

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncSeekExt};

use crate::store::sealing::{self, DataKey, TAG};
use crate::store::{ByteStream, StoreError, StoreResult};

/// Chunks opened per item of a read stream (about 1 MiB, as plain reads).
const CHUNKS_PER_READ: u64 = 16;

fn io_error(what: &str, path: &Path, e: std::io::Error) -> StoreError {
    let message = format!("{what} {}: {e}", path.display());
    if crate::disk::is_out_of_space(&e) {
        StoreError::InsufficientStorage(message)
    } else {
        StoreError::Internal(message)
    }
}

/// Opens the sealed blob at `path` (holding `plain` bytes of plaintext) and streams the
/// plaintext `range` of it (non-empty, within the blob). The file is opened and positioned
/// before this returns, so a missing blob is an error before any byte is sent.
pub(super) async fn read_sealed(
    path: &Path,
    key: DataKey,
    plain: u64,
    range: Range<u64>,
) -> StoreResult<ByteStream> {
    let span = sealing::chunk_span(range);
    let mut file = tokio::fs::File::open(path)
        .await
        .map_err(|e| io_error("cannot open", path, e))?;
    if span.file_offset > 0 {
        file.seek(SeekFrom::Start(span.file_offset))
            .await
            .map_err(|e| io_error("cannot seek", path, e))?;
    }
    let state = Reading {
        file,
        key,
        plain,
        total: sealing::chunk_count(plain),
        next: span.chunks.start,
        end: span.chunks.end,
        skip: span.skip as usize,
        left: span.len,
        blob: path.display().to_string(),
    };
    Ok(Box::pin(futures::stream::try_unfold(
        state,
        |mut st| async move {
            if st.next >= st.end || st.left == 0 {
                return Ok(None);
            }
            let batch = (st.end - st.next).min(CHUNKS_PER_READ);
            let lens: Vec<u64> = (st.next..st.next + batch)
                .map(|i| sealing::chunk_plain_len(st.plain, i))
                .collect();
            let mut buf = vec![0u8; lens.iter().map(|l| (l + TAG) as usize).sum()];
            st.file.read_exact(&mut buf).await?;
            // Open each chunk in place and move its plaintext down over the tags before it.
            let (mut read_at, mut write_at) = (0usize, 0usize);
            for (j, len) in lens.iter().enumerate() {
                let index = st.next + j as u64;
                let sealed_len = (len + TAG) as usize;
                let chunk = &mut buf[read_at..read_at + sealed_len];
                let opened = st
                .key
                .open_chunk(index, index + 1 == st.total, chunk)
                .map_err(|e| {
                    tracing::error!(blob = %st.blob, error = %e, "an encrypted blob failed authentication");
                    std::io::Error::other(e)
                })?;
                buf.copy_within(read_at..read_at + opened, write_at);
                read_at += sealed_len;
                write_at += opened;
            }
            st.next += batch;
            buf.truncate(write_at);
            let mut bytes = Bytes::from(buf);
            if st.skip > 0 {
                bytes = bytes.slice(st.skip.min(bytes.len())..);
                st.skip = 0;
            }
            if bytes.len() as u64 > st.left {
                bytes.truncate(st.left as usize);
            }
            st.left -= bytes.len() as u64;
            Ok(Some((bytes, st)))
        },
    )))
}

struct Reading {
    file: tokio::fs::File,
    key: DataKey,
    plain: u64,
    total: u64,
    next: u64,
    end: u64,
    skip: usize,
    left: u64,
    blob: String,
}
