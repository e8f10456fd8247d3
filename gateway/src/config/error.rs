//! What a bad configuration looks like to its user: one line per problem,
//! `file:line:column: key.path: what is wrong`.

use std::fmt;
use std::path::PathBuf;

/// Exit status for a configuration error (`EX_CONFIG` from BSD `sysexits.h`). systemd units
/// list it in `RestartPreventExitStatus=`: restarting cannot fix a bad file.
pub const EX_CONFIG: u8 = 78;

/// One problem, located in the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigDiagnostic {
    /// 1-based line of the offending key (or of the table that lacks it).
    pub line: usize,
    /// 1-based column, in characters.
    pub column: usize,
    /// Key path, e.g. `devices[0].groups[1].interval_ms`; `<document>` when a TOML syntax error
    /// sits before any table.
    pub path: String,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for ConfigDiagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}: {}: {}",
            self.line, self.column, self.path, self.message
        )
    }
}

/// The configuration could not be used. `Display` gives one line per problem, each starting
/// with the file name; [`ConfigError::exit_code`] is what the CLI exits with.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read (missing, permissions, not UTF-8).
    #[error("{}: cannot read the configuration: {source}", path.display())]
    Unreadable {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The file was read and is wrong: TOML syntax, unknown keys, bad types, missing keys, or
    /// values that fail validation. Every problem found is listed, sorted by position.
    #[error("{}", DisplayInvalid { file, diagnostics })]
    Invalid {
        /// The file name as given (prefixes every line).
        file: String,
        /// The problems, sorted by line and column; never empty.
        diagnostics: Vec<ConfigDiagnostic>,
    },
}

impl ConfigError {
    /// The process exit status for this error: always [`EX_CONFIG`] (78).
    pub const fn exit_code(&self) -> u8 {
        EX_CONFIG
    }

    /// The located problems (empty for [`ConfigError::Unreadable`]).
    pub fn diagnostics(&self) -> &[ConfigDiagnostic] {
        match self {
            Self::Unreadable { .. } => &[],
            Self::Invalid { diagnostics, .. } => diagnostics,
        }
    }

    /// Sorts by position and drops exact repeats.
    pub(super) fn invalid(file: &str, mut diagnostics: Vec<ConfigDiagnostic>) -> Self {
        diagnostics.sort_by_key(|d| (d.line, d.column));
        diagnostics.dedup();
        Self::Invalid {
            file: file.to_owned(),
            diagnostics,
        }
    }
}

struct DisplayInvalid<'a> {
    file: &'a str,
    diagnostics: &'a [ConfigDiagnostic],
}

impl fmt::Display for DisplayInvalid<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, d) in self.diagnostics.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{}:{d}", self.file)?;
        }
        Ok(())
    }
}
