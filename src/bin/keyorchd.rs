//! keyorchd: the key orchestrator daemon (see `keyorchd --help`).

fn main() -> std::process::ExitCode {
    keyorch::daemon::main()
}
