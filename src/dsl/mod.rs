//! The LLMux provider language: declarative mapping files (`providers/*.llmux`)
//! that translate OpenAI chat-completions traffic to and from each upstream.
//!
//! Pipeline: [`parser`] (pest grammar `grammar/provider.pest` → AST with spans) →
//! [`compile`] (resolve `extends`, names, paths, functions, tables; collect every
//! error) → [`ir`] (compiled program) → [`interp`] (evaluates per request).
//! [`framing`] decodes upstream streams; [`golden`] runs the test cases in
//! `providers/tests/<provider>/`. The language is documented in `docs/providers.md`.
//!
//! This module depends on nothing else of the gateway (only std, pest,
//! serde_json, serde_yaml, thiserror), so it can be tested and fuzzed alone.
//!
//! ```ignore
//! let set = dsl::load_dir(Path::new("providers"))?;
//! let p = set.get("anthropic").unwrap();
//! let up = p.build_request(&ctx, &openai_body)?;          // → UpstreamRequest
//! let resp = p.parse_response(status, &bytes, &ctx)?;      // → OpenAI ChatCompletion (JSON)
//! let mut st = p.stream_state(&ctx);
//! p.map_event(&mut st, frame.event.as_deref(), &frame.data, &mut chunks)?;
//! // at the upstream's EOF, unless an event said Done:
//! match p.finish_stream(&mut st, &mut chunks)? { StreamEnd::Complete => {} StreamEnd::Cut => {} }
//! ```

pub mod ast;
pub mod builtins;
pub mod compile;
pub mod error;
pub mod eventstream;
pub mod framing;
pub mod golden;
pub mod interp;
pub mod ir;
pub mod key_order;
pub mod memo;
pub mod out;
pub mod params;
pub mod parser;
pub mod passthrough;
pub mod provider;
pub mod recursion;
pub mod schema;

use std::collections::BTreeMap;
use std::path::Path;

pub use error::{ErrorClass, LoadError, MappedError, TranslateError};
pub use framing::{Frame, FrameDecoder, Framing, FramingError};
pub use ir::{Auth, DispatchRoute, FetchImages, Param};
pub use memo::Memo;
pub use provider::{
    Completion, Provider, RequestCtx, RequestText, StreamControl, StreamEnd, StreamState,
    UpstreamRequest,
};

/// All compiled providers of a directory (or of a set of sources), by name.
#[derive(Debug, Clone, Default)]
pub struct ProviderSet {
    providers: BTreeMap<String, Provider>,
}

impl ProviderSet {
    pub fn get(&self, name: &str) -> Option<&Provider> {
        self.providers.get(name)
    }

    /// The provider that serves `model` under the prefix `name`, and the model it is sent:
    /// `name` itself, or for a dispatching provider (`dispatch { ... }`) the first rule's
    /// target whose pattern matches. `None`: no such provider, or no rule matches.
    pub fn resolve<'m>(&self, name: &str, model: &'m str) -> Option<(&str, &'m str)> {
        let (own, p) = self.providers.get_key_value(name)?;
        if p.dispatch().is_empty() {
            return Some((own.as_str(), model));
        }
        p.dispatch().iter().find_map(|r| r.route(model))
    }

    /// Provider names in sorted order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.providers.keys().map(String::as_str)
    }

    pub fn len(&self) -> usize {
        self.providers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.providers.is_empty()
    }

    /// Sets every provider's JSON nesting bound (`llmux.server.max_json_depth`).
    pub fn set_max_json_depth(&mut self, depth: usize) {
        for p in self.providers.values_mut() {
            p.set_max_json_depth(depth);
        }
    }
}

/// Load providers from one source text (`file_name` is used in error messages).
pub fn load_str(file_name: &str, src: &str) -> Result<ProviderSet, Vec<LoadError>> {
    load_sources(&[(file_name.to_string(), src.to_string())])
}

/// Load providers from several `(file name, source)` pairs; `extends` may cross files.
pub fn load_sources(sources: &[(String, String)]) -> Result<ProviderSet, Vec<LoadError>> {
    let mut files = Vec::with_capacity(sources.len());
    let mut errors = Vec::new();
    for (name, src) in sources {
        match parser::parse_file(name, src) {
            Ok(f) => files.push(f),
            Err(e) => errors.push(e),
        }
    }
    let (programs, compile_errors) = compile::compile_files(&files);
    errors.extend(compile_errors);
    if !errors.is_empty() {
        return Err(errors);
    }
    let mut providers: BTreeMap<String, Provider> = programs
        .into_iter()
        .map(|p| (p.name.clone(), Provider::new(p)))
        .collect();
    let routes: Vec<(String, String)> = providers
        .values()
        .flat_map(|p| {
            p.dispatch()
                .iter()
                .map(|r| (r.target.clone(), p.name().to_owned()))
        })
        .collect();
    for (target, dispatcher) in routes {
        if let Some(t) = providers.get_mut(&target) {
            t.label_as(&dispatcher);
        }
    }
    Ok(ProviderSet { providers })
}

/// Load every `*.llmux` file in `dir` (not recursive), in name order.
pub fn load_dir(dir: &Path) -> Result<ProviderSet, Vec<LoadError>> {
    let shown = dir.display().to_string();
    let entries = std::fs::read_dir(dir).map_err(|e| {
        vec![LoadError::file(
            &shown,
            format!("cannot read directory: {e}"),
        )]
    })?;
    let mut paths: Vec<_> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "llmux") && p.is_file())
        .collect();
    paths.sort();
    let mut sources = Vec::with_capacity(paths.len());
    let mut errors = Vec::new();
    for p in paths {
        let name = p.display().to_string();
        match std::fs::read_to_string(&p) {
            Ok(s) => sources.push((name, s)),
            Err(e) => errors.push(LoadError::file(&name, format!("cannot read: {e}"))),
        }
    }
    match load_sources(&sources) {
        Ok(set) if errors.is_empty() => Ok(set),
        Ok(_) => Err(errors),
        Err(mut more) => {
            errors.append(&mut more);
            Err(errors)
        }
    }
}

/// All errors, one block each, separated by blank lines.
pub fn format_errors(errors: &[LoadError]) -> String {
    errors
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("\n\n")
}

#[cfg(test)]
mod tests;

/// Parses JSON into a `serde_json::Value` with sonic-rs's SIMD tokenizer (the tree is the same
/// `Value` the interpreter walks; only the scanning is faster than serde_json's), refusing
/// nesting deeper than `max_depth` (see [`crate::json`]).
pub fn parse_json(bytes: &[u8], max_depth: usize) -> Result<serde_json::Value, String> {
    crate::json::parse(bytes, max_depth).map_err(|e| e.to_string())
}

/// Compact JSON text of a value (strings escaped with sonic-rs's SIMD code), or of a
/// [`Completion`], which already is JSON text.
pub fn to_json_vec(v: &impl out::WriteJson) -> Vec<u8> {
    let mut buf = Vec::with_capacity(512);
    v.write_json(&mut buf);
    buf
}
