// Uploads with per-file progress: one PUT up to 16 MiB, the multipart endpoints in 8 MiB
// parts above that (aborted on failure so no parts are left behind).

import * as api from './api.js';

export const MiB = 1024 * 1024;
export const SINGLE_LIMIT = 16 * MiB;
export const PART_SIZE = 8 * MiB;

function typeOf(file) {
  return file.type || 'application/octet-stream';
}

/**
 * Uploads file to bucket/key. onProgress(loaded, total). Resolves the stored object.
 * Returns {promise, cancel}.
 */
export function uploadFile(bucket, key, file, onProgress) {
  let cancelled = false;
  let inFlight = null;
  const report = (loaded) => { if (onProgress) onProgress(Math.min(loaded, file.size), file.size); };

  async function single() {
    inFlight = api.xhrSend('PUT', ['buckets', bucket, 'object'], { key }, file, typeOf(file), report);
    const obj = await inFlight;
    report(file.size);
    return obj;
  }

  async function multipart() {
    const started = await api.request('POST', ['buckets', bucket, 'uploads'], {
      query: { key }, headers: { 'Content-Type': typeOf(file) },
    });
    const id = started.upload_id;
    const parts = [];
    try {
      let done = 0;
      for (let n = 1, off = 0; off < file.size; n += 1, off += PART_SIZE) {
        if (cancelled) throw new api.ApiError(0, 'aborted', 'cancelled');
        const blob = file.slice(off, Math.min(off + PART_SIZE, file.size));
        inFlight = api.xhrSend('PUT', ['buckets', bucket, 'uploads', id], { key, part: n }, blob,
          'application/octet-stream', (loaded) => report(done + loaded));
        const r = await inFlight;
        parts.push({ part: r && r.part ? r.part : n, etag: r.etag });
        done += blob.size;
        report(done);
      }
      return await api.request('POST', ['buckets', bucket, 'uploads', id, 'complete'], {
        query: { key }, json: { parts },
      });
    } catch (e) {
      api.request('DELETE', ['buckets', bucket, 'uploads', id], { query: { key } }).catch(() => {});
      throw e;
    }
  }

  const promise = file.size > SINGLE_LIMIT ? multipart() : single();
  return {
    promise,
    multipart: file.size > SINGLE_LIMIT,
    cancel() {
      cancelled = true;
      if (inFlight && inFlight.abort) inFlight.abort();
    },
  };
}
