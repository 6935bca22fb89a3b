//! Finding, loading and checking plugin libraries: searched in `options.plugin_dir`, then
//! `GEMMA_CYBER_PLUGIN_DIR`, then the directory holding the core library itself; loaded with local
//! symbols, once per process per file, and never unloaded.

use std::ffi::{c_void, CStr, CString};
use std::mem::size_of;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use gemma_cyber_plugin::abi::{
    gemma_cyber_plugin_backend, ENTRY_SYMBOL, GEMMA_CYBER_PLUGIN_ABI_VERSION,
};

use crate::error::{Error, Result};

/// Environment variable: a directory searched for plugins after `options.plugin_dir`.
pub const PLUGIN_DIR_ENV: &str = "GEMMA_CYBER_PLUGIN_DIR";

/// A plugin whose entry filled a table that passed every check.
pub struct Plugin {
    /// The file it came from; `None` for a backend compiled into this library.
    pub path: Option<PathBuf>,
    /// Its name, `[a-z0-9_]+`.
    pub name: String,
    /// Its own version.
    pub version: String,
    pub(super) table: gemma_cyber_plugin_backend,
}

// SAFETY: the table holds function pointers and pointers to the plugin's static strings; the
// library is never unloaded, so they stay valid, and calling them from any thread is the ABI.
unsafe impl Send for Plugin {}
// SAFETY: as above; the table is never written after the checks.
unsafe impl Sync for Plugin {}

/// The file name a plugin called `name` has on this platform.
pub fn file_name(name: &str) -> String {
    if cfg!(target_os = "windows") {
        format!("gemma_cyber_{name}.dll")
    } else if cfg!(target_os = "macos") {
        format!("libgemma_cyber_{name}.dylib")
    } else {
        format!("libgemma_cyber_{name}.so")
    }
}

/// The plugin name a file name carries, if it is a plugin's file name.
pub fn name_of_file(file: &str) -> Option<&str> {
    let (prefix, suffix) = if cfg!(target_os = "windows") {
        ("gemma_cyber_", ".dll")
    } else if cfg!(target_os = "macos") {
        ("libgemma_cyber_", ".dylib")
    } else {
        ("libgemma_cyber_", ".so")
    };
    file.strip_prefix(prefix)?
        .strip_suffix(suffix)
        .filter(|name| is_valid_name(name))
}

/// `[a-z0-9_]+`.
pub fn is_valid_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

/// Where plugins are looked for, in order, each with where it came from.
pub fn search_dirs(plugin_dir: Option<&Path>) -> Vec<(PathBuf, &'static str)> {
    let mut dirs = Vec::new();
    if let Some(dir) = plugin_dir {
        dirs.push((dir.to_owned(), "options.plugin_dir"));
    }
    if let Some(dir) = std::env::var_os(PLUGIN_DIR_ENV).filter(|dir| !dir.is_empty()) {
        dirs.push((PathBuf::from(dir), PLUGIN_DIR_ENV));
    }
    if let Some(dir) = core_library_dir() {
        dirs.push((dir, "the core library's directory"));
    }
    dirs
}

/// The plugin called `name`: the first file of that name in [`search_dirs`], loaded and checked.
pub fn find(name: &str, plugin_dir: Option<&Path>) -> Result<Arc<Plugin>> {
    let file = file_name(name);
    let dirs = search_dirs(plugin_dir);
    for (dir, _) in &dirs {
        let path = dir.join(&file);
        if std::fs::symlink_metadata(&path).is_ok() {
            return load(&path);
        }
    }
    Err(Error::backend_unavailable(format!(
        "no {name} plugin: {file} is in none of {}",
        if dirs.is_empty() {
            "the search directories (none is set)".to_owned()
        } else {
            dirs.iter()
                .map(|(dir, source)| format!("{} ({source})", dir.display()))
                .collect::<Vec<_>>()
                .join(", ")
        }
    )))
}

/// Every plugin file in the search directories, in search order, each loaded and checked.
/// A name found again in a later directory is listed too (the first one is the one used).
pub fn discover(plugin_dir: Option<&Path>) -> Vec<(PathBuf, Result<Arc<Plugin>>)> {
    let mut found = Vec::new();
    let mut seen_dirs: Vec<PathBuf> = Vec::new();
    for (dir, _) in search_dirs(plugin_dir) {
        let canonical = std::fs::canonicalize(&dir).unwrap_or_else(|_| dir.clone());
        if seen_dirs.contains(&canonical) {
            continue;
        }
        seen_dirs.push(canonical);
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        let mut paths: Vec<PathBuf> = entries
            .filter_map(|entry| entry.ok().map(|entry| entry.path()))
            .filter(|path| {
                path.file_name()
                    .and_then(|name| name.to_str())
                    .and_then(name_of_file)
                    .is_some()
            })
            .collect();
        paths.sort();
        for path in paths {
            let loaded = load(&path);
            found.push((path, loaded));
        }
    }
    found
}

/// Every file loaded so far, by canonical path, with the outcome: a file is opened once.
static LOADED: Mutex<Vec<(PathBuf, Result<Arc<Plugin>>)>> = Mutex::new(Vec::new());

/// Loads and checks the plugin at `path` (once per process; later calls get the same outcome).
pub fn load(path: &Path) -> Result<Arc<Plugin>> {
    let refuse = |why: String| {
        Error::backend_unavailable(format!("plugin {} is not usable: {why}", path.display()))
    };
    let expected = path
        .file_name()
        .and_then(|name| name.to_str())
        .and_then(name_of_file)
        .ok_or_else(|| refuse("its file name is not libgemma_cyber_<name>.so".into()))?;
    // Only a regular file: a FIFO or a device would block or feed the loader endless bytes.
    crate::fs::check_regular_file(path).map_err(|e| refuse(e.to_string()))?;
    let canonical = std::fs::canonicalize(path).map_err(|e| refuse(e.to_string()))?;
    let mut loaded = LOADED.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some((_, outcome)) = loaded.iter().find(|(known, _)| *known == canonical) {
        return outcome.clone();
    }
    let outcome = open_and_check(&canonical, expected).map_err(refuse);
    loaded.push((canonical, outcome.clone()));
    outcome
}

/// dlopen, dlsym, the entry call and the table checks. Never unloads, even on failure: the
/// library's constructors have run and may have left state that code in it still refers to.
#[cfg(unix)]
fn open_and_check(path: &Path, expected_name: &str) -> std::result::Result<Arc<Plugin>, String> {
    use std::os::unix::ffi::OsStrExt;

    let c_path = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| "its path contains a NUL byte".to_owned())?;
    // SAFETY: a NUL-terminated path. Loading runs the library's constructors: trusting the file
    // is what asking for a plugin means. RTLD_LOCAL keeps its symbols out of the process's scope.
    let handle = unsafe { libc::dlopen(c_path.as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL) };
    if handle.is_null() {
        return Err(format!(
            "it is not a loadable shared library ({})",
            dlerror()
        ));
    }
    // SAFETY: a live handle and a NUL-terminated symbol name.
    let symbol = unsafe { libc::dlsym(handle, ENTRY_SYMBOL.as_ptr()) };
    if symbol.is_null() {
        return Err("it does not export gemma_cyber_plugin_entry".into());
    }
    // SAFETY: the plugin ABI fixes this symbol's signature.
    let entry: gemma_cyber_plugin_entry = unsafe { std::mem::transmute::<*mut c_void, _>(symbol) };
    check(entry, Some(path.to_owned()), expected_name)
}

#[cfg(not(unix))]
fn open_and_check(_path: &Path, _expected_name: &str) -> std::result::Result<Arc<Plugin>, String> {
    Err("loading plugins is not supported on this platform yet".into())
}

use gemma_cyber_plugin::abi::gemma_cyber_plugin_entry_fn as gemma_cyber_plugin_entry;

/// Calls `entry` and checks the table it fills: ABI version, struct size, every function, and a
/// name equal to `expected_name`.
pub(super) fn check(
    entry: gemma_cyber_plugin_entry,
    path: Option<PathBuf>,
    expected_name: &str,
) -> std::result::Result<Arc<Plugin>, String> {
    // SAFETY: an all-zero table is valid (NULL pointers, `None` functions).
    let mut table: gemma_cyber_plugin_backend = unsafe { std::mem::zeroed() };
    table.struct_size = size_of::<gemma_cyber_plugin_backend>() as u32;
    // SAFETY: the entry may write at most `struct_size` bytes of our table, which has that many.
    let status = unsafe { entry(GEMMA_CYBER_PLUGIN_ABI_VERSION, &mut table) };
    if status != 0 {
        return Err(format!(
            "its entry refused plugin ABI version {GEMMA_CYBER_PLUGIN_ABI_VERSION} (status {status})"
        ));
    }
    if table.abi_version != GEMMA_CYBER_PLUGIN_ABI_VERSION {
        return Err(format!(
            "it was built for plugin ABI version {}, and this library speaks version \
             {GEMMA_CYBER_PLUGIN_ABI_VERSION}",
            table.abi_version
        ));
    }
    if (table.struct_size as usize) < size_of::<gemma_cyber_plugin_backend>() {
        return Err(format!(
            "its function table is {} bytes, smaller than version 1's {}",
            table.struct_size,
            size_of::<gemma_cyber_plugin_backend>()
        ));
    }
    let text = |pointer: *const std::ffi::c_char, field: &str| {
        if pointer.is_null() {
            return Err(format!("its {field} is NULL"));
        }
        // SAFETY: non-NULL; the ABI makes it a NUL-terminated string that lives as long as the
        // never-unloaded library.
        Ok(unsafe { CStr::from_ptr(pointer) }
            .to_string_lossy()
            .into_owned())
    };
    let name = text(table.name, "name")?;
    let version = text(table.version, "version")?;
    if name != expected_name {
        return Err(format!(
            "it calls itself {name:?}, but its file is named for {expected_name:?}"
        ));
    }
    let missing = [
        ("create", table.create.is_none()),
        ("classify", table.classify.is_none()),
        ("device_name", table.device_name.is_none()),
        ("destroy", table.destroy.is_none()),
    ]
    .into_iter()
    .filter(|(_, missing)| *missing)
    .map(|(field, _)| field)
    .collect::<Vec<_>>();
    if !missing.is_empty() {
        return Err(format!("its table leaves {} NULL", missing.join(", ")));
    }
    Ok(Arc::new(Plugin {
        path,
        name,
        version,
        table,
    }))
}

/// The directory of the file this code was loaded from: the core shared library, or the program
/// it is linked into statically.
#[cfg(unix)]
fn core_library_dir() -> Option<PathBuf> {
    // SAFETY: `info` is written by dladdr before it is read; the file name is copied at once.
    unsafe {
        let mut info: libc::Dl_info = std::mem::zeroed();
        let here = core_library_dir as *const c_void;
        if libc::dladdr(here, &mut info) == 0 || info.dli_fname.is_null() {
            return None;
        }
        let file = PathBuf::from(
            CStr::from_ptr(info.dli_fname)
                .to_string_lossy()
                .into_owned(),
        );
        // dladdr gives the path the loader used, which may be relative to the working directory
        // or a bare name for the main program.
        let file = std::fs::canonicalize(&file)
            .ok()
            .or_else(|| std::env::current_exe().ok())?;
        file.parent().map(Path::to_path_buf)
    }
}

#[cfg(not(unix))]
fn core_library_dir() -> Option<PathBuf> {
    std::env::current_exe()
        .ok()?
        .parent()
        .map(Path::to_path_buf)
}

/// The loader's description of its last failure.
#[cfg(unix)]
fn dlerror() -> String {
    // SAFETY: dlerror returns NULL or a NUL-terminated string valid until the next dl* call on
    // this thread, copied at once.
    unsafe {
        let message = libc::dlerror();
        if message.is_null() {
            "unknown loader error".into()
        } else {
            CStr::from_ptr(message).to_string_lossy().into_owned()
        }
    }
}
