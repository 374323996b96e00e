//! The matrix's plan: which servers each backend's group gets, how its results are cut into
//! summary rows, and what is cleaned up after it.

use cqrsx_mongo::{MongoClientManager, MongoConfig};

use super::{Group, Packages};
use crate::cmd::{say, Result};
use crate::docker;
use crate::providers::{self, Provided};
use crate::Backend;

/// What a backend's group needs: its servers (kept alive until the tests end) and how to run.
pub(super) struct Planned {
    pub(super) backend: Backend,
    pub(super) groups: Vec<(Group, Vec<RowSpec>)>,
    /// Kept alive until the matrix ends.
    pub(super) servers: Vec<Provided>,
    /// Runs after the group's tests (the servers' test data is removed).
    pub(super) cleanup: Vec<Cleanup>,
    /// Rows that could not run, and why.
    pub(super) not_run: Vec<NotRun>,
}

/// A row whose server could not be provided.
pub(super) struct NotRun {
    pub(super) backend: &'static str,
    pub(super) why: String,
    /// Whether its absence fails the run (the engine row, once its sources are named).
    pub(super) required: bool,
}

/// How to cut a group's results into a summary row.
pub(super) struct RowSpec {
    pub(super) backend: &'static str,
    pub(super) provider: String,
    /// The label of the row's fixtures in the cases' reports.
    pub(super) label: &'static str,
    pub(super) select: fn(&str) -> bool,
    /// Lines shown under the row (the capabilities a Mongo row detected).
    pub(super) notes: Vec<String>,
}

pub(super) enum Cleanup {
    Redis(Option<String>, Option<String>),
    Mongo(String),
}

pub(super) fn any(_: &str) -> bool {
    true
}

pub(super) async fn plan(backend: Backend) -> Result<Planned> {
    match backend {
        Backend::Memory => Ok(Planned {
            backend,
            groups: vec![(
                Group {
                    name: "memory",
                    packages: Packages::AllBut(&["cqrsx-redis", "cqrsx-mongo"]),
                    // The CLI's `cluster::` and `redis_only::` tests need Redis: they run in its
                    // rows.
                    filter: ["--skip", "cluster::", "--skip", "redis_only::"]
                        .map(String::from)
                        .to_vec(),
                    feature: None,
                    doctests: true,
                    env: Vec::new(),
                    netns: None,
                },
                vec![RowSpec {
                    backend: "memory",
                    provider: "in-process".into(),
                    label: "memory",
                    select: any,
                    notes: Vec::new(),
                }],
            )],
            servers: Vec::new(),
            cleanup: Vec::new(),
            not_run: Vec::new(),
        }),
        Backend::Redis => {
            let standalone = providers::redis_standalone().await?;
            say(&format!("redis standalone: {}", standalone.provider));
            let cluster = providers::redis_cluster().await?;
            say(&format!("redis cluster: {}", cluster.provider));
            let var = |p: &Provided, name: &str| p.env.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
            // A container's data goes with it; local servers are cleaned.
            let mut cleanup = vec![Cleanup::Redis(None, var(&cluster, "CQRSX_TEST_REDIS_CLUSTER_NODES"))];
            if !standalone.in_container {
                cleanup.push(Cleanup::Redis(var(&standalone, "CQRSX_TEST_REDIS_URL"), None));
            }
            let standalone_row = RowSpec {
                backend: "redis standalone",
                provider: standalone.provider.clone(),
                label: "redis standalone",
                select: |n| !n.starts_with("cluster::"),
                notes: Vec::new(),
            };
            let cluster_row = RowSpec {
                backend: "redis cluster",
                provider: cluster.provider.clone(),
                label: "redis cluster",
                select: |n| n.starts_with("cluster::"),
                notes: Vec::new(),
            };
            let group = |name, filter: &[&str], env, netns| Group {
                name,
                packages: Packages::Only(&["cqrsx-redis", "cqrsx-cli"]),
                filter: filter.iter().map(|a| a.to_string()).collect(),
                feature: None,
                doctests: false,
                env,
                netns,
            };
            let netns = docker::local_netns().filter(|_| standalone.in_container);
            let groups = match netns {
                // The standalone container is reachable only inside the engine's namespace and
                // the cluster only outside it: one group each.
                Some(netns) => vec![
                    (
                        group(
                            "redis",
                            &["--skip", "cluster::"],
                            standalone.env.clone(),
                            Some(netns.to_string()),
                        ),
                        vec![standalone_row],
                    ),
                    (
                        group("redis-cluster", &["cluster::"], cluster.env.clone(), None),
                        vec![cluster_row],
                    ),
                ],
                None => vec![(
                    group(
                        "redis",
                        &[],
                        standalone.env.iter().chain(&cluster.env).cloned().collect(),
                        None,
                    ),
                    vec![standalone_row, cluster_row],
                )],
            };
            Ok(Planned {
                backend,
                groups,
                servers: vec![standalone, cluster],
                cleanup,
                not_run: Vec::new(),
            })
        }
        Backend::Mongo => {
            let server = providers::mongo().await?;
            say(&format!("mongo: {}", server.provider));
            let uri = uri_of(&server)?;
            // On a real MongoDB container the Docker-only tests run too (tests/docker.rs).
            let feature = server.in_container.then_some("docker-tests");
            if feature.is_some() {
                say("mongo:8.0 runs: the Docker-only tests (tests/docker.rs) run too");
            }
            let caps = capabilities(&uri, &server.provider).await?;
            let name = if caps.ferretdb.as_deref().is_some_and(|v| v.starts_with("v1.")) {
                "mongo (FerretDB 1)"
            } else {
                "mongo"
            };
            let mut groups = vec![(
                Group {
                    name: "mongo",
                    packages: Packages::Only(&["cqrsx-mongo", "cqrsx-cli"]),
                    filter: ["--skip", "cluster::", "--skip", "redis_only::"]
                        .map(String::from)
                        .to_vec(),
                    feature,
                    doctests: false,
                    env: server.env.clone(),
                    netns: None,
                },
                vec![RowSpec {
                    backend: name,
                    provider: server.provider.clone(),
                    label: "mongo",
                    select: any,
                    notes: vec![format!("capabilities: {}", caps.summary())],
                }],
            )];
            let mut cleanup = Vec::new();
            if !server.disposable {
                cleanup.push(Cleanup::Mongo(uri));
            }
            let mut servers = vec![server];
            let mut not_run = Vec::new();
            // The engine row: FerretDB 2 + DocumentDB, built once and cached (mongo_engine.rs).
            match providers::mongo_engine().await {
                Ok(engine) => {
                    say(&format!("{ENGINE_ROW}: {}", engine.provider));
                    let uri = uri_of(&engine)?;
                    let caps = capabilities(&uri, &engine.provider).await?;
                    groups.push((
                        Group {
                            name: "mongo-engine",
                            packages: Packages::Only(&["cqrsx-mongo", "cqrsx-cli"]),
                            filter: ["--skip", "cluster::", "--skip", "redis_only::"]
                                .map(String::from)
                                .to_vec(),
                            feature: None,
                            doctests: false,
                            env: engine.env.clone(),
                            netns: None,
                        },
                        vec![RowSpec {
                            backend: ENGINE_ROW,
                            provider: engine.provider.clone(),
                            label: "mongo",
                            select: any,
                            notes: vec![format!("capabilities: {}", caps.summary())],
                        }],
                    ));
                    servers.push(engine);
                }
                Err(why) => {
                    let required = std::env::var_os("CQRSX_DOCUMENTDB_SRC").is_some_and(|v| !v.is_empty());
                    say(&format!(
                        "{ENGINE_ROW}: NOT RUN: {why}{}",
                        if required {
                            " (CQRSX_DOCUMENTDB_SRC is set: the run fails)"
                        } else {
                            ""
                        }
                    ));
                    not_run.push(NotRun {
                        backend: ENGINE_ROW,
                        why,
                        required,
                    });
                }
            }
            Ok(Planned {
                backend,
                groups,
                servers,
                cleanup,
                not_run,
            })
        }
    }
}

/// The summary row of the Mongo suite on FerretDB 2 + DocumentDB.
pub(super) const ENGINE_ROW: &str = "mongo (FerretDB 2 + DocumentDB)";

pub(super) fn uri_of(server: &Provided) -> Result<String> {
    server
        .env
        .iter()
        .find(|(k, _)| k == "CQRSX_TEST_MONGO_URI")
        .map(|(_, v)| v.clone())
        .ok_or_else(|| "the mongo provider gave no URI".to_string())
}

/// The capabilities the Mongo backend detects on a server (for its summary row).
pub(super) async fn capabilities(uri: &str, provider: &str) -> Result<cqrsx_mongo::ServerCapabilities> {
    let config = MongoConfig::default()
        .with_uri(uri)
        .with_database(format!("{}caps", crate::cleanup::TEST_NAMESPACE));
    match MongoClientManager::connect(config).await {
        Ok(client) => Ok(client.capabilities().clone()),
        Err(e) => Err(format!("cannot reach {provider}: {e}")),
    }
}
