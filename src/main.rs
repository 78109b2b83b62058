//! The `sluice` binary: parse the command line and dispatch.

fn main() {
    std::process::exit(sluice::cli::main());
}
