//! Which stored entries a purge names: every entry's hostname, path and surrogate tags, in
//! memory (rebuilt from the disk tier's heads at start).
//!
//! What must stay true: a purge selects every entry it names, whatever Accept class the
//! entry is filed under; an entry leaves the index when it leaves the store.

use std::collections::{HashMap, HashSet};

/// What a purge names.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "by", rename_all = "snake_case")]
pub enum Selector {
    /// One URL (every Accept class of it): hostname and path with query.
    Url { host: String, path: String },
    /// Paths starting with `prefix`, on one hostname or (empty) all.
    Prefix {
        #[serde(default)]
        host: String,
        prefix: String,
    },
    /// Every entry carrying this surrogate tag (`s3://bucket/key`).
    Tag { tag: String },
    /// Every entry with a tag starting with `prefix` (`s3://bucket/` for a bucket).
    TagPrefix { prefix: String },
    /// Every entry of one hostname.
    Host { host: String },
    /// Everything.
    All,
}

struct Item {
    host: String,
    path: String,
    tags: Vec<String>,
}

#[derive(Default)]
pub struct Index {
    items: HashMap<String, Item>,
    by_tag: HashMap<String, HashSet<String>>,
    by_host: HashMap<String, HashSet<String>>,
}

impl Index {
    pub fn insert(&mut self, key: &str, host: &str, path: &str, tags: &[String]) {
        self.remove(key);
        let host = host.to_ascii_lowercase();
        for t in tags {
            self.by_tag
                .entry(t.clone())
                .or_default()
                .insert(key.to_owned());
        }
        self.by_host
            .entry(host.clone())
            .or_default()
            .insert(key.to_owned());
        self.items.insert(
            key.to_owned(),
            Item {
                host,
                path: path.to_owned(),
                tags: tags.to_vec(),
            },
        );
    }

    pub fn remove(&mut self, key: &str) {
        let Some(item) = self.items.remove(key) else {
            return;
        };
        for t in &item.tags {
            if let Some(set) = self.by_tag.get_mut(t) {
                set.remove(key);
                if set.is_empty() {
                    self.by_tag.remove(t);
                }
            }
        }
        if let Some(set) = self.by_host.get_mut(&item.host) {
            set.remove(key);
            if set.is_empty() {
                self.by_host.remove(&item.host);
            }
        }
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// The hostname `key` is filed under.
    pub fn host_of(&self, key: &str) -> Option<&str> {
        self.items.get(key).map(|i| i.host.as_str())
    }

    /// The keys `selector` names.
    pub fn select(&self, selector: &Selector) -> Vec<String> {
        let set = |s: Option<&HashSet<String>>| s.map(|s| s.iter().cloned().collect::<Vec<_>>());
        match selector {
            Selector::Tag { tag } => set(self.by_tag.get(tag)).unwrap_or_default(),
            Selector::Host { host } => {
                set(self.by_host.get(&host.to_ascii_lowercase())).unwrap_or_default()
            }
            Selector::All => self.items.keys().cloned().collect(),
            Selector::TagPrefix { prefix } => self
                .by_tag
                .iter()
                .filter(|(t, _)| t.starts_with(prefix.as_str()))
                .flat_map(|(_, keys)| keys.iter().cloned())
                .collect::<HashSet<_>>()
                .into_iter()
                .collect(),
            Selector::Url { host, path } => self.matching(host, |p| p == path),
            Selector::Prefix { host, prefix } => {
                self.matching(host, |p| p.starts_with(prefix.as_str()))
            }
        }
    }

    fn matching(&self, host: &str, path: impl Fn(&str) -> bool) -> Vec<String> {
        let host = host.to_ascii_lowercase();
        self.items
            .iter()
            .filter(|(_, i)| (host.is_empty() || i.host == host) && path(&i.path))
            .map(|(k, _)| k.clone())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sorted(mut v: Vec<String>) -> Vec<String> {
        v.sort();
        v
    }

    #[test]
    fn selectors_name_what_they_say() {
        let mut i = Index::default();
        let tag = |t: &str| vec![t.to_owned()];
        i.insert("k1", "A.example", "/img/a.jpg", &tag("s3://b/a.jpg"));
        i.insert("k2", "a.example", "/img/a.jpg", &tag("s3://b/a.jpg"));
        i.insert("k3", "a.example", "/img/b.jpg?x=1", &tag("s3://b/b.jpg"));
        i.insert("k4", "c.example", "/img/a.jpg", &tag("s3://other/a.jpg"));
        let sel = |s| sorted(i.select(&s));
        assert_eq!(
            sel(Selector::Tag {
                tag: "s3://b/a.jpg".into()
            }),
            ["k1", "k2"]
        );
        assert_eq!(
            sel(Selector::TagPrefix {
                prefix: "s3://b/".into()
            }),
            ["k1", "k2", "k3"]
        );
        assert_eq!(
            sel(Selector::Url {
                host: "a.example".into(),
                path: "/img/a.jpg".into()
            }),
            ["k1", "k2"]
        );
        assert_eq!(
            sel(Selector::Prefix {
                host: String::new(),
                prefix: "/img/".into()
            }),
            ["k1", "k2", "k3", "k4"]
        );
        assert_eq!(
            sel(Selector::Host {
                host: "C.example".into()
            }),
            ["k4"]
        );
        assert_eq!(sel(Selector::All).len(), 4);
        i.remove("k1");
        i.insert("k2", "a.example", "/img/a.jpg", &[]);
        assert!(
            i.select(&Selector::Tag {
                tag: "s3://b/a.jpg".into()
            })
            .is_empty()
        );
        assert_eq!(i.len(), 3);
    }

    #[test]
    fn selectors_read_from_json() {
        let s: Selector = serde_json::from_str(r#"{"by":"tag","tag":"s3://b/k"}"#).expect("tag");
        assert_eq!(
            s,
            Selector::Tag {
                tag: "s3://b/k".into()
            }
        );
        let s: Selector =
            serde_json::from_str(r#"{"by":"prefix","prefix":"/a/"}"#).expect("prefix");
        assert!(matches!(s, Selector::Prefix { host, .. } if host.is_empty()));
        assert!(serde_json::from_str::<Selector>(r#"{"by":"nope"}"#).is_err());
    }
}
