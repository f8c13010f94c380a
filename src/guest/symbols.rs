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

    /// The closest names, by the codec's one rule ([`umldbg_codec::suggest::near_names`]).
    pub fn near(&self, name: &str, max: usize) -> Vec<String> {
        let names = self.names.lock().expect("lock");
        umldbg_codec::suggest::near_names(name, names.iter().map(String::as_str), max)
    }
}
