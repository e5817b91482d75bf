use std::process::ExitCode;

use clap::Parser;
use llmux::cli::{Cli, Command, ConfigCommand};
use llmux::config::{self, ConfigSource};
use llmux::server::{self, ServeOptions};
use llmux::telemetry::logging::{self, LogFormat};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
            let _guard = logging::init(LogFormat::Text, "info");
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
        } => match config::load(&ConfigSource::File(file.clone())) {
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
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::FAILURE
            }
        },
    }
}
