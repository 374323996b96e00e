//! FerretDB 2 on PostgreSQL 15 with Microsoft's DocumentDB extension: the Mongo-wire server of
//! the engine row. Built once from the sources in `CQRSX_DOCUMENTDB_SRC` (the recipe of
//! `../shared/mongo-engine/README.md`) into a cache outside the clone, keyed by the sources'
//! checksums, and started on free loopback ports with a data directory of its own
//! ([`DocumentDbServer`]), so that a second run on the same machine starts in seconds.
//!
//! The cache, `${XDG_CACHE_HOME:-$HOME/.cache}/cqrsx/documentdb-<key>/`, holds the files the
//! extensions install (`files/`, laid out from `/`), the FerretDB binary (`bin/ferretdb`), the
//! build's log and how long it took (`built`). PostgreSQL loads extensions only from its own
//! directories, so the cached files are copied there (as root) when they are missing or differ.

use std::fs::{self, File};
use std::io::Write;
use std::net::TcpStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::cmd::{self, say, Result};
use crate::providers::free_port;

/// The FerretDB release, from the Go module proxy.
pub const FERRETDB_VERSION: &str = "v2.7.0";
/// The PostgreSQL major version the extensions are built for (Debian 12's).
const PG_MAJOR: &str = "15";
/// Part of the cache key: change it when the build steps change, so old builds are not reused.
const RECIPE: &str = "recipe 1: pgvector, pg_cron, documentdb core + api + extended_rum, with_llvm=no";
/// What the build and the server need from Debian (the recipe's list).
const APT_PACKAGES: [&str; 13] = [
    "build-essential",
    "pkg-config",
    "postgresql-15",
    "postgresql-server-dev-15",
    "postgresql-15-postgis-3",
    "postgresql-15-rum",
    "libbson-dev",
    "libpcre2-dev",
    "libintelrdfpmath-dev",
    "libkrb5-dev",
    "libicu-dev",
    "systemtap-sdt-dev",
    "postgresql-client-15",
];
/// The settings of the recipe (the port, socket and address are given on the command line),
/// but for one: `synchronous_commit` stays on. With it off, a commit is acknowledged before its
/// WAL leaves PostgreSQL's shared memory, so a SIGKILL of the server loses acknowledged writes
/// (measured: 34 of the last 200 inserts). With it on and `fsync` off, the WAL is handed to the
/// kernel before the reply: a killed server loses nothing, a crashed machine may.
const SETTINGS: &str = "\
# cqrsx: the DocumentDB engine's settings (../shared/mongo-engine/README.md)
max_connections = 300
shared_preload_libraries = 'pg_cron,pg_documentdb_core,pg_documentdb'
cron.database_name = 'postgres'
cron.log_run = off
cron.log_statement = off
documentdb.enableUserCrud = true
fsync = off
synchronous_commit = on
full_page_writes = off
documentdb.rum_library_load_option = 'require_documentdb_extended_rum'
documentdb.alternate_index_handler_name = 'extended_rum'
documentdb.defaultUseCompositeOpClass = true
documentdb.enableIndexOrderbyPushdown = true
documentdb.useFileBasedPersistedCursors = true
autovacuum_naptime = 1s
autovacuum_analyze_scale_factor = 0.01
";
/// How long a server may take to accept connections (a crash recovery on a loaded machine
/// included): a hang detector, not a speed check.
const READY_WITHIN: Duration = Duration::from_secs(180);

fn pg_bin(program: &str) -> PathBuf {
    PathBuf::from(format!("/usr/lib/postgresql/{PG_MAJOR}/bin")).join(program)
}

// ---------------------------------------------------------------------------------------------
// Sources

/// One of the three source components: an archive or an extracted tree.
#[derive(Debug, Clone)]
enum Source {
    Archive(PathBuf),
    Tree(PathBuf),
}

/// The sources the engine is built from, and the cache key they give.
#[derive(Debug)]
struct Sources {
    documentdb: Source,
    pgvector: Source,
    pg_cron: Source,
    key: String,
}

/// Finds `name*.tar.gz` or a directory `name*` in `dir`.
fn component(dir: &Path, name: &str) -> Option<Source> {
    let mut entries: Vec<PathBuf> = fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    entries.sort();
    let fits = |p: &PathBuf| {
        let Some(n) = p.file_name().and_then(|n| n.to_str()) else {
            return false;
        };
        n == name || n.starts_with(&format!("{name}-"))
    };
    if let Some(archive) = entries
        .iter()
        .find(|p| fits(p) && p.is_file() && p.to_string_lossy().ends_with(".tar.gz"))
    {
        return Some(Source::Archive(archive.clone()));
    }
    entries
        .iter()
        .find(|p| fits(p) && p.is_dir())
        .cloned()
        .map(Source::Tree)
}

/// SHA-256 of some bytes, by `sha256sum` (coreutils), in hex.
fn sha256(bytes: &[u8]) -> Result<String> {
    let mut child = Command::new("sha256sum")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run sha256sum: {e}"))?;
    child
        .stdin
        .take()
        .ok_or("sha256sum has no stdin")?
        .write_all(bytes)
        .map_err(|e| format!("sha256sum: {e}"))?;
    let out = child.wait_with_output().map_err(|e| format!("sha256sum: {e}"))?;
    let hex = String::from_utf8_lossy(&out.stdout);
    hex.split_whitespace()
        .next()
        .map(str::to_string)
        .ok_or_else(|| "sha256sum printed nothing".to_string())
}

/// A fingerprint of an extracted tree: every file's path, size and modification time.
fn tree_fingerprint(dir: &Path) -> Result<String> {
    let out = Command::new("find")
        .arg(dir)
        .args(["-type", "f", "-not", "-path", "*/.git/*", "-printf", "%P %s %T@\\n"])
        .output()
        .map_err(|e| format!("find {}: {e}", dir.display()))?;
    let mut lines: Vec<&str> = std::str::from_utf8(&out.stdout)
        .map_err(|e| format!("find {}: {e}", dir.display()))?
        .lines()
        .collect();
    lines.sort_unstable();
    sha256(lines.join("\n").as_bytes())
}

impl Sources {
    /// The sources named by `CQRSX_DOCUMENTDB_SRC`: a directory holding the archives (checked
    /// against its `SHA256SUMS`) or extracted trees, or a DocumentDB tree itself (pgvector and
    /// pg_cron then beside it).
    fn locate() -> Result<Self> {
        let Some(raw) = std::env::var_os("CQRSX_DOCUMENTDB_SRC").filter(|v| !v.is_empty()) else {
            return Err(
                "CQRSX_DOCUMENTDB_SRC is not set (a directory with the DocumentDB, pgvector and \
                        pg_cron sources, e.g. ../shared/mongo-engine)"
                    .into(),
            );
        };
        let given = PathBuf::from(raw);
        let dir = fs::canonicalize(&given).map_err(|e| format!("CQRSX_DOCUMENTDB_SRC={}: {e}", given.display()))?;
        let (documentdb, others) = if dir.join("pg_documentdb_core").is_dir() {
            let parent = dir.parent().map(Path::to_path_buf).unwrap_or_else(|| dir.clone());
            (Some(Source::Tree(dir.clone())), parent)
        } else {
            (component(&dir, "documentdb"), dir.clone())
        };
        let missing = |what: &str, at: &Path| {
            format!(
                "CQRSX_DOCUMENTDB_SRC={}: no {what} source (an archive {what}-*.tar.gz or a directory) in {}",
                given.display(),
                at.display()
            )
        };
        let documentdb = documentdb.ok_or_else(|| missing("documentdb", &dir))?;
        let pgvector = component(&others, "pgvector").ok_or_else(|| missing("pgvector", &others))?;
        let pg_cron = component(&others, "pg_cron").ok_or_else(|| missing("pg_cron", &others))?;
        let mut material = format!("{RECIPE}\nferretdb {FERRETDB_VERSION}\npostgresql {PG_MAJOR}\n");
        let sums = others.join("SHA256SUMS");
        for source in [&documentdb, &pgvector, &pg_cron] {
            match source {
                Source::Archive(archive) => {
                    let name = archive.file_name().and_then(|n| n.to_str()).unwrap_or_default();
                    let listed = fs::read_to_string(&sums)
                        .map_err(|e| format!("{}: {e} (it must list the archives' checksums)", sums.display()))?;
                    let expected = listed
                        .lines()
                        .find_map(|l| {
                            let (sum, file) = l.split_once(char::is_whitespace)?;
                            (file.trim().trim_start_matches('*') == name).then(|| sum.to_string())
                        })
                        .ok_or_else(|| format!("{} does not list {name}", sums.display()))?;
                    let actual = sha256(&fs::read(archive).map_err(|e| format!("{}: {e}", archive.display()))?)?;
                    if actual != expected {
                        return Err(format!(
                            "{name}: checksum {actual} is not the {expected} that {} lists",
                            sums.display()
                        ));
                    }
                    material.push_str(&format!("{name} {actual}\n"));
                }
                Source::Tree(tree) => {
                    material.push_str(&format!("{} {}\n", tree.display(), tree_fingerprint(tree)?));
                }
            }
        }
        Ok(Self {
            documentdb,
            pgvector,
            pg_cron,
            key: sha256(material.as_bytes())?[..16].to_string(),
        })
    }
}

// ---------------------------------------------------------------------------------------------
// The build

/// A built engine: where its files are cached, and how this run got them.
#[derive(Debug, Clone)]
pub struct Engine {
    /// The cache directory of this build.
    pub dir: PathBuf,
    /// "built in 612 s" or "reused cached build (built in 612 s)".
    pub how: String,
}

impl Engine {
    fn ferretdb(&self) -> PathBuf {
        self.dir.join("bin").join("ferretdb")
    }
}

/// `${XDG_CACHE_HOME:-$HOME/.cache}/cqrsx`.
fn cache_root() -> Result<PathBuf> {
    if let Some(xdg) = std::env::var_os("XDG_CACHE_HOME").filter(|v| !v.is_empty()) {
        return Ok(PathBuf::from(xdg).join("cqrsx"));
    }
    let home =
        std::env::var_os("HOME").ok_or("neither XDG_CACHE_HOME nor HOME is set: no place for the build cache")?;
    Ok(PathBuf::from(home).join(".cache").join("cqrsx"))
}

static PREPARED: OnceLock<std::result::Result<Engine, String>> = OnceLock::new();

/// The engine, built (or found in the cache) once per process, its packages and files in
/// place. Every caller after the first gets the first one's answer.
pub fn prepare() -> Result<Engine> {
    PREPARED.get_or_init(prepare_uncached).clone()
}

fn prepare_uncached() -> Result<Engine> {
    let sources = Sources::locate()?;
    ensure_packages()?;
    let root = cache_root()?;
    fs::create_dir_all(&root).map_err(|e| format!("cannot create {}: {e}", root.display()))?;
    let dir = root.join(format!("documentdb-{}", sources.key));
    // Two runs on one machine build once: the second waits for the first's lock.
    let lock_path = root.join(format!("documentdb-{}.lock", sources.key));
    let lock = File::create(&lock_path).map_err(|e| format!("cannot create {}: {e}", lock_path.display()))?;
    lock.lock()
        .map_err(|e| format!("cannot lock {}: {e}", lock_path.display()))?;
    let marker = dir.join("built");
    let how = match fs::read_to_string(&marker) {
        Ok(seconds) => format!("reused cached build (built in {} s)", seconds.trim()),
        Err(_) => {
            say(&format!(
                "mongo engine: building PostgreSQL {PG_MAJOR} extensions (DocumentDB, pgvector, pg_cron) and FerretDB \
                 {FERRETDB_VERSION} into {} (once; later runs reuse it)",
                dir.display()
            ));
            let started = Instant::now();
            build(&sources, &dir)?;
            let seconds = started.elapsed().as_secs();
            fs::write(&marker, format!("{seconds}\n")).map_err(|e| format!("{}: {e}", marker.display()))?;
            format!("built in {seconds} s")
        }
    };
    let engine = Engine { dir, how };
    install_files(&engine.dir.join("files"))?;
    drop(lock);
    Ok(engine)
}

/// Whether a Debian package is installed.
fn installed(package: &str) -> bool {
    cmd::probe("dpkg-query", &["-W", "-f=${Status}", package])
        .is_some_and(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
}

/// Installs what is missing of the recipe's packages (as root, with apt-get).
fn ensure_packages() -> Result<()> {
    let missing: Vec<&str> = APT_PACKAGES.into_iter().filter(|p| !installed(p)).collect();
    if missing.is_empty() {
        return Ok(());
    }
    if !cmd::is_root() || cmd::which("apt-get").is_none() {
        return Err(format!(
            "packages missing and this is not root on Debian: apt-get install {}",
            missing.join(" ")
        ));
    }
    say(&format!("mongo engine: installing {} (apt-get)", missing.join(" ")));
    let started = Instant::now();
    // Other installs of this run (redis-server, docker.io) may hold dpkg's lock: wait for it.
    let lock = "DPkg::Lock::Timeout=600";
    quiet(
        Command::new("apt-get").args(["-o", lock, "update", "-qq"]),
        "apt-get update",
    )?;
    quiet(
        Command::new("apt-get")
            .args(["-o", lock, "install", "-y", "-qq", "--no-install-recommends"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive"),
        "apt-get install",
    )?;
    say(&format!(
        "mongo engine: packages installed in {:.0} s",
        started.elapsed().as_secs_f64()
    ));
    Ok(())
}

/// Runs a command, its output kept out of the terminal unless it fails.
fn quiet(command: &mut Command, what: &str) -> Result<()> {
    let out = command
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run {what}: {e}"))?;
    if out.status.success() {
        return Ok(());
    }
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let tail: Vec<&str> = text.lines().rev().take(20).collect();
    Err(format!(
        "{what} failed ({}):\n{}",
        out.status,
        tail.into_iter().rev().collect::<Vec<_>>().join("\n")
    ))
}

/// Builds everything into `dir` (a fresh directory; what a failed build left is removed).
fn build(sources: &Sources, dir: &Path) -> Result<()> {
    let _ = fs::remove_dir_all(dir);
    let work = dir.join("build");
    let stage = dir.join("files");
    for d in [&work, &stage] {
        fs::create_dir_all(d).map_err(|e| format!("cannot create {}: {e}", d.display()))?;
    }
    let log_path = dir.join("build.log");
    say(&format!("mongo engine: build log {}", log_path.display()));
    // FerretDB builds while the extensions compile: its module download overlaps their compile.
    let ferretdb = {
        let gobin = dir.join("bin");
        let log = dir.join("ferretdb-build.log");
        std::thread::spawn(move || build_ferretdb(&gobin, &log))
    };
    let extensions = build_extensions(sources, &work, &stage, &log_path);
    let ferretdb = ferretdb
        .join()
        .map_err(|_| "the FerretDB build thread panicked".to_string())
        .and_then(|r| r);
    extensions?;
    ferretdb?;
    let _ = fs::remove_dir_all(&work);
    Ok(())
}

/// `go install` of FerretDB into `gobin`.
fn build_ferretdb(gobin: &Path, log: &Path) -> Result<()> {
    let go = cmd::which("go").ok_or("Go is not installed (FerretDB 2 is built with `go install`)")?;
    let module = format!("github.com/FerretDB/FerretDB/v2/cmd/ferretdb@{FERRETDB_VERSION}");
    let started = Instant::now();
    let (ok, output) = cmd::run_logged(Command::new(go).args(["install", &module]).env("GOBIN", gobin), log)?;
    if !ok {
        let tail: Vec<&str> = output.lines().rev().take(15).collect();
        return Err(format!(
            "go install {module} failed (log: {}):\n{}",
            log.display(),
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        ));
    }
    let bin = gobin.join("ferretdb");
    let version = Command::new(&bin)
        .arg("--version")
        .output()
        .map_err(|e| format!("{}: {e}", bin.display()))?;
    if !version.status.success() {
        return Err(format!(
            "the FerretDB built at {} does not run: {}",
            bin.display(),
            String::from_utf8_lossy(&version.stderr)
        ));
    }
    say(&format!(
        "mongo engine: FerretDB {FERRETDB_VERSION} built in {:.0} s",
        started.elapsed().as_secs_f64()
    ));
    Ok(())
}

/// Extracts (or copies) a source into `work`; returns its top directory.
fn unpack(source: &Source, work: &Path) -> Result<PathBuf> {
    match source {
        Source::Archive(archive) => {
            let out = Command::new("tar")
                .arg("xzf")
                .arg(archive)
                .arg("-C")
                .arg(work)
                .output()
                .map_err(|e| format!("tar: {e}"))?;
            if !out.status.success() {
                return Err(format!(
                    "cannot extract {}: {}",
                    archive.display(),
                    String::from_utf8_lossy(&out.stderr)
                ));
            }
            // The archive's one top directory.
            let listing = Command::new("tar")
                .arg("tzf")
                .arg(archive)
                .output()
                .map_err(|e| format!("tar: {e}"))?;
            let text = String::from_utf8_lossy(&listing.stdout);
            let top = text
                .lines()
                .next()
                .and_then(|l| l.split('/').next())
                .ok_or_else(|| format!("{} is empty", archive.display()))?;
            Ok(work.join(top))
        }
        Source::Tree(tree) => {
            let name = tree
                .file_name()
                .ok_or_else(|| format!("{} has no name", tree.display()))?;
            let target = work.join(name);
            let out = Command::new("cp")
                .arg("-a")
                .arg(tree)
                .arg(&target)
                .output()
                .map_err(|e| format!("cp: {e}"))?;
            if !out.status.success() {
                return Err(format!(
                    "cannot copy {}: {}",
                    tree.display(),
                    String::from_utf8_lossy(&out.stderr)
                ));
            }
            Ok(target)
        }
    }
}

/// The recipe's compile and install steps, installed into `stage` (DESTDIR).
fn build_extensions(sources: &Sources, work: &Path, stage: &Path, log: &Path) -> Result<()> {
    let started = Instant::now();
    let pkgconfig = work.join("pkgconfig");
    fs::create_dir_all(&pkgconfig).map_err(|e| format!("{}: {e}", pkgconfig.display()))?;
    // Debian's Intel decimal library has no pkg-config file; DocumentDB looks one up.
    let libdir = "/usr/lib/x86_64-linux-gnu";
    fs::write(
        pkgconfig.join("intelmathlib.pc"),
        format!(
            "prefix=/usr\nlibdir={libdir}\nincludedir=/usr/include\nName: intelmathlib\n\
             Description: Intel decimal floating point (Debian)\nVersion: 2.0\nCflags: -I${{includedir}}\n\
             Libs: -L${{libdir}} -lbidgcc000\n"
        ),
    )
    .map_err(|e| format!("intelmathlib.pc: {e}"))?;
    let pkg_path = match std::env::var("PKG_CONFIG_PATH") {
        Ok(p) if !p.is_empty() => format!("{}:{p}", pkgconfig.display()),
        _ => pkgconfig.display().to_string(),
    };
    let pgvector = unpack(&sources.pgvector, work)?;
    let pg_cron = unpack(&sources.pg_cron, work)?;
    let documentdb = unpack(&sources.documentdb, work)?;
    let mut log_file = File::create(log).map_err(|e| format!("{}: {e}", log.display()))?;
    let destdir = format!("DESTDIR={}", stage.display());
    // No LLVM bitcode (halves the compile); Debian's libbson 1.23 lacks one constant that
    // DocumentDB (which pins 1.28) uses.
    let copt = "COPT=-DBSON_SUBTYPE_SENSITIVE=0x08 -Wno-error=switch";
    let steps: Vec<(PathBuf, Vec<&str>)> = vec![
        (pgvector.clone(), vec!["-j2", "with_llvm=no"]),
        (pgvector, vec!["install", "with_llvm=no", &destdir]),
        (pg_cron.clone(), vec!["-j2", "with_llvm=no"]),
        (pg_cron, vec!["install", "with_llvm=no", &destdir]),
        (documentdb.join("pg_documentdb_core"), vec!["-j2", "with_llvm=no", copt]),
        (documentdb.join("pg_documentdb"), vec!["-j2", "with_llvm=no", copt]),
        (
            documentdb.join("internal").join("pg_documentdb_extended_rum"),
            vec!["-j2", "with_llvm=no", copt],
        ),
        (
            documentdb.clone(),
            vec![
                "install-no-distributed",
                "install-documentdb-rum",
                "with_llvm=no",
                copt,
                &destdir,
            ],
        ),
    ];
    for (at, args) in steps {
        let mut command = Command::new("make");
        command
            .arg("-C")
            .arg(&at)
            .args(&args)
            .env("PG_CONFIG", pg_bin("pg_config"))
            .env("PKG_CONFIG_PATH", &pkg_path)
            .stdin(Stdio::null());
        let shown = format!("make -C {} {}", at.display(), args.join(" "));
        say(&format!("$ {shown}  >> {}", log.display()));
        let _ = writeln!(log_file, "\n$ {shown}");
        let out = log_file.try_clone().map_err(|e| format!("{}: {e}", log.display()))?;
        let err = log_file.try_clone().map_err(|e| format!("{}: {e}", log.display()))?;
        let status = command
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err))
            .status()
            .map_err(|e| format!("cannot run make: {e}"))?;
        if !status.success() {
            let text = fs::read_to_string(log).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(25).collect();
            return Err(format!(
                "`{shown}` failed ({status}; log: {}):\n{}",
                log.display(),
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            ));
        }
    }
    say(&format!(
        "mongo engine: extensions built in {:.0} s",
        started.elapsed().as_secs_f64()
    ));
    Ok(())
}

/// Every file under `dir`, as paths relative to it.
fn files_under(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(d) = pending.pop() {
        for entry in fs::read_dir(&d).map_err(|e| format!("{}: {e}", d.display()))? {
            let path = entry.map_err(|e| format!("{}: {e}", d.display()))?.path();
            if path.is_dir() {
                pending.push(path);
            } else if let Ok(rel) = path.strip_prefix(dir) {
                out.push(rel.to_path_buf());
            }
        }
    }
    Ok(out)
}

/// Copies the cached extension files into PostgreSQL's directories where they are missing or
/// differ (each by a rename, so a running server never maps a half-written library).
fn install_files(stage: &Path) -> Result<()> {
    let files = files_under(stage)?;
    if files.is_empty() {
        return Err(format!("the build cache {} holds no installed files", stage.display()));
    }
    let mut copied = 0;
    for rel in &files {
        let from = stage.join(rel);
        let to = Path::new("/").join(rel);
        let wanted = fs::read(&from).map_err(|e| format!("{}: {e}", from.display()))?;
        if fs::read(&to).is_ok_and(|have| have == wanted) {
            continue;
        }
        if !cmd::is_root() {
            return Err(format!(
                "{} is not installed and this is not root: run once as root to install the engine's files",
                to.display()
            ));
        }
        let parent = to.parent().ok_or_else(|| format!("{} has no parent", to.display()))?;
        fs::create_dir_all(parent).map_err(|e| format!("{}: {e}", parent.display()))?;
        let temp = parent.join(format!(".cqrsx-{}", std::process::id()));
        fs::write(&temp, &wanted).map_err(|e| format!("{}: {e}", temp.display()))?;
        let mode = fs::metadata(&from)
            .map_err(|e| format!("{}: {e}", from.display()))?
            .permissions();
        fs::set_permissions(&temp, mode).map_err(|e| format!("{}: {e}", temp.display()))?;
        fs::rename(&temp, &to).map_err(|e| format!("{}: {e}", to.display()))?;
        copied += 1;
    }
    if copied > 0 {
        say(&format!(
            "mongo engine: installed {copied} extension files into PostgreSQL's directories"
        ));
    }
    Ok(())
}

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

/// Sends `signal` to the process group `pgid`.
fn signal_group(pgid: u32, signal: &str) {
    let _ = Command::new("kill")
        .args(["-s", signal, "--", &format!("-{pgid}")])
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
        signal_group(pgid, "KILL");
        let _ = self.child.wait();
        let deadline = Instant::now() + Duration::from_secs(30);
        while group_alive(pgid) && Instant::now() < deadline {
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

// ---------------------------------------------------------------------------------------------
// `cargo xtask mongo-engine`

/// Starts the engine on a temporary directory and serves until standard input closes; or, with
/// `crash_check`, checks that a restart after SIGKILL finds every acknowledged write.
pub async fn serve(crash_check: bool) -> Result<()> {
    let mut server = tokio::task::spawn_blocking(DocumentDbServer::start_temporary)
        .await
        .map_err(|e| e.to_string())??;
    say(&format!("mongo engine: {} ({})", server.uri(), server.build_note()));
    if crash_check {
        return crash_check_on(&mut server).await;
    }
    say(&format!("CQRSX_TEST_MONGO_URI={}", server.uri()));
    say(&format!(
        "PostgreSQL: psql -h 127.0.0.1 -p {} -U postgres (data in {})",
        server.postgres_port(),
        server.dir.display()
    ));
    say("serving until standard input closes (Ctrl-D)");
    tokio::task::spawn_blocking(|| {
        let mut sink = String::new();
        while std::io::stdin().read_line(&mut sink).is_ok_and(|n| n > 0) {
            sink.clear();
        }
    })
    .await
    .map_err(|e| e.to_string())?;
    Ok(())
}

/// Inserts documents, kills both servers (and, once, only PostgreSQL or only FerretDB),
/// restarts and counts what survived.
async fn crash_check_on(server: &mut DocumentDbServer) -> Result<()> {
    use mongodb::bson::doc;
    let mut acknowledged = 0u64;
    for round in 0..3 {
        let client = mongodb::Client::with_uri_str(server.uri())
            .await
            .map_err(|e| e.to_string())?;
        let coll = client
            .database("cqrsx_crash")
            .collection::<mongodb::bson::Document>("docs");
        for _ in 0..200 {
            coll.insert_one(doc! { "_id": acknowledged as i64 })
                .await
                .map_err(|e| format!("insert {acknowledged}: {e}"))?;
            acknowledged += 1;
        }
        let started = Instant::now();
        let what = match round {
            0 => {
                server.kill();
                "both"
            }
            1 => {
                server.kill_postgres_only();
                "postgres"
            }
            _ => {
                server.kill_ferretdb_only();
                "ferretdb"
            }
        };
        let killed = started.elapsed();
        let restarted = Instant::now();
        tokio::task::block_in_place(|| server.restart())?;
        let client = mongodb::Client::with_uri_str(server.uri())
            .await
            .map_err(|e| e.to_string())?;
        let coll = client
            .database("cqrsx_crash")
            .collection::<mongodb::bson::Document>("docs");
        // FerretDB reconnects to a restarted PostgreSQL on its own: give it a bounded time.
        let deadline = Instant::now() + READY_WITHIN;
        let count = loop {
            match coll.count_documents(doc! {}).await {
                Ok(n) => break n,
                Err(_) if Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(200)).await,
                Err(e) => return Err(format!("count after restart: {e}")),
            }
        };
        say(&format!(
            "crash check: SIGKILL {what} ({:.1} s), restart ({:.1} s): {count} of {acknowledged} acknowledged inserts found",
            killed.as_secs_f64(),
            restarted.elapsed().as_secs_f64()
        ));
        if count != acknowledged {
            return Err(format!("{acknowledged} inserts were acknowledged, {count} survived"));
        }
    }
    say("crash check: every acknowledged insert survived each kill");
    Ok(())
}
