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
use crate::thread_flag;

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
    named_like_a_plugin(file).filter(|name| is_valid_name(name))
}

/// What stands between a plugin file's prefix and suffix in `file`, a valid name or not.
fn named_like_a_plugin(file: &str) -> Option<&str> {
    let (prefix, suffix) = if cfg!(target_os = "windows") {
        ("gemma_cyber_", ".dll")
    } else if cfg!(target_os = "macos") {
        ("libgemma_cyber_", ".dylib")
    } else {
        ("libgemma_cyber_", ".so")
    };
    file.strip_prefix(prefix)?.strip_suffix(suffix)
}

/// `[a-z0-9_]+`.
pub fn is_valid_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

/// Where plugins are looked for, in order, each with where it came from: `plugin_dir`, the
/// environment's, then `install_dir` where given (a program that links the library in and is
/// installed apart from its plugins), else the directory of the file the library is in.
pub fn search_dirs(
    plugin_dir: Option<&Path>,
    install_dir: Option<&Path>,
) -> Vec<(PathBuf, &'static str)> {
    let mut dirs = Vec::new();
    if let Some(dir) = plugin_dir {
        dirs.push((dir.to_owned(), "options.plugin_dir"));
    }
    if let Some(dir) = std::env::var_os(PLUGIN_DIR_ENV).filter(|dir| !dir.is_empty()) {
        dirs.push((PathBuf::from(dir), PLUGIN_DIR_ENV));
    }
    if let Some(dir) = install_dir {
        dirs.push((dir.to_owned(), "the installation's plugin directory"));
    } else if let Some(dir) = core_library_dir() {
        dirs.push((dir, "the core library's directory"));
    }
    dirs
}

/// The plugin called `name`: the first file of that name in [`search_dirs`], loaded and checked.
pub fn find(
    name: &str,
    plugin_dir: Option<&Path>,
    install_dir: Option<&Path>,
) -> Result<Arc<Plugin>> {
    let file = file_name(name);
    let dirs = search_dirs(plugin_dir, install_dir);
    for (dir, _) in &dirs {
        let path = dir.join(&file);
        // Only a file that is not there moves the search on: one that is there but cannot be
        // looked at (a directory we may not search, say) would otherwise be passed over for a
        // copy further down the list, with nothing said.
        match std::fs::symlink_metadata(&path) {
            Ok(_) => return load(&path),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
            Err(error) => {
                return Err(Error::backend_unavailable(format!(
                    "plugin {} is not usable: {error}",
                    path.display()
                )))
            }
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
pub fn discover(
    plugin_dir: Option<&Path>,
    install_dir: Option<&Path>,
) -> Vec<(PathBuf, Result<Arc<Plugin>>)> {
    let mut found = Vec::new();
    let mut seen_dirs: Vec<PathBuf> = Vec::new();
    for (dir, _) in search_dirs(plugin_dir, install_dir) {
        let canonical = std::fs::canonicalize(&dir).unwrap_or_else(|_| dir.clone());
        if seen_dirs.contains(&canonical) {
            continue;
        }
        seen_dirs.push(canonical);
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        // Files named like plugins whose name is not one (`libgemma_cyber_Vend.so`) are listed
        // as unusable, unopened: no option could select them, and silence would hide why.
        let mut paths: Vec<(PathBuf, bool)> = entries
            .filter_map(|entry| entry.ok().map(|entry| entry.path()))
            .filter_map(|path| {
                let name = named_like_a_plugin(path.file_name()?.to_str()?)?;
                let valid = is_valid_name(name);
                Some((path, valid))
            })
            .collect();
        paths.sort();
        for (path, valid) in paths {
            let loaded = if valid {
                load(&path)
            } else {
                Err(Error::backend_unavailable(format!(
                    "plugin {} is not usable: its name is not a plugin name ([a-z0-9_]+), so \
                     nothing can select it",
                    path.display()
                )))
            };
            found.push((path, loaded));
        }
    }
    found
}

/// Every file loaded so far, by canonical path, with the outcome: a file is opened once. The
/// outcome leaves out the name check, which depends on the name the file was asked for by (a link
/// may give one file two names).
static LOADED: Mutex<Vec<(PathBuf, Opened)>> = Mutex::new(Vec::new());

/// A file's plugin, or why it is not usable.
type Opened = std::result::Result<Arc<Plugin>, String>;

thread_local! {
    /// Whether this thread is loading a plugin: running its library's constructors and its entry
    /// point, with [`LOADED`] held.
    static LOADING: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Loads and checks the plugin at `path` (once per process; later calls get the same outcome).
/// Refused while this thread is loading a plugin: a plugin's constructor or entry point that
/// creates a classifier would otherwise wait for [`LOADED`], which its own loading holds.
pub fn load(path: &Path) -> Result<Arc<Plugin>> {
    let refuse = |why: String| {
        Error::backend_unavailable(format!("plugin {} is not usable: {why}", path.display()))
    };
    if LOADING.get() {
        return Err(refuse(
            "it was asked for while another plugin was being loaded on this thread (a plugin's \
             library constructor or entry point called into the library)"
                .into(),
        ));
    }
    let expected = path
        .file_name()
        .and_then(|name| name.to_str())
        .and_then(name_of_file)
        .ok_or_else(|| refuse("its file name is not libgemma_cyber_<name>.so".into()))?;
    // Only a regular file: a FIFO or a device would block or feed the loader endless bytes.
    crate::fs::check_regular_file(path).map_err(|e| refuse(e.to_string()))?;
    let canonical = std::fs::canonicalize(path).map_err(|e| refuse(e.to_string()))?;
    let outcome = {
        let mut loaded = LOADED.lock().unwrap_or_else(PoisonError::into_inner);
        match loaded.iter().find(|(known, _)| *known == canonical) {
            Some((_, outcome)) => outcome.clone(),
            None => {
                // Until the plugin's code has run, or panicked.
                let loading = thread_flag::raise(&LOADING);
                let outcome = open_and_check(&canonical);
                drop(loading);
                loaded.push((canonical, outcome.clone()));
                outcome
            }
        }
    };
    outcome
        .and_then(|plugin| check_name(&plugin.name, expected).map(|()| plugin))
        .map_err(refuse)
}

/// A plugin must call itself what its file's name says.
fn check_name(name: &str, expected: &str) -> std::result::Result<(), String> {
    if name == expected {
        Ok(())
    } else {
        Err(format!(
            "it calls itself {name:?}, but its file is named for {expected:?}"
        ))
    }
}

/// dlopen, dlsym, the entry call and the table checks but the name's. Never unloads, even on
/// failure: the library's constructors have run and may have left state that code in it still
/// refers to.
#[cfg(unix)]
fn open_and_check(path: &Path) -> Opened {
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
    check_table(entry, Some(path.to_owned()))
}

#[cfg(not(unix))]
fn open_and_check(_path: &Path) -> Opened {
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
    let plugin = check_table(entry, path)?;
    check_name(&plugin.name, expected_name)?;
    Ok(plugin)
}

/// [`check`] but for the name.
fn check_table(
    entry: gemma_cyber_plugin_entry,
    path: Option<PathBuf>,
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
    // A flag this version does not define may be one a later version adds, meaning something
    // the core would then not do: refused rather than ignored.
    let unknown = table.flags & !gemma_cyber_plugin::abi::GEMMA_CYBER_PLUGIN_SERIAL;
    if unknown != 0 {
        return Err(format!(
            "it sets flags {unknown:#x}, which plugin ABI version \
             {GEMMA_CYBER_PLUGIN_ABI_VERSION} does not define (only SERIAL, 0x1)"
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
/// it is linked into statically. Found once: the library does not move.
#[cfg(unix)]
fn core_library_dir() -> Option<PathBuf> {
    static DIR: std::sync::OnceLock<Option<PathBuf>> = std::sync::OnceLock::new();
    DIR.get_or_init(|| {
        let here = core_library_dir as *const c_void;
        let file = mapped_file(here as usize).or_else(|| loaded_file(here))?;
        file.parent().map(Path::to_path_buf)
    })
    .clone()
}

/// The file mapped at `address`, as the kernel names it in `/proc/self/maps`: an absolute path,
/// whatever the working directory is now or was when the file was loaded.
#[cfg(target_os = "linux")]
fn mapped_file(address: usize) -> Option<PathBuf> {
    let maps = std::fs::read("/proc/self/maps").ok()?;
    maps.split(|&byte| byte == b'\n').find_map(|line| {
        // start-end perms offset device inode, then the path after the padding.
        let text = std::str::from_utf8(line.get(..line.iter().position(|&b| b == b'/')?)?).ok()?;
        let mut fields = text.split_whitespace();
        let (start, end) = fields.next()?.split_once('-')?;
        let range = usize::from_str_radix(start, 16).ok()?..usize::from_str_radix(end, 16).ok()?;
        if !range.contains(&address) {
            return None;
        }
        let (device, inode) = (fields.nth(2)?, fields.next()?);
        let path = &line[text.len()..];
        // A file replaced since it was mapped is named with this suffix: its directory may no
        // longer hold it, and a plain path can end so too.
        if path.ends_with(b" (deleted)") {
            return None;
        }
        mapped_path(path, device, inode)
    })
}

/// The file a `/proc/self/maps` line names. The kernel writes a newline in a path as the four
/// characters `\012` and leaves a backslash as it is, so a path holding `\012` may mean either:
/// then only the reading whose file is the mapped one (`device`, `major:minor` in hex, and
/// `inode`) is taken, or none. Taken as it stood, `/tmp/core\ndir/` was looked for as the other
/// directory, `/tmp/core\\012dir/`, which anyone could have made.
#[cfg(target_os = "linux")]
fn mapped_path(path: &[u8], device: &str, inode: &str) -> Option<PathBuf> {
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::fs::MetadataExt;

    const NEWLINE: &[u8] = b"\\012";
    let as_written = || PathBuf::from(std::ffi::OsStr::from_bytes(path));
    if !path.windows(NEWLINE.len()).any(|w| w == NEWLINE) {
        return Some(as_written());
    }
    let (major, minor) = device.split_once(':')?;
    let device = (
        u32::from_str_radix(major, 16).ok()?,
        u32::from_str_radix(minor, 16).ok()?,
    );
    let inode: u64 = inode.parse().ok()?;
    let mut decoded = Vec::with_capacity(path.len());
    let mut rest = path;
    while !rest.is_empty() {
        if rest.starts_with(NEWLINE) {
            decoded.push(b'\n');
            rest = &rest[NEWLINE.len()..];
        } else {
            decoded.push(rest[0]);
            rest = &rest[1..];
        }
    }
    [
        PathBuf::from(std::ffi::OsStr::from_bytes(&decoded)),
        as_written(),
    ]
    .into_iter()
    .find(|candidate| {
        std::fs::metadata(candidate).is_ok_and(|m| {
            m.ino() == inode && (libc::major(m.dev()), libc::minor(m.dev())) == device
        })
    })
}

#[cfg(not(target_os = "linux"))]
fn mapped_file(_address: usize) -> Option<PathBuf> {
    None
}

/// The file the dynamic loader says `address` comes from, only where it gives an absolute path:
/// a relative one was relative to the working directory of the time of loading, which may have
/// changed since, and resolving it now could find another file.
#[cfg(unix)]
fn loaded_file(address: *const c_void) -> Option<PathBuf> {
    // SAFETY: `info` is written by dladdr before it is read; the file name is copied at once.
    let file = unsafe {
        let mut info: libc::Dl_info = std::mem::zeroed();
        if libc::dladdr(address, &mut info) == 0 || info.dli_fname.is_null() {
            return None;
        }
        PathBuf::from(
            CStr::from_ptr(info.dli_fname)
                .to_string_lossy()
                .into_owned(),
        )
    };
    file.is_absolute().then_some(file)
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

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    /// The device and inode of `path` as `/proc/self/maps` writes them.
    fn as_in_maps(path: &Path) -> (String, String) {
        let m = std::fs::metadata(path).unwrap();
        (
            format!("{:02x}:{:02x}", libc::major(m.dev()), libc::minor(m.dev())),
            m.ino().to_string(),
        )
    }

    #[test]
    fn a_newline_in_a_mapped_path_is_read_back_to_the_mapped_file_only() {
        let scratch = std::env::temp_dir().join(format!("gemma-cyber-maps-{}", std::process::id()));
        let real = scratch.join("core\ndir");
        let lookalike = scratch.join("core\\012dir");
        for dir in [&real, &lookalike] {
            std::fs::create_dir_all(dir).unwrap();
            std::fs::write(dir.join("libgemma_cyber.so"), b"").unwrap();
        }
        // How the kernel writes the real file's path: the newline as \012.
        let written = format!("{}/core\\012dir/libgemma_cyber.so", scratch.display());
        let (device, inode) = as_in_maps(&real.join("libgemma_cyber.so"));
        assert_eq!(
            mapped_path(written.as_bytes(), &device, &inode),
            Some(real.join("libgemma_cyber.so"))
        );
        // The same text for a file that really is in the directory named with a backslash.
        let (device, inode) = as_in_maps(&lookalike.join("libgemma_cyber.so"));
        assert_eq!(
            mapped_path(written.as_bytes(), &device, &inode),
            Some(lookalike.join("libgemma_cyber.so"))
        );
        // Neither reading is the mapped file: none is taken.
        assert_eq!(mapped_path(written.as_bytes(), &device, "1"), None);
        // Without the sequence the path is taken as written, unchecked.
        assert_eq!(
            mapped_path(b"/usr/lib/libgemma_cyber.so", "00:00", "0"),
            Some(PathBuf::from("/usr/lib/libgemma_cyber.so"))
        );
        std::fs::remove_dir_all(&scratch).unwrap();
    }
}
