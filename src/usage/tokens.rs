//! Token counting with tiktoken's encodings: `o200k_base` (GPT-4o, GPT-4.1, GPT-5, the
//! o-series, and the approximation for every other model) and `cl100k_base` (GPT-4, GPT-3.5).
//!
//! An encoder takes about half a second and some 30 MB to build, so each is built once per
//! process, on a thread of its own (`llmux-tokenizer`), the first time a count asks for it —
//! never at start-up, never on a shard, and not at all by a gateway that never counts. Until
//! it is ready, counts are a cheap estimate (a token per four bytes) marked as such.
//!
//! Once it is ready, short texts are counted where they are asked for, and long ones are sent
//! to the tokenizer thread, so that a shard never spends milliseconds on one count.
//!
//! Other providers' tokenizers are not public (Anthropic, Gemini): their counts are
//! approximations, which the context-window check allows for with a margin
//! (`gateway::chat::preflight`).

use std::sync::{Once, OnceLock};

use tiktoken_rs::CoreBPE;

/// cl100k_base's split pattern (tiktoken's; tiktoken-rs keeps it inside its constructor).
const CL100K_BASE_PAT_STR: &str = "'(?i:[sdmt]|ll|ve|re)|[^\\r\\n\\p{L}\\p{N}]?+\\p{L}++|\\p{N}{1,3}+| ?[^\\s\\p{L}\\p{N}]++[\\r\\n]*+|\\s++$|\\s*[\\r\\n]|\\s+(?!\\S)|\\s";

/// Texts up to this many bytes are counted in place (a few hundred microseconds at most; longer
/// ones go to the tokenizer thread).
const INLINE_MAX_BYTES: usize = 2 * 1024;
/// Jobs waiting for the tokenizer thread; past this a count is estimated instead.
const QUEUE: usize = 256;
/// OpenAI's framing per chat message (role and separators) and for priming the reply, from
/// OpenAI's cookbook "How to count tokens with tiktoken".
pub const TOKENS_PER_MESSAGE: u64 = 3;
pub const TOKENS_PER_REPLY: u64 = 3;

/// The encodings LLMux counts with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    O200k = 0,
    Cl100k = 1,
}

impl Encoding {
    /// The encoding tiktoken's own model table gives `model` (a `provider/` prefix is
    /// ignored); `o200k_base` for models it does not know. The flag says whether the model is
    /// one tiktoken knows, i.e. whether the count is the provider's own.
    pub fn for_model(model: &str) -> (Self, bool) {
        use tiktoken_rs::tokenizer::{get_tokenizer, Tokenizer};
        let m = model.rsplit('/').next().unwrap_or(model);
        match get_tokenizer(m) {
            Some(Tokenizer::Cl100kBase) => (Self::Cl100k, true),
            Some(Tokenizer::O200kBase) => (Self::O200k, true),
            // Encodings not shipped here (older ones, gpt-oss's harmony): approximated.
            Some(_) | None => (Self::O200k, false),
        }
    }

    /// The encoder, from the compact tables embedded here (tools/compact_bpe.py: 1.5 MB, where
    /// tiktoken-rs's own text tables would add 5.3 MB to the binary), with tiktoken's special
    /// tokens and split patterns.
    fn build(self) -> Result<CoreBPE, String> {
        use tiktoken_rs::{ENDOFPROMPT, ENDOFTEXT, FIM_MIDDLE, FIM_PREFIX, FIM_SUFFIX};
        let (table, specials, pattern): (&[u8], &[(&str, tiktoken_rs::Rank)], &str) = match self {
            Self::O200k => (
                include_bytes!("bpe/o200k_base.bpe.z"),
                &[(ENDOFTEXT, 199_999), (ENDOFPROMPT, 200_018)],
                tiktoken_rs::O200K_BASE_PAT_STR,
            ),
            Self::Cl100k => (
                include_bytes!("bpe/cl100k_base.bpe.z"),
                &[
                    (ENDOFTEXT, 100_257),
                    (FIM_PREFIX, 100_258),
                    (FIM_MIDDLE, 100_259),
                    (FIM_SUFFIX, 100_260),
                    (ENDOFPROMPT, 100_276),
                ],
                CL100K_BASE_PAT_STR,
            ),
        };
        let raw = miniz_oxide::inflate::decompress_to_vec_zlib(table)
            .map_err(|e| format!("{}: the embedded table is corrupt: {e:?}", self.name()))?;
        let mut encoder = std::collections::HashMap::default();
        let mut rest = &raw[..];
        let mut rank: tiktoken_rs::Rank = 0;
        while let Some((&len, tail)) = rest.split_first() {
            let Some((token, tail)) = tail.split_at_checked(usize::from(len)) else {
                return Err(format!("{}: the embedded table is cut short", self.name()));
            };
            encoder.insert(token.to_vec(), rank);
            rank += 1;
            rest = tail;
        }
        let mut special = std::collections::HashMap::default();
        for (name, rank) in specials {
            special.insert((*name).to_owned(), *rank);
        }
        CoreBPE::new(encoder, special, pattern).map_err(|e| e.to_string())
    }

    fn name(self) -> &'static str {
        match self {
            Self::O200k => "o200k_base",
            Self::Cl100k => "cl100k_base",
        }
    }
}

/// A token count, and whether the encoder made it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Count {
    pub tokens: u64,
    /// Counted by the encoder; `false`: estimated from the length (the encoder was not ready,
    /// or the tokenizer thread was busy).
    pub exact: bool,
}

impl Count {
    /// About four bytes per token, rounded up: the rule of thumb for English text.
    pub fn estimate(bytes: usize) -> Self {
        Self {
            tokens: (bytes as u64).div_ceil(4),
            exact: false,
        }
    }
}

static ENCODERS: [OnceLock<CoreBPE>; 2] = [OnceLock::new(), OnceLock::new()];
static ASKED: [Once; 2] = [Once::new(), Once::new()];
static WORKER: OnceLock<Option<flume::Sender<Job>>> = OnceLock::new();

enum Job {
    Load(Encoding),
    Count {
        encoding: Encoding,
        text: String,
        reply: flume::Sender<u64>,
    },
}

/// The encoder, if it has been built.
pub fn encoder(encoding: Encoding) -> Option<&'static CoreBPE> {
    ENCODERS[encoding as usize].get()
}

/// The tokenizer thread's queue (started on first use).
fn worker() -> Option<&'static flume::Sender<Job>> {
    WORKER
        .get_or_init(|| {
            let (tx, rx) = flume::bounded::<Job>(QUEUE);
            let spawned = std::thread::Builder::new()
                .name("llmux-tokenizer".into())
                .spawn(move || {
                    for job in rx.iter() {
                        match job {
                            Job::Load(e) => load(e),
                            Job::Count {
                                encoding,
                                text,
                                reply,
                            } => {
                                if let Some(bpe) = encoder(encoding) {
                                    let _ = reply.send(bpe.encode_ordinary(&text).len() as u64);
                                }
                            }
                        }
                    }
                });
            match spawned {
                Ok(_) => Some(tx),
                Err(e) => {
                    tracing::error!(
                        "cannot start the tokenizer thread: {e}; counts stay estimates"
                    );
                    None
                }
            }
        })
        .as_ref()
}

/// Builds an encoder (on the tokenizer thread).
fn load(encoding: Encoding) {
    if encoder(encoding).is_some() {
        return;
    }
    let started = std::time::Instant::now();
    match encoding.build() {
        Ok(bpe) => {
            let _ = ENCODERS[encoding as usize].set(bpe);
            tracing::info!(
                encoding = encoding.name(),
                ms = started.elapsed().as_millis() as u64,
                "tokenizer loaded"
            );
        }
        Err(e) => tracing::error!(
            encoding = encoding.name(),
            "tokenizer failed to load: {e}; counts stay estimates"
        ),
    }
}

/// Starts building `encoding`'s encoder on the tokenizer thread (once per process; later
/// calls return at once).
pub fn load_in_background(encoding: Encoding) {
    ASKED[encoding as usize].call_once(|| {
        if let Some(w) = worker() {
            let _ = w.try_send(Job::Load(encoding));
        }
    });
}

/// Counts `text` now: exact when the encoder is ready and the text is short, else an estimate
/// (and the encoder starts loading). For the request path, which must not wait.
pub fn count_now(text: &str, encoding: Encoding) -> Count {
    match encoder(encoding) {
        Some(bpe) if text.len() <= INLINE_MAX_BYTES => Count {
            tokens: bpe.encode_ordinary(text).len() as u64,
            exact: true,
        },
        Some(_) => Count::estimate(text.len()),
        None => {
            load_in_background(encoding);
            Count::estimate(text.len())
        }
    }
}

/// Counts `text` exactly when the encoder is ready: in place when short, on the tokenizer
/// thread when long (the shard goes on serving meanwhile). An estimate when the encoder is not
/// ready yet or the thread's queue is full.
pub async fn count(text: String, encoding: Encoding) -> Count {
    if text.len() <= INLINE_MAX_BYTES || encoder(encoding).is_none() {
        return count_now(&text, encoding);
    }
    let bytes = text.len();
    let Some(jobs) = worker() else {
        return Count::estimate(bytes);
    };
    let (reply, answer) = flume::bounded(1);
    let job = Job::Count {
        encoding,
        text,
        reply,
    };
    if jobs.try_send(job).is_err() {
        return Count::estimate(bytes);
    }
    match answer.recv_async().await {
        Ok(tokens) => Count {
            tokens,
            exact: true,
        },
        Err(_) => Count::estimate(bytes),
    }
}

/// The text of a chat request that becomes prompt tokens: every message's role, name and
/// text (string content, text parts, tool calls' names and arguments), and the tool
/// definitions as JSON. Images and audio are not text and are not counted. Returns the text
/// and the number of messages (each adds [`TOKENS_PER_MESSAGE`]).
pub fn prompt_text(body: &serde_json::Value) -> (String, u64) {
    let mut text = String::new();
    let mut messages = 0;
    if let Some(list) = body.get("messages").and_then(|m| m.as_array()) {
        for m in list {
            messages += 1;
            for key in ["role", "name"] {
                if let Some(s) = m.get(key).and_then(|v| v.as_str()) {
                    push(&mut text, s);
                }
            }
            match m.get("content") {
                Some(serde_json::Value::String(s)) => push(&mut text, s),
                Some(serde_json::Value::Array(parts)) => {
                    for p in parts {
                        if let Some(s) = p.get("text").and_then(|t| t.as_str()) {
                            push(&mut text, s);
                        }
                    }
                }
                _ => {}
            }
            if let Some(calls) = m.get("tool_calls").and_then(|c| c.as_array()) {
                for c in calls {
                    let f = &c["function"];
                    for key in ["name", "arguments"] {
                        if let Some(s) = f.get(key).and_then(|v| v.as_str()) {
                            push(&mut text, s);
                        }
                    }
                }
            }
        }
    }
    for key in ["tools", "functions"] {
        if let Some(tools) = body.get(key).filter(|t| !t.is_null()) {
            push(&mut text, &tools.to_string());
        }
    }
    (text, messages)
}

/// Prompt tokens of a chat request, counted now (see [`count_now`]).
pub fn prompt_tokens_now(body: &serde_json::Value, encoding: Encoding) -> Count {
    let (text, messages) = prompt_text(body);
    let c = count_now(&text, encoding);
    Count {
        tokens: c.tokens + framing(messages),
        exact: c.exact,
    }
}

/// Prompt tokens of a chat request (see [`count`]).
pub async fn prompt_tokens(body: &serde_json::Value, encoding: Encoding) -> Count {
    let (text, messages) = prompt_text(body);
    let c = count(text, encoding).await;
    Count {
        tokens: c.tokens + framing(messages),
        exact: c.exact,
    }
}

fn framing(messages: u64) -> u64 {
    if messages == 0 {
        0
    } else {
        messages * TOKENS_PER_MESSAGE + TOKENS_PER_REPLY
    }
}

fn push(text: &mut String, s: &str) {
    if !text.is_empty() {
        text.push('\n');
    }
    text.push_str(s);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wait_for(encoding: Encoding) -> &'static CoreBPE {
        load_in_background(encoding);
        // The build is the event waited for; it finishes (or the test fails on its own
        // timeout), whatever the machine's load.
        loop {
            if let Some(e) = encoder(encoding) {
                return e;
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    }

    /// The compact tables count exactly as tiktoken-rs's text tables (linked into the test
    /// binary only), token for token, on text that reaches every part of the split patterns.
    #[test]
    fn the_compact_tables_are_tiktoken_s_tables() {
        let text = "Hello, world! It's 2026-12-06; naïve café ΔΣ 你好 🚀🚀 \r\n\n  indented\tcode() { x += 12345678; } <|endoftext|> 'll 've ДОБРЫЙ день";
        for (encoding, theirs) in [
            (Encoding::O200k, tiktoken_rs::o200k_base().unwrap()),
            (Encoding::Cl100k, tiktoken_rs::cl100k_base().unwrap()),
        ] {
            let ours = encoding.build().unwrap();
            assert_eq!(
                ours.encode_with_special_tokens(text),
                theirs.encode_with_special_tokens(text),
                "{}",
                encoding.name()
            );
            assert_eq!(
                ours.encode_ordinary(text),
                theirs.encode_ordinary(text),
                "{}",
                encoding.name()
            );
        }
    }

    /// tiktoken's own test vectors for `cl100k_base` (openai/tiktoken, tests/test_encoding.py:
    /// `test_simple`, `test_simple_regex`, `test_basic_encode`, `test_encode_surrogate_pairs`).
    #[test]
    fn cl100k_matches_tiktokens_own_test_vectors() {
        let bpe = wait_for(Encoding::Cl100k);
        let cases: &[(&str, &[u32])] = &[
            ("hello world", &[15339, 1917]),
            ("rer", &[38149]),
            ("'rer", &[2351, 81]),
            ("today\n ", &[31213, 198, 220]),
            ("today\n \n", &[31213, 27907]),
            ("today\n  \n", &[31213, 14211]),
            (" \u{85}0", &[220, 126, 227, 15]),
            ("👍", &[9468, 239, 235]),
        ];
        for (text, want) in cases {
            assert_eq!(bpe.encode_ordinary(text), *want, "{text:?}");
        }
        assert_eq!(
            count_now("hello world", Encoding::Cl100k),
            Count {
                tokens: 2,
                exact: true
            }
        );
    }

    /// `o200k_base`: "hello world" is [24912, 2375] (the vector other tokenizer ports test
    /// against); the empty text is no token.
    #[test]
    fn o200k_counts_known_strings() {
        let bpe = wait_for(Encoding::O200k);
        assert_eq!(bpe.encode_ordinary("hello world"), vec![24912, 2375]);
        assert_eq!(
            count_now("hello world", Encoding::O200k),
            Count {
                tokens: 2,
                exact: true
            }
        );
        assert_eq!(count_now("", Encoding::O200k).tokens, 0);
    }

    #[test]
    fn models_get_tiktokens_encoding() {
        for m in [
            "gpt-4o",
            "gpt-4o-mini",
            "gpt-4.1",
            "gpt-5",
            "o3-mini",
            "openai/gpt-4.5-preview",
        ] {
            assert_eq!(Encoding::for_model(m), (Encoding::O200k, true), "{m}");
        }
        for m in [
            "gpt-4",
            "gpt-4-turbo",
            "gpt-4-0613",
            "gpt-3.5-turbo",
            "azure/gpt-35-turbo-16k",
        ] {
            assert_eq!(Encoding::for_model(m), (Encoding::Cl100k, true), "{m}");
        }
        for m in ["claude-sonnet-4-5", "llama-3.3-70b", "my-deployment"] {
            assert_eq!(Encoding::for_model(m), (Encoding::O200k, false), "{m}");
        }
    }

    #[test]
    fn long_texts_are_counted_off_the_caller_and_agree_with_an_inline_count() {
        let bpe = wait_for(Encoding::O200k);
        let text = "The quick brown fox jumps over the lazy dog. ".repeat(2_000);
        assert!(text.len() > INLINE_MAX_BYTES);
        let want = bpe.encode_ordinary(&text).len() as u64;
        let got = block_on(count(text.clone(), Encoding::O200k));
        assert_eq!(
            got,
            Count {
                tokens: want,
                exact: true
            }
        );
        // count_now does not count long texts in place.
        assert!(!count_now(&text, Encoding::O200k).exact);
    }

    #[test]
    fn estimates_round_up() {
        assert_eq!(Count::estimate(0).tokens, 0);
        assert_eq!(Count::estimate(1).tokens, 1);
        assert_eq!(Count::estimate(8).tokens, 2);
        assert_eq!(Count::estimate(9).tokens, 3);
    }

    #[test]
    fn prompt_text_takes_what_becomes_tokens() {
        let body = serde_json::json!({
            "model": "m",
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": [
                    {"type": "text", "text": "What is this?"},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}
                ]},
                {"role": "assistant", "content": null, "tool_calls": [
                    {"id": "c1", "type": "function", "function": {"name": "look", "arguments": "{\"x\":1}"}}
                ]},
                {"role": "tool", "tool_call_id": "c1", "content": "a cat"}
            ],
            "tools": [{"type": "function", "function": {"name": "look"}}]
        });
        let (text, messages) = prompt_text(&body);
        assert_eq!(messages, 4);
        for part in [
            "Be brief.",
            "What is this?",
            "look",
            "{\"x\":1}",
            "a cat",
            "\"function\"",
        ] {
            assert!(text.contains(part), "{part} missing from {text}");
        }
        assert!(!text.contains("base64"), "{text}");
        let counted = prompt_tokens_now(&body, Encoding::O200k);
        assert!(counted.tokens > 4 * TOKENS_PER_MESSAGE);
        assert_eq!(
            prompt_tokens_now(&serde_json::json!({}), Encoding::O200k).tokens,
            0
        );
    }

    /// Runs the one future these tests await (a flume receive).
    fn block_on<F: std::future::Future>(f: F) -> F::Output {
        let mut rt = monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
            .enable_timer()
            .build()
            .expect("runtime");
        rt.block_on(f)
    }
}
