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

/// Resolves once stdout is a pipe whose reader went away: `cqrsx stream tail | head -1` on a
/// quiet log would otherwise notice only when its next line comes. Never on a terminal or a
/// file (they cannot be watched, and have no reader to lose).
async fn stdout_closed() {
    #[cfg(unix)]
    {
        use std::os::fd::AsFd;
        use tokio::io::unix::AsyncFd;
        use tokio::io::Interest;
        if let Ok(fd) = std::io::stdout().as_fd().try_clone_to_owned() {
            // Deprecated as unsound for a borrowed descriptor that could be closed while
            // registered; this one is an `OwnedFd` the `AsyncFd` owns, open until it is dropped
            // (the condition `AsyncFd::register_with_interest` states), and the crate forbids
            // `unsafe`.
            #[allow(deprecated)]
            let watch = AsyncFd::with_interest(fd, Interest::ERROR);
            if let Ok(watch) = watch {
                let _ = watch.ready(Interest::ERROR).await;
                return;
            }
        }
    }
    std::future::pending::<()>().await;
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
        let work = async {
            let stores = connect(&cli.connection).await?;
            let mut stdout = std::io::stdout();
            run(&cli, &stores, &mut stdout).await
        };
        tokio::select! {
            outcome = work => outcome,
            () = stdout_closed() => Ok(()),
        }
    });
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) if failure.is_closed_output() => ExitCode::SUCCESS,
        Err(failure) => fail(&failure),
    }
}
