//! Building the engine once into the cache: the sources, the Debian packages, the recipe's
//! compile and install steps, FerretDB by `go install`, and the cached files' installation.

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::Instant;

use super::{pg_bin, APT_PACKAGES, FERRETDB_VERSION, PG_MAJOR, RECIPE};
use crate::cmd::{self, say, Result};

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
    pub(super) fn ferretdb(&self) -> PathBuf {
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
pub(super) fn quiet(command: &mut Command, what: &str) -> Result<()> {
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
