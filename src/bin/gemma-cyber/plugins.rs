//! `gemma-cyber plugins`, and the plugin options every command that opens a classifier takes.

use std::io::{self, Write};
use std::path::PathBuf;

use clap::Args;
use gemma_cyber::backend::plugin::{self, loader};

use crate::terminal::escape;
use crate::Failure;

/// Where plugins are looked for, and their settings.
#[derive(Args, Clone, Debug, Default)]
pub(crate) struct PluginArgs {
    /// Look for plugin libraries here first (then GEMMA_CYBER_PLUGIN_DIR, then next to the
    /// library; an installed gemma-cyber looks in its prefix's lib/ instead).
    #[arg(long, value_name = "DIR")]
    pub(crate) plugin_dir: Option<PathBuf>,
    /// A plugin setting KEY=VALUE, e.g. wgpu.adapter=NVIDIA or onnxruntime.library=PATH (a key
    /// prefixed with a plugin's name reaches only that plugin). Repeat for more.
    #[arg(long = "plugin-setting", value_name = "KEY=VALUE")]
    pub(crate) plugin_settings: Vec<String>,
}

/// `PREFIX/lib` when this executable is `PREFIX/bin/gemma-cyber` and that directory holds
/// plugins: searched in place of "next to the library", which for this program (the library is
/// linked into it) would be `bin/`.
pub(crate) fn installed_lib_dir() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let bin = exe.parent()?;
    if bin.file_name()? != "bin" {
        return None;
    }
    let lib = bin.parent()?.join("lib");
    let has_plugins = std::fs::read_dir(&lib).ok()?.any(|entry| {
        entry.ok().is_some_and(|entry| {
            entry
                .file_name()
                .to_str()
                .and_then(loader::name_of_file)
                .is_some()
        })
    });
    has_plugins.then_some(lib)
}

/// Arguments of `gemma-cyber plugins`.
#[derive(Args)]
pub(crate) struct PluginsArgs {
    /// Look for plugin libraries here first.
    #[arg(long, value_name = "DIR")]
    plugin_dir: Option<PathBuf>,
}

/// Lists every plugin found, in search order: path, name, version, ABI, usable or why not.
pub(crate) fn run(args: &PluginsArgs) -> Result<(), Failure> {
    let (plugin_dir, install_dir) = (args.plugin_dir.as_deref(), installed_lib_dir());
    let mut out = io::stdout().lock();
    writeln!(out, "searched:")?;
    for (dir, source) in loader::search_dirs(plugin_dir, install_dir.as_deref()) {
        writeln!(out, "  {} ({source})", escape(&dir.display().to_string()))?;
    }
    let builtin = plugin::builtin();
    let found = loader::discover(plugin_dir, install_dir.as_deref());
    if builtin.is_empty() && found.is_empty() {
        writeln!(out, "no plugins found")?;
    }
    for plugin in &builtin {
        writeln!(
            out,
            "{} {} (compiled in, plugin ABI 1): usable",
            plugin.name, plugin.version
        )?;
    }
    for (path, outcome) in found {
        match outcome {
            // A plugin's name, version and message, and a file's path, are data: one line each,
            // no terminal commands.
            Ok(plugin) => writeln!(
                out,
                "{} {} (plugin ABI 1) {}: usable",
                escape(&plugin.name),
                escape(&plugin.version),
                escape(&path.display().to_string())
            )?,
            // The message names the file and the reason.
            Err(error) => writeln!(out, "{}", escape(error.message()))?,
        }
    }
    Ok(())
}
