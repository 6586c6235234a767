//! An index of URI patterns: exact URIs by hash, prefixes in a byte trie, wildcards in a component
//! trie, so neither publishing nor calling scans a list.
//!
//! WAMP prefix matching is by string (`com.a` matches `com.ab.c`), hence bytes; wildcard matching is
//! by component (`a..c` matches `a.b.c`), hence components. The broker wants every match of a URI
//! ([`PatternIndex::for_each_match`]); the dealer wants the single best one
//! ([`PatternIndex::best_match`]): exact, else the longest prefix, else the wildcard whose literal
//! components match earliest.

use std::collections::HashMap;

use crate::wamp::MatchPolicy;

/// The index's maps: looked up on every publication and call, so hashed with aHash (still
/// randomly keyed, as the URIs come from peers).
type Map<K, V> = HashMap<K, V, ahash::RandomState>;

/// Values keyed by (URI pattern, match policy).
#[derive(Debug)]
pub struct PatternIndex<T> {
    exact: Map<String, T>,
    prefix: PrefixNode<T>,
    wildcard: WildcardNode<T>,
    len: usize,
}

impl<T> Default for PatternIndex<T> {
    fn default() -> Self {
        PatternIndex {
            exact: Map::default(),
            prefix: PrefixNode::default(),
            wildcard: WildcardNode::default(),
            len: 0,
        }
    }
}

impl<T> PatternIndex<T> {
    /// Number of patterns held.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The value stored for exactly this pattern and policy.
    pub fn get(&self, uri: &str, policy: MatchPolicy) -> Option<&T> {
        match policy {
            MatchPolicy::Exact => self.exact.get(uri),
            MatchPolicy::Prefix => self.prefix.find(uri.as_bytes())?.value.as_ref(),
            MatchPolicy::Wildcard => self.wildcard.find(uri.split('.'))?.value.as_ref(),
        }
    }

    pub fn get_mut(&mut self, uri: &str, policy: MatchPolicy) -> Option<&mut T> {
        match policy {
            MatchPolicy::Exact => self.exact.get_mut(uri),
            MatchPolicy::Prefix => self.prefix.find_mut(uri.as_bytes())?.value.as_mut(),
            MatchPolicy::Wildcard => self.wildcard.find_mut(uri.split('.'))?.value.as_mut(),
        }
    }

    /// Stores a value, returning the one it replaced.
    pub fn insert(&mut self, uri: &str, policy: MatchPolicy, value: T) -> Option<T> {
        let old = match policy {
            MatchPolicy::Exact => self.exact.insert(uri.to_owned(), value),
            MatchPolicy::Prefix => self.prefix.entry(uri.as_bytes()).value.replace(value),
            MatchPolicy::Wildcard => self.wildcard.entry(uri.split('.')).value.replace(value),
        };
        if old.is_none() {
            self.len += 1;
        }
        old
    }

    /// Removes a pattern, pruning trie nodes left empty.
    pub fn remove(&mut self, uri: &str, policy: MatchPolicy) -> Option<T> {
        let old = match policy {
            MatchPolicy::Exact => self.exact.remove(uri),
            MatchPolicy::Prefix => self.prefix.remove(uri.as_bytes()),
            MatchPolicy::Wildcard => {
                let parts: Vec<&str> = uri.split('.').collect();
                self.wildcard.remove(&parts)
            }
        };
        if old.is_some() {
            self.len -= 1;
        }
        old
    }

    /// Calls `f` with every value whose pattern matches `uri` (exact, then prefixes, then wildcards).
    pub fn for_each_match<'a>(&'a self, uri: &str, mut f: impl FnMut(&'a T)) {
        if let Some(v) = self.exact.get(uri) {
            f(v);
        }
        self.prefix.each_prefix_of(uri.as_bytes(), &mut f);
        if !self.wildcard.is_empty() {
            self.wildcard.each_match(uri.split('.'), &mut f);
        }
    }

    /// The single value whose pattern matches `uri` best, by WAMP's call precedence.
    pub fn best_match(&self, uri: &str) -> Option<&T> {
        if let Some(v) = self.exact.get(uri) {
            return Some(v);
        }
        if let Some(v) = self.prefix.longest_prefix_of(uri.as_bytes()) {
            return Some(v);
        }
        if self.wildcard.is_empty() {
            return None;
        }
        let parts: Vec<&str> = uri.split('.').collect();
        self.wildcard.first_match(&parts)
    }

    /// Every (pattern, policy, value).
    pub fn iter(&self) -> impl Iterator<Item = (String, MatchPolicy, &T)> {
        let mut out: Vec<(String, MatchPolicy, &T)> = self
            .exact
            .iter()
            .map(|(k, v)| (k.clone(), MatchPolicy::Exact, v))
            .collect();
        self.prefix.collect(&mut Vec::new(), &mut out);
        self.wildcard.collect(&mut Vec::new(), &mut out);
        out.into_iter()
    }
}

#[derive(Debug)]
struct PrefixNode<T> {
    value: Option<T>,
    children: Vec<(u8, PrefixNode<T>)>,
}

impl<T> Default for PrefixNode<T> {
    fn default() -> Self {
        PrefixNode {
            value: None,
            children: Vec::new(),
        }
    }
}

impl<T> PrefixNode<T> {
    fn child(&self, b: u8) -> Option<&PrefixNode<T>> {
        self.children.iter().find(|(k, _)| *k == b).map(|(_, n)| n)
    }

    fn find(&self, key: &[u8]) -> Option<&PrefixNode<T>> {
        let mut node = self;
        for &b in key {
            node = node.child(b)?;
        }
        Some(node)
    }

    fn find_mut(&mut self, key: &[u8]) -> Option<&mut PrefixNode<T>> {
        let mut node = self;
        for &b in key {
            node = node
                .children
                .iter_mut()
                .find(|(k, _)| *k == b)
                .map(|(_, n)| n)?;
        }
        Some(node)
    }

    fn entry(&mut self, key: &[u8]) -> &mut PrefixNode<T> {
        let mut node = self;
        for &b in key {
            let pos = match node.children.iter().position(|(k, _)| *k == b) {
                Some(p) => p,
                None => {
                    node.children.push((b, PrefixNode::default()));
                    node.children.len() - 1
                }
            };
            node = &mut node.children[pos].1;
        }
        node
    }

    fn remove(&mut self, key: &[u8]) -> Option<T> {
        match key.split_first() {
            None => self.value.take(),
            Some((&b, rest)) => {
                let pos = self.children.iter().position(|(k, _)| *k == b)?;
                let child = &mut self.children[pos].1;
                let out = child.remove(rest);
                if child.value.is_none() && child.children.is_empty() {
                    self.children.swap_remove(pos);
                }
                out
            }
        }
    }

    fn each_prefix_of<'a>(&'a self, key: &[u8], f: &mut impl FnMut(&'a T)) {
        let mut node = self;
        if let Some(v) = &node.value {
            f(v);
        }
        for &b in key {
            match node.child(b) {
                Some(n) => node = n,
                None => return,
            }
            if let Some(v) = &node.value {
                f(v);
            }
        }
    }

    fn longest_prefix_of(&self, key: &[u8]) -> Option<&T> {
        let mut node = self;
        let mut best = node.value.as_ref();
        for &b in key {
            match node.child(b) {
                Some(n) => node = n,
                None => break,
            }
            if node.value.is_some() {
                best = node.value.as_ref();
            }
        }
        best
    }

    fn collect<'a>(&'a self, path: &mut Vec<u8>, out: &mut Vec<(String, MatchPolicy, &'a T)>) {
        if let Some(v) = &self.value {
            out.push((
                String::from_utf8_lossy(path).into_owned(),
                MatchPolicy::Prefix,
                v,
            ));
        }
        for (b, child) in &self.children {
            path.push(*b);
            child.collect(path, out);
            path.pop();
        }
    }
}

#[derive(Debug)]
struct WildcardNode<T> {
    value: Option<T>,
    literal: Map<String, WildcardNode<T>>,
    any: Option<Box<WildcardNode<T>>>,
}

impl<T> Default for WildcardNode<T> {
    fn default() -> Self {
        WildcardNode {
            value: None,
            literal: Map::default(),
            any: None,
        }
    }
}

impl<T> WildcardNode<T> {
    fn is_empty(&self) -> bool {
        self.value.is_none() && self.literal.is_empty() && self.any.is_none()
    }

    fn find<'a>(&self, parts: impl Iterator<Item = &'a str>) -> Option<&WildcardNode<T>> {
        let mut node = self;
        for p in parts {
            node = if p.is_empty() {
                node.any.as_deref()?
            } else {
                node.literal.get(p)?
            };
        }
        Some(node)
    }

    fn find_mut<'a>(
        &mut self,
        parts: impl Iterator<Item = &'a str>,
    ) -> Option<&mut WildcardNode<T>> {
        let mut node = self;
        for p in parts {
            node = if p.is_empty() {
                node.any.as_deref_mut()?
            } else {
                node.literal.get_mut(p)?
            };
        }
        Some(node)
    }

    fn entry<'a>(&mut self, parts: impl Iterator<Item = &'a str>) -> &mut WildcardNode<T> {
        let mut node = self;
        for p in parts {
            node = if p.is_empty() {
                node.any.get_or_insert_with(Default::default)
            } else {
                node.literal.entry(p.to_owned()).or_default()
            };
        }
        node
    }

    fn remove(&mut self, parts: &[&str]) -> Option<T> {
        let Some((first, rest)) = parts.split_first() else {
            return self.value.take();
        };
        if first.is_empty() {
            let child = self.any.as_deref_mut()?;
            let out = child.remove(rest);
            if child.is_empty() {
                self.any = None;
            }
            out
        } else {
            let child = self.literal.get_mut(*first)?;
            let out = child.remove(rest);
            if child.is_empty() {
                self.literal.remove(*first);
            }
            out
        }
    }

    /// Calls `f` for every value whose pattern matches the components `parts`; walks the URI
    /// without collecting its components.
    fn each_match<'a>(&'a self, mut parts: std::str::Split<'_, char>, f: &mut impl FnMut(&'a T)) {
        let Some(first) = parts.next() else {
            if let Some(v) = &self.value {
                f(v);
            }
            return;
        };
        if let Some(n) = self.literal.get(first) {
            n.each_match(parts.clone(), f);
        }
        if let Some(n) = &self.any {
            n.each_match(parts, f);
        }
    }

    fn first_match(&self, parts: &[&str]) -> Option<&T> {
        let Some((first, rest)) = parts.split_first() else {
            return self.value.as_ref();
        };
        if let Some(v) = self.literal.get(*first).and_then(|n| n.first_match(rest)) {
            return Some(v);
        }
        self.any.as_ref().and_then(|n| n.first_match(rest))
    }

    fn collect<'a>(&'a self, path: &mut Vec<String>, out: &mut Vec<(String, MatchPolicy, &'a T)>) {
        if let Some(v) = &self.value {
            out.push((path.join("."), MatchPolicy::Wildcard, v));
        }
        for (k, child) in &self.literal {
            path.push(k.clone());
            child.collect(path, out);
            path.pop();
        }
        if let Some(child) = &self.any {
            path.push(String::new());
            child.collect(path, out);
            path.pop();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::MatchPolicy::*;
    use super::*;

    fn index(entries: &[(&str, MatchPolicy, u32)]) -> PatternIndex<u32> {
        let mut idx = PatternIndex::default();
        for (uri, p, v) in entries {
            assert!(idx.insert(uri, *p, *v).is_none());
        }
        idx
    }

    fn all_matches(idx: &PatternIndex<u32>, uri: &str) -> Vec<u32> {
        let mut out = Vec::new();
        idx.for_each_match(uri, |v| out.push(*v));
        out.sort();
        out
    }

    #[test]
    fn broker_matching_table() {
        let idx = index(&[
            ("com.myapp.topic.emergency", Exact, 1),
            ("com.myapp.topic.emergency", Prefix, 2),
            ("com.myapp", Prefix, 3),
            ("com.myapp..emergency", Wildcard, 4),
            ("com...", Wildcard, 5),
            ("", Prefix, 6),
            ("other", Exact, 7),
        ]);
        let cases: &[(&str, &[u32])] = &[
            ("com.myapp.topic.emergency", &[1, 2, 3, 4, 5, 6]),
            ("com.myapp.topic.emergency.11", &[2, 3, 6]),
            ("com.myapp.topic.emergency-low", &[2, 3, 5, 6]),
            ("com.myapp.x.emergency", &[3, 4, 5, 6]),
            ("com.myapp2.a", &[3, 6]),
            ("com.other.b.c", &[5, 6]),
            ("other", &[6, 7]),
            ("nothing.at.all", &[6]),
        ];
        for (uri, want) in cases {
            assert_eq!(all_matches(&idx, uri), *want, "{uri}");
        }
    }

    #[test]
    fn dealer_precedence_table() {
        let idx = index(&[
            ("a.b.c", Exact, 1),
            ("a.b", Prefix, 2),
            ("a.b.c.d", Prefix, 3),
            ("a", Prefix, 4),
            ("a..c", Wildcard, 5),
            ("x..z", Wildcard, 6),
            ("x.y.", Wildcard, 7),
            ("..", Wildcard, 8),
        ]);
        let cases: &[(&str, Option<u32>)] = &[
            ("a.b.c", Some(1)),     // exact beats prefix
            ("a.b.c.d.e", Some(3)), // longest prefix
            ("a.b.x", Some(2)),     // prefix beats wildcard
            ("a.q.c", Some(4)),     // prefix `a` beats wildcard a..c
            ("x.y.z", Some(7)),     // earlier literal wins: x.y. over x..z
            ("x.q.z", Some(6)),
            ("p.q.r", Some(8)),
            ("p.q", None),
        ];
        for (uri, want) in cases {
            assert_eq!(idx.best_match(uri).copied(), *want, "{uri}");
        }
    }

    #[test]
    fn remove_prunes_and_len_tracks() {
        let mut idx = index(&[
            ("a.b", Prefix, 1),
            ("a.bc", Prefix, 2),
            ("a..c", Wildcard, 3),
        ]);
        assert_eq!(idx.len(), 3);
        assert_eq!(idx.remove("a.b", Prefix), Some(1));
        assert_eq!(idx.remove("a.b", Prefix), None);
        assert_eq!(all_matches(&idx, "a.bcd"), vec![2]);
        assert_eq!(idx.remove("a..c", Wildcard), Some(3));
        assert_eq!(idx.remove("a.bc", Prefix), Some(2));
        assert!(idx.is_empty());
        assert!(idx.prefix.children.is_empty());
        assert!(idx.wildcard.is_empty());
    }

    #[test]
    fn get_and_iter_see_every_policy() {
        let mut idx = index(&[("a", Exact, 1), ("a", Prefix, 2), ("a.", Wildcard, 3)]);
        assert_eq!(idx.get("a", Exact), Some(&1));
        assert_eq!(idx.get("a", Prefix), Some(&2));
        assert_eq!(idx.get("a.", Wildcard), Some(&3));
        assert_eq!(idx.get("a", Wildcard), None);
        *idx.get_mut("a", Prefix).unwrap() = 20;
        let mut all: Vec<_> = idx.iter().map(|(u, p, v)| (u, p, *v)).collect();
        all.sort();
        assert_eq!(
            all,
            vec![
                ("a".into(), Exact, 1),
                ("a".into(), Prefix, 20),
                ("a.".into(), Wildcard, 3)
            ]
        );
    }
}
