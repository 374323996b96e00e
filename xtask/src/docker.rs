//! The Docker engine behind the testcontainers path: which engine, whether it can be used (and
//! if not, why), and a relay that negotiates the API version with it.
//!
//! testcontainers talks to the engine through bollard, which sends every request as the API
//! version it was built for (`/v1.52/…`) and never negotiates down: an older engine (Debian's
//! Docker 20.10 speaks API 1.41) refuses every request. So xtask points testcontainers — its own
//! and the test processes' (`DOCKER_HOST`) — at a relay on a private Unix socket. The relay asks
//! the engine for its version once and rewrites the version in each request path to the
//! engine's when the engine's is older; everything else passes through unchanged: bodies,
//! streamed logs, and upgraded (exec/attach) connections.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpStream, UnixListener, UnixStream};

use crate::cmd::Result;

/// The engine's socket when `DOCKER_HOST` is unset.
const DEFAULT_SOCKET: &str = "/var/run/docker.sock";
/// The `DOCKER_HOST` the user configured, for xtask processes that xtask starts.
const CONFIGURED: &str = "CQRSX_DOCKER_HOST_CONFIGURED";
/// How long the probe waits for the engine's answer.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// Where an engine listens.
#[derive(Clone, Debug)]
pub enum Endpoint {
    Unix(PathBuf),
    Tcp(String),
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Endpoint::Unix(path) => write!(f, "unix://{}", path.display()),
            Endpoint::Tcp(addr) => write!(f, "tcp://{addr}"),
        }
    }
}

/// Whether the container path can be taken.
pub enum Status {
    /// The engine answers; testcontainers reaches it through the relay.
    Usable {
        /// The engine and its API version, for the summary ("Docker 20.10.24 (API 1.41) at …").
        engine: String,
    },
    /// Not used, and why (one line for the summary).
    NotUsed(String),
}

/// What `main` decided before the runtime started: the relay's socket and the engine that
/// `DOCKER_HOST` named before xtask pointed it at the relay.
struct Routing {
    relay: PathBuf,
    configured: Option<String>,
}

static ROUTING: OnceLock<Routing> = OnceLock::new();
/// The engine xtask started itself, and the network namespace its containers' ports live in.
static LOCAL_ENGINE: OnceLock<(Endpoint, String)> = OnceLock::new();
static STATUS: tokio::sync::OnceCell<Status> = tokio::sync::OnceCell::const_new();

/// Points `DOCKER_HOST` at the relay (which starts only if an engine answers). Called by `main`
/// before any thread exists, since it changes the process environment.
pub fn route_through_relay() {
    // An xtask started by xtask (the bench runs itself in release) inherits the relay as
    // DOCKER_HOST: it reads the engine its parent was configured with instead.
    let configured = match std::env::var(CONFIGURED) {
        Ok(inherited) => Some(inherited).filter(|host| !host.is_empty()),
        Err(_) => std::env::var("DOCKER_HOST").ok(),
    };
    std::env::set_var(CONFIGURED, configured.as_deref().unwrap_or(""));
    // TLS engines cannot be relayed (the relay would have to terminate TLS): they are used as
    // configured, and the probe says if their API is too old.
    if configured
        .as_deref()
        .is_some_and(|h| h.starts_with("https://") || h.starts_with("ssh://"))
    {
        return;
    }
    let relay = std::env::temp_dir().join(format!("cqrsx-docker-relay-{}.sock", std::process::id()));
    std::env::set_var("DOCKER_HOST", format!("unix://{}", relay.display()));
    let _ = ROUTING.set(Routing { relay, configured });
}

/// Uses the engine xtask started itself (see `engine.rs`) instead of the configured one. Must be
/// called before the first [`status`].
pub fn use_local_engine(endpoint: Endpoint, netns: String) {
    let _ = LOCAL_ENGINE.set((endpoint, netns));
}

/// The network namespace of xtask's own engine, when it runs one: its containers' ports are
/// reachable only from inside it.
pub fn local_netns() -> Option<&'static str> {
    LOCAL_ENGINE.get().map(|(_, netns)| netns.as_str())
}

/// Whether the container path can be taken (probed once per run).
pub async fn status() -> &'static Status {
    STATUS.get_or_init(probe).await
}

/// `Ok` when the container path can be taken, else the reason it is not.
pub async fn usable() -> std::result::Result<(), String> {
    match status().await {
        Status::Usable { .. } => Ok(()),
        Status::NotUsed(reason) => Err(reason.clone()),
    }
}

/// Removes the relay's socket (at the end of the run).
pub fn remove_relay_socket() {
    if let Some(routing) = ROUTING.get() {
        let _ = std::fs::remove_file(&routing.relay);
    }
}

async fn probe() -> Status {
    if std::env::var_os("CQRSX_NO_DOCKER").is_some() {
        return Status::NotUsed("CQRSX_NO_DOCKER is set".into());
    }
    let Some(routing) = ROUTING.get() else {
        return Status::NotUsed(format!(
            "DOCKER_HOST={} is a TLS or SSH engine, which xtask does not relay",
            std::env::var("DOCKER_HOST").unwrap_or_default()
        ));
    };
    let endpoint = match LOCAL_ENGINE.get() {
        Some((local, _)) => local.clone(),
        None => match configured_endpoint(routing.configured.as_deref()) {
            Ok(endpoint) => endpoint,
            Err(reason) => return Status::NotUsed(reason),
        },
    };
    let version = match tokio::time::timeout(PROBE_TIMEOUT, engine_version(&endpoint)).await {
        Ok(Ok(version)) => version,
        Ok(Err(e)) => return Status::NotUsed(format!("the engine at {endpoint} does not answer: {e}")),
        Err(_) => {
            return Status::NotUsed(format!(
                "the engine at {endpoint} did not answer within {} s",
                PROBE_TIMEOUT.as_secs()
            ))
        }
    };
    let listener = match bind(&routing.relay) {
        Ok(listener) => listener,
        Err(e) => return Status::NotUsed(e),
    };
    let engine = format!(
        "Docker {} (API {}.{}) at {endpoint}",
        version.engine, version.api.0, version.api.1
    );
    tokio::spawn(relay(listener, endpoint, version.api));
    Status::Usable { engine }
}

/// The engine `DOCKER_HOST` names, or the default socket.
fn configured_endpoint(configured: Option<&str>) -> std::result::Result<Endpoint, String> {
    let endpoint = match configured {
        None => {
            let socket = PathBuf::from(DEFAULT_SOCKET);
            if !socket.exists() {
                return Err(format!(
                    "no Docker engine: DOCKER_HOST is unset and {DEFAULT_SOCKET} does not exist"
                ));
            }
            Endpoint::Unix(socket)
        }
        Some(host) => {
            if let Some(path) = host.strip_prefix("unix://") {
                Endpoint::Unix(PathBuf::from(path))
            } else if let Some(addr) = host.strip_prefix("tcp://").or_else(|| host.strip_prefix("http://")) {
                Endpoint::Tcp(addr.trim_end_matches('/').to_string())
            } else {
                return Err(format!("DOCKER_HOST={host}: a scheme xtask does not know"));
            }
        }
    };
    if let Endpoint::Unix(path) = &endpoint {
        if !path.exists() {
            return Err(format!("DOCKER_HOST names {}, which does not exist", path.display()));
        }
    }
    Ok(endpoint)
}

struct EngineVersion {
    engine: String,
    api: (u32, u32),
}

/// Asks the engine for its version (`GET /version`, which every API version serves unversioned).
async fn engine_version(endpoint: &Endpoint) -> std::result::Result<EngineVersion, String> {
    let io = connect(endpoint).await.map_err(|e| format!("cannot connect: {e}"))?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake::<_, String>(TokioIo::new(io))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(connection);
    let request = Request::get("/version")
        .header("host", "docker")
        .body(String::new())
        .map_err(|e| e.to_string())?;
    let response = sender.send_request(request).await.map_err(|e| e.to_string())?;
    let status = response.status();
    let body = http_body_util::BodyExt::collect(response.into_body())
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    if status != StatusCode::OK {
        return Err(format!("GET /version: {status}: {}", String::from_utf8_lossy(&body)));
    }
    let json: serde_json::Value = serde_json::from_slice(&body).map_err(|e| format!("GET /version: {e}"))?;
    let api = json["ApiVersion"]
        .as_str()
        .and_then(parse_version)
        .ok_or("GET /version: no ApiVersion")?;
    Ok(EngineVersion {
        engine: json["Version"].as_str().unwrap_or("?").to_string(),
        api,
    })
}

fn parse_version(text: &str) -> Option<(u32, u32)> {
    let (major, minor) = text.split_once('.')?;
    Some((major.parse().ok()?, minor.parse().ok()?))
}

fn bind(path: &Path) -> std::result::Result<UnixListener, String> {
    let _ = std::fs::remove_file(path);
    UnixListener::bind(path).map_err(|e| format!("cannot open the Docker relay at {}: {e}", path.display()))
}

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

async fn connect(endpoint: &Endpoint) -> std::io::Result<Box<dyn Io>> {
    Ok(match endpoint {
        Endpoint::Unix(path) => Box::new(UnixStream::connect(path).await?),
        Endpoint::Tcp(addr) => Box::new(TcpStream::connect(addr.as_str()).await?),
    })
}

/// Serves the relay until the process ends.
async fn relay(listener: UnixListener, engine: Endpoint, api: (u32, u32)) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            // Out of descriptors or the like: wait instead of spinning.
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let engine = engine.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request| forward(request, engine.clone(), api));
            // A client that goes away mid-request only ends its own connection.
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .with_upgrades()
                .await;
        });
    }
}

/// Sends one request to the engine, with its API version lowered to the engine's if needed.
async fn forward(mut request: Request<Incoming>, engine: Endpoint, api: (u32, u32)) -> Result<Response<Incoming>> {
    if let Some(rewritten) = lower_version(request.uri().path_and_query().map(|p| p.as_str()), api) {
        *request.uri_mut() = rewritten.parse().map_err(|e| format!("relay: {e}"))?;
    }
    let client_upgrade = hyper::upgrade::on(&mut request);
    let io = connect(&engine)
        .await
        .map_err(|e| format!("relay: cannot reach {engine}: {e}"))?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .map_err(|e| format!("relay: {e}"))?;
    tokio::spawn(connection.with_upgrades());
    let mut response = sender.send_request(request).await.map_err(|e| format!("relay: {e}"))?;
    if response.status() == StatusCode::SWITCHING_PROTOCOLS {
        // exec/attach: after the 101 both sides speak a raw stream; join them.
        let engine_upgrade = hyper::upgrade::on(&mut response);
        tokio::spawn(async move {
            if let (Ok(client), Ok(engine)) = (client_upgrade.await, engine_upgrade.await) {
                let _ = tokio::io::copy_bidirectional(&mut TokioIo::new(client), &mut TokioIo::new(engine)).await;
            }
        });
    }
    Ok(response)
}

/// The path with its `/vX.Y/` prefix lowered to the engine's API version, when it asks for a
/// newer one; `None` when it needs no change.
fn lower_version(path: Option<&str>, api: (u32, u32)) -> Option<String> {
    let rest = path?.strip_prefix("/v")?;
    let (version, tail) = rest.split_once('/')?;
    let asked = parse_version(version)?;
    (asked > api).then(|| format!("/v{}.{}/{tail}", api.0, api.1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_engine_that_is_not_there_is_named_in_the_reason() {
        let missing = configured_endpoint(Some("unix:///nonexistent/docker.sock"));
        assert!(
            matches!(&missing, Err(why) if why.contains("/nonexistent/docker.sock") && why.contains("does not exist"))
        );
        let scheme = configured_endpoint(Some("npipe:////./pipe/docker_engine"));
        assert!(matches!(&scheme, Err(why) if why.contains("npipe")));
        assert!(
            matches!(configured_endpoint(Some("tcp://10.0.0.1:2375/")), Ok(Endpoint::Tcp(a)) if a == "10.0.0.1:2375")
        );
    }

    #[tokio::test]
    async fn a_stopped_engine_says_it_does_not_answer() {
        // A socket file whose engine is gone: what a stopped dockerd leaves behind.
        let path = std::env::temp_dir().join(format!("cqrsx-stopped-engine-{}.sock", std::process::id()));
        drop(bind(&path).expect("bind"));
        let answer = engine_version(&Endpoint::Unix(path.clone())).await;
        let _ = std::fs::remove_file(&path);
        assert!(
            matches!(&answer, Err(why) if why.starts_with("cannot connect")),
            "{:?}",
            answer.err()
        );
    }

    #[test]
    fn newer_versions_are_lowered_to_the_engines() {
        assert_eq!(
            lower_version(Some("/v1.52/containers/create?name=x"), (1, 41)).as_deref(),
            Some("/v1.41/containers/create?name=x")
        );
        assert_eq!(lower_version(Some("/v1.41/_ping"), (1, 41)), None);
        assert_eq!(lower_version(Some("/v1.40/_ping"), (1, 41)), None);
        assert_eq!(lower_version(Some("/version"), (1, 41)), None);
        assert_eq!(lower_version(Some("/v2.0/x"), (1, 52)).as_deref(), Some("/v1.52/x"));
    }
}
