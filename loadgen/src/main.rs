//! The `loadgen` binary: everything lives in the library.

fn main() {
    std::process::exit(loadgen::cli::main());
}
