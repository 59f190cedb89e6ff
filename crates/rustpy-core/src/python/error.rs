//! Python exceptions as core errors.

use pyo3::prelude::*;

use super::runtime::runtime;
use crate::error::{Error, ErrorCode};

/// A Python exception as a core error: "`what`: Type: message" plus the last
/// traceback lines (SyntaxErrors as file:line:col).
pub fn py_error(py: Python<'_>, err: &PyErr, what: &str) -> Error {
    let text = runtime(py)
        .and_then(|rt| rt.format_exception(py, err))
        .unwrap_or_else(|_| err.to_string());
    Error::new(ErrorCode::Internal, format!("{what}: {text}"))
}
