//! Pure S3 listing logic shared by both stores: from keys in ascending byte order, pick the
//! page that `ListQuery` asks for, folding keys into CommonPrefixes at the delimiter.
//! No I/O here, so it can be tested against a plain model.

use super::{ListPage, ListQuery, ObjectInfo};

/// Builds one page from `items`, which must be sorted by key and contain only keys that start
/// with `query.prefix` and come strictly after `query.after` (callers seek there first; extra
/// keys are filtered again here anyway).
pub fn paginate(items: impl IntoIterator<Item = ObjectInfo>, query: &ListQuery) -> ListPage {
    let mut page = ListPage::default();
    if query.max_keys == 0 {
        return page;
    }
    let after = query.after.as_deref();
    let delimiter = query.delimiter.as_deref().filter(|d| !d.is_empty());
    let mut count = 0usize;
    for item in items {
        if !item.key.starts_with(&query.prefix) || after.is_some_and(|a| item.key.as_str() <= a) {
            continue;
        }
        let entry_prefix = delimiter.and_then(|d| {
            let rest = &item.key[query.prefix.len()..];
            rest.find(d)
                .map(|i| item.key[..query.prefix.len() + i + d.len()].to_owned())
        });
        if let Some(cp) = entry_prefix {
            // Skip keys folded into the prefix we just emitted, or one a previous page emitted.
            if page.common_prefixes.last() == Some(&cp) || after == Some(cp.as_str()) {
                continue;
            }
            if count == query.max_keys {
                page.is_truncated = true;
                break;
            }
            page.last = Some(cp.clone());
            page.common_prefixes.push(cp);
        } else {
            if count == query.max_keys {
                page.is_truncated = true;
                break;
            }
            page.last = Some(item.key.clone());
            page.objects.push(item);
        }
        count += 1;
    }
    page
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    fn obj(k: &str) -> ObjectInfo {
        ObjectInfo::key_only(k)
    }

    fn q(prefix: &str, delim: Option<&str>, after: Option<&str>, max: usize) -> ListQuery {
        ListQuery {
            prefix: prefix.into(),
            delimiter: delim.map(Into::into),
            after: after.map(Into::into),
            max_keys: max,
        }
    }

    const KEYS: [&str; 9] = [
        "a",
        "a/b",
        "a/c/d",
        "a/c/e",
        "b",
        "photos/2024/x.jpg",
        "photos/2025/y.jpg",
        "photos/z.jpg",
        "zz",
    ];

    fn run(query: &ListQuery) -> ListPage {
        paginate(KEYS.iter().map(|k| obj(k)), query)
    }

    #[test]
    fn delimiter_folds_into_common_prefixes() {
        let p = run(&q("", Some("/"), None, 1000));
        let keys: Vec<_> = p.objects.iter().map(|o| o.key.as_str()).collect();
        assert_eq!(keys, ["a", "b", "zz"]);
        assert_eq!(p.common_prefixes, ["a/", "photos/"]);
        assert!(!p.is_truncated);
        let p = run(&q("photos/", Some("/"), None, 1000));
        assert_eq!(p.common_prefixes, ["photos/2024/", "photos/2025/"]);
        assert_eq!(p.objects.len(), 1);
    }

    #[test]
    fn pages_walk_everything_once() {
        for max in 1..5 {
            let mut seen = Vec::new();
            let mut after = None;
            loop {
                let p = run(&q("", Some("/"), after.as_deref(), max));
                assert!(p.objects.len() + p.common_prefixes.len() <= max);
                seen.extend(p.objects.iter().map(|o| o.key.clone()));
                seen.extend(p.common_prefixes.iter().cloned());
                if !p.is_truncated {
                    break;
                }
                after = p.last.clone();
            }
            seen.sort();
            assert_eq!(seen, ["a", "a/", "b", "photos/", "zz"], "max_keys={max}");
        }
    }

    /// Model check: for random key sets, paging with any max_keys equals one unbounded listing.
    #[test]
    fn random_sets_match_the_model() {
        let mut seed = 0x2545F4914F6CDD1Du64;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for _ in 0..200 {
            let mut set = BTreeSet::new();
            for _ in 0..(next() % 30) {
                let len = 1 + next() % 6;
                let k: String = (0..len)
                    .map(|_| ['a', 'b', '/', 'c'][(next() % 4) as usize])
                    .collect();
                set.insert(k);
            }
            let prefix = ["", "a", "a/", "b/"][(next() % 4) as usize];
            let full = paginate(
                set.iter().map(|k| obj(k)),
                &q(prefix, Some("/"), None, usize::MAX),
            );
            // model: every key under prefix either itself or folded at the first `/` after prefix
            let mut model_keys = Vec::new();
            let mut model_cps = BTreeSet::new();
            for k in set.iter().filter(|k| k.starts_with(prefix)) {
                match k[prefix.len()..].find('/') {
                    Some(i) => {
                        model_cps.insert(k[..prefix.len() + i + 1].to_owned());
                    }
                    None => model_keys.push(k.clone()),
                }
            }
            let got_keys: Vec<_> = full.objects.iter().map(|o| o.key.clone()).collect();
            assert_eq!(got_keys, model_keys);
            assert_eq!(
                full.common_prefixes,
                model_cps.iter().cloned().collect::<Vec<_>>()
            );
            let max = 1 + (next() % 4) as usize;
            let mut after: Option<String> = None;
            let (mut ks, mut cps) = (Vec::new(), Vec::new());
            for _ in 0..100 {
                let p = paginate(
                    set.iter().map(|k| obj(k)),
                    &q(prefix, Some("/"), after.as_deref(), max),
                );
                ks.extend(p.objects.iter().map(|o| o.key.clone()));
                cps.extend(p.common_prefixes.clone());
                if !p.is_truncated {
                    break;
                }
                after = p.last;
            }
            assert_eq!(ks, model_keys);
            assert_eq!(cps, model_cps.iter().cloned().collect::<Vec<_>>());
        }
    }
}
