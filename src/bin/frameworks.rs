//! `frameworks`: the operator CLI (see `foghorn::cli`).

fn main() -> std::process::ExitCode {
    foghorn::cli::main()
}
