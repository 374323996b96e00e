//! A Docker engine of xtask's own, for the container path in CI (`cargo xtask test
//! --local-engine`): Debian's engine, started inside a private network namespace, with the
//! pinned `redis` tag built locally from the host's `redis-server` (no registry is needed).
//!
//! Everything lives inside what this run creates and is torn down by pid when the run ends: the
//! namespace (the engine's bridge and every container port are inside it, nothing listens on
//! the host's interfaces and no traffic leaves it), the engine's data and state directories
//! (images and containers go with them), and the engine process itself.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::cmd::{self, say, Result};
use crate::docker::Endpoint;

/// A running engine in a namespace of its own; stopped and removed on drop.
pub struct LocalEngine {
    /// The network namespace's name (`ip netns`).
    pub netns: String,
    socket: PathBuf,
    dir: PathBuf,
    dockerd: Option<Child>,
    /// Files the engine creates outside its directories, removed if they did not exist before.
    strays: Vec<PathBuf>,
}

impl LocalEngine {
    /// Where testcontainers reaches this engine.
    pub fn endpoint(&self) -> Endpoint {
        Endpoint::Unix(self.socket.clone())
    }

    /// A command that runs inside the engine's network namespace.
    pub fn command_inside(&self, program: &Path) -> Command {
        let mut command = Command::new("nsenter");
        command.arg(format!("--net=/var/run/netns/{}", self.netns)).arg(program);
        command
    }
}

/// Starts an engine, or says why this machine cannot have one.
pub fn start(redis_tag: &str) -> Result<LocalEngine> {
    if !cfg!(target_os = "linux") || !cmd::is_root() {
        return Err("a local engine needs root on Linux".into());
    }
    for tool in ["ip", "nsenter", "tar"] {
        if cmd::which(tool).is_none() {
            return Err(format!("a local engine needs `{tool}`, which is not installed"));
        }
    }
    let redis = cmd::which("redis-server").ok_or("the local image needs the host's redis-server")?;
    install_engine()?;
    let pid = std::process::id();
    let dir = std::env::temp_dir().join(format!("cqrsx-engine-{pid}"));
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let mut engine = LocalEngine {
        netns: format!("cqrsx-{pid}"),
        socket: dir.join("docker.sock"),
        dir,
        dockerd: None,
        strays: [
            "/etc/docker/key.json",
            "/etc/docker",
            "/var/run/docker/plugins",
            "/var/run/docker",
        ]
        .into_iter()
        .map(PathBuf::from)
        .filter(|p| !p.exists())
        .collect(),
    };
    // From here on, dropping `engine` tears down whatever was set up.
    quiet(Command::new("ip").args(["netns", "add", &engine.netns]))?;
    quiet(Command::new("ip").args(["-n", &engine.netns, "link", "set", "lo", "up"]))?;
    let log = std::fs::File::create(engine.dir.join("dockerd.log")).map_err(|e| e.to_string())?;
    let err = log.try_clone().map_err(|e| e.to_string())?;
    // `nsenter --net` (not `ip netns exec`, which remounts /sys and hides the cgroup mounts).
    let dockerd = engine
        .command_inside(Path::new("dockerd"))
        .arg(format!("--host=unix://{}", engine.socket.display()))
        .arg(format!("--data-root={}", engine.dir.join("data").display()))
        .arg(format!("--exec-root={}", engine.dir.join("exec").display()))
        .arg(format!("--pidfile={}", engine.dir.join("dockerd.pid").display()))
        .stdin(Stdio::null())
        .stdout(Stdio::from(log))
        .stderr(Stdio::from(err))
        .spawn()
        .map_err(|e| format!("cannot start dockerd: {e}"))?;
    engine.dockerd = Some(dockerd);
    engine.wait_until_ready()?;
    engine.import_redis_image(&redis, redis_tag)?;
    say(&format!(
        "local engine: dockerd in network namespace {} at unix://{}, image redis:{redis_tag} built from {}",
        engine.netns,
        engine.socket.display(),
        redis.display()
    ));
    Ok(engine)
}

/// Installs Debian's engine when it is missing, without letting the package start a system-wide
/// engine (a `policy-rc.d` that forbids service starts, for the install only).
fn install_engine() -> Result<()> {
    if cmd::which("dockerd").is_some() && cmd::which("docker").is_some() {
        return Ok(());
    }
    if cmd::which("apt-get").is_none() {
        return Err("dockerd is not installed and this machine has no apt-get".into());
    }
    let policy = Path::new("/usr/sbin/policy-rc.d");
    let ours = !policy.exists();
    if ours {
        std::fs::write(
            policy,
            "#!/bin/sh\n# cqrsx xtask: no service starts while docker.io installs\nexit 101\n",
        )
        .map_err(|e| format!("cannot write {}: {e}", policy.display()))?;
        let _ = Command::new("chmod").args(["+x", "/usr/sbin/policy-rc.d"]).status();
    }
    // A fresh machine has no package lists yet.
    let installed = cmd::run(Command::new("apt-get").args(["update", "-qq"])).and_then(|()| {
        cmd::run(
            Command::new("apt-get")
                .args(["install", "-y", "-q", "docker.io"])
                .env("DEBIAN_FRONTEND", "noninteractive"),
        )
    });
    if ours {
        let _ = std::fs::remove_file(policy);
    }
    installed.map_err(|e| format!("cannot install docker.io: {e}"))?;
    match cmd::which("dockerd") {
        Some(_) => Ok(()),
        None => Err("docker.io installed no dockerd".into()),
    }
}

impl LocalEngine {
    fn wait_until_ready(&mut self) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if self.docker(&["version", "--format", "{{.Server.APIVersion}}"]).is_ok() {
                return Ok(());
            }
            if let Some(Ok(Some(status))) = self.dockerd.as_mut().map(Child::try_wait) {
                return Err(format!("dockerd exited ({status}): {}", self.log_tail()));
            }
            if Instant::now() > deadline {
                return Err(format!("dockerd did not answer within 30 s: {}", self.log_tail()));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.dir.join("dockerd.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().rev().take(3).collect();
        lines.into_iter().rev().collect::<Vec<_>>().join(" | ")
    }

    /// Runs the docker CLI against this engine; its stdout on success.
    fn docker(&self, args: &[&str]) -> Result<String> {
        let output = Command::new("docker")
            .arg(format!("--host=unix://{}", self.socket.display()))
            .args(args)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("cannot run docker: {e}"))?;
        if output.status.success() {
            Ok(String::from_utf8_lossy(&output.stdout).into_owned())
        } else {
            Err(format!(
                "docker {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&output.stderr).trim()
            ))
        }
    }

    /// `redis:<tag>` from the host's binary and the libraries it links (`FROM scratch`), so that
    /// testcontainers finds the image and never pulls.
    fn import_redis_image(&self, redis: &Path, tag: &str) -> Result<()> {
        let rootfs = self.dir.join("rootfs");
        let mut files = vec![redis.to_path_buf()];
        let ldd = Command::new("ldd")
            .arg(redis)
            .output()
            .map_err(|e| format!("cannot run ldd: {e}"))?;
        files.extend(
            String::from_utf8_lossy(&ldd.stdout)
                .split_whitespace()
                .filter(|word| word.starts_with('/'))
                .map(PathBuf::from),
        );
        for file in &files {
            let target = rootfs.join(file.strip_prefix("/").unwrap_or(file));
            if let Some(parent) = target.parent() {
                std::fs::create_dir_all(parent).map_err(|e| format!("{}: {e}", parent.display()))?;
            }
            // `copy` follows symlinks: the image gets the files themselves.
            std::fs::copy(file, &target).map_err(|e| format!("cannot copy {}: {e}", file.display()))?;
        }
        std::fs::create_dir_all(rootfs.join("tmp")).map_err(|e| e.to_string())?;
        let entry = format!(
            r#"CMD ["{}", "--protected-mode", "no", "--save", "", "--dir", "/tmp"]"#,
            redis.display()
        );
        let mut tar = Command::new("tar")
            .arg("-C")
            .arg(&rootfs)
            .args(["-c", "."])
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot run tar: {e}"))?;
        let stdout = tar.stdout.take().ok_or("tar gave no output")?;
        let imported = Command::new("docker")
            .arg(format!("--host=unix://{}", self.socket.display()))
            .args([
                "import",
                "--change",
                &entry,
                "--change",
                "EXPOSE 6379",
                "-",
                &format!("redis:{tag}"),
            ])
            .stdin(Stdio::from(stdout))
            .output()
            .map_err(|e| format!("cannot run docker import: {e}"))?;
        let _ = tar.wait();
        if !imported.status.success() {
            return Err(format!(
                "docker import redis:{tag}: {}",
                String::from_utf8_lossy(&imported.stderr).trim()
            ));
        }
        Ok(())
    }
}

/// Runs a setup command quietly; fails with its stderr.
fn quiet(command: &mut Command) -> Result<()> {
    let output = command.output().map_err(|e| format!("cannot run {command:?}: {e}"))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{command:?}: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        ))
    }
}

impl Drop for LocalEngine {
    fn drop(&mut self) {
        if let Some(mut dockerd) = self.dockerd.take() {
            // SIGTERM: the engine stops its containers and its containerd, and unmounts.
            let _ = Command::new("kill").args(["-TERM", &dockerd.id().to_string()]).status();
            let deadline = Instant::now() + Duration::from_secs(30);
            while matches!(dockerd.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = dockerd.kill();
            let _ = dockerd.wait();
        }
        // Anything still running in the namespace (a container's process after a hard kill).
        if let Ok(output) = Command::new("ip").args(["netns", "pids", &self.netns]).output() {
            for pid in String::from_utf8_lossy(&output.stdout).split_whitespace() {
                let _ = Command::new("kill").args(["-KILL", pid]).status();
            }
        }
        let _ = Command::new("ip").args(["netns", "del", &self.netns]).status();
        if std::fs::remove_dir_all(&self.dir).is_err() {
            // A mount the engine left behind: unmount and try once more.
            let _ = Command::new("umount").arg("-R").arg(self.dir.join("data")).status();
            if let Err(e) = std::fs::remove_dir_all(&self.dir) {
                say(&format!("local engine: cannot remove {}: {e}", self.dir.display()));
            }
        }
        for stray in &self.strays {
            let _ = std::fs::remove_file(stray).or_else(|_| std::fs::remove_dir(stray));
        }
    }
}
