//! Purges that follow the data, the pure parts: the surrogate tag an image response carries
//! for its source, and what a purge names on the wire.
//!
//! What must stay true: the appliance's tag header and its purge messages spell a source
//! the same way ([`source_tag`]), so a purge always names what the edge filed.

use std::collections::{HashMap, HashSet, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::sync::watch;

/// The tag of the S3 object `key` in `bucket`: `s3://bucket/key`, with every byte of the key
/// outside printable ASCII (and `%`, `,`) percent-encoded, so it fits a header and a list.
pub fn source_tag(bucket: &str, key: &str) -> String {
    let mut out = String::with_capacity(6 + bucket.len() + key.len());
    out.push_str("s3://");
    out.push_str(bucket);
    out.push('/');
    for b in key.bytes() {
        if b.is_ascii_graphic() && b != b'%' && b != b',' {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A source id as the derivative cache knows it (`s3://bucket/key`), as a tag.
pub fn tag_of_source(source_id: &str) -> Option<String> {
    let rest = source_id.strip_prefix("s3://")?;
    let (bucket, key) = rest.split_once('/')?;
    Some(source_tag(bucket, key))
}

/// One thing a purge names.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "by", content = "value", rename_all = "snake_case")]
pub enum PurgeItem {
    /// Every response of one source (a tag from [`source_tag`]).
    Tag(String),
    /// Every response of sources whose tag starts with this (`s3://bucket/` for a bucket).
    TagPrefix(String),
    /// Everything served for the sending appliance's hostnames.
    All,
}

/// A purge batch's JSON stays well inside a control frame.
const BATCH_BYTES: usize = 48 * 1024;

/// The source id (`s3://bucket/key`, raw) a tag names, for the derivative cache.
pub fn source_of_tag(tag: &str) -> Option<String> {
    let rest = tag.strip_prefix("s3://")?;
    let bytes = rest.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = rest.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    Some(format!("s3://{}", String::from_utf8(out).ok()?))
}

/// One edge's progress.
#[derive(Debug, Clone, Copy)]
struct EdgeAcks {
    /// The last purge the edge confirmed; `None` until it has confirmed a full flush (it
    /// may have missed purges from before this process started).
    acked: Option<u64>,
    /// Live connections to it.
    links: usize,
}

#[derive(Debug)]
struct State {
    /// The sequence number of the last purge published (the first is 1).
    last: u64,
    log: VecDeque<(u64, PurgeItem)>,
    edges: HashMap<String, EdgeAcks>,
    /// Edges (by pin) the previous run left with every purge delivered.
    clean_start: HashSet<String>,
}

/// The appliance's purge log: every purge its writes cause, kept (up to `cap`) until every
/// edge has confirmed it, and sent to each edge on each of its connections.
///
/// What must stay true:
/// - an edge that may have missed a purge gets `All` (a flush of this appliance's
///   hostnames) before anything else: after the log was trimmed past what it confirmed,
///   and at its first connection after a start that did not follow a clean shutdown with
///   everything delivered to it;
/// - [`Purges::wait_delivered`] returns once every connected edge confirmed the purge, or
///   at its timeout; an edge not connected gets the purge when it reconnects.
pub struct Purges {
    state: Mutex<State>,
    acked: Condvar,
    latest: watch::Sender<u64>,
    cap: usize,
    /// Where the edges left clean are written at shutdown (read and removed at start).
    file: Option<PathBuf>,
}

/// The file that carries clean edges from one run to the next.
pub const CLEAN_FILE: &str = "tunnel-purges.json";

#[derive(Debug, Default, Serialize, Deserialize)]
struct CleanFile {
    clean: Vec<String>,
}

impl Purges {
    pub fn new(cap: usize, clean_start: HashSet<String>) -> Self {
        Self {
            state: Mutex::new(State {
                last: 0,
                log: VecDeque::new(),
                edges: HashMap::new(),
                clean_start,
            }),
            acked: Condvar::new(),
            latest: watch::Sender::new(0),
            cap: cap.max(1),
            file: None,
        }
    }

    /// The log of a daemon whose state lives in `data_dir`: the edges the last run left
    /// clean are read, and the file removed, so a crash leaves none clean.
    pub fn open(cap: usize, data_dir: &Path) -> Self {
        let file = data_dir.join(CLEAN_FILE);
        let clean = std::fs::read(&file)
            .ok()
            .and_then(|b| serde_json::from_slice::<CleanFile>(&b).ok())
            .map(|c| c.clean.into_iter().collect())
            .unwrap_or_default();
        let _ = std::fs::remove_file(&file);
        let mut me = Self::new(cap, clean);
        me.file = Some(file);
        me
    }

    /// Writes the edges that confirmed every purge (at a clean shutdown).
    pub fn save(&self) {
        let Some(file) = &self.file else {
            return;
        };
        let clean = match self.state.lock() {
            Ok(s) => s
                .edges
                .iter()
                .filter(|(_, e)| e.acked == Some(s.last))
                .map(|(pin, _)| pin.clone())
                .chain(
                    // Edges never reached this run keep what they had, if nothing happened.
                    s.clean_start
                        .iter()
                        .filter(|pin| s.last == 0 && !s.edges.contains_key(*pin))
                        .cloned(),
                )
                .collect(),
            Err(_) => return,
        };
        if let Ok(json) = serde_json::to_vec(&CleanFile { clean }) {
            let _ = std::fs::write(file, json);
        }
    }

    /// Records a purge; returns its sequence number.
    pub fn publish(&self, item: PurgeItem) -> u64 {
        let seq = match self.state.lock() {
            Ok(mut s) => {
                s.last += 1;
                let seq = s.last;
                s.log.push_back((seq, item));
                while s.log.len() > self.cap {
                    s.log.pop_front();
                }
                seq
            }
            Err(_) => return 0,
        };
        self.latest.send_replace(seq);
        seq
    }

    /// Changes whenever a purge is published.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.latest.subscribe()
    }

    fn edge<'a>(s: &'a mut State, pin: &str) -> &'a mut EdgeAcks {
        let clean = s.clean_start.contains(pin);
        s.edges.entry(pin.to_owned()).or_insert(EdgeAcks {
            acked: clean.then_some(0),
            links: 0,
        })
    }

    /// A connection to the edge `pin` is up until the guard drops.
    pub fn connect(self: &std::sync::Arc<Self>, pin: &str) -> Connected {
        if let Ok(mut s) = self.state.lock() {
            Self::edge(&mut s, pin).links += 1;
        }
        Connected {
            purges: self.clone(),
            pin: pin.to_owned(),
        }
    }

    /// The next batch for a connection to `pin` that has sent everything up to `sent`
    /// (`None`: nothing yet): the sequence number it completes, and its items. `None` when
    /// nothing is due.
    pub fn next_batch(&self, pin: &str, sent: Option<u64>) -> Option<(u64, Vec<PurgeItem>)> {
        let mut s = self.state.lock().ok()?;
        Self::batch(&mut s, pin, sent)
    }

    /// A connection's first batch: what is due, or (nothing due) an empty batch at the last
    /// sequence number, which tells the edge it is in sync.
    pub fn first_batch(&self, pin: &str) -> (u64, Vec<PurgeItem>) {
        let Ok(mut s) = self.state.lock() else {
            return (0, vec![PurgeItem::All]);
        };
        Self::batch(&mut s, pin, None).unwrap_or((s.last, Vec::new()))
    }

    fn batch(s: &mut State, pin: &str, sent: Option<u64>) -> Option<(u64, Vec<PurgeItem>)> {
        let last = s.last;
        let first = s.log.front().map_or(last + 1, |(seq, _)| *seq);
        let acked = Self::edge(s, pin).acked;
        let from = match (acked, sent) {
            // Never confirmed a flush: this connection flushes first.
            (None, None) => return Some((last, vec![PurgeItem::All])),
            (None, Some(s)) => s,
            (Some(a), s) => a.max(s.unwrap_or(0)),
        };
        if from >= last {
            return None;
        }
        if from + 1 < first {
            // Purges it never saw were trimmed from the log.
            return Some((last, vec![PurgeItem::All]));
        }
        let mut items = Vec::new();
        let mut bytes = 0;
        let mut upto = from;
        for (seq, item) in s.log.iter().filter(|(seq, _)| *seq > from) {
            let size = match item {
                PurgeItem::Tag(t) | PurgeItem::TagPrefix(t) => t.len() + 32,
                PurgeItem::All => 16,
            };
            if !items.is_empty() && bytes + size > BATCH_BYTES {
                break;
            }
            bytes += size;
            items.push(item.clone());
            upto = *seq;
        }
        Some((upto, items))
    }

    /// The edge `pin` applied every purge up to `seq`.
    pub fn ack(&self, pin: &str, seq: u64) {
        if let Ok(mut s) = self.state.lock() {
            let e = Self::edge(&mut s, pin);
            e.acked = Some(e.acked.map_or(seq, |a| a.max(seq)));
        }
        self.acked.notify_all();
    }

    /// Blocks until every connected edge confirmed `seq`, or `timeout` passes; false then.
    pub fn wait_delivered(&self, seq: u64, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let Ok(mut s) = self.state.lock() else {
            return false;
        };
        loop {
            let done = s
                .edges
                .values()
                .all(|e| e.links == 0 || e.acked.is_some_and(|a| a >= seq));
            if done {
                return true;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            s = match self.acked.wait_timeout(s, left) {
                Ok((s, _)) => s,
                Err(_) => return false,
            };
        }
    }
}

/// A live connection to an edge (see [`Purges::connect`]).
pub struct Connected {
    purges: std::sync::Arc<Purges>,
    pin: String,
}

impl Drop for Connected {
    fn drop(&mut self) {
        if let Ok(mut s) = self.purges.state.lock() {
            let e = Purges::edge(&mut s, &self.pin);
            e.links = e.links.saturating_sub(1);
        }
        // A writer waiting on this edge need not wait any longer.
        self.purges.acked.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tag(t: &str) -> PurgeItem {
        PurgeItem::Tag(t.into())
    }

    #[test]
    fn an_edge_gets_every_purge_once_confirmed_in_order() {
        let p = Purges::new(100, HashSet::from(["e1".to_owned()]));
        // A clean edge has nothing due; an edge the last run did not leave clean flushes.
        assert_eq!(p.next_batch("e1", None), None);
        assert_eq!(p.first_batch("e1"), (0, vec![]));
        assert_eq!(p.next_batch("e2", None), Some((0, vec![PurgeItem::All])));
        let a = p.publish(tag("s3://b/a"));
        let b = p.publish(tag("s3://b/b"));
        assert_eq!(
            p.next_batch("e1", None),
            Some((b, vec![tag("s3://b/a"), tag("s3://b/b")]))
        );
        // Sent on this connection: nothing more until something new.
        assert_eq!(p.next_batch("e1", Some(b)), None);
        p.ack("e1", a);
        assert_eq!(p.next_batch("e1", None), Some((b, vec![tag("s3://b/b")])));
        p.ack("e1", b);
        assert_eq!(p.next_batch("e1", None), None);
    }

    #[test]
    fn a_flush_is_sent_once_per_connection_not_until_confirmed() {
        // Before: a connection that had sent the flush at sequence 0 was told to send it
        // again and again until the edge's confirmation arrived.
        let p = Purges::new(10, HashSet::new());
        assert_eq!(p.first_batch("e1"), (0, vec![PurgeItem::All]));
        assert_eq!(p.next_batch("e1", Some(0)), None);
        let a = p.publish(tag("s3://b/a"));
        assert_eq!(
            p.next_batch("e1", Some(0)),
            Some((a, vec![tag("s3://b/a")]))
        );
    }

    #[test]
    fn a_trimmed_log_means_a_flush() {
        let p = Purges::new(2, HashSet::from(["e1".to_owned()]));
        for i in 0..5 {
            p.publish(tag(&format!("s3://b/{i}")));
        }
        assert_eq!(p.next_batch("e1", None), Some((5, vec![PurgeItem::All])));
        p.ack("e1", 5);
        p.publish(tag("s3://b/x"));
        assert_eq!(p.next_batch("e1", None), Some((6, vec![tag("s3://b/x")])));
    }

    #[test]
    fn writers_wait_for_connected_edges_only() {
        let p = std::sync::Arc::new(Purges::new(10, HashSet::from(["e1".to_owned()])));
        let seq = p.publish(tag("s3://b/a"));
        // No edge connected: nothing to wait for.
        assert!(p.wait_delivered(seq, Duration::from_millis(1)));
        let conn = p.connect("e1");
        assert!(!p.wait_delivered(seq, Duration::from_millis(20)));
        let p2 = p.clone();
        let t = std::thread::spawn(move || p2.wait_delivered(seq, Duration::from_secs(5)));
        std::thread::sleep(Duration::from_millis(20));
        p.ack("e1", seq);
        assert!(t.join().unwrap_or(false));
        drop(conn);
        let next = p.publish(tag("s3://b/b"));
        assert!(p.wait_delivered(next, Duration::from_millis(1)));
    }

    #[test]
    fn the_clean_file_carries_confirmed_edges_to_the_next_run() {
        let dir = tempfile::tempdir().expect("dir");
        {
            let p = std::sync::Arc::new(Purges::open(10, dir.path()));
            let _c = p.connect("e1");
            let _d = p.connect("e2");
            let seq = p.publish(tag("s3://b/a"));
            p.ack("e1", seq);
            p.save();
        }
        let p = Purges::open(10, dir.path());
        assert_eq!(p.next_batch("e1", None), None);
        assert_eq!(p.next_batch("e2", None), Some((0, vec![PurgeItem::All])));
        // Read once: a crash now would leave no file, so every edge would flush.
        assert!(!dir.path().join(CLEAN_FILE).exists());
    }

    #[test]
    fn tags_decode_back_to_source_ids() {
        for key in ["a/x.jpg", "a b%,é", "\u{1F600}"] {
            let t = source_tag("bkt", key);
            assert_eq!(source_of_tag(&t), Some(format!("s3://bkt/{key}")));
        }
        assert_eq!(source_of_tag("s3://b/%ZZ"), None);
    }

    #[test]
    fn tags_fit_a_header_and_name_one_source() {
        assert_eq!(source_tag("b", "a/x.jpg"), "s3://b/a/x.jpg");
        assert_eq!(source_tag("b", "a b%,é"), "s3://b/a%20b%25%2C%C3%A9");
        assert!(http::HeaderValue::from_str(&source_tag("b", "\u{1F600}\n")).is_ok());
        assert_eq!(tag_of_source("s3://b/k k").as_deref(), Some("s3://b/k%20k"));
        assert_eq!(tag_of_source("http://x/y"), None);
    }
}
