//! How a command ends and runs: exit statuses, errors on stderr, and the
//! async runtime of the commands that talk to Docker or a controller.

use std::process::ExitCode;

/// Exit status for "the input is wrong" (invalid manifests, failed apply).
pub(crate) const EXIT_FAILURE: u8 = 1;
/// Exit status for usage errors, as clap uses.
pub(crate) const EXIT_USAGE: u8 = 2;

/// Report a usage error (a bad flag or argument): exit status 2.
pub(crate) fn usage(message: impl std::fmt::Display) -> ExitCode {
    eprintln!("error: {message}");
    ExitCode::from(EXIT_USAGE)
}

/// Report a failure: exit status 1.
pub(crate) fn failure(message: impl std::fmt::Display) -> ExitCode {
    eprintln!("error: {message}");
    ExitCode::from(EXIT_FAILURE)
}

/// Run the async part of a command to completion.
pub(crate) fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime starts")
        .block_on(f)
}
