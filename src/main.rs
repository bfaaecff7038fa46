//! The `tokengate` binary: parse the command line, start tracing, dispatch.

#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = tokengate::cli::Cli::parse();
    tokengate::cli::init_tracing(cli.log_format);
    // One core (a pinned sidecar, a CPU limit of 1): a current-thread runtime, which
    // measured ~10% less CPU per request than a one-worker multi-thread runtime
    // (bench/hop.sh). More cores: work-stealing across them.
    let one_core = std::thread::available_parallelism().is_ok_and(|n| n.get() == 1);
    let mut builder = if one_core {
        tokio::runtime::Builder::new_current_thread()
    } else {
        tokio::runtime::Builder::new_multi_thread()
    };
    let runtime = match builder.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(tokengate::cli::run(cli)) {
        Ok(code) => code,
        Err(e) => {
            // One line naming the cause; config errors already start with "config error:".
            let text = format!("{e:#}");
            if text.starts_with("config error:") {
                eprintln!("{text}");
            } else {
                eprintln!("error: {text}");
            }
            ExitCode::FAILURE
        }
    }
}
