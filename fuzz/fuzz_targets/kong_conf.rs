//! kong.conf text (docs/protocol.md §1) from arbitrary bytes: parsed, then resolved into plugin-server
//! definitions (with the same text's lines also offered as `KONG_*` variables), never a panic.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use mock_kong::config;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let Ok(conf) = config::parse_conf_text(Path::new("fuzz.conf"), &text) else {
        return;
    };
    let env: Vec<(String, String)> = conf
        .iter()
        .take(4)
        .map(|(k, v)| (format!("KONG_{}", k.to_uppercase()), v.clone()))
        .collect();
    // A directory that does not exist: no default binary is found there.
    let bin = Path::new("/nonexistent-mock-kong-fuzz-bin");
    let _ = config::resolve(&conf, &[], bin);
    let _ = config::resolve(&conf, &env, bin);
});
