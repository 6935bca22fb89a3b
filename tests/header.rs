//! The committed C header is exactly what cbindgen makes from the sources now.

use std::path::Path;

#[test]
fn committed_header_matches_cbindgen_output() {
    let crate_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let config =
        cbindgen::Config::from_file(crate_dir.join("cbindgen.toml")).expect("cbindgen.toml parses");
    let mut generated = Vec::new();
    cbindgen::Builder::new()
        .with_crate(crate_dir)
        .with_config(config)
        .generate()
        .expect("cbindgen generates the header")
        .write(&mut generated);
    let header_path = crate_dir.join("include/gemma_cyber.h");
    if std::env::var_os("GEMMA_CYBER_BLESS_HEADER").is_some() {
        std::fs::write(&header_path, &generated).expect("header written");
    }
    let committed = std::fs::read(&header_path).unwrap_or_default();
    assert!(
        committed == generated,
        "include/gemma_cyber.h is stale; regenerate it with \
         `GEMMA_CYBER_BLESS_HEADER=1 cargo test --test header` and commit it"
    );
}

#[test]
fn header_version_matches_cargo_version() {
    let header = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("include/gemma_cyber.h"),
    )
    .expect("header readable");
    let expected = format!(
        "#define GEMMA_CYBER_VERSION \"{}\"",
        env!("CARGO_PKG_VERSION")
    );
    assert!(
        header.contains(&expected),
        "header lacks `{expected}`; update after_includes in cbindgen.toml"
    );
}

#[test]
fn committed_plugin_header_matches_cbindgen_output() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let sdk = root.join("plugins/sdk");
    let config = cbindgen::Config::from_file(sdk.join("cbindgen.toml"))
        .expect("plugins/sdk/cbindgen.toml parses");
    let mut generated = Vec::new();
    cbindgen::Builder::new()
        .with_src(sdk.join("src/abi.rs"))
        .with_config(config)
        .generate()
        .expect("cbindgen generates the plugin header")
        .write(&mut generated);
    let generated = with_entry_prototype(&generated);
    let header_path = root.join("include/gemma_cyber_plugin.h");
    if std::env::var_os("GEMMA_CYBER_BLESS_HEADER").is_some() {
        std::fs::write(&header_path, &generated).expect("header written");
    }
    let committed = std::fs::read(&header_path).unwrap_or_default();
    assert!(
        committed == generated,
        "include/gemma_cyber_plugin.h is stale; regenerate it with \
         `GEMMA_CYBER_BLESS_HEADER=1 cargo test --test header` and commit it"
    );
}

/// The declaration of the symbol every plugin defines; cbindgen only declares functions the
/// crate itself defines, and the SDK must not define this one.
const ENTRY_PROTOTYPE: &str = r#"#ifdef __cplusplus
extern "C" {
#endif

/**
 * The one symbol a plugin exports. Fills *backend (at most backend->struct_size bytes, set by the
 * host) and returns 0, or a gemma_cyber_status when it cannot serve host_abi_version.
 */
int32_t gemma_cyber_plugin_entry(uint32_t host_abi_version, gemma_cyber_plugin_backend *backend);

#ifdef __cplusplus
}  /* extern "C" */
#endif

"#;

/// `header` with [`ENTRY_PROTOTYPE`] just before its include guard ends.
fn with_entry_prototype(header: &[u8]) -> Vec<u8> {
    let header = String::from_utf8(header.to_vec()).expect("cbindgen writes UTF-8");
    let guard_end = "#endif  /* GEMMA_CYBER_PLUGIN_H */";
    let at = header
        .rfind(guard_end)
        .expect("the header has its include guard");
    format!("{}{ENTRY_PROTOTYPE}{}", &header[..at], &header[at..]).into_bytes()
}

#[test]
fn every_public_name_carries_the_library_prefix() {
    // The headers land in users' translation units: a bare name (an internal constant cbindgen
    // picked up) could clash with theirs. Checked: macros, struct and enum types, enum constants,
    // function-pointer types and functions (cbindgen writes each at the start of a line).
    for header in ["include/gemma_cyber.h", "include/gemma_cyber_plugin.h"] {
        let text =
            std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(header)).unwrap();
        let mut checked = 0;
        for line in text.lines() {
            let name = if let Some(rest) = line
                .strip_prefix("#define ")
                .or_else(|| line.strip_prefix("typedef struct "))
                .or_else(|| line.strip_prefix("typedef enum "))
            {
                rest.split_whitespace().next()
            } else if let Some((_, rest)) = line
                .strip_prefix("typedef ")
                .and_then(|line| line.split_once("(*"))
            {
                // typedef RETURN (*NAME)(...
                rest.split(')').next()
            } else if line.starts_with("  ") && line.trim_start().starts_with("GEMMA_CYBER_") {
                line.split_whitespace().next()
            } else if !line.starts_with([' ', '*', '/', '#', '}']) && line.contains('(') {
                // RETURN NAME(ARGS...: the word before the first parenthesis.
                line.split('(')
                    .next()
                    .and_then(|head| head.rsplit([' ', '*']).next())
            } else {
                None
            };
            if let Some(name) = name {
                checked += 1;
                assert!(
                    name.to_ascii_lowercase().starts_with("gemma_cyber_"),
                    "{header}: {line}"
                );
            }
        }
        assert!(checked >= 5, "{header}: only {checked} names found");
    }
}
