//! A query command's stdout (docs/protocol.md §2) from arbitrary bytes: parsed and validated, or refused with
//! a `DumpError`, never a panic. Inputs that are JSON are also validated as a document.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mock_kong::dump;

fuzz_target!(|data: &[u8]| {
    match dump::parse(data) {
        Ok(d) => {
            // A valid dump always has a first plugin.
            let _ = d.plugin();
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
});
