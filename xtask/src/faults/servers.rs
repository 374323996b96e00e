//! Servers the fault suite owns, so it can kill them with SIGKILL and start them again on
//! their data: Redis with every write in its append-only file before it answers
//! (`appendfsync always`), a 3-master Redis Cluster of such nodes, FerretDB 1 on SQLite.

use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::cmd::Result;
use crate::mongo_engine::DocumentDbServer;
use crate::providers::{self, TempDir};

/// One server process, started again with the same command on the same data.
pub struct Process {
    name: String,
    program: PathBuf,
    args: Vec<String>,
    port: u16,
    child: Option<Child>,
}

impl Process {
    fn start(name: &str, program: PathBuf, args: Vec<String>, port: u16) -> Result<Self> {
        let mut process = Self {
            name: name.to_string(),
            program,
            args,
            port,
            child: None,
        };
        process.restart()?;
        Ok(process)
    }

    /// Kills it with SIGKILL (a crash: nothing is flushed on the way out).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on its data, and waits until it listens.
    pub fn restart(&mut self) -> Result<()> {
        self.kill();
        let mut child = Command::new(&self.program)
            .args(&self.args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", self.name))?;
        let deadline = Instant::now() + Duration::from_secs(60);
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            if let Ok(Some(status)) = child.try_wait() {
                return Err(format!(
                    "{} exited before it listened on {} ({status})",
                    self.name, self.port
                ));
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                return Err(format!("{} did not listen on {} within 60 s", self.name, self.port));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.child = Some(child);
        Ok(())
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
    }
}

/// What a row's servers are.
enum Kind {
    /// Server processes, any one of which a kill takes down.
    Processes(Vec<Process>),
    /// PostgreSQL with DocumentDB behind FerretDB 2: a kill takes down the wire server.
    DocumentDb(Box<DocumentDbServer>),
}

/// The servers behind one fault-suite row.
pub struct Servers {
    kind: Kind,
    pub description: String,
    _dir: Option<TempDir>,
}

fn redis_args(dir: &std::path::Path, port: u16, extra: &[&str]) -> Vec<String> {
    let mut args: Vec<String> = [
        "--port",
        &port.to_string(),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "yes",
        "--appendfsync",
        "always",
        "--daemonize",
        "no",
        "--dir",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.push(dir.display().to_string());
    args.extend(extra.iter().map(|s| s.to_string()));
    args
}

impl Servers {
    /// A standalone Redis writing every command to its append-only file before it answers.
    pub fn redis() -> Result<(Self, String)> {
        let bin = providers::redis_server_binary()?;
        let dir = TempDir::new("fault-redis")?;
        let port = providers::free_port()?;
        let process = Process::start("redis-server", bin, redis_args(dir.path(), port, &[]), port)?;
        Ok((
            Self {
                kind: Kind::Processes(vec![process]),
                description: format!("redis-server 127.0.0.1:{port}, appendfsync always"),
                _dir: Some(dir),
            },
            format!("redis://127.0.0.1:{port}"),
        ))
    }

    /// A 3-master Redis Cluster, every node with `appendfsync always`.
    pub fn cluster() -> Result<(Self, String)> {
        let bin = providers::redis_server_binary()?;
        let dir = TempDir::new("fault-cluster")?;
        let mut processes = Vec::new();
        let mut nodes = Vec::new();
        for i in 0..3 {
            let port = providers::free_cluster_port()?;
            let node_dir = dir.path().join(format!("node{i}"));
            std::fs::create_dir_all(&node_dir).map_err(|e| e.to_string())?;
            let args = redis_args(
                &node_dir,
                port,
                &["--cluster-enabled", "yes", "--cluster-node-timeout", "15000"],
            );
            processes.push(Process::start(
                &format!("redis cluster node {i}"),
                bin.clone(),
                args,
                port,
            )?);
            nodes.push(format!("127.0.0.1:{port}"));
        }
        providers::create_cluster(&nodes)?;
        Ok((
            Self {
                kind: Kind::Processes(processes),
                description: format!("3-master redis cluster {}, appendfsync always", nodes.join(",")),
                _dir: Some(dir),
            },
            nodes.join(","),
        ))
    }

    /// FerretDB 1 on SQLite.
    pub fn ferretdb() -> Result<(Self, String)> {
        let bin = providers::ferretdb_binary()?;
        let dir = TempDir::new("fault-ferretdb")?;
        let data = dir.path().join("data");
        std::fs::create_dir_all(&data).map_err(|e| e.to_string())?;
        let port = providers::free_port()?;
        let debug_port = providers::free_port()?;
        let args = vec![
            format!("--listen-addr=127.0.0.1:{port}"),
            format!("--debug-addr=127.0.0.1:{debug_port}"),
            "--handler=sqlite".to_string(),
            format!("--sqlite-url=file:{}/", data.display()),
            format!("--state-dir={}", dir.path().display()),
            "--telemetry=disable".to_string(),
            "--log-level=ERROR".to_string(),
        ];
        let process = Process::start("ferretdb", bin, args, port)?;
        Ok((
            Self {
                kind: Kind::Processes(vec![process]),
                description: format!("FerretDB 1 (SQLite) 127.0.0.1:{port}"),
                _dir: Some(dir),
            },
            format!("mongodb://127.0.0.1:{port}/"),
        ))
    }

    /// FerretDB 2 + PostgreSQL + DocumentDB on a data directory of its own (the engine must
    /// be buildable: see `mongo_engine`), with `synchronous_commit = on`.
    pub fn documentdb() -> Result<(Self, String)> {
        let server = DocumentDbServer::start_temporary()?;
        let uri = server.uri();
        Ok((
            Self {
                description: format!(
                    "FerretDB 2 + PostgreSQL 15 + DocumentDB {} ({})",
                    uri.trim_start_matches("mongodb://").trim_end_matches('/'),
                    server.build_note()
                ),
                kind: Kind::DocumentDb(Box::new(server)),
                _dir: None,
            },
            uri,
        ))
    }

    /// Kills part of the row's servers with SIGKILL, chosen by `pick`: one process of several
    /// (a Redis node); for the engine, the wire server (FerretDB 2). Returns what
    /// [`Servers::restart`] takes.
    pub fn kill(&mut self, pick: usize) -> usize {
        match &mut self.kind {
            Kind::Processes(processes) => {
                let i = pick % processes.len();
                processes[i].kill();
                i
            }
            Kind::DocumentDb(server) => {
                // The wire server only. PostgreSQL SIGKILLed under this load leaves DocumentDB's
                // RUM indexes damaged once restarted ("right sibling of RUM page is of different
                // type" on every find, measured): an engine defect no client can ride out.
                let _ = pick;
                server.kill_ferretdb_only();
                0
            }
        }
    }

    /// Starts what [`Servers::kill`] killed again, on its data.
    pub fn restart(&mut self, i: usize) -> Result<()> {
        match &mut self.kind {
            Kind::Processes(processes) => processes[i].restart(),
            Kind::DocumentDb(server) => server.restart(),
        }
    }
}
