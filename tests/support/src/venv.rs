//! A Python venv of pinned packages that a test runs (real flask-sse, real Mercure clients),
//! made by `.ci/python`: found through its environment variable, else at its default path,
//! and checked by importing what the test needs.

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use crate::skip_or_fail;

/// Where a venv is and what it must hold.
#[derive(Debug, Clone, Copy)]
pub struct Venv<'a> {
    /// The environment variable naming its python (`TOWER_SSE_PYTHON`).
    pub var: &'a str,
    /// Its folder under `$HOME`, when the variable is not set (`.cache/tower-sse/venv`).
    pub home_dir: &'a str,
    /// The Python statement that imports what the test uses.
    pub imports: &'a str,
    /// The packages, as the skip line names them.
    pub what: &'a str,
    /// The command that makes it (`bash .ci/python`).
    pub install: &'a str,
    /// The variable that makes its absence a failure (`TOWER_SSE_REQUIRE_PYTHON`).
    pub require: &'a str,
}

impl Venv<'_> {
    /// The venv's python, or `None` (after saying so, for `test`) when it can't import what
    /// the test needs and [`Venv::require`] is not `1`.
    pub fn python(&self, test: &str) -> Option<PathBuf> {
        let python = std::env::var_os(self.var)
            .filter(|python| !python.is_empty())
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                let home = std::env::var_os("HOME").unwrap_or_default();
                Path::new(&home).join(self.home_dir).join("bin/python")
            });
        let imports = Command::new(&python)
            .args(["-c", self.imports])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        if !imports.is_ok_and(|status| status.success()) {
            let missing = format!("{} in {} (${})", self.what, python.display(), self.var);
            skip_or_fail(test, &missing, self.install, self.require);
            return None;
        }
        Some(python)
    }
}
