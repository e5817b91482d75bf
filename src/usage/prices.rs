//! The price table: USD per token and context windows, by model.
//!
//! Two sources, the later overriding the earlier entry by entry:
//! - the table shipped in the binary, `pricing/models.prices`, in the project's own format
//!   (one model per line: `key provider mode input output cache_read cache_write max_input
//!   max_output`, prices in USD per million tokens, `-` for none);
//! - `llmux.pricing.file`: LiteLLM's `model_prices_and_context_window.json` (prices in USD per
//!   token), so that operators can drop in the file LiteLLM maintains, or a file in the
//!   project's own format (any name not ending in `.json`).
//!
//! Keys are LiteLLM's: bare names for OpenAI and Anthropic (`gpt-4o`), `provider/model` for
//! the others (`gemini/gemini-2.5-pro`). A deployment's price is resolved once when its config
//! loads ([`resolve`]); per-deployment prices in the config override the table's.

use std::collections::HashMap;
use std::sync::LazyLock;

/// The table shipped in the binary.
const EMBEDDED: &str = include_str!("../../pricing/models.prices");
const EMBEDDED_NAME: &str = "pricing/models.prices";

/// The highest price accepted, USD per token (a dollar: nothing sells for more).
const MAX_PER_TOKEN: f64 = 1.0;
/// The largest context window or output limit accepted, in tokens.
const MAX_TOKENS: u64 = 1_000_000_000;

/// One model's entry as a table gives it; any field may be missing.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Entry {
    /// LiteLLM's `litellm_provider` for the entry (`openai`, `azure`, `anthropic`, ...).
    pub provider: String,
    /// USD per prompt token.
    pub input: Option<f64>,
    /// USD per completion token.
    pub output: Option<f64>,
    /// USD per prompt token read from the provider's cache.
    pub cache_read: Option<f64>,
    /// USD per prompt token written to the provider's cache.
    pub cache_write: Option<f64>,
    pub max_input: Option<u64>,
    pub max_output: Option<u64>,
}

/// A problem in a price file, with its place.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{file}:{line}:{column}: {message}")]
pub struct TableError {
    pub file: String,
    pub line: usize,
    pub column: usize,
    pub message: String,
}

/// Prices by model key.
#[derive(Debug, Default, Clone)]
pub struct PriceTable {
    entries: HashMap<String, Entry>,
}

/// What a deployment's calls cost, in USD per token, resolved when the config loads.
#[derive(Debug, Clone, PartialEq)]
pub struct Price {
    pub input: f64,
    pub output: f64,
    /// The input rate when the table gives no cache rate (LiteLLM's rule).
    pub cache_read: f64,
    pub cache_write: f64,
    /// Where the rates came from: the table key, or `config`.
    pub source: String,
}

/// Prices and limits a deployment's own config gives (`litellm_params` / `model_info`).
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub input: Option<f64>,
    pub output: Option<f64>,
    pub cache_read: Option<f64>,
    pub cache_write: Option<f64>,
    pub max_input: Option<u64>,
    pub max_output: Option<u64>,
}

/// A deployment's price and context window.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Resolved {
    /// `None`: the cost of its calls is unknown (no table entry and no price in the config).
    pub price: Option<Price>,
    pub max_input: Option<u64>,
    pub max_output: Option<u64>,
}

impl PriceTable {
    /// The table shipped in the binary (parsed once; a unit test keeps it parseable).
    pub fn embedded() -> &'static PriceTable {
        static TABLE: LazyLock<PriceTable> = LazyLock::new(|| {
            PriceTable::parse_own(EMBEDDED_NAME, EMBEDDED).unwrap_or_else(|e| {
                tracing::error!("the embedded price table does not parse: {e}");
                PriceTable::default()
            })
        });
        &TABLE
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn get(&self, key: &str) -> Option<&Entry> {
        self.entries.get(key)
    }

    /// Adds `other`'s entries, replacing whole entries of the same key.
    pub fn extend(&mut self, other: PriceTable) {
        self.entries.extend(other.entries);
    }

    /// Parses a file by its name: LiteLLM's JSON for `*.json`, the project's format otherwise.
    /// Returns the table and how many entries or fields were skipped (LiteLLM's file has
    /// entries for other modes and units that carry no token price).
    pub fn parse_file(file: &str, text: &str) -> Result<(PriceTable, usize), TableError> {
        if file.ends_with(".json") {
            Self::parse_litellm(file, text)
        } else {
            Self::parse_own(file, text).map(|t| (t, 0))
        }
    }

    /// The project's format (see the module doc and the header of `pricing/models.prices`).
    pub fn parse_own(file: &str, text: &str) -> Result<PriceTable, TableError> {
        let mut entries = HashMap::new();
        for (n, line) in text.lines().enumerate() {
            let err = |column: usize, message: String| TableError {
                file: file.to_owned(),
                line: n + 1,
                column,
                message,
            };
            let content = line.split('#').next().unwrap_or("");
            let fields: Vec<(usize, &str)> = fields_with_columns(content);
            if fields.is_empty() {
                continue;
            }
            if fields.len() != 9 {
                let column = fields.get(9).map_or(line.len() + 1, |f| f.0);
                return Err(err(column, format!(
                    "expected 9 fields (key provider mode input output cache_read cache_write max_input max_output), found {}",
                    fields.len()
                )));
            }
            let price = |i: usize| -> Result<Option<f64>, TableError> {
                let (col, v) = fields[i];
                if v == "-" {
                    return Ok(None);
                }
                let per_million: f64 = v.parse().map_err(|_| {
                    err(
                        col,
                        format!("`{v}` is not a price (USD per million tokens, or `-`)"),
                    )
                })?;
                let per_token = per_million / 1e6;
                if !per_token.is_finite() || !(0.0..=MAX_PER_TOKEN).contains(&per_token) {
                    return Err(err(
                        col,
                        format!(
                            "`{v}` is out of range (0 to {} USD per million tokens)",
                            MAX_PER_TOKEN * 1e6
                        ),
                    ));
                }
                Ok(Some(per_token))
            };
            let tokens = |i: usize| -> Result<Option<u64>, TableError> {
                let (col, v) = fields[i];
                if v == "-" {
                    return Ok(None);
                }
                match v.parse::<u64>() {
                    Ok(t) if (1..=MAX_TOKENS).contains(&t) => Ok(Some(t)),
                    _ => Err(err(
                        col,
                        format!(
                        "`{v}` is not a token count (a whole number from 1 to {MAX_TOKENS}, or `-`)"
                    ),
                    )),
                }
            };
            let (key_col, key) = fields[0];
            let entry = Entry {
                provider: fields[1].1.to_owned(),
                input: price(3)?,
                output: price(4)?,
                cache_read: price(5)?,
                cache_write: price(6)?,
                max_input: tokens(7)?,
                max_output: tokens(8)?,
            };
            if entries.insert(key.to_owned(), entry).is_some() {
                return Err(err(key_col, format!("`{key}` is listed twice")));
            }
        }
        Ok(PriceTable { entries })
    }

    /// LiteLLM's `model_prices_and_context_window.json`: an object of model entries. Fields
    /// that are not numbers in range, and entries that are not objects, are skipped (counted);
    /// a file that is not JSON is an error with its place.
    pub fn parse_litellm(file: &str, text: &str) -> Result<(PriceTable, usize), TableError> {
        // serde_json bounds its own recursion (128 levels), so a hostile file cannot overflow
        // the stack.
        let doc: HashMap<String, serde_json::Value> =
            serde_json::from_str(text).map_err(|e| TableError {
                file: file.to_owned(),
                line: e.line(),
                column: e.column(),
                message: format!("not a LiteLLM price file (an object of model entries): {e}"),
            })?;
        let mut skipped = 0;
        let mut entries = HashMap::with_capacity(doc.len());
        for (key, v) in doc {
            let Some(obj) = v.as_object() else {
                skipped += 1;
                continue;
            };
            if key == "sample_spec" {
                continue;
            }
            let mut rate = |name: &str| match obj.get(name) {
                None | Some(serde_json::Value::Null) => None,
                Some(v) => {
                    let r = v.as_f64().filter(|r| (0.0..=MAX_PER_TOKEN).contains(r));
                    skipped += usize::from(r.is_none());
                    r
                }
            };
            let input = rate("input_cost_per_token");
            let output = rate("output_cost_per_token");
            let cache_read = rate("cache_read_input_token_cost");
            let cache_write = rate("cache_creation_input_token_cost");
            let limit = |name: &str| {
                obj.get(name)
                    .and_then(serde_json::Value::as_u64)
                    .filter(|t| (1..=MAX_TOKENS).contains(t))
            };
            let entry = Entry {
                provider: obj
                    .get("litellm_provider")
                    .and_then(serde_json::Value::as_str)
                    .unwrap_or_default()
                    .to_owned(),
                input,
                output,
                cache_read,
                cache_write,
                max_input: limit("max_input_tokens"),
                max_output: limit("max_output_tokens").or_else(|| limit("max_tokens")),
            };
            entries.insert(key, entry);
        }
        Ok((PriceTable { entries }, skipped))
    }

    /// The entry for a deployment of `provider` serving `model`, and its key. With a
    /// `base_model` (the operator's word, e.g. for an Azure deployment named by its owner),
    /// only that name is looked up: `provider/base_model`, then `base_model` as given.
    /// Otherwise `provider/model`, then the bare `model` when the entry is that provider's
    /// (OpenAI and Anthropic entries are keyed bare), so that a bare name never prices
    /// another provider's model.
    pub fn lookup<'t>(
        &'t self,
        provider: &str,
        model: &str,
        base_model: Option<&str>,
    ) -> Option<(&'t str, &'t Entry)> {
        let get = |k: &str| self.entries.get_key_value(k).map(|(k, e)| (k.as_str(), e));
        if let Some(base) = base_model {
            return get(&format!("{provider}/{base}")).or_else(|| get(base));
        }
        get(&format!("{provider}/{model}"))
            .or_else(|| get(model).filter(|(_, e)| e.provider == provider))
    }
}

/// A deployment's price and limits: the table's entry with the config's values over it. The
/// price is known when both the input and the output rate are; cache rates default to the
/// input rate, as LiteLLM does.
pub fn resolve(
    table: &PriceTable,
    provider: &str,
    model: &str,
    base_model: Option<&str>,
    o: &Overrides,
) -> Resolved {
    let found = table.lookup(provider, model, base_model);
    let entry = found.map(|(_, e)| e);
    let pick =
        |ours: Option<f64>, theirs: fn(&Entry) -> Option<f64>| ours.or(entry.and_then(theirs));
    let input = pick(o.input, |e| e.input);
    let output = pick(o.output, |e| e.output);
    let price = match (input, output) {
        (Some(input), Some(output)) => Some(Price {
            input,
            output,
            cache_read: pick(o.cache_read, |e| e.cache_read).unwrap_or(input),
            cache_write: pick(o.cache_write, |e| e.cache_write).unwrap_or(input),
            source: match found {
                Some((key, _)) if o.input.is_none() || o.output.is_none() => key.to_owned(),
                _ => "config".to_owned(),
            },
        }),
        _ => None,
    };
    Resolved {
        price,
        max_input: o.max_input.or(entry.and_then(|e| e.max_input)),
        max_output: o.max_output.or(entry.and_then(|e| e.max_output)),
    }
}

/// Whitespace-separated fields with their 1-based columns.
fn fields_with_columns(line: &str) -> Vec<(usize, &str)> {
    let mut out = Vec::new();
    let mut start = None;
    for (i, c) in line.char_indices() {
        match (c.is_whitespace(), start) {
            (true, Some(s)) => {
                out.push((s + 1, &line[s..i]));
                start = None;
            }
            (false, None) => start = Some(i),
            _ => {}
        }
    }
    if let Some(s) = start {
        out.push((s + 1, &line[s..]));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const OWN: &str = "# a comment\n\
        gpt-4o              openai  chat 2.50 10.00 1.25 - 128000 16384\n\
        \n\
        claude-x            anthropic chat 3 15 0.30 3.75 200000 64000  # trailing comment\n\
        groq/llama-9b       groq    chat 0.05 0.08 - - 131072 -\n";

    #[test]
    fn the_embedded_table_parses_and_covers_the_main_providers() {
        let t = PriceTable::parse_own(EMBEDDED_NAME, EMBEDDED).expect("embedded table");
        assert!(t.len() > 50, "{} entries", t.len());
        for key in [
            "gpt-4o",
            "gpt-4o-mini",
            "gemini/gemini-2.5-pro",
            "azure/gpt-4o",
        ] {
            let e = t.get(key).unwrap_or_else(|| panic!("{key} missing"));
            assert!(e.input.is_some() && e.output.is_some(), "{key}");
        }
        assert!(
            t.entries.values().any(|e| e.provider == "anthropic"),
            "no Anthropic entry"
        );
        assert_eq!(PriceTable::embedded().len(), t.len());
    }

    #[test]
    fn own_format_reads_per_million_prices() {
        let t = PriceTable::parse_own("p", OWN).unwrap();
        assert_eq!(t.len(), 3);
        let e = t.get("gpt-4o").unwrap();
        assert_eq!(e.provider, "openai");
        assert_eq!(e.input, Some(2.5e-6));
        assert_eq!(e.output, Some(1e-5));
        assert_eq!(e.cache_read, Some(1.25e-6));
        assert_eq!(e.cache_write, None);
        assert_eq!((e.max_input, e.max_output), (Some(128_000), Some(16_384)));
        let c = t.get("claude-x").unwrap();
        assert_eq!(c.cache_write, Some(3.75e-6));
        assert_eq!(t.get("groq/llama-9b").unwrap().max_output, None);
    }

    #[test]
    fn own_format_errors_name_the_line_and_column() {
        let e =
            PriceTable::parse_own("p.prices", "gpt-4o openai chat 2.5 ten - - 1 1\n").unwrap_err();
        assert_eq!((e.line, e.column), (1, 24), "{e}");
        assert!(
            e.to_string()
                .starts_with("p.prices:1:24: `ten` is not a price"),
            "{e}"
        );
        let e = PriceTable::parse_own("p", "\n\na openai chat 1 2\n").unwrap_err();
        assert_eq!(e.line, 3);
        assert!(e.message.contains("expected 9 fields"), "{e}");
        let e = PriceTable::parse_own("p", "a b chat 1 2 - - 0 -\n").unwrap_err();
        assert_eq!(e.column, 18, "{e}");
        let e = PriceTable::parse_own("p", "a b chat 1 2000000000 - - - -\n").unwrap_err();
        assert!(e.message.contains("out of range"), "{e}");
        let e = PriceTable::parse_own("p", "a b chat -1 2 - - - -\n").unwrap_err();
        assert!(e.message.contains("out of range"), "{e}");
        let e = PriceTable::parse_own("p", "a b chat 1 2 - - - -\n  a c chat 1 2 - - - -\n")
            .unwrap_err();
        assert_eq!((e.line, e.column), (2, 3));
        assert!(e.message.contains("listed twice"), "{e}");
    }

    #[test]
    fn litellm_format_loads_and_skips_what_has_no_token_price() {
        let json = r#"{
            "sample_spec": {"input_cost_per_token": 0, "litellm_provider": "x"},
            "gpt-4o": {"input_cost_per_token": 2.5e-06, "output_cost_per_token": 1e-05,
                       "cache_read_input_token_cost": 1.25e-06, "max_input_tokens": 128000,
                       "max_output_tokens": 16384, "litellm_provider": "openai", "mode": "chat"},
            "dall-e-3": {"output_cost_per_image": 0.04, "litellm_provider": "openai",
                         "mode": "image_generation"},
            "weird": {"input_cost_per_token": "0.1", "output_cost_per_token": -1,
                      "litellm_provider": "x"},
            "not-an-object": 3
        }"#;
        let (t, skipped) = PriceTable::parse_file("prices.json", json).unwrap();
        assert_eq!(skipped, 3);
        let e = t.get("gpt-4o").unwrap();
        assert_eq!(
            (e.input, e.output, e.cache_read),
            (Some(2.5e-6), Some(1e-5), Some(1.25e-6))
        );
        assert_eq!(e.max_input, Some(128_000));
        assert!(t.get("sample_spec").is_none());
        let w = t.get("weird").unwrap();
        assert_eq!((w.input, w.output), (None, None));
        let e = PriceTable::parse_file("prices.json", "{\n  \"a\": {,\n}").unwrap_err();
        assert_eq!((e.file.as_str(), e.line), ("prices.json", 2));
        assert!(e.column > 0);
        // A hostile file nests deeper than serde_json's own bound: an error, not a crash.
        let deep = format!("{{\"a\": {}{}}}", "[".repeat(100_000), "]".repeat(100_000));
        assert!(PriceTable::parse_file("deep.json", &deep).is_err());
    }

    #[test]
    fn lookup_follows_litellm_keys_and_never_prices_another_providers_model() {
        let mut t = PriceTable::parse_own("p", OWN).unwrap();
        assert_eq!(t.lookup("openai", "gpt-4o", None).unwrap().0, "gpt-4o");
        assert_eq!(
            t.lookup("groq", "llama-9b", None).unwrap().0,
            "groq/llama-9b"
        );
        // A bare key belongs to its own provider only.
        assert!(t.lookup("together_ai", "gpt-4o", None).is_none());
        assert!(t.lookup("azure", "my-deployment", None).is_none());
        // base_model: the operator's name for what an Azure deployment runs.
        assert_eq!(
            t.lookup("azure", "my-deployment", Some("gpt-4o"))
                .unwrap()
                .0,
            "gpt-4o"
        );
        let (azure, _) = PriceTable::parse_litellm(
            "a.json",
            r#"{"azure/gpt-4o": {"input_cost_per_token": 5e-06, "output_cost_per_token": 1.5e-05, "litellm_provider": "azure"}}"#,
        )
        .unwrap();
        t.extend(azure);
        assert_eq!(
            t.lookup("azure", "my-deployment", Some("gpt-4o"))
                .unwrap()
                .0,
            "azure/gpt-4o"
        );
    }

    #[test]
    fn resolve_lays_the_config_over_the_table() {
        let t = PriceTable::parse_own("p", OWN).unwrap();
        let none = Overrides::default();
        let r = resolve(&t, "openai", "gpt-4o", None, &none);
        let p = r.price.unwrap();
        assert_eq!(
            (p.input, p.output, p.cache_read, p.cache_write),
            (2.5e-6, 1e-5, 1.25e-6, 2.5e-6)
        );
        assert_eq!(p.source, "gpt-4o");
        assert_eq!(r.max_input, Some(128_000));
        // Unknown model: unknown price, never zero.
        let r = resolve(&t, "openai_compatible", "my-llm", None, &none);
        assert_eq!(r.price, None);
        // Both rates from the config: priced by the config.
        let o = Overrides {
            input: Some(1e-6),
            output: Some(2e-6),
            max_input: Some(8192),
            ..Overrides::default()
        };
        let r = resolve(&t, "openai_compatible", "my-llm", None, &o);
        let p = r.price.unwrap();
        assert_eq!(
            (p.input, p.output, p.cache_read, p.source.as_str()),
            (1e-6, 2e-6, 1e-6, "config")
        );
        assert_eq!(r.max_input, Some(8192));
        // One rate from the config, the rest from the table.
        let o = Overrides {
            output: Some(2e-5),
            ..Overrides::default()
        };
        let p = resolve(&t, "openai", "gpt-4o", None, &o).price.unwrap();
        assert_eq!((p.input, p.output, p.cache_read), (2.5e-6, 2e-5, 1.25e-6));
        // Only one rate and no entry: unknown.
        assert_eq!(resolve(&t, "x", "y", None, &o).price, None);
    }
}
