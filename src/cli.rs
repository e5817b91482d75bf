//! Command line: `serve`, `mock`, `config check`, `providers check|test`, `db migrate`.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::server::IoDriver;
use crate::telemetry::logging::LogFormat;

#[derive(Debug, Parser)]
#[command(
    name = "llmux",
    version,
    about = "A fast, lean, OpenAI-compatible LLM gateway"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the gateway.
    Serve(ServeArgs),
    /// Run the mock upstream (OpenAI, deployment-URL, Messages and generateContent formats).
    Mock(MockArgs),
    /// Config file tools.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Provider mapping file tools.
    Providers {
        #[command(subcommand)]
        command: ProvidersCommand,
    },
    /// The key database (LiteLLM's PostgreSQL schema).
    Db {
        #[command(subcommand)]
        command: DbCommand,
    },
}

#[derive(Debug, Subcommand)]
pub enum DbCommand {
    /// Create the LiteLLM tables LLMux uses on an empty database (for running without
    /// LiteLLM; beside LiteLLM, LiteLLM creates its schema). Refuses a database that already
    /// holds LiteLLM tables, and never alters one.
    Migrate {
        /// PostgreSQL URL (default: `DATABASE_URL`).
        #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
        database_url: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum ProvidersCommand {
    /// Parse and compile every `*.llmux` file; errors are `file:line:col` with a caret.
    Check {
        /// Providers directory (default: ./providers, else the embedded providers).
        path: Option<PathBuf>,
    },
    /// Run the golden cases in `<PATH>/tests/<provider>/*.yaml` against the provider files.
    Test {
        /// Providers directory (default: ./providers).
        path: Option<PathBuf>,
        /// Only cases whose `provider/name` contains this text (a filter matching none fails).
        #[arg(long)]
        filter: Option<String>,
        /// Show the whole expected and actual objects of a failing case, not only the paths
        /// that differ.
        #[arg(long)]
        objects: bool,
    },
}

#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// Config file (default: config/llmux.yaml if present, else the embedded default config).
    #[arg(long, env = "LLMUX_CONFIG")]
    pub config: Option<PathBuf>,
    /// Address to listen on.
    #[arg(long, env = "LLMUX_LISTEN", default_value = "0.0.0.0:4000")]
    pub listen: String,
    /// Worker shards (default, empty or `auto`: available cores).
    #[arg(long, env = "LLMUX_WORKERS", value_parser = parse_workers)]
    pub workers: Option<usize>,
    /// Also serve on this Unix domain socket.
    #[arg(long, env = "LLMUX_UDS")]
    pub uds: Option<PathBuf>,
    /// I/O driver: auto (io_uring, else epoll), uring, epoll.
    #[arg(long, env = "LLMUX_IO_DRIVER", default_value = "auto", value_parser = parse_driver)]
    pub io_driver: IoDriver,
    /// Log format: json or text (default: the config's `llmux.logging.format`, else text).
    #[arg(long, env = "LLMUX_LOG_FORMAT", value_parser = parse_format)]
    pub log_format: Option<LogFormat>,
}

#[derive(Debug, clap::Args)]
pub struct MockArgs {
    #[arg(long, env = "LLMUX_MOCK_LISTEN", default_value = "127.0.0.1:4010")]
    pub listen: String,
    #[arg(long, env = "LLMUX_MOCK_WORKERS", default_value_t = 1)]
    pub workers: usize,
    #[arg(long, env = "LLMUX_IO_DRIVER", default_value = "auto", value_parser = parse_driver)]
    pub io_driver: IoDriver,
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Validate a config file; prints warnings and exits non-zero on errors.
    Check { file: PathBuf },
}

/// `auto` or empty (as an unset Helm value renders) means one shard per available core (0).
fn parse_workers(s: &str) -> Result<usize, String> {
    match s.trim() {
        "" | "auto" => Ok(0),
        n => n
            .parse()
            .map_err(|_| format!("`{n}` is not a number of workers")),
    }
}

fn parse_driver(s: &str) -> Result<IoDriver, String> {
    s.parse()
}

fn parse_format(s: &str) -> Result<LogFormat, String> {
    s.parse()
}
