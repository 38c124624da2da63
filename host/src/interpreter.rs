//! Starting the embedded CPython: which interpreter, which virtualenv, which `sys.path`.
//!
//! The interpreter is initialised from a PEP 587 `PyConfig` so that nothing depends on the
//! caller's `PATH`: the program path is the virtualenv's `python` when one is configured (CPython
//! then reads its `pyvenv.cfg` exactly as it would for a venv interpreter), else the interpreter
//! this binary was built against. Python's own signal handlers are never installed; the host
//! owns SIGINT and SIGTERM.

use std::ffi::CString;
use std::mem::MaybeUninit;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use pyo3::ffi;
use pyo3::prelude::*;

use crate::error::StartupError;
use pyhost_core::config::Config;

/// The interpreter executable pyo3 was configured with when this binary was built.
const BUILD_PYTHON: &str = env!("PYHOST_BUILD_PYTHON");

static STARTED: OnceLock<Result<(), String>> = OnceLock::new();

/// Which virtualenv the interpreter uses, and why.
#[derive(Debug, Clone)]
pub(crate) struct VenvChoice {
    /// The virtualenv directory.
    pub path: PathBuf,
    /// `app.venv` or `VIRTUAL_ENV`.
    pub origin: &'static str,
}

/// Picks the virtualenv: `app.venv` from the config, else `VIRTUAL_ENV` from the environment.
pub(crate) fn venv_for(config: &Config) -> Result<Option<VenvChoice>, StartupError> {
    if let Some(path) = &config.venv {
        return Ok(Some(VenvChoice {
            path: path.clone(),
            origin: "app.venv",
        }));
    }
    match std::env::var_os("VIRTUAL_ENV") {
        Some(value) if !value.is_empty() => {
            let path = PathBuf::from(value);
            pyhost_core::config::check_venv(&path).map_err(|message| {
                StartupError::Interpreter {
                    file: config.source.clone(),
                    message: format!("VIRTUAL_ENV: {message}"),
                }
            })?;
            Ok(Some(VenvChoice {
                path,
                origin: "VIRTUAL_ENV",
            }))
        }
        _ => Ok(None),
    }
}

/// Initialises the interpreter once per process; later calls return the first outcome.
/// `register_modules` runs just before, to add the host's built-in modules to the inittab.
///
/// Must run before any `Python::attach`. The GIL is released before returning, so any thread
/// may attach afterwards.
pub(crate) fn initialize(config: &Config, register_modules: fn()) -> Result<(), StartupError> {
    let venv = venv_for(config)?;
    let outcome = STARTED.get_or_init(|| {
        let program = match &venv {
            Some(choice) => Some(venv_python(choice)?),
            None if !BUILD_PYTHON.is_empty() && Path::new(BUILD_PYTHON).exists() => {
                Some(PathBuf::from(BUILD_PYTHON))
            }
            None => None,
        };
        init_from_config(program.as_deref(), register_modules)
    });
    outcome
        .clone()
        .map_err(|message| StartupError::Interpreter {
            file: config.source.clone(),
            message,
        })
}

/// Finds the venv's interpreter and checks it has the Python version this binary embeds.
fn venv_python(choice: &VenvChoice) -> Result<PathBuf, String> {
    let origin = choice.origin;
    let cfg_path = choice.path.join("pyvenv.cfg");
    let cfg = std::fs::read_to_string(&cfg_path)
        .map_err(|err| format!("{origin}: cannot read {}: {err}", cfg_path.display()))?;
    let version = cfg.lines().find_map(|line| {
        let (key, value) = line.split_once('=')?;
        matches!(key.trim(), "version" | "version_info").then(|| value.trim().to_owned())
    });
    let embedded = embedded_version();
    if let Some(version) = &version {
        let minor: Vec<&str> = version.split('.').take(2).collect();
        if minor.join(".") != embedded {
            return Err(format!(
                "{origin}: the virtualenv {} was made with Python {version}, but this pyhost embeds Python {embedded}; recreate it with python{embedded}",
                choice.path.display()
            ));
        }
    }
    for name in ["python3", "python"] {
        let candidate = choice.path.join("bin").join(name);
        if candidate.exists() {
            return Ok(candidate);
        }
    }
    Err(format!(
        "{origin}: {} has no bin/python3",
        choice.path.display()
    ))
}

/// `major.minor` of the libpython this binary links.
fn embedded_version() -> String {
    // SAFETY: Py_GetVersion only reads a static string and may be called before initialisation.
    let raw = unsafe { std::ffi::CStr::from_ptr(ffi::Py_GetVersion()) };
    let text = raw.to_string_lossy();
    let number = text.split_whitespace().next().unwrap_or_default();
    number.split('.').take(2).collect::<Vec<_>>().join(".")
}

fn init_from_config(program: Option<&Path>, register_modules: fn()) -> Result<(), String> {
    // SAFETY: single-threaded at this point (guarded by STARTED); the PyConfig is initialised by
    // PyConfig_InitPythonConfig before any field is touched, and cleared on every path.
    unsafe {
        if ffi::Py_IsInitialized() != 0 {
            return Ok(());
        }
        // Built-in modules must be registered before the interpreter starts.
        register_modules();
        let mut config = MaybeUninit::<ffi::PyConfig>::uninit();
        ffi::PyConfig_InitPythonConfig(config.as_mut_ptr());
        let config = config.assume_init_mut();
        config.install_signal_handlers = 0;
        config.parse_argv = 0;
        if let Some(program) = program {
            let text = CString::new(program.as_os_str().as_encoded_bytes())
                .map_err(|_| "interpreter path contains a NUL byte".to_owned())?;
            let status =
                ffi::PyConfig_SetBytesString(config, &mut config.executable, text.as_ptr());
            if ffi::PyStatus_Exception(status) != 0 {
                ffi::PyConfig_Clear(config);
                return Err(status_message(&status, "setting the interpreter path"));
            }
        }
        let status = ffi::Py_InitializeFromConfig(config);
        ffi::PyConfig_Clear(config);
        if ffi::PyStatus_Exception(status) != 0 {
            return Err(status_message(&status, "initialising Python"));
        }
        // `threading` records the thread that first imports it as the main thread. Import it
        // here, on the thread that initialised Python, or the loop thread would be taken for
        // the main one and uvloop would try to install signal wake-ups there and fail.
        let threading = ffi::PyImport_ImportModule(c"threading".as_ptr());
        if threading.is_null() {
            ffi::PyErr_Clear();
        } else {
            ffi::Py_DecRef(threading);
        }
        // Py_InitializeFromConfig leaves this thread holding the GIL; release it so the loop
        // thread (and pyo3's attach) can take it.
        ffi::PyEval_SaveThread();
    }
    Ok(())
}

fn status_message(status: &ffi::PyStatus, doing: &str) -> String {
    if status.err_msg.is_null() {
        format!("{doing} failed")
    } else {
        // SAFETY: err_msg is a NUL-terminated static string set by CPython.
        let msg = unsafe { std::ffi::CStr::from_ptr(status.err_msg) };
        format!("{doing} failed: {}", msg.to_string_lossy())
    }
}

/// What the interpreter ended up with, for `pyhost check` and the start-up log.
#[derive(Debug, Clone)]
pub struct InterpreterInfo {
    /// `sys.version`.
    pub version: String,
    /// `sys.executable`.
    pub executable: String,
    /// `sys.prefix`.
    pub prefix: String,
    /// `sys.base_prefix`.
    pub base_prefix: String,
    /// `sys.path` after the handler directories were added.
    pub path: Vec<String>,
}

/// Serves the bundled SDK, puts the handler directories at the front of `sys.path` and reports
/// the interpreter's state.
///
/// GIL: held by the caller (`py`).
pub(crate) fn prepare_paths(py: Python<'_>, config: &Config) -> PyResult<InterpreterInfo> {
    if let Some(note) = crate::bundled_sdk::install(py)? {
        tracing::warn!("{note}");
    }
    let sys = py.import("sys")?;
    let path = sys.getattr("path")?;
    let mut dirs: Vec<&std::path::PathBuf> = Vec::new();
    for dir in config.plugins.iter().flat_map(|plugin| plugin.paths.iter()) {
        if !dirs.contains(&dir) {
            dirs.push(dir);
        }
    }
    for dir in dirs.into_iter().rev() {
        let text = dir.to_string_lossy();
        if !path.contains(text.as_ref())? {
            path.call_method1("insert", (0, text.as_ref()))?;
        }
    }
    Ok(InterpreterInfo {
        version: sys.getattr("version")?.extract()?,
        executable: sys.getattr("executable")?.extract()?,
        prefix: sys.getattr("prefix")?.extract()?,
        base_prefix: sys.getattr("base_prefix")?.extract()?,
        path: path.extract()?,
    })
}

/// Formats a Python exception with its traceback, as Python would print it.
///
/// GIL: held by the caller (`py`).
pub(crate) fn format_exception(py: Python<'_>, err: &PyErr) -> String {
    let formatted = py.import("traceback").and_then(|tb| {
        tb.call_method1("format_exception", (err.value(py),))?
            .extract::<Vec<String>>()
    });
    match formatted {
        Ok(lines) => lines.concat().trim_end().to_owned(),
        Err(_) => err.to_string(),
    }
}
