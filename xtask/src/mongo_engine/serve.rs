//! `cargo xtask mongo-engine`: one engine started by hand, or its crash check.

use std::time::{Duration, Instant};

use super::server::DocumentDbServer;
use super::READY_WITHIN;
use crate::cmd::{say, Result};

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
        server.dir().display()
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
