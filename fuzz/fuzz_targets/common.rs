//! Shared by the fuzz targets (included with `#[path]`; not a target itself): the shipped
//! provider set, compiled once per process, with its names in a stable order.

use std::sync::OnceLock;

use llmux::dsl::ProviderSet;

pub fn providers() -> &'static (ProviderSet, Vec<String>) {
    static SET: OnceLock<(ProviderSet, Vec<String>)> = OnceLock::new();
    SET.get_or_init(|| {
        let set = llmux::config::providers::embedded().expect("shipped providers load");
        let names = set.names().map(str::to_owned).collect();
        (set, names)
    })
}
