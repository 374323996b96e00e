//! The matrix's one build: every test binary of the workspace, built once with the workspace's
//! features, and run directly by the groups.
//!
//! A `cargo test -p cqrsx-mongo` after a `cargo test --workspace --no-run` builds the package's
//! tests and much of their dependency tree a second time (a package alone unifies fewer
//! features, so its dependencies hash differently): minutes of the 2-core machine's time and
//! gigabytes of disk per group. Running the built binaries, as cargo itself would, costs neither.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::cmd::{self, say, Result};

/// One test binary (a unit-test or integration-test harness) of a workspace package.
#[derive(Clone, Debug)]
pub(super) struct TestBinary {
    pub(super) package: String,
    /// The package's directory: cargo runs a package's tests there.
    pub(super) dir: PathBuf,
    pub(super) path: PathBuf,
}

/// Builds every test target of the workspace once (progress on the terminal) and returns the
/// binaries.
pub(super) fn build() -> Result<Vec<TestBinary>> {
    let names = package_names()?;
    let mut command = cmd::cargo();
    command
        .args([
            "test",
            "--workspace",
            "--no-run",
            "--message-format=json-render-diagnostics",
        ])
        .stdout(Stdio::piped());
    say("$ cargo test --workspace --no-run --message-format=json-render-diagnostics");
    let mut child = command.spawn().map_err(|e| format!("cannot run cargo: {e}"))?;
    let stdout = child.stdout.take().ok_or("cargo's output is not piped")?;
    let mut binaries = Vec::new();
    for line in BufReader::new(stdout).lines() {
        let line = line.map_err(|e| format!("reading cargo's output: {e}"))?;
        let Ok(message) = serde_json::from_str::<serde_json::Value>(&line) else {
            continue;
        };
        if message["reason"] != "compiler-artifact" || message["profile"]["test"] != true {
            continue;
        }
        let (Some(path), Some(manifest)) = (message["executable"].as_str(), message["manifest_path"].as_str()) else {
            continue;
        };
        let manifest = PathBuf::from(manifest);
        let package = names
            .get(&manifest)
            .cloned()
            .ok_or_else(|| format!("a test binary of an unknown package: {}", manifest.display()))?;
        let dir = manifest.parent().map(Path::to_path_buf).unwrap_or_else(cmd::root);
        binaries.push(TestBinary {
            package,
            dir,
            path: PathBuf::from(path),
        });
    }
    let status = child.wait().map_err(|e| format!("cargo: {e}"))?;
    if !status.success() {
        return Err(format!("building the tests failed ({status})"));
    }
    if binaries.is_empty() {
        return Err("the build named no test binary".into());
    }
    say(&format!("built {} test binaries", binaries.len()));
    Ok(binaries)
}

/// The workspace's packages by manifest path.
fn package_names() -> Result<BTreeMap<PathBuf, String>> {
    let output = cmd::cargo()
        .args(["metadata", "--no-deps", "--format-version", "1"])
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| format!("cannot run cargo metadata: {e}"))?;
    if !output.status.success() {
        return Err(format!("cargo metadata failed ({})", output.status));
    }
    let metadata: serde_json::Value =
        serde_json::from_slice(&output.stdout).map_err(|e| format!("cargo metadata's output: {e}"))?;
    let packages = metadata["packages"]
        .as_array()
        .ok_or("cargo metadata named no packages")?;
    Ok(packages
        .iter()
        .filter_map(|p| {
            Some((
                PathBuf::from(p["manifest_path"].as_str()?),
                p["name"].as_str()?.to_string(),
            ))
        })
        .collect())
}

/// The command that runs one test binary as `cargo test` would: in its package's directory,
/// with `args` after the harness's name.
pub(super) fn command(binary: &TestBinary, args: &[String], netns: Option<&str>) -> Command {
    let mut command = match netns {
        Some(netns) => {
            let mut command = Command::new("nsenter");
            command.arg(format!("--net=/var/run/netns/{netns}")).arg(&binary.path);
            command
        }
        None => Command::new(&binary.path),
    };
    command.args(args).current_dir(&binary.dir);
    command
}
