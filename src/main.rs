//! `localproxy`: parse the command line, set up logging, run, map errors to exit codes.
//!
//! Exit status:
//! - 0: the tunnel was closed or expired; `--help`, `--version`,
//!   `--export-default-settings`.
//! - 1: usage or configuration error (message on stderr: the reference's
//!   words where it refuses the same input, ours, then "Try 'localproxy
//!   --help' for a list of options."), a mapping that does not match the
//!   tunnel's services, or a local port that cannot be bound.
//! - 2: the service refused the handshake (4xx: token spent, rotated or
//!   wrong, wrong mode or region), or its TLS certificate did not verify
//!   (see `-c`): retrying cannot help.
//! - 3: another proxy connected with the same token and replaced this one.
//! - 4: could not connect within `connect_retry_count` attempts.
//! - 5: protocol error with `reconnect_on_data_error` false.
//!
//! SIGINT and SIGTERM close the tunnel and exit 0.

use std::error::Error;
use std::io::Write;
use std::process::ExitCode;

use localproxy::config::{self, Action, ConfigError, TRY_HELP};
use localproxy::logging;

fn main() -> ExitCode {
    let action = config::check_env(&|name| std::env::var_os(name))
        .and_then(|()| config::args_from_os(std::env::args_os().skip(1)))
        .and_then(|args| config::parse(&args, &|name| std::env::var(name).ok()));
    match action {
        Err(e) => usage_error(&e),
        Ok(Action::Help(text)) | Ok(Action::Version(text)) => {
            // A closed stdout (`localproxy --help | head -1`) is not an error.
            let _ = std::io::stdout().write_all(text.as_bytes());
            ExitCode::SUCCESS
        }
        Ok(Action::ExportSettings(path)) => match config::write_default_settings(&path) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => usage_error(&e),
        },
        Ok(Action::Run(config, notes)) => {
            logging::init(notes.verbosity);
            if let Some(path) = &notes.settings_file {
                log::info!("Using settings specified in file: {}", path.display());
            }
            for warning in &notes.warnings {
                log::warn!("{warning}");
            }
            match localproxy::run(*config) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    // Printed once, whatever the verbosity.
                    logging::print_error(&format!("localproxy: {}", chain(&e)));
                    ExitCode::from(e.exit_code())
                }
            }
        }
    }
}

/// `e` and its causes, outermost first, joined with ": "; a cause whose
/// text its parent already quotes is not repeated.
fn chain(e: &dyn Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let part = c.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        cause = c.source();
    }
    text
}

/// Prints `e` once to stderr, then the line pointing at `--help`, and
/// returns its exit status.
fn usage_error(e: &ConfigError) -> ExitCode {
    logging::print_error(&format!("localproxy: {}\n{TRY_HELP}", chain(e)));
    ExitCode::from(e.exit_code())
}
