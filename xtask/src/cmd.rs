//! Running commands: every command is printed before it runs.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// An xtask failure: a message for the user.
pub type Result<T> = std::result::Result<T, String>;

/// Prints a line (xtask is a CLI: its output is the point).
pub fn say(line: &str) {
    println!("{line}");
}

/// The workspace root (xtask lives one level below it).
pub fn root() -> PathBuf {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().map(Path::to_path_buf).unwrap_or(manifest)
}

fn show(cmd: &Command) -> String {
    let envs: Vec<String> = cmd
        .get_envs()
        .filter_map(|(k, v)| Some(format!("{}={}", k.to_str()?, v?.to_str()?)))
        .collect();
    let args: Vec<String> = cmd.get_args().map(|a| a.to_string_lossy().into_owned()).collect();
    let mut line = envs.join(" ");
    if !line.is_empty() {
        line.push(' ');
    }
    line.push_str(&cmd.get_program().to_string_lossy());
    for a in args {
        line.push(' ');
        line.push_str(&a);
    }
    line
}

/// Runs a command with inherited output; fails on a non-zero exit.
pub fn run(cmd: &mut Command) -> Result<()> {
    say(&format!("$ {}", show(cmd)));
    let status = cmd.status().map_err(|e| format!("cannot run {}: {e}", show(cmd)))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("`{}` failed ({status})", show(cmd)))
    }
}

/// Runs a command with its stdout and stderr written to `log`; returns whether it succeeded and
/// its stdout and stderr together.
pub fn run_logged(cmd: &mut Command, log: &Path) -> Result<(bool, String)> {
    let _ = std::fs::remove_file(log);
    run_appended(cmd, log)
}

/// Runs a command with its stdout and stderr added to the end of `log`; returns whether it
/// succeeded and what it wrote.
pub fn run_appended(cmd: &mut Command, log: &Path) -> Result<(bool, String)> {
    say(&format!("$ {}  >> {}", show(cmd), log.display()));
    let before = std::fs::metadata(log).map(|m| m.len()).unwrap_or(0);
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .map_err(|e| format!("cannot open {}: {e}", log.display()))?;
    let err = file.try_clone().map_err(|e| format!("{}: {e}", log.display()))?;
    let status = cmd
        .stdout(Stdio::from(file))
        .stderr(Stdio::from(err))
        .status()
        .map_err(|e| format!("cannot run {}: {e}", show(cmd)))?;
    let output = std::fs::read(log).map_err(|e| format!("cannot read {}: {e}", log.display()))?;
    let start = usize::try_from(before).unwrap_or(0).min(output.len());
    Ok((status.success(), String::from_utf8_lossy(&output[start..]).into_owned()))
}

/// Runs a command quietly and returns its output (for probes like `id -u`).
pub fn probe(program: &str, args: &[&str]) -> Option<Output> {
    Command::new(program).args(args).stdin(Stdio::null()).output().ok()
}

/// The full path of a program on PATH.
pub fn which(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|candidate| candidate.is_file())
}

/// Whether xtask runs as root (and so may install packages).
pub fn is_root() -> bool {
    probe("id", &["-u"]).is_some_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// The `cargo` the user invoked.
pub fn cargo_program() -> String {
    std::env::var("CARGO").unwrap_or_else(|_| "cargo".into())
}

/// `cargo` as invoked by the user.
pub fn cargo() -> Command {
    let mut cmd = Command::new(cargo_program());
    cmd.current_dir(root());
    cmd
}
