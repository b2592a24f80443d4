//! Property tests of the text parsers that read what a user or a plugin server supplies: the
//! query command's JSON dump (docs/protocol.md §2) and kong.conf (docs/protocol.md §1). Any input gives a result or an
//! error, never a panic.

use std::path::Path;

use proptest::prelude::*;
use serde_json::Value as J;

use crate::{config, dump};

/// JSON documents built from the words a dump uses, so validation gets past the first checks.
fn dumpish_json() -> impl Strategy<Value = J> {
    let key = prop_oneof![
        Just("Name"),
        Just("Priority"),
        Just("Version"),
        Just("Schema"),
        Just("Phases"),
        Just("Protocol"),
        Just("Plugins"),
        Just("fields"),
        Just("config"),
        Just("type"),
        Just("default"),
        Just("required"),
        Just("one_of"),
        Just("elements"),
        Just("keys"),
        Just("values"),
        Just("x"),
    ]
    .prop_map(str::to_owned);
    let leaf = prop_oneof![
        Just(J::Null),
        any::<bool>().prop_map(J::Bool),
        any::<i64>().prop_map(J::from),
        any::<f64>().prop_map(|f| serde_json::Number::from_f64(f).map_or(J::Null, J::Number)),
        (-5i64..2000).prop_map(J::from),
        prop_oneof![
            Just("MsgPack:1"),
            Just("ProtoBuf:1"),
            Just("access"),
            Just("log"),
            Just("string"),
            Just("record"),
            Just("array"),
            Just("map"),
            Just("1.0.0"),
            Just(""),
            Just("héllo\u{0}"),
        ]
        .prop_map(|s| J::String(s.to_owned())),
        ".{0,12}".prop_map(J::String),
    ];
    leaf.prop_recursive(6, 96, 6, move |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..5).prop_map(J::Array),
            proptest::collection::vec((key.clone(), inner), 0..6)
                .prop_map(|kv| J::Object(kv.into_iter().collect())),
        ]
    })
}

/// kong.conf lines: settings Kong knows, comments, escapes, continuations and junk.
fn conf_text() -> impl Strategy<Value = String> {
    let key = prop_oneof![
        Just("pluginserver_names"),
        Just("pluginserver_go_hello_start_cmd"),
        Just("pluginserver_go_hello_query_cmd"),
        Just("pluginserver_go_hello_socket"),
        Just("pluginserver_a_start_cmd"),
        Just("pluginserver_a_socket"),
        Just("prefix"),
        Just("PluginServer_Names"),
        Just("plugins"),
        Just(""),
    ];
    let value = prop_oneof![
        proptest::sample::select(vec![
            "go-hello, a",
            "a",
            "/bin/a -x",
            "off",
            "",
            "\\#not a comment # a comment",
            "x \\",
        ])
        .prop_map(str::to_owned),
        "[ -~]{0,16}",
    ];
    let line = prop_oneof![
        4 => (key, prop_oneof![Just(" = "), Just("="), Just(" "), Just(" : ")], value)
            .prop_map(|(k, sep, v)| format!("{k}{sep}{v}")),
        1 => Just("# comment".to_owned()),
        1 => Just("   ".to_owned()),
        1 => Just("\\".to_owned()),
        1 => "\\PC{0,20}",
    ];
    proptest::collection::vec(line, 0..12).prop_map(|l| l.join("\n"))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn dump_parse_never_panics_on_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..128)) {
        let _ = dump::parse(&bytes);
    }

    #[test]
    fn dump_validation_never_panics_on_dump_like_documents(doc in dumpish_json()) {
        if let Ok(d) = dump::from_json(&doc) {
            prop_assert!(!d.plugins.is_empty());
            let _ = d.plugin();
        }
        // The same document as stdout, also with text around it.
        let text = serde_json::to_string(&doc).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let _ = dump::parse(text.as_bytes());
        let _ = dump::parse(format!("starting...\n{text}\n").as_bytes());
        let _ = dump::parse(format!("{text}{text}").as_bytes());
    }

    #[test]
    fn dump_entries_never_panic(entry in dumpish_json()) {
        let _ = dump::from_json(&J::Array(vec![entry.clone()]));
        let _ = dump::from_json(&serde_json::json!({ "Protocol": "ProtoBuf:1", "Plugins": [entry] }));
    }

    #[test]
    fn kong_conf_never_panics(text in conf_text(), env_names in proptest::option::of("[a-z_-]{0,12}")) {
        let Ok(conf) = config::parse_conf_text(Path::new("prop.conf"), &text) else {
            return Ok(());
        };
        let env: Vec<(String, String)> = env_names
            .map(|n| vec![("KONG_PLUGINSERVER_NAMES".to_owned(), n)])
            .unwrap_or_default();
        let _ = config::resolve(&conf, &env, Path::new("/nonexistent-mock-kong-bin"));
    }

    #[test]
    fn kong_conf_never_panics_on_any_text(text in "\\PC{0,200}") {
        if let Ok(conf) = config::parse_conf_text(Path::new("prop.conf"), &text) {
            let _ = config::resolve(&conf, &[], Path::new("/nonexistent-mock-kong-bin"));
        }
    }
}
