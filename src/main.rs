//! The `tollgate` binary: parse the command line, run the command, report a
//! failure on one line. Everything else lives in the library.

use std::process::ExitCode;

use clap::Parser;
use tollgate::cli::{self, Cli};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => return fail(&error),
    };
    let mut stdout = std::io::stdout().lock();
    match runtime.block_on(cli::run(cli, &mut stdout)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => fail(&error),
    }
}

/// The one place the binary writes an error: a single line, no backtrace.
#[allow(clippy::print_stderr, reason = "the binary's only error report")]
fn fail(error: &dyn std::fmt::Display) -> ExitCode {
    eprintln!("tollgate: error: {error}");
    ExitCode::FAILURE
}
