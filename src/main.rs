//! The `tokengate` binary: parse the command line, start tracing, dispatch.

#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = tokengate::cli::Cli::parse();
    tokengate::cli::init_tracing(cli.log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
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
