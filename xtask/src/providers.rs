//! Servers for the test and bench matrix.
//!
//! For each server, in order: a URL from the environment; a container through testcontainers
//! when a Docker engine answers (see `docker.rs`); a local binary started on a free loopback port
//! (installed first when it is missing and this machine can install it). When the container path
//! is not taken, the provider says why. A backend that cannot be provided is an error, never a
//! silent skip.

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use testcontainers::runners::AsyncRunner;
use testcontainers::{ContainerAsync, ImageExt};
use testcontainers_modules::mongo::Mongo;
use testcontainers_modules::redis::Redis;

use crate::cmd::{self, say, Result};
use crate::docker;
use crate::mongo_engine::{self, DocumentDbServer};

/// Redis image tag for the testcontainers path (the module's default, 5.0, has no Functions).
pub const REDIS_TAG: &str = "7.4";
/// MongoDB image tag for the testcontainers path.
const MONGO_TAG: &str = "8.0";
/// How long a container may take to start (an image that is missing and cannot be pulled
/// fails sooner).
const CONTAINER_START: Duration = Duration::from_secs(180);
/// The FerretDB release installed when no MongoDB-wire server is available.
const FERRETDB_VERSION: &str = "v1.24.2";

/// Something that keeps a server alive until dropped.
pub(crate) enum Guard {
    Process {
        child: Child,
        _dir: TempDir,
    },
    Cluster {
        _nodes: Vec<Guard>,
    },
    RedisContainer {
        _container: Box<ContainerAsync<Redis>>,
    },
    MongoContainer {
        _container: Box<ContainerAsync<Mongo>>,
    },
    /// FerretDB 2 + PostgreSQL + DocumentDB on a data directory of its own (removed with it).
    Engine {
        _server: Box<DocumentDbServer>,
    },
    External,
}

impl Drop for Guard {
    fn drop(&mut self) {
        if let Guard::Process { child, .. } = self {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A server the tests can use: how it was provided, and the environment that points at it.
pub struct Provided {
    /// Which provider answered, for the summary ("local redis-server 127.0.0.1:23001", …).
    pub provider: String,
    /// Variables the test or bench process gets.
    pub env: Vec<(String, String)>,
    /// Whether the server is a container (removed with it: no data to clean up).
    pub in_container: bool,
    /// Whether the server and its data go when it is dropped (a container, or the engine on a
    /// temporary directory): nothing to clean up.
    pub disposable: bool,
    /// Why the container path was not taken, when it was not.
    pub no_container: Option<String>,
    _guard: Guard,
}

impl Provided {
    fn new(provider: String, env: Vec<(String, String)>, guard: Guard) -> Self {
        Self {
            provider,
            env,
            in_container: matches!(guard, Guard::RedisContainer { .. } | Guard::MongoContainer { .. }),
            disposable: matches!(
                guard,
                Guard::RedisContainer { .. } | Guard::MongoContainer { .. } | Guard::Engine { .. }
            ),
            no_container: None,
            _guard: guard,
        }
    }

    fn without_container(mut self, reason: Option<String>) -> Self {
        self.no_container = reason;
        self
    }
}

/// A temporary directory removed on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    /// A fresh directory under `target/xtask-servers`.
    pub fn new(label: &str) -> Result<Self> {
        let base = cmd::root().join("target").join("xtask-servers");
        let dir = base.join(format!("{label}-{}-{}", std::process::id(), free_port()?));
        std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        Ok(Self(dir))
    }

    /// Where it is.
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A free loopback port (the OS picks it).
pub fn free_port() -> Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| format!("no free port: {e}"))?;
    listener
        .local_addr()
        .map(|a| a.port())
        .map_err(|e| format!("no free port: {e}"))
}

/// A free port whose cluster bus port (port + 10000) is free too.
pub fn free_cluster_port() -> Result<u16> {
    for _ in 0..200 {
        let port = free_port()?;
        if port < 55_000 && TcpListener::bind(("127.0.0.1", port + 10_000)).is_ok() {
            return Ok(port);
        }
    }
    Err("no free port pair for a Redis cluster node".into())
}

fn wait_for_port(port: u16, what: &str, child: &mut Child) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Ok(());
        }
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!("{what} exited before it listened on {port} ({status})"));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Err(format!("{what} did not listen on 127.0.0.1:{port} within 30s"))
}

// ---------------------------------------------------------------------------------------------
// Redis

/// The `redis-server` binary, installing it from the Debian packages when missing and allowed.
pub fn redis_server_binary() -> Result<PathBuf> {
    if let Some(path) = cmd::which("redis-server") {
        return Ok(path);
    }
    let hint = "install it with `apt-get install -y redis-server` (or set CQRSX_REDIS_URL)";
    if cmd::is_root() && cmd::which("apt-get").is_some() {
        say("xtask: redis-server is not installed; installing it from the Debian packages (apt-get)");
        cmd::run(Command::new("apt-get").args(["update", "-qq"]))?;
        cmd::run(
            Command::new("apt-get")
                .args([
                    "install",
                    "-y",
                    "-qq",
                    "--no-install-recommends",
                    "redis-server",
                    "redis-tools",
                ])
                .env("DEBIAN_FRONTEND", "noninteractive"),
        )?;
        // The package starts a system instance on 6379; the tests use their own instances.
        return cmd::which("redis-server").ok_or_else(|| format!("redis-server still missing after apt-get; {hint}"));
    }
    Err(format!(
        "no Redis available: no CQRSX_REDIS_URL, no usable Docker engine, no redis-server; {hint}"
    ))
}

/// A `redis-server` of its own on `port` (with `extra` arguments), stopped and its directory
/// removed when the guard is dropped.
pub(crate) fn start_redis(label: &str, extra: &[&str], port: u16) -> Result<Guard> {
    let bin = redis_server_binary()?;
    let dir = TempDir::new(label)?;
    let mut command = Command::new(&bin);
    command
        .arg("--port")
        .arg(port.to_string())
        .args([
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--daemonize",
            "no",
        ])
        .arg("--dir")
        .arg(dir.path())
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut child = command
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", bin.display()))?;
    wait_for_port(port, "redis-server", &mut child)?;
    Ok(Guard::Process { child, _dir: dir })
}

/// A standalone Redis.
pub async fn redis_standalone() -> Result<Provided> {
    if let Ok(url) = std::env::var("CQRSX_REDIS_URL") {
        let provider = format!("CQRSX_REDIS_URL ({})", redact(&url));
        return Ok(Provided::new(provider, redis_env(url), Guard::External));
    }
    let no_container = match redis_container().await {
        Ok(provided) => return Ok(provided),
        Err(reason) => reason,
    };
    say(&format!("redis: container path not taken: {no_container}"));
    let port = free_port()?;
    let guard = start_redis("redis", &[], port)?;
    let provider = format!("local redis-server 127.0.0.1:{port}");
    Ok(
        Provided::new(provider, redis_env(format!("redis://127.0.0.1:{port}")), guard)
            .without_container(Some(no_container)),
    )
}

/// `redis:<REDIS_TAG>` through testcontainers, or why not.
async fn redis_container() -> Result<Provided> {
    docker::usable().await?;
    let started = tokio::time::timeout(CONTAINER_START, Redis::default().with_tag(REDIS_TAG).start()).await;
    let container = started
        .map_err(|_| format!("redis:{REDIS_TAG} did not start within {} s", CONTAINER_START.as_secs()))?
        .map_err(|e| format!("testcontainers redis:{REDIS_TAG}: {e}"))?;
    let host = container.get_host().await.map_err(|e| e.to_string())?;
    let port = container.get_host_port_ipv4(6379).await.map_err(|e| e.to_string())?;
    let provider = match docker::local_netns() {
        Some(netns) => format!("testcontainers redis:{REDIS_TAG} (local engine, netns {netns})"),
        None => format!("testcontainers redis:{REDIS_TAG}"),
    };
    let guard = Guard::RedisContainer {
        _container: Box::new(container),
    };
    Ok(Provided::new(
        provider,
        redis_env(format!("redis://{host}:{port}")),
        guard,
    ))
}

fn redis_env(url: String) -> Vec<(String, String)> {
    let mut env = vec![("CQRSX_TEST_REDIS_URL".to_string(), url)];
    // The restart test starts and kills its own server: it needs the binary.
    if let Some(bin) = cmd::which("redis-server") {
        env.push(("CQRSX_TEST_REDIS_SERVER".into(), bin.display().to_string()));
    }
    env
}

/// A 3-master Redis Cluster.
pub async fn redis_cluster() -> Result<Provided> {
    if let Ok(nodes) = std::env::var("CQRSX_REDIS_CLUSTER_NODES") {
        let provider = format!("CQRSX_REDIS_CLUSTER_NODES ({nodes})");
        let env = vec![("CQRSX_TEST_REDIS_CLUSTER_NODES".into(), nodes)];
        return Ok(Provided::new(provider, env, Guard::External));
    }
    // Containers would need their announced addresses mapped to the host; three local
    // processes are simpler and as real, so the cluster always runs from the local binary.
    let mut nodes = Vec::new();
    let mut guards = Vec::new();
    for i in 0..3 {
        let port = free_cluster_port()?;
        let conf = format!("nodes-{port}.conf");
        guards.push(start_redis(
            &format!("redis-cluster-{i}"),
            &[
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                &conf,
                "--cluster-node-timeout",
                "5000",
            ],
            port,
        )?);
        nodes.push(format!("127.0.0.1:{port}"));
    }
    create_cluster(&nodes)?;
    let provider = format!("local 3-master redis cluster {}", nodes.join(","));
    let env = vec![("CQRSX_TEST_REDIS_CLUSTER_NODES".into(), nodes.join(","))];
    Ok(Provided::new(provider, env, Guard::Cluster { _nodes: guards }))
}

/// Makes a cluster of the (empty, cluster-enabled) nodes, three masters and no replicas, and
/// waits until every node says it is ok.
pub fn create_cluster(nodes: &[String]) -> Result<()> {
    let cli = cmd::which("redis-cli").ok_or("redis-cli is missing (apt-get install -y redis-tools)")?;
    let output = Command::new(&cli)
        .args(["--cluster", "create"])
        .args(nodes)
        .args(["--cluster-replicas", "0", "--cluster-yes"])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("redis-cli --cluster create: {e}"))?;
    if !output.status.success() {
        return Err(format!(
            "redis-cli --cluster create failed: {}",
            String::from_utf8_lossy(&output.stdout)
        ));
    }
    wait_cluster_ok(&cli, nodes)
}

fn wait_cluster_ok(cli: &Path, nodes: &[String]) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    'retry: while Instant::now() < deadline {
        for node in nodes {
            let (host, port) = node.split_once(':').unwrap_or((node, "6379"));
            let info = Command::new(cli)
                .args(["-h", host, "-p", port, "cluster", "info"])
                .output();
            let ok = info.is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("cluster_state:ok"));
            if !ok {
                std::thread::sleep(Duration::from_millis(200));
                continue 'retry;
            }
        }
        return Ok(());
    }
    Err(format!(
        "the Redis cluster {} did not reach cluster_state:ok",
        nodes.join(",")
    ))
}

// ---------------------------------------------------------------------------------------------
// MongoDB

/// A MongoDB-wire server.
pub async fn mongo() -> Result<Provided> {
    if let Ok(uri) = std::env::var("CQRSX_MONGO_URI") {
        let provider = format!("CQRSX_MONGO_URI ({})", redact(&uri));
        return Ok(Provided::new(
            provider,
            vec![("CQRSX_TEST_MONGO_URI".into(), uri)],
            Guard::External,
        ));
    }
    let no_container = match mongo_container().await {
        Ok(provided) => return Ok(provided),
        Err(reason) => reason,
    };
    say(&format!("mongo: container path not taken: {no_container}"));
    Ok(mongo_local().await?.without_container(Some(no_container)))
}

/// FerretDB 2 + PostgreSQL + DocumentDB from `CQRSX_DOCUMENTDB_SRC`, built once into the cache
/// outside the clone and started on free loopback ports with a temporary data directory.
pub async fn mongo_engine() -> Result<Provided> {
    let server = tokio::task::spawn_blocking(DocumentDbServer::start_temporary)
        .await
        .map_err(|e| format!("the engine's start panicked: {e}"))??;
    let uri = server.uri();
    let provider = format!(
        "local FerretDB {} + PostgreSQL 15 + DocumentDB {} ({})",
        mongo_engine::FERRETDB_VERSION,
        uri.trim_start_matches("mongodb://").trim_end_matches('/'),
        server.build_note()
    );
    let env = vec![("CQRSX_TEST_MONGO_URI".to_string(), uri)];
    Ok(Provided::new(
        provider,
        env,
        Guard::Engine {
            _server: Box::new(server),
        },
    ))
}

/// `mongo:<MONGO_TAG>` as a single-node replica set through testcontainers, or why not.
async fn mongo_container() -> Result<Provided> {
    docker::usable().await?;
    if let Some(netns) = docker::local_netns() {
        return Err(format!(
            "the local engine (netns {netns}) has only the redis image built here; mongo:{MONGO_TAG} needs a registry"
        ));
    }
    let started = tokio::time::timeout(CONTAINER_START, Mongo::repl_set().with_tag(MONGO_TAG).start()).await;
    let container = started
        .map_err(|_| format!("mongo:{MONGO_TAG} did not start within {} s", CONTAINER_START.as_secs()))?
        .map_err(|e| format!("testcontainers mongo:{MONGO_TAG}: {e}"))?;
    let host = container.get_host().await.map_err(|e| e.to_string())?;
    let port = container.get_host_port_ipv4(27017).await.map_err(|e| e.to_string())?;
    let provider = format!("testcontainers mongo:{MONGO_TAG} (single-node replica set)");
    let uri = format!("mongodb://{host}:{port}/?directConnection=true");
    let guard = Guard::MongoContainer {
        _container: Box::new(container),
    };
    Ok(Provided::new(
        provider,
        vec![("CQRSX_TEST_MONGO_URI".into(), uri)],
        guard,
    ))
}

/// A local `mongod`, else FerretDB (built with Go when missing).
async fn mongo_local() -> Result<Provided> {
    if let Some(mongod) = cmd::which("mongod") {
        let port = free_port()?;
        let dir = TempDir::new("mongod")?;
        let mut child = Command::new(&mongod)
            .args([
                "--bind_ip",
                "127.0.0.1",
                "--port",
                &port.to_string(),
                "--quiet",
                "--dbpath",
            ])
            .arg(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot start mongod: {e}"))?;
        wait_for_port(port, "mongod", &mut child)?;
        let provider = format!("local mongod 127.0.0.1:{port}");
        let env = vec![("CQRSX_TEST_MONGO_URI".into(), format!("mongodb://127.0.0.1:{port}"))];
        return Ok(Provided::new(provider, env, Guard::Process { child, _dir: dir }));
    }
    let ferret = ferretdb_binary()?;
    let port = free_port()?;
    let debug_port = free_port()?;
    let dir = TempDir::new("ferretdb")?;
    std::fs::create_dir_all(dir.path().join("data")).map_err(|e| e.to_string())?;
    let mut child = Command::new(&ferret)
        .arg(format!("--listen-addr=127.0.0.1:{port}"))
        .arg(format!("--debug-addr=127.0.0.1:{debug_port}"))
        .arg("--handler=sqlite")
        .arg(format!("--sqlite-url=file:{}/", dir.path().join("data").display()))
        .arg(format!("--state-dir={}", dir.path().display()))
        .args(["--telemetry=disable", "--log-level=ERROR"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", ferret.display()))?;
    wait_for_port(port, "ferretdb", &mut child)?;
    let provider = format!("local FerretDB {FERRETDB_VERSION} (SQLite) 127.0.0.1:{port}");
    let env = vec![("CQRSX_TEST_MONGO_URI".into(), format!("mongodb://127.0.0.1:{port}"))];
    Ok(Provided::new(provider, env, Guard::Process { child, _dir: dir }))
}

/// A working FerretDB binary: on PATH, in `~/go/bin`, or built by xtask into `target/tools`.
pub fn ferretdb_binary() -> Result<PathBuf> {
    let built = cmd::root().join("target").join("tools").join("ferretdb");
    let home_bin = std::env::var_os("HOME").map(|h| PathBuf::from(h).join("go").join("bin").join("ferretdb"));
    let candidates = [cmd::which("ferretdb"), home_bin, Some(built.clone())];
    for candidate in candidates.into_iter().flatten() {
        if candidate.is_file() && ferretdb_runs(&candidate) {
            return Ok(candidate);
        }
    }
    let hint = format!(
        "install Go and run `go install github.com/FerretDB/FerretDB/cmd/ferretdb@{FERRETDB_VERSION}`, \
         or set CQRSX_MONGO_URI"
    );
    if cmd::which("go").is_none() {
        return Err(format!(
            "no MongoDB available: no CQRSX_MONGO_URI, no usable Docker engine, no mongod, no Go; {hint}"
        ));
    }
    say(&format!(
        "xtask: no MongoDB-wire server found; installing FerretDB {FERRETDB_VERSION} with Go"
    ));
    install_ferretdb(&built)?;
    if ferretdb_runs(&built) {
        Ok(built)
    } else {
        Err(format!(
            "the FerretDB built at {} does not run; {hint}",
            built.display()
        ))
    }
}

fn ferretdb_runs(bin: &Path) -> bool {
    Command::new(bin)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// `go install …@v1.24.2` builds a binary that panics at start because the module zip lacks
/// `build/version/version.txt` (normally generated by FerretDB's own build). So xtask fetches
/// the same module through the Go proxy, writes that file, and builds the same command.
fn install_ferretdb(target: &Path) -> Result<()> {
    let module = format!("github.com/FerretDB/FerretDB@{FERRETDB_VERSION}");
    let out = Command::new("go")
        .args(["mod", "download", "-json", &module])
        .output()
        .map_err(|e| format!("go mod download: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "go mod download {module} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let info: serde_json::Value =
        serde_json::from_slice(&out.stdout).map_err(|e| format!("go mod download output: {e}"))?;
    let source = info
        .get("Dir")
        .and_then(|d| d.as_str())
        .ok_or("go mod download gave no Dir")?;
    let work = cmd::root().join("target").join("tools").join("ferretdb-src");
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(work.parent().unwrap_or(&work)).map_err(|e| e.to_string())?;
    cmd::run(Command::new("cp").args(["-r", source]).arg(&work))?;
    cmd::run(Command::new("chmod").args(["-R", "u+w"]).arg(&work))?;
    std::fs::write(work.join("build/version/version.txt"), format!("{FERRETDB_VERSION}\n"))
        .map_err(|e| format!("writing version.txt: {e}"))?;
    cmd::run(
        Command::new("go")
            .args(["build", "-o"])
            .arg(target)
            .arg("./cmd/ferretdb")
            .current_dir(&work),
    )?;
    let _ = std::fs::remove_dir_all(&work);
    Ok(())
}

/// Hides a password in a URL for printing.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => format!("{}://***@{}", &url[..scheme], &url[at + 1..]),
        _ => url.to_string(),
    }
}
