//! The `loadgen` binary: everything lives in the library.

/// Counts the harness's allocations (`counters.harness_allocs_per_request` in results.json).
#[global_allocator]
static ALLOC: loadgen::alloc::CountingAlloc = loadgen::alloc::CountingAlloc;

fn main() {
    std::process::exit(loadgen::cli::main());
}
