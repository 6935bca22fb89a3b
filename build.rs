//! Rebuilds when the built-in model changes, and gives the shared library its versioned soname.

use std::path::{Path, PathBuf};

/// The soname: the C ABI version (GEMMA_CYBER_ABI_VERSION in src/ffi/mod.rs).
const SONAME: &str = "libgemma_cyber.so.1";

fn main() {
    println!("cargo:rerun-if-changed=models/default.safetensors");
    println!("cargo:rerun-if-changed=build.rs");
    // The soname carries the C ABI version, so programs built against ABI 1 keep loading
    // `libgemma_cyber.so.1` when a later, incompatible library is installed next to it.
    // tools/install.sh checks that the two agree.
    if std::env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("linux") {
        println!("cargo:rustc-cdylib-link-arg=-Wl,-soname,{SONAME}");
        if let Some(dir) = profile_dir() {
            link_soname(&dir);
        }
    }
}

/// `target/release` (or whichever profile and target directory this build writes): OUT_DIR is
/// `<profile dir>/build/<package>-<hash>/out`.
fn profile_dir() -> Option<PathBuf> {
    let out_dir = PathBuf::from(std::env::var_os("OUT_DIR")?);
    let dir = out_dir.ancestors().nth(3)?;
    (dir.join("deps").is_dir() && dir.join("build").is_dir()).then(|| dir.to_owned())
}

/// A program linked with `-Ltarget/release -lgemma_cyber` records the soname and looks for
/// `libgemma_cyber.so.1` at run time, but cargo writes only `libgemma_cyber.so`. A relative link
/// `libgemma_cyber.so.1 -> libgemma_cyber.so` beside it (made now, valid once cargo copies the
/// library up at the end of the build) lets such a program run from the build tree with
/// `LD_LIBRARY_PATH=target/release` or `-Wl,-rpath`. Anything already there is left alone.
#[cfg(unix)]
fn link_soname(dir: &Path) {
    let link = dir.join(SONAME);
    if link.symlink_metadata().is_err()
        && let Err(error) = std::os::unix::fs::symlink("libgemma_cyber.so", &link)
    {
        println!("cargo:warning=cannot link {}: {error}", link.display());
    }
}

/// A build host without symlinks (cross-compiling from Windows) has no build-tree programs to run.
#[cfg(not(unix))]
fn link_soname(_dir: &Path) {}
