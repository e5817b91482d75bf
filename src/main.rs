use std::process::ExitCode;

use clap::Parser;
use llmux::cli::{Cli, Command, ConfigCommand, DbCommand, ProvidersCommand};
use llmux::config::{self, ConfigSource, ProvidersSource};
use llmux::dsl::golden;
use llmux::server::{self, ServeOptions};
use llmux::telemetry::logging::{self, LogFormat};

#[global_allocator]
static GLOBAL: llmux::allocator::Allocator = llmux::allocator::Allocator;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(a) => {
            let opts = ServeOptions {
                config: a.config,
                listen: a.listen,
                workers: a.workers,
                uds: a.uds,
                io_driver: a.io_driver,
                log_format: a.log_format,
            };
            match server::serve(opts) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("llmux: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Mock(a) => {
            let env = config::Env::process_only();
            let _guard = logging::init(
                LogFormat::Text,
                &logging::filter_spec(env.get("LLMUX_LOG"), "info"),
            );
            match llmux::mock::run(&a.listen, a.workers, a.io_driver) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("llmux mock: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Config {
            command: ConfigCommand::Check { file },
        } => config_check(&file),
        Command::Providers { command } => providers_command(command),
        Command::Db {
            command: DbCommand::Migrate { database_url },
        } => db_migrate(&database_url),
    }
}

/// `llmux db migrate`: LiteLLM's tables on an empty database.
fn db_migrate(url: &str) -> ExitCode {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("llmux db migrate: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(llmux::keys::db::migrate(url)) {
        Ok(tables) => {
            println!("created {}", tables.join(", "));
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("llmux db migrate: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `llmux config check FILE`: every warning, then every error (one `file:line:col: ...` line
/// each); exit 1 on any error.
fn config_check(file: &std::path::Path) -> ExitCode {
    match config::load(&ConfigSource::File(file.to_path_buf())) {
        Ok(loaded) => {
            for w in &loaded.warnings {
                eprintln!("warning: {w}");
            }
            println!(
                "{}: ok ({} model groups)",
                file.display(),
                loaded.snapshot.group_names.len()
            );
            ExitCode::SUCCESS
        }
        Err(config::ConfigError::Invalid { errors, warnings }) => {
            for w in &warnings {
                eprintln!("warning: {w}");
            }
            for e in &errors {
                eprintln!("{e}");
            }
            eprintln!("{}: {} error(s)", file.display(), errors.len());
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}

fn providers_source(path: Option<std::path::PathBuf>) -> ProvidersSource {
    match path {
        Some(p) => ProvidersSource::Dir(p),
        None => ProvidersSource::resolve(None, std::path::Path::new(".")),
    }
}

fn providers_command(cmd: ProvidersCommand) -> ExitCode {
    match cmd {
        ProvidersCommand::Check { path } => {
            let src = providers_source(path);
            match src.load() {
                Ok(set) => {
                    let names: Vec<&str> = set.names().collect();
                    println!(
                        "{}: ok ({} providers: {})",
                        src.describe(),
                        names.len(),
                        names.join(", ")
                    );
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("{e}");
                    ExitCode::FAILURE
                }
            }
        }
        ProvidersCommand::Test {
            path,
            filter,
            objects,
        } => {
            golden::show_objects(objects);
            let dir = path.unwrap_or_else(|| "providers".into());
            let set = match ProvidersSource::Dir(dir.clone()).load() {
                Ok(s) => s,
                Err(e) => {
                    eprintln!("{e}");
                    return ExitCode::FAILURE;
                }
            };
            let cases = match golden::discover(&dir.join("tests")) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("error: {e}");
                    return ExitCode::FAILURE;
                }
            };
            let (mut passed, mut failed) = (0usize, 0usize);
            let full_name = |c: &golden::LoadedCase| format!("{}/{}", c.provider, c.name);
            let chosen: Vec<&golden::LoadedCase> = cases
                .iter()
                .filter(|c| filter.as_deref().is_none_or(|f| full_name(c).contains(f)))
                .collect();
            if chosen.is_empty() {
                eprintln!(
                    "error: no golden case matches {:?} (of {} under {})",
                    filter.as_deref().unwrap_or(""),
                    cases.len(),
                    dir.join("tests").display()
                );
                return ExitCode::FAILURE;
            }
            for c in chosen {
                match golden::run_case(&set, c) {
                    Ok(()) => {
                        passed += 1;
                        println!("ok   {}/{}", c.provider, c.name);
                    }
                    Err(e) => {
                        failed += 1;
                        println!(
                            "FAIL {}/{} ({})\n{e}\n",
                            c.provider,
                            c.name,
                            c.path.display()
                        );
                    }
                }
            }
            println!("{passed} passed, {failed} failed");
            if failed == 0 {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
    }
}
