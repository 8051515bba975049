//! `cubby`: parses the command line and hands over to the library.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = cubby::cli::Cli::parse();
    // --log-level first, then RUST_LOG, then warnings only.
    let filter = match cli.log_level.as_deref() {
        Some(level) => tracing_subscriber::EnvFilter::try_new(level).ok(),
        None => tracing_subscriber::EnvFilter::try_from_default_env().ok(),
    };
    tracing_subscriber::fmt()
        .with_env_filter(filter.unwrap_or_else(|| tracing_subscriber::EnvFilter::new("warn")))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("cubby: cannot start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(cubby::cli::run(cli))
}
