//! Function names of the kernel and its modules, for near-name suggestions and completion.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Mutex;

#[derive(Debug, Default)]
pub struct SymbolIndex {
    names: Mutex<BTreeSet<String>>,
}

fn function_names(bytes: &[u8]) -> Vec<String> {
    use object::{Object, ObjectSymbol, SymbolKind};
    let Ok(obj) = object::File::parse(bytes) else {
        return Vec::new();
    };
    obj.symbols()
        .filter(|s| s.kind() == SymbolKind::Text)
        .filter_map(|s| s.name().ok().map(str::to_string))
        .filter(|n| !n.is_empty() && !n.starts_with("__pfx_") && !n.contains('.'))
        .collect()
}

impl SymbolIndex {
    pub fn from_image(image: &Path) -> SymbolIndex {
        let idx = SymbolIndex::default();
        if let Ok(b) = std::fs::read(image) {
            idx.names.lock().expect("lock").extend(function_names(&b));
        }
        idx
    }

    pub fn add_module(&self, file: &Path, _name: &str) {
        if let Ok(b) = std::fs::read(file) {
            self.names.lock().expect("lock").extend(function_names(&b));
        }
    }

    pub fn is_empty(&self) -> bool {
        self.names.lock().expect("lock").is_empty()
    }

    pub fn contains(&self, name: &str) -> bool {
        self.names.lock().expect("lock").contains(name)
    }

    pub fn complete(&self, prefix: &str, max: usize) -> Vec<String> {
        let names = self.names.lock().expect("lock");
        names
            .range(prefix.to_string()..)
            .take_while(|n| n.starts_with(prefix))
            .take(max)
            .cloned()
            .collect()
    }

    /// The closest names: by edit distance, ties broken by name.
    pub fn near(&self, name: &str, max: usize) -> Vec<String> {
        let names = self.names.lock().expect("lock");
        near_names(name, names.iter().map(String::as_str), max)
    }
}

/// Up to `max` candidates within a small edit distance of `name`, closest first.
pub fn near_names<'a>(
    name: &str,
    candidates: impl Iterator<Item = &'a str>,
    max: usize,
) -> Vec<String> {
    let limit = (name.len() / 3).clamp(1, 4);
    let mut scored: Vec<(usize, &str)> = candidates
        .filter(|c| c.len().abs_diff(name.len()) <= limit)
        .filter_map(|c| {
            let d = edit_distance(name, c);
            (d <= limit).then_some((d, c))
        })
        .collect();
    scored.sort();
    scored
        .into_iter()
        .take(max)
        .map(|(_, c)| c.to_string())
        .collect()
}

/// Levenshtein distance over bytes.
pub fn edit_distance(a: &str, b: &str) -> usize {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    let mut cur = vec![0; b.len() + 1];
    for i in 1..=a.len() {
        cur[0] = i;
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            cur[j] = (prev[j] + 1).min(cur[j - 1] + 1).min(prev[j - 1] + cost);
        }
        std::mem::swap(&mut prev, &mut cur);
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggests_close_names() {
        let c = ["reject_tg", "reject_tg6", "ip_forward", "ipt_do_table"];
        assert_eq!(
            near_names("rejet_tg", c.iter().copied(), 3),
            vec!["reject_tg", "reject_tg6"]
        );
        assert!(near_names("zzzzzz", c.iter().copied(), 3).is_empty());
        assert_eq!(edit_distance("kitten", "sitting"), 3);
    }
}
