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
