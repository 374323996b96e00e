//! [`DocumentDbServer`]: PostgreSQL (with DocumentDB) and FerretDB 2 on one data directory,
//! started, killed, restarted and stopped by pid.

use std::fs::{self, File};
use std::io::Write;
use std::net::TcpStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::build::{prepare, quiet, Engine};
use super::{pg_bin, READY_WITHIN, SETTINGS};
use crate::cmd::{self, Result};
use crate::providers::free_port;

// ---------------------------------------------------------------------------------------------
// The server

/// The `postgres` user's uid and gid, when xtask runs as root (initdb and the server refuse
/// root).
fn postgres_ids() -> Result<Option<(u32, u32)>> {
    if !cmd::is_root() {
        return Ok(None);
    }
    let id = |flag: &str| -> Result<u32> {
        let out = cmd::probe("id", &[flag, "postgres"]).ok_or("cannot run id")?;
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .map_err(|_| "there is no postgres user (the postgresql-15 package makes it)".to_string())
    };
    Ok(Some((id("-u")?, id("-g")?)))
}

/// Whether any process of the process group `pgid` is alive (zombies aside).
fn group_alive(pgid: u32) -> bool {
    let Ok(entries) = fs::read_dir("/proc") else {
        return false;
    };
    entries.filter_map(|e| e.ok()).any(|entry| {
        let Ok(stat) = fs::read_to_string(entry.path().join("stat")) else {
            return false;
        };
        // After the command's closing parenthesis: state, ppid, pgrp, …
        let Some((_, rest)) = stat.rsplit_once(')') else {
            return false;
        };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        fields.first().is_some_and(|s| *s != "Z") && fields.get(2).is_some_and(|g| *g == pgid.to_string())
    })
}

/// Every process below `pid` (PostgreSQL's backends each lead a session of their own, so a
/// signal to the postmaster's group misses them).
fn descendants(pid: u32) -> Vec<u32> {
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    let parents: Vec<(u32, u32)> = entries
        .filter_map(|e| e.ok())
        .filter_map(|entry| {
            let child: u32 = entry.file_name().to_str()?.parse().ok()?;
            let stat = fs::read_to_string(entry.path().join("stat")).ok()?;
            let (_, rest) = stat.rsplit_once(')')?;
            let parent: u32 = rest.split_whitespace().nth(1)?.parse().ok()?;
            Some((child, parent))
        })
        .collect();
    let mut found = vec![pid];
    let mut i = 0;
    while i < found.len() {
        let at = found[i];
        found.extend(parents.iter().filter(|(_, p)| *p == at).map(|(c, _)| *c));
        i += 1;
    }
    found.remove(0);
    found
}

/// Sends `signal` to the process group `pgid`.
fn signal_group(pgid: u32, signal: &str) {
    let _ = Command::new("kill")
        .args(["-s", signal, "--", &format!("-{pgid}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// Whether `pid` runs (a zombie does not).
fn running(pid: u32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            stat.rsplit_once(')')
                .map(|(_, rest)| rest.split_whitespace().next() != Some("Z"))
        })
        .unwrap_or(false)
}

/// SIGKILL to one process.
fn kill_process(pid: u32) {
    let _ = Command::new("kill")
        .args(["-s", "KILL", "--", &pid.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// A process started in a group of its own (so a kill reaches its children, as PostgreSQL's
/// backends are).
struct Process {
    child: Child,
}

impl Process {
    fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// SIGKILL to the whole group; waits until every process of it is gone.
    fn kill(&mut self) {
        let pgid = self.child.id();
        let below = descendants(pgid);
        signal_group(pgid, "KILL");
        for pid in &below {
            kill_process(*pid);
        }
        let _ = self.child.wait();
        let deadline = Instant::now() + Duration::from_secs(30);
        while (group_alive(pgid) || below.iter().any(|p| running(*p))) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `signal` to the group, then SIGKILL if it has not ended within `grace`.
    fn stop(&mut self, signal: &str, grace: Duration) {
        if self.alive() {
            signal_group(self.child.id(), signal);
            let deadline = Instant::now() + grace;
            while self.alive() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        self.kill();
    }
}

/// PostgreSQL (with DocumentDB) and FerretDB 2 in front of it, on one data directory: the
/// engine row's server, and a server a fault test can kill and restart on its data.
pub struct DocumentDbServer {
    dir: PathBuf,
    engine: Engine,
    ids: Option<(u32, u32)>,
    pg_port: u16,
    port: u16,
    debug_port: u16,
    postgres: Option<Process>,
    ferretdb: Option<Process>,
    remove_on_drop: bool,
}

impl std::fmt::Debug for DocumentDbServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DocumentDbServer")
            .field("dir", &self.dir)
            .field("pg_port", &self.pg_port)
            .field("port", &self.port)
            .finish_non_exhaustive()
    }
}

impl DocumentDbServer {
    /// Starts the engine on `dir` (created if missing): a new cluster (initdb, the recipe's
    /// settings, the extensions) when the directory holds none, else the data already there —
    /// after a crash, PostgreSQL recovers it first. Builds the engine first if this process has
    /// not yet (see [`prepare`]). As root the server runs as the `postgres` user, which must be
    /// able to reach `dir`.
    pub fn start(dir: &Path) -> Result<Self> {
        let engine = prepare()?;
        let mut server = Self {
            dir: dir.to_path_buf(),
            engine,
            ids: postgres_ids()?,
            pg_port: free_port()?,
            port: free_port()?,
            debug_port: free_port()?,
            postgres: None,
            ferretdb: None,
            remove_on_drop: false,
        };
        server.init()?;
        server.restart()?;
        Ok(server)
    }

    /// The engine on a new directory under the system's temporary directory, removed when the
    /// server is dropped (the matrix's and the bench's server).
    pub fn start_temporary() -> Result<Self> {
        let dir = std::env::temp_dir().join(format!("cqrsx-documentdb-{}-{}", std::process::id(), free_port()?));
        let mut server = Self::start(&dir).inspect_err(|_| {
            let _ = fs::remove_dir_all(&dir);
        })?;
        server.remove_on_drop = true;
        Ok(server)
    }

    /// The MongoDB connection string of the wire server.
    pub fn uri(&self) -> String {
        format!("mongodb://127.0.0.1:{}/", self.port)
    }

    /// The data directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The PostgreSQL port (for `psql -h 127.0.0.1 -p … -U postgres`).
    pub fn postgres_port(&self) -> u16 {
        self.pg_port
    }

    /// How the engine's build was had: "built in … s" or "reused cached build (…)".
    pub fn build_note(&self) -> &str {
        &self.engine.how
    }

    /// SIGKILL to both servers (PostgreSQL with every backend, and FerretDB); returns once
    /// they are gone. The data stays for [`restart`](Self::restart).
    pub fn kill(&mut self) {
        self.kill_ferretdb_only();
        self.kill_postgres_only();
    }

    /// SIGKILL to the wire server only; PostgreSQL keeps running.
    pub fn kill_ferretdb_only(&mut self) {
        if let Some(mut p) = self.ferretdb.take() {
            p.kill();
        }
    }

    /// SIGKILL to PostgreSQL (every backend with it) only; FerretDB keeps running and
    /// reconnects once PostgreSQL is back.
    pub fn kill_postgres_only(&mut self) {
        if let Some(mut p) = self.postgres.take() {
            p.kill();
        }
    }

    /// Starts whichever of the two is not running, on the same directory and ports, and waits
    /// until both answer.
    pub fn restart(&mut self) -> Result<()> {
        if !self.postgres.as_mut().is_some_and(Process::alive) {
            self.postgres = None;
            self.start_postgres()?;
        }
        if !self.ferretdb.as_mut().is_some_and(Process::alive) {
            self.ferretdb = None;
            self.start_ferretdb()?;
        }
        Ok(())
    }

    /// Stops both gracefully (FerretDB, then a fast shutdown of PostgreSQL).
    pub fn stop(&mut self) {
        if let Some(mut p) = self.ferretdb.take() {
            p.stop("TERM", Duration::from_secs(10));
        }
        if let Some(mut p) = self.postgres.take() {
            p.stop("INT", Duration::from_secs(30));
        }
    }

    fn pgdata(&self) -> PathBuf {
        self.dir.join("pgdata")
    }

    fn as_postgres(&self, command: &mut Command) {
        if let Some((uid, gid)) = self.ids {
            command.uid(uid).gid(gid);
        }
    }

    fn chown(&self, path: &Path) -> Result<()> {
        if let Some((uid, gid)) = self.ids {
            std::os::unix::fs::chown(path, Some(uid), Some(gid))
                .map_err(|e| format!("chown {}: {e}", path.display()))?;
        }
        Ok(())
    }

    /// initdb and the settings, where the directory holds no cluster yet.
    fn init(&self) -> Result<()> {
        fs::create_dir_all(&self.dir).map_err(|e| format!("cannot create {}: {e}", self.dir.display()))?;
        self.chown(&self.dir)?;
        let run = self.dir.join("run");
        fs::create_dir_all(&run).map_err(|e| format!("{}: {e}", run.display()))?;
        self.chown(&run)?;
        let pgdata = self.pgdata();
        if pgdata.join("PG_VERSION").is_file() {
            return Ok(());
        }
        let _ = fs::remove_dir_all(&pgdata);
        let mut initdb = Command::new(pg_bin("initdb"));
        initdb
            .arg("-D")
            .arg(&pgdata)
            .args([
                "--auth=trust",
                "-U",
                "postgres",
                "-E",
                "UTF8",
                "--locale=C.UTF-8",
                "--no-sync",
            ])
            .current_dir(&self.dir);
        self.as_postgres(&mut initdb);
        quiet(&mut initdb, "initdb")
            .map_err(|e| format!("{e}\n(the postgres user must be able to reach {})", self.dir.display()))?;
        let conf = pgdata.join("postgresql.conf");
        let mut file = fs::OpenOptions::new()
            .append(true)
            .open(&conf)
            .map_err(|e| format!("{}: {e}", conf.display()))?;
        file.write_all(SETTINGS.as_bytes())
            .map_err(|e| format!("{}: {e}", conf.display()))?;
        Ok(())
    }

    fn log(&self, name: &str) -> Result<File> {
        let path = self.dir.join(name);
        let file = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(file)
    }

    fn log_tail(&self, name: &str) -> String {
        let text = fs::read_to_string(self.dir.join(name)).unwrap_or_default();
        let tail: Vec<&str> = text.lines().rev().take(15).collect();
        tail.into_iter().rev().collect::<Vec<_>>().join("\n")
    }

    fn start_postgres(&mut self) -> Result<()> {
        let log = self.log("postgres.log")?;
        let err = log.try_clone().map_err(|e| e.to_string())?;
        let mut command = Command::new(pg_bin("postgres"));
        command
            .arg("-D")
            .arg(self.pgdata())
            .args([
                "-p",
                &self.pg_port.to_string(),
                "-c",
                "listen_addresses=127.0.0.1",
                "-k",
            ])
            .arg(self.dir.join("run"))
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(err))
            .process_group(0);
        self.as_postgres(&mut command);
        let child = command.spawn().map_err(|e| format!("cannot start postgres: {e}"))?;
        let mut process = Process { child };
        let deadline = Instant::now() + READY_WITHIN;
        loop {
            if !process.alive() {
                return Err(format!(
                    "postgres on {} exited before it accepted connections:\n{}",
                    self.dir.display(),
                    self.log_tail("postgres.log")
                ));
            }
            let ready = Command::new(pg_bin("pg_isready"))
                .args([
                    "-q",
                    "-h",
                    "127.0.0.1",
                    "-p",
                    &self.pg_port.to_string(),
                    "-U",
                    "postgres",
                    "-t",
                    "2",
                ])
                .status()
                .is_ok_and(|s| s.success());
            if ready {
                break;
            }
            if Instant::now() > deadline {
                process.kill();
                return Err(format!(
                    "postgres on {} did not accept connections within {} s:\n{}",
                    self.dir.display(),
                    READY_WITHIN.as_secs(),
                    self.log_tail("postgres.log")
                ));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        self.postgres = Some(process);
        let created = Command::new(pg_bin("psql"))
            .args([
                "-q",
                "-v",
                "ON_ERROR_STOP=1",
                "-h",
                "127.0.0.1",
                "-p",
                &self.pg_port.to_string(),
            ])
            .args(["-U", "postgres", "-d", "postgres"])
            .args(["-c", "CREATE EXTENSION IF NOT EXISTS documentdb CASCADE"])
            .args(["-c", "CREATE EXTENSION IF NOT EXISTS documentdb_extended_rum"])
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("cannot run psql: {e}"))?;
        if !created.status.success() {
            return Err(format!(
                "CREATE EXTENSION documentdb failed: {}",
                String::from_utf8_lossy(&created.stderr).trim()
            ));
        }
        Ok(())
    }

    fn start_ferretdb(&mut self) -> Result<()> {
        let state = self.dir.join("ferretdb-state");
        fs::create_dir_all(&state).map_err(|e| format!("{}: {e}", state.display()))?;
        let log = self.log("ferretdb.log")?;
        let err = log.try_clone().map_err(|e| e.to_string())?;
        let child = Command::new(self.engine.ferretdb())
            .arg(format!(
                "--postgresql-url=postgres://postgres@127.0.0.1:{}/postgres",
                self.pg_port
            ))
            .arg(format!("--listen-addr=127.0.0.1:{}", self.port))
            .arg(format!("--debug-addr=127.0.0.1:{}", self.debug_port))
            .arg(format!("--state-dir={}", state.display()))
            .args(["--no-auth", "--telemetry=disable", "--log-level=warn"])
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(err))
            .process_group(0)
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", self.engine.ferretdb().display()))?;
        let mut process = Process { child };
        let deadline = Instant::now() + READY_WITHIN;
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            if !process.alive() {
                return Err(format!(
                    "FerretDB exited before it listened on {}:\n{}",
                    self.port,
                    self.log_tail("ferretdb.log")
                ));
            }
            if Instant::now() > deadline {
                process.kill();
                return Err(format!(
                    "FerretDB did not listen on 127.0.0.1:{} within {} s",
                    self.port,
                    READY_WITHIN.as_secs()
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        self.ferretdb = Some(process);
        Ok(())
    }
}

impl Drop for DocumentDbServer {
    fn drop(&mut self) {
        self.stop();
        if self.remove_on_drop {
            // The logs outlive the directory, for a run that failed.
            let logs = cmd::root().join("target").join("xtask-logs");
            if fs::create_dir_all(&logs).is_ok() {
                for name in ["postgres.log", "ferretdb.log"] {
                    let _ = fs::copy(
                        self.dir.join(name),
                        logs.join(format!("documentdb-{}-{name}", self.port)),
                    );
                }
            }
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}
