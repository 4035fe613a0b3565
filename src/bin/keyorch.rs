//! `keyorch`, the command-line client of keyorchd: all of it lives in `keyorch::cli`;
//! this only hands the exit code from `keyorch::cli::run()` to the process.

fn main() -> std::process::ExitCode {
    keyorch::cli::run()
}
