//! Prints `PROTOC=<path>` and `PROTOC_INCLUDE=<dir>` for the `protoc` that the crate
//! `protoc-bin-vendored` ships, so that scripts/install-peers.sh can build kong_rs (whose
//! protobuf crate runs prost-build, which needs a protoc) without a system protobuf compiler.

use std::process::ExitCode;

fn main() -> ExitCode {
    let bin = match protoc_bin_vendored::protoc_bin_path() {
        Ok(p) => p,
        Err(e) => {
            eprintln!(
                "protoc-path: protoc-bin-vendored has no protoc for this platform ({e}); \
                 install a protobuf compiler (Debian: apt-get install protobuf-compiler \
                 libprotobuf-dev) and set PROTOC"
            );
            return ExitCode::from(3);
        }
    };
    let include = match protoc_bin_vendored::include_path() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("protoc-path: protoc-bin-vendored has no include directory ({e})");
            return ExitCode::from(3);
        }
    };
    println!("PROTOC={}", bin.display());
    println!("PROTOC_INCLUDE={}", include.display());
    ExitCode::SUCCESS
}
