//! `--config PATH`: a TOML file whose keys are the long flags (`-` written `_`).
//!
//! The file is turned into command-line arguments placed *before* the real ones and the
//! whole line is parsed again by clap, so a value from the file goes through exactly
//! the parser, range checks and help text of its flag, and cannot drift from them. A
//! flag given on the command line (or through its environment variable) wins: the
//! file's value for it is left out altogether, which matters for repeatable flags such
//! as `tcp` (the command line replaces the file's list instead of adding to it).

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use clap::parser::ValueSource;
use clap::{ArgAction, ArgMatches, Command};

/// Why a config file was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigFileError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The file is not valid TOML.
    #[error("config file {path} is not valid TOML: {message}")]
    Syntax {
        /// The file.
        path: PathBuf,
        /// The parser's message (with line and column).
        message: String,
    },
    /// A key that is no flag.
    #[error("config file {path}: unknown key `{key}`{hint}")]
    UnknownKey {
        /// The file.
        path: PathBuf,
        /// The key.
        key: String,
        /// A suggestion, or empty.
        hint: String,
    },
    /// A value of the wrong TOML type for its key.
    #[error("config file {path}: key `{key}` {reason}")]
    BadValue {
        /// The file.
        path: PathBuf,
        /// The key.
        key: String,
        /// What is wrong.
        reason: String,
    },
    /// The value was refused by the flag's own parser.
    #[error("config file {path}: {message}")]
    Flag {
        /// The file.
        path: PathBuf,
        /// clap's message, naming the flag.
        message: String,
    },
}

/// Flags that make no sense inside the file.
const NOT_IN_FILE: [&str; 4] = ["config", "check_config", "help", "version"];

/// Reads and parses the TOML file.
pub fn read(path: &Path) -> Result<toml::Table, ConfigFileError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigFileError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    text.parse::<toml::Table>()
        .map_err(|e| ConfigFileError::Syntax {
            path: path.to_path_buf(),
            message: e.to_string().trim().to_string(),
        })
}

/// The arguments the file stands for, leaving out every flag that `cli` (the matches of
/// the command line alone) already got from the command line or the environment.
pub fn to_args(
    cmd: &Command,
    cli: &ArgMatches,
    table: &toml::Table,
    path: &Path,
) -> Result<Vec<OsString>, ConfigFileError> {
    let mut out = Vec::new();
    for (key, value) in table {
        let long = key.replace('_', "-");
        let arg = cmd
            .get_arguments()
            .filter(|a| !NOT_IN_FILE.contains(&a.get_id().as_str()))
            .find(|a| a.get_long() == Some(long.as_str()) && !key.contains('-'));
        let Some(arg) = arg else {
            let hint = if key.contains('-') {
                format!(" (write it `{}`)", key.replace('-', "_"))
            } else {
                String::new()
            };
            return Err(ConfigFileError::UnknownKey {
                path: path.to_path_buf(),
                key: key.clone(),
                hint,
            });
        };
        if matches!(
            cli.value_source(arg.get_id().as_str()),
            Some(ValueSource::CommandLine | ValueSource::EnvVariable)
        ) {
            continue;
        }
        let bad = |reason: &str| ConfigFileError::BadValue {
            path: path.to_path_buf(),
            key: key.clone(),
            reason: reason.to_string(),
        };
        let flag = format!("--{long}");
        match arg.get_action() {
            ArgAction::SetTrue => match value {
                toml::Value::Boolean(true) => out.push(flag.into()),
                toml::Value::Boolean(false) => {}
                _ => return Err(bad("must be true or false")),
            },
            ArgAction::Append => {
                let items: Vec<&toml::Value> = match value {
                    toml::Value::Array(a) => a.iter().collect(),
                    v => vec![v],
                };
                for v in items {
                    out.push(flag.clone().into());
                    out.push(scalar(v).ok_or_else(|| bad("must be a list of strings"))?);
                }
            }
            _ => {
                let v = scalar(value).ok_or_else(|| bad("must be a string or a number"))?;
                out.push(flag.into());
                out.push(v);
            }
        }
    }
    Ok(out)
}

/// A string, integer or float as the text a flag would get.
fn scalar(v: &toml::Value) -> Option<OsString> {
    match v {
        toml::Value::String(s) => Some(s.into()),
        toml::Value::Integer(i) => Some(i.to_string().into()),
        toml::Value::Float(f) => Some(f.to_string().into()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{Arg, ArgAction};

    fn cmd() -> Command {
        Command::new("t")
            .arg(Arg::new("tcp").long("tcp").action(ArgAction::Append))
            .arg(Arg::new("max_sessions").long("max-sessions"))
            .arg(
                Arg::new("line_mode")
                    .long("line-mode")
                    .action(ArgAction::SetTrue),
            )
            .arg(Arg::new("config").long("config").action(ArgAction::Set))
    }

    fn args(file: &str, argv: &[&str]) -> Result<Vec<String>, ConfigFileError> {
        let table: toml::Table = file.parse().unwrap();
        let m = cmd().get_matches_from(std::iter::once("t").chain(argv.iter().copied()));
        to_args(&cmd(), &m, &table, Path::new("f.toml"))
            .map(|v| v.into_iter().map(|s| s.into_string().unwrap()).collect())
    }

    #[test]
    fn keys_become_flags_and_the_command_line_wins() {
        let a = args(
            "max_sessions = 7\ntcp = [\"127.0.0.1:1\", \"127.0.0.1:2\"]\nline_mode = true",
            &[],
        )
        .unwrap();
        let mut a = a;
        a.sort();
        let mut want = vec![
            "--max-sessions",
            "7",
            "--tcp",
            "127.0.0.1:1",
            "--tcp",
            "127.0.0.1:2",
            "--line-mode",
        ];
        want.sort();
        assert_eq!(a, want);
        let a = args("max_sessions = 7\ntcp = [\"127.0.0.1:1\"]", &["--tcp", "x"]).unwrap();
        assert_eq!(a, vec!["--max-sessions", "7"]);
        assert!(args("line_mode = false", &[]).unwrap().is_empty());
    }

    #[test]
    fn unknown_and_misspelt_keys_are_named() {
        let e = args("max_sesions = 7", &[]).unwrap_err().to_string();
        assert!(e.contains("unknown key `max_sesions`"), "{e}");
        let e = args("max-sessions = 7", &[]).unwrap_err().to_string();
        assert!(e.contains("write it `max_sessions`"), "{e}");
        let e = args("config = \"x\"", &[]).unwrap_err().to_string();
        assert!(e.contains("unknown key `config`"), "{e}");
        let e = args("line_mode = 1", &[]).unwrap_err().to_string();
        assert!(e.contains("true or false"), "{e}");
        let e = args("max_sessions = [1]", &[]).unwrap_err().to_string();
        assert!(e.contains("`max_sessions`"), "{e}");
    }
}
