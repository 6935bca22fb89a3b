//! Every backend the suite runs, built-in or plugin, and one way to drive each through the Rust
//! API and through the C ABI.

use std::ffi::{c_char, CStr, CString};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use gemma_cyber::ffi::*;
use gemma_cyber::{BackendKind, Classifier, ModelSource, Options, Status};

use super::repo_path;

/// A backend under test: how to ask for it.
#[derive(Clone, Debug)]
pub struct Target {
    /// Its name in test messages.
    pub name: &'static str,
    pub backend: BackendKind,
    pub plugin_name: Option<&'static str>,
    pub plugin_dir: Option<PathBuf>,
}

/// ONNX Runtime's library, from GEMMA_CYBER_ONNXRUNTIME_LIB (tools/test.sh sets it); a loud
/// failure, never a skip, when it is unset.
pub fn onnxruntime_library() -> PathBuf {
    match std::env::var_os("GEMMA_CYBER_ONNXRUNTIME_LIB") {
        Some(path) if !path.is_empty() => PathBuf::from(path),
        _ => panic!(
            "GEMMA_CYBER_ONNXRUNTIME_LIB is unset, so the onnxruntime plugin cannot be tested. \
             Run the whole suite with tools/test.sh, or fetch ONNX Runtime with \
             tools/fetch_onnxruntime.sh and set \
             GEMMA_CYBER_ONNXRUNTIME_LIB=$PWD/$(cat .ort/LIBRARY_PATH)"
        ),
    }
}

/// How to get a Vulkan adapter, for wgpu failures.
pub const HOW_TO_GET_AN_ADAPTER: &str = "the wgpu plugin needs a Vulkan adapter: run \
    tools/setup.sh (it installs Mesa's lavapipe, Debian package mesa-vulkan-drivers from \
    bookworm-backports)";

/// A scratch directory for this test process under cargo's temporary directory, `name-PID`. The
/// ones earlier processes left under the same name are removed once those processes have ended:
/// each run leaves its own (plugins copied in, tens of MB in all), and the disk CI runs on is
/// shared. A concurrent run's directories are left alone.
pub fn scratch_dir(name: &str) -> PathBuf {
    let base = Path::new(env!("CARGO_TARGET_TMPDIR"));
    for entry in std::fs::read_dir(base).into_iter().flatten().flatten() {
        let file_name = entry.file_name();
        let pid = file_name
            .to_str()
            .and_then(|file_name| file_name.strip_prefix(name)?.strip_prefix('-'))
            .and_then(|pid| pid.parse::<u32>().ok());
        if pid.is_some_and(|pid| !Path::new(&format!("/proc/{pid}")).exists()) {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
    let dir = base.join(format!("{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The plain-C example plugin (examples/plugin-c), built once per test process with its own
/// documented build script; returns the directory holding `libgemma_cyber_example_c.so`.
pub fn example_c_plugin_dir() -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = scratch_dir("plugin-c");
        let output = Command::new("bash")
            .arg(repo_path("examples/plugin-c/build.sh"))
            .arg(&dir)
            .output()
            .expect("sh runs");
        assert!(
            output.status.success(),
            "examples/plugin-c/build.sh failed:\n{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(dir.join("libgemma_cyber_example_c.so").is_file());
        dir
    })
    .clone()
}

/// Compiles the C plugin `tests/plugins/NAME.c` into `dir/libgemma_cyber_NAME.so`.
pub fn build_c_plugin(name: &str, dir: &Path) -> PathBuf {
    build_c_plugin_with(name, dir, &[])
}

/// The same with extra compiler arguments (e.g. `-DSERIAL_FLAGS=0`).
pub fn build_c_plugin_with(name: &str, dir: &Path, extra: &[&str]) -> PathBuf {
    let output = dir.join(format!("libgemma_cyber_{name}.so"));
    let status = Command::new(std::env::var("CC").unwrap_or_else(|_| "cc".into()))
        .args([
            "-std=c11", "-O1", "-fPIC", "-shared", "-Wall", "-Wextra", "-Werror",
        ])
        .args(extra)
        .arg(format!("-I{}", repo_path("include").display()))
        .arg(format!("-I{}", repo_path("examples/plugin-c").display()))
        .arg(repo_path(&format!("tests/plugins/{name}.c")))
        .arg("-lm")
        .arg("-o")
        .arg(&output)
        .status()
        .expect("the C compiler runs");
    assert!(status.success(), "tests/plugins/{name}.c does not compile");
    output
}

/// Every backend: cpu, the onnxruntime and wgpu plugins, and the plain-C example plugin.
pub fn all_targets() -> Vec<Target> {
    // The onnxruntime plugin finds its library through the environment; fail early if unset.
    onnxruntime_library();
    vec![
        Target {
            name: "cpu",
            backend: BackendKind::Cpu,
            plugin_name: None,
            plugin_dir: None,
        },
        Target {
            name: "onnxruntime",
            backend: BackendKind::Onnxruntime,
            plugin_name: None,
            plugin_dir: None,
        },
        Target {
            name: "wgpu",
            backend: BackendKind::Wgpu,
            plugin_name: None,
            plugin_dir: None,
        },
        Target {
            name: "example_c",
            backend: BackendKind::Plugin,
            plugin_name: Some("example_c"),
            plugin_dir: Some(example_c_plugin_dir()),
        },
    ]
}

impl Target {
    /// Rust API options for this backend and `model`.
    pub fn options(&self, model: ModelSource) -> Options {
        Options {
            backend: self.backend,
            model,
            plugin_name: self.plugin_name.map(str::to_owned),
            plugin_dir: self.plugin_dir.clone(),
            ..Options::default()
        }
    }

    /// A classifier through the Rust API; a failure names the backend (and how to get wgpu).
    pub fn rust(&self, model: &Path) -> Classifier {
        Classifier::new(&self.options(ModelSource::Path(model.to_owned())))
            .unwrap_or_else(|e| panic!("{}: {e}\n{HOW_TO_GET_AN_ADAPTER}", self.name))
    }

    /// A classifier through the C ABI.
    pub fn c(&self, model: &Path) -> CClassifier {
        self.try_c(model)
            .unwrap_or_else(|(status, e)| panic!("{}: {status:?} {e}", self.name))
    }

    /// A classifier through the C ABI, or the status and message of the failure.
    pub fn try_c(&self, model: &Path) -> Result<CClassifier, (Status, String)> {
        let model = CString::new(model.to_str().unwrap()).unwrap();
        let plugin_name = self.plugin_name.map(|n| CString::new(n).unwrap());
        let plugin_dir = self
            .plugin_dir
            .as_ref()
            .map(|d| CString::new(d.to_str().unwrap()).unwrap());
        // SAFETY: the options are initialised by the library and every string outlives create.
        unsafe {
            let mut options = std::mem::zeroed::<gemma_cyber_options>();
            gemma_cyber_options_init(&mut options, std::mem::size_of::<gemma_cyber_options>());
            options.backend = self.backend;
            options.model_path = model.as_ptr();
            options.plugin_name = plugin_name
                .as_ref()
                .map_or(std::ptr::null(), |n| n.as_ptr());
            options.plugin_dir = plugin_dir.as_ref().map_or(std::ptr::null(), |d| d.as_ptr());
            let mut handle = std::ptr::null_mut();
            match gemma_cyber_create(&options, &mut handle) {
                Status::Ok => Ok(CClassifier(handle)),
                status => Err((status, last_error())),
            }
        }
    }
}

/// This thread's last error from the C ABI.
pub fn last_error() -> String {
    // SAFETY: the library returns a NUL-terminated string it owns.
    unsafe { CStr::from_ptr(gemma_cyber_last_error()) }
        .to_string_lossy()
        .into_owned()
}

/// A classifier made through the C ABI, destroyed on drop.
pub struct CClassifier(pub *mut gemma_cyber_classifier);

// SAFETY: the C ABI allows classify and the accessors from many threads at once.
unsafe impl Send for CClassifier {}
// SAFETY: as above.
unsafe impl Sync for CClassifier {}

impl Drop for CClassifier {
    fn drop(&mut self) {
        // SAFETY: a live classifier, destroyed once.
        unsafe { gemma_cyber_destroy(self.0) }
    }
}

impl CClassifier {
    /// The backend running.
    pub fn backend(&self) -> BackendKind {
        // SAFETY: a live classifier.
        unsafe { gemma_cyber_active_backend(self.0) }
    }

    /// The device name.
    pub fn device_name(&self) -> String {
        // SAFETY: a live classifier; the name is NUL-terminated and owned by it.
        unsafe { CStr::from_ptr(gemma_cyber_device_name(self.0)) }
            .to_string_lossy()
            .into_owned()
    }

    /// The model's input width.
    pub fn input_dim(&self) -> usize {
        // SAFETY: a live classifier.
        unsafe { gemma_cyber_input_dim(self.0) }
    }
}

/// What the suite needs of a classifier, whichever API made it.
pub trait Classify: Sync {
    /// Probabilities for `embeddings` (`dim` a row), or the status and message of the failure.
    fn probabilities(&self, embeddings: &[f32], dim: usize) -> Result<Vec<f32>, (Status, String)>;
}

impl Classify for Classifier {
    fn probabilities(&self, embeddings: &[f32], dim: usize) -> Result<Vec<f32>, (Status, String)> {
        let rows = embeddings.len() / dim.max(1);
        let mut probabilities = vec![f32::NAN; rows];
        self.classify(embeddings, dim, &mut probabilities, None)
            .map(|()| probabilities)
            .map_err(|e| (e.status(), e.message().to_owned()))
    }
}

impl Classify for CClassifier {
    fn probabilities(&self, embeddings: &[f32], dim: usize) -> Result<Vec<f32>, (Status, String)> {
        let rows = embeddings.len() / dim.max(1);
        let mut probabilities = vec![f32::NAN; rows];
        // SAFETY: `rows × dim` readable floats and `rows` writable ones.
        let status = unsafe {
            gemma_cyber_classify(
                self.0,
                embeddings.as_ptr(),
                rows,
                dim,
                probabilities.as_mut_ptr(),
                std::ptr::null_mut(),
            )
        };
        match status {
            Status::Ok => Ok(probabilities),
            status => Err((status, last_error())),
        }
    }
}

/// A NULL-terminated array of C strings, kept alive with its strings.
pub struct CStrings {
    _strings: Vec<CString>,
    pointers: Vec<*const c_char>,
}

impl CStrings {
    pub fn new(items: &[&str]) -> CStrings {
        let strings: Vec<CString> = items.iter().map(|s| CString::new(*s).unwrap()).collect();
        let mut pointers: Vec<*const c_char> = strings.iter().map(|s| s.as_ptr()).collect();
        pointers.push(std::ptr::null());
        CStrings {
            _strings: strings,
            pointers,
        }
    }

    pub fn as_ptr(&self) -> *const *const c_char {
        self.pointers.as_ptr()
    }
}
