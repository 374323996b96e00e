//! The `cqrsx` binary: parses the command line, connects the store it names, runs the command.
//! Errors are one line on stderr and a documented exit code (see the library's docs).

use std::io::Write;
use std::process::ExitCode;

use clap::Parser;
use cqrsx_cli::{connect::connect, run, Cli, Failure};

fn fail(failure: &Failure) -> ExitCode {
    let _ = writeln!(std::io::stderr(), "cqrsx: {failure}");
    ExitCode::from(failure.code)
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        // Help and version print as clap writes them, and exit 0.
        Err(e) if !e.use_stderr() => e.exit(),
        Err(e) => return fail(&Failure::from(&e)),
    };
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => return fail(&Failure::usage(format!("cannot start: {e}"))),
    };
    let outcome = runtime.block_on(async {
        let stores = connect(&cli.connection).await?;
        let mut stdout = std::io::stdout();
        run(&cli, &stores, &mut stdout).await
    });
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) if failure.is_closed_output() => ExitCode::SUCCESS,
        Err(failure) => fail(&failure),
    }
}
