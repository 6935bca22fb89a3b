//! The onnxruntime backend: the model as an ONNX graph, run by ONNX Runtime loaded at run time.
//!
//! ONNX Runtime is never linked: its shared library is found and opened when a classifier asks for
//! this backend, so the library loads and serves the other backends where ONNX Runtime is absent.
//! Where it looks, in order: the `library` setting (the C API's `options.onnxruntime_library`
//! arrives as it), `GEMMA_CYBER_ONNXRUNTIME_LIB`, `ORT_DYLIB_PATH`, then the platform's usual names
//! through the system loader. The first one set is the only one tried, so a wrong path is an error
//! rather than a silent fallback.
//!
//! One process holds one ONNX Runtime: the first library that loads serves every later classifier,
//! and asking for a different one afterwards is BACKEND_UNAVAILABLE.

#[path = "graph.rs"]
mod graph;

use std::ffi::{CStr, CString, OsString};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use ort::environment::Environment;
use ort::session::builder::GraphOptimizationLevel;
use ort::session::Session;
use ort::value::TensorRef;

use gemma_cyber_plugin::{panic_message, Backend, Error, Model, OnDrop, Pool, Result, Settings};

/// Environment variable naming ONNX Runtime's shared library, read when the settings name none.
const LIBRARY_ENV: &str = "GEMMA_CYBER_ONNXRUNTIME_LIB";
/// ort's own environment variable, honoured after ours so existing deployments keep working.
const ORT_LIBRARY_ENV: &str = "ORT_DYLIB_PATH";

/// Names the system loader is asked for when no path is given.
#[cfg(target_os = "linux")]
const SYSTEM_NAMES: &[&str] = &["libonnxruntime.so", "libonnxruntime.so.1"];
#[cfg(target_os = "macos")]
const SYSTEM_NAMES: &[&str] = &["libonnxruntime.dylib"];
#[cfg(not(any(target_os = "linux", target_os = "macos")))]
const SYSTEM_NAMES: &[&str] = &[];

/// How to get a usable ONNX Runtime, appended to every "not found" message.
const INSTALL_HINT: &str = "install ONNX Runtime 1.17 or newer (e.g. `pip download onnxruntime` \
     and take onnxruntime/capi/libonnxruntime.so* from the wheel, or a release from \
     github.com/microsoft/onnxruntime) and point GEMMA_CYBER_ONNXRUNTIME_LIB or \
     options.onnxruntime_library (the plugin setting `onnxruntime.library`) at the library file";

/// The ONNX Runtime this process loaded, shared by every classifier on this backend.
struct Runtime {
    /// Canonical path of the shared library.
    library: PathBuf,
    /// ONNX Runtime's own version string, e.g. `1.31.1`.
    version: String,
    environment: Environment,
}

/// The process's ONNX Runtime: none handed to ort yet (a library that fails the checks before may
/// be followed by another), running, or failed to start after ort took it, which ort keeps for
/// the rest of the process.
enum Loaded {
    Running(Arc<Runtime>),
    Failed { library: PathBuf, why: String },
}

static RUNTIME: Mutex<Option<Loaded>> = Mutex::new(None);

/// Runs the model as an ONNX graph in ONNX Runtime, with a pool of sessions.
///
/// ort's `Session::run` takes `&mut self`, so each concurrent `classify` borrows a session of its
/// own from the pool (made on demand, at most one per core's worth of threads) rather than queueing
/// on one. ONNX Runtime documents `Run` as safe to call concurrently, but ort's authors found it
/// not to be in practice, so a session is never shared.
pub struct OnnxruntimeBackend {
    runtime: Arc<Runtime>,
    /// The serialized ONNX model every session of the pool is made from.
    graph: Vec<u8>,
    input_dim: usize,
    /// Intra-op threads of each session.
    threads: usize,
    /// Sessions, at most cores / threads; a session keeps no state between runs, so one whose
    /// call failed or panicked goes back too.
    sessions: Pool<Session>,
    device_name: CString,
}

impl OnnxruntimeBackend {
    fn start(
        model: &Model<'_>,
        threads: usize,
        library: Option<&Path>,
    ) -> Result<OnnxruntimeBackend> {
        let runtime = load_runtime(library)?;
        // Threads beyond the cores would only wait for them: 1,024 on 2 cores took 15 s to start.
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let threads = if threads == 0 { 1 } else { threads.min(cores) };
        // Sessions beyond cores / threads would only make threads wait for cores.
        let max_sessions = (cores / threads).max(1);
        let device_name = format!(
            "ONNX Runtime {} (CPUExecutionProvider), {} thread{} a session, {}",
            runtime.version,
            threads,
            if threads == 1 { "" } else { "s" },
            runtime.library.display()
        );
        let device_name = CString::new(device_name.replace('\0', " ")).expect("NULs were replaced");
        let mut backend = OnnxruntimeBackend {
            runtime,
            graph: graph::onnx_model(model),
            input_dim: model.input_dim(),
            threads,
            sessions: Pool::new(max_sessions, OnDrop::Return),
            device_name,
        };
        // One session up front, so a graph ONNX Runtime rejects fails create, not classify.
        let first = backend
            .new_session()
            .map_err(|e| Error::backend_unavailable(e.message()))?;
        backend.sessions.put(first);
        Ok(backend)
    }

    fn new_session(&self) -> Result<Session> {
        Session::builder(&self.runtime.environment)
            .map_err(session_failure)?
            .with_intra_threads(self.threads)
            .map_err(session_failure)?
            // One chain of nodes: parallel execution of the graph would only add threads.
            .with_inter_threads(1)
            .map_err(session_failure)?
            .with_optimization_level(GraphOptimizationLevel::All)
            .map_err(session_failure)?
            .commit_from_memory(&self.graph)
            .map_err(session_failure)
    }
}

fn session_failure(e: impl std::fmt::Display) -> Error {
    Error::backend_failure(format!("ONNX Runtime could not make a session: {e}"))
}

impl Backend for OnnxruntimeBackend {
    const NAME: &'static CStr = c"onnxruntime";
    const VERSION: &'static CStr = gemma_cyber_plugin::package_version!();

    /// Loads ONNX Runtime (see the module docs for where it looks), builds the model's graph and
    /// makes a first session, each session using `num_threads` intra-op threads (0: one a
    /// session, since concurrent callers get sessions of their own). Settings: `library`.
    ///
    /// Any failure, a panic of ort included, is BACKEND_UNAVAILABLE saying where it looked.
    fn create(model: &Model<'_>, mut settings: Settings) -> Result<Self> {
        let library = settings.take("library").map(PathBuf::from);
        let threads = settings.num_threads()?;
        // ONNX Runtime runs on the CPU, so AUTO may pick it on any machine.
        settings.auto()?;
        settings.finish()?;
        catch_unwind(AssertUnwindSafe(|| {
            Self::start(model, threads, library.as_deref())
        }))
        .unwrap_or_else(|payload| {
            Err(Error::backend_unavailable(format!(
                "ONNX Runtime failed to start: {}",
                panic_message(payload.as_ref())
            )))
        })
    }

    fn device_name(&self) -> &CStr {
        &self.device_name
    }

    fn classify(&self, embeddings: &[f32], rows: usize, probabilities: &mut [f32]) -> Result<()> {
        let mut session = self
            .sessions
            .lease(|idle| idle.map_or_else(|| self.new_session(), Ok))?;
        run(
            &mut session,
            embeddings,
            rows,
            self.input_dim,
            probabilities,
        )
    }
}

/// Rows ONNX Runtime is given per run. Its memory arena keeps what the largest run needed until
/// the session is dropped (one 200,000-row call left 1.9 GB resident, and a session per core may
/// each keep that much), and runs of about 4,096 rows were also its fastest per row (`compare.py`
/// on the AVX-512 Xeon, one thread: 124k rows/s against 99k at 65,536 rows).
const RUN_ROWS: usize = 4096;

/// Classifies `rows` rows in runs of at most [`RUN_ROWS`].
fn run(
    session: &mut Session,
    embeddings: &[f32],
    rows: usize,
    dim: usize,
    probabilities: &mut [f32],
) -> Result<()> {
    for (input, output) in embeddings
        .chunks(RUN_ROWS * dim)
        .zip(probabilities.chunks_mut(RUN_ROWS))
    {
        run_once(session, input, output.len(), dim, output)?;
    }
    debug_assert_eq!(probabilities.len(), rows);
    Ok(())
}

fn run_once(
    session: &mut Session,
    embeddings: &[f32],
    rows: usize,
    dim: usize,
    probabilities: &mut [f32],
) -> Result<()> {
    let failure = |e: ort::Error| Error::backend_failure(format!("ONNX Runtime: {e}"));
    let input = TensorRef::from_array_view(([rows, dim], embeddings)).map_err(failure)?;
    let outputs = session.run(ort::inputs![input]).map_err(failure)?;
    let (_, values) = outputs[graph::OUTPUT]
        .try_extract_tensor::<f32>()
        .map_err(failure)?;
    if values.len() != rows {
        return Err(Error::backend_failure(format!(
            "ONNX Runtime returned {} probabilities for {rows} rows",
            values.len()
        )));
    }
    probabilities.copy_from_slice(values);
    Ok(())
}

/// Where to find the library: the first of the options' path and the environment variables that is
/// set, with where it came from, or `None` to ask the system loader.
fn requested_library(library: Option<&Path>) -> Option<(PathBuf, String)> {
    if let Some(path) = library {
        return Some((path.to_owned(), "the library setting".into()));
    }
    [LIBRARY_ENV, ORT_LIBRARY_ENV].into_iter().find_map(|name| {
        std::env::var_os(name)
            .filter(|value| !value.is_empty())
            .map(|value: OsString| (PathBuf::from(value), name.to_string()))
    })
}

/// Ok when `path` is a regular file (after symbolic links): a FIFO would block the loader's open,
/// and a device would feed it endless bytes.
fn regular_file(path: &Path) -> std::io::Result<()> {
    let metadata = std::fs::metadata(path)?;
    if metadata.is_file() {
        return Ok(());
    }
    let file_type = metadata.file_type();
    #[cfg(unix)]
    let special = {
        use std::os::unix::fs::FileTypeExt;
        [
            (file_type.is_fifo(), "a FIFO (named pipe)"),
            (file_type.is_char_device(), "a character device"),
            (file_type.is_block_device(), "a block device"),
            (file_type.is_socket(), "a socket"),
        ]
        .into_iter()
        .find_map(|(is, what)| is.then_some(what))
    };
    #[cfg(not(unix))]
    let special = None;
    let what = if file_type.is_dir() {
        "a directory"
    } else {
        special.unwrap_or("something other than a file")
    };
    Err(std::io::Error::new(
        std::io::ErrorKind::InvalidInput,
        format!("it is {what}, not a regular file"),
    ))
}

/// The process's ONNX Runtime, loading it first if no classifier has yet.
fn load_runtime(library: Option<&Path>) -> Result<Arc<Runtime>> {
    let path = match requested_library(library) {
        // Checked before the loader opens it: a FIFO there would block the open for ever.
        Some((path, source)) => regular_file(&path)
            .and_then(|()| std::fs::canonicalize(&path))
            .map_err(|e| {
                Error::backend_unavailable(format!(
                    "ONNX Runtime library {} (from {source}) cannot be opened: {e}; {INSTALL_HINT}",
                    path.display()
                ))
            })?,
        None => system_library()?,
    };
    let version = probe(&path)?;
    let mut loaded = RUNTIME.lock().unwrap_or_else(PoisonError::into_inner);
    match loaded.as_ref() {
        Some(Loaded::Running(runtime)) if runtime.library == path => {
            return Ok(Arc::clone(runtime));
        }
        Some(Loaded::Running(runtime)) => {
            return Err(Error::backend_unavailable(format!(
                "this process already runs ONNX Runtime {} from {} and cannot also load {}; give \
                 every classifier the same library (the library setting or {LIBRARY_ENV})",
                runtime.version,
                runtime.library.display(),
                path.display()
            )))
        }
        Some(Loaded::Failed { library, why }) => {
            return Err(Error::backend_unavailable(format!(
                "ONNX Runtime from {} failed to start in this process ({why}), and a process \
                 loads ONNX Runtime once: {} cannot be tried in it; start a new process with a \
                 working library",
                library.display(),
                path.display()
            )))
        }
        None => {}
    }
    // ort opens the library once per process, from this absolute path (a relative one would be
    // resolved against the executable's folder, not the caller's working directory). From here
    // on ort holds the library whatever happens, so a failure, a panic of ort's included, is
    // remembered rather than retried with another.
    let started = catch_unwind(AssertUnwindSafe(|| {
        ort::init_from(&path)
            .map_err(|e| format!("it cannot be used: {e}"))?
            .with_name("gemma-cyber")
            .with_telemetry(false)
            .build()
            .map_err(|e| format!("it could not start: {e}"))
    }))
    .unwrap_or_else(|payload| Err(format!("ort panicked: {}", panic_message(payload.as_ref()))));
    let environment = match started {
        Ok(environment) => environment,
        Err(why) => {
            let error = Error::backend_unavailable(format!(
                "ONNX Runtime at {}: {why}; {INSTALL_HINT}",
                path.display()
            ));
            *loaded = Some(Loaded::Failed { library: path, why });
            return Err(error);
        }
    };
    let runtime = Arc::new(Runtime {
        library: path,
        version,
        environment,
    });
    *loaded = Some(Loaded::Running(Arc::clone(&runtime)));
    Ok(runtime)
}

/// Opens `path` on its own to check that it is ONNX Runtime and new enough, before ort is handed
/// it (ort would accept any library once, and only fail later). Returns its version string.
#[cfg(unix)]
fn probe(path: &Path) -> Result<String> {
    use std::os::unix::ffi::OsStrExt;

    let unusable = |why: String| {
        Error::backend_unavailable(format!(
            "{} is not a usable ONNX Runtime library: {why}; {INSTALL_HINT}",
            path.display()
        ))
    };
    let c_path = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| unusable("the path contains a NUL byte".into()))?;
    // SAFETY: a NUL-terminated path; the handle is closed below on every path out.
    let handle = unsafe { libc::dlopen(c_path.as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL) };
    if handle.is_null() {
        return Err(unusable(dlerror()));
    }
    // SAFETY: `handle` is live; `OrtGetApiBase` has this signature in every ONNX Runtime, and the
    // version string it leads to is static in the library, copied before the handle is closed.
    let version = unsafe {
        let symbol = libc::dlsym(handle, c"OrtGetApiBase".as_ptr());
        let version = if symbol.is_null() {
            Err(unusable("it does not export OrtGetApiBase".into()))
        } else {
            let get_api_base: unsafe extern "C" fn() -> *const ort::sys::OrtApiBase =
                std::mem::transmute(symbol);
            let base = get_api_base();
            if base.is_null() {
                Err(unusable("OrtGetApiBase returned NULL".into()))
            } else if ((*base).GetApi)(ort::sys::ORT_API_VERSION).is_null() {
                // What ort asks for first: without it ort panics once it holds the library, and
                // keeps that library for the rest of the process.
                Err(unusable(format!(
                    "it does not offer the ONNX Runtime API version {}",
                    ort::sys::ORT_API_VERSION
                )))
            } else {
                let version = ((*base).GetVersionString)();
                if version.is_null() {
                    Err(unusable("it gives no version string".into()))
                } else {
                    Ok(CStr::from_ptr(version).to_string_lossy().into_owned())
                }
            }
        };
        libc::dlclose(handle);
        version?
    };
    let mut numbers = version.split('.').map(|n| n.parse::<u32>().ok());
    match (numbers.next().flatten(), numbers.next().flatten()) {
        (Some(1), Some(minor)) if minor >= ort::MINOR_VERSION => Ok(version),
        // A later major version: ort checks what it can use when it loads the library.
        (Some(major), _) if major > 1 => Ok(version),
        _ => Err(unusable(format!(
            "it is version {version}; gemma-cyber needs 1.{} or newer",
            ort::MINOR_VERSION
        ))),
    }
}

#[cfg(not(unix))]
fn probe(_path: &Path) -> Result<String> {
    Ok("(version unknown)".into())
}

/// The first of [`SYSTEM_NAMES`] the system loader finds, as an absolute path.
#[cfg(unix)]
fn system_library() -> Result<PathBuf> {
    let mut errors = Vec::new();
    for name in SYSTEM_NAMES {
        let c_name = CString::new(*name).expect("no NUL in the names");
        // SAFETY: a NUL-terminated name; the handle is closed before returning.
        let handle = unsafe { libc::dlopen(c_name.as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL) };
        if handle.is_null() {
            errors.push(dlerror());
            continue;
        }
        // The loader knows where it found the library: ask it through a symbol's address.
        // SAFETY: `handle` is live until dlclose; `info` is written by dladdr before it is read,
        // and the file name is copied before the handle is closed.
        let path = unsafe {
            let symbol = libc::dlsym(handle, c"OrtGetApiBase".as_ptr());
            let mut info: libc::Dl_info = std::mem::zeroed();
            let path = (!symbol.is_null()
                && libc::dladdr(symbol, &mut info) != 0
                && !info.dli_fname.is_null())
            .then(|| PathBuf::from(CStr::from_ptr(info.dli_fname).to_string_lossy().as_ref()));
            libc::dlclose(handle);
            path
        };
        match path.map(std::fs::canonicalize) {
            Some(Ok(path)) => return Ok(path),
            Some(Err(e)) => errors.push(format!("{name}: {e}")),
            None => errors.push(format!("{name} does not export OrtGetApiBase")),
        }
    }
    Err(Error::backend_unavailable(format!(
        "ONNX Runtime not found: the library setting, {LIBRARY_ENV} and {ORT_LIBRARY_ENV} \
         are unset, and the system loader found none of {} ({}); {INSTALL_HINT}",
        SYSTEM_NAMES.join(", "),
        errors.join("; ")
    )))
}

#[cfg(not(unix))]
fn system_library() -> Result<PathBuf> {
    Err(Error::backend_unavailable(format!(
        "ONNX Runtime not found: the library setting, {LIBRARY_ENV} and {ORT_LIBRARY_ENV} \
         are unset, and this platform has no system search; {INSTALL_HINT}"
    )))
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
            std::ffi::CStr::from_ptr(message)
                .to_string_lossy()
                .into_owned()
        }
    }
}
