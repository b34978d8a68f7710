//! The lease on the work only one instance of a shared database does: a session advisory
//! lock taken by one connection of this instance, held for that connection's life.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::tls::Tls;

/// The lease on singleton work: a session advisory lock, held by one connection.
const LEASE_LOCK: i64 = 0x6163_6d65_0002;

/// How often an instance without the lease tries to take it, and the holder checks that
/// its connection still stands (the server drops the lock the moment the session ends).
const LEASE_PROBE: Duration = Duration::from_secs(1);

/// Take the lease when it is free and hold it while the connection that holds it stands;
/// say which on `held`, and on `tried` once the first attempt is over. Ends (releasing the
/// lease, and saying so) when `stop` is cancelled.
pub(super) async fn keep_lease(
    config: tokio_postgres::Config,
    tls: Tls,
    held: tokio::sync::watch::Sender<bool>,
    stop: CancellationToken,
    name: String,
    tried: Option<tokio::sync::oneshot::Sender<()>>,
) {
    hold_lease(&config, &tls, &held, &stop, &name, tried).await;
    held.send_replace(false);
}

async fn hold_lease(
    config: &tokio_postgres::Config,
    tls: &Tls,
    held: &tokio::sync::watch::Sender<bool>,
    stop: &CancellationToken,
    name: &str,
    mut tried: Option<tokio::sync::oneshot::Sender<()>>,
) {
    let mut tried = move || {
        if let Some(tried) = tried.take() {
            let _ = tried.send(());
        }
    };
    loop {
        held.send_replace(false);
        let connected = tokio::select! {
            () = stop.cancelled() => return,
            connected = tls.connect(config) => connected,
        };
        let (client, mut connection, _) = match connected {
            Ok(connected) => connected,
            Err(error) => {
                tracing::debug!(%error, "{name}: cannot connect to take the lease");
                tried();
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = tokio::time::sleep(LEASE_PROBE) => continue,
                }
            }
        };
        // The connection runs as its own task (ending when `client` goes); its end is the
        // end of the session, and so of the lease.
        loop {
            if !*held.borrow() {
                let taken = tokio::select! {
                    () = stop.cancelled() => return,
                    _ = &mut connection => break,
                    taken = client.query_one("SELECT pg_try_advisory_lock($1)", &[&LEASE_LOCK]) => taken,
                };
                match taken.and_then(|row| row.try_get::<_, bool>(0)) {
                    Ok(true) => {
                        tracing::info!("{name}: this instance holds the lease (registration, expiry, notifications)");
                        held.send_replace(true);
                    }
                    Ok(false) => tracing::debug!("{name}: the lease is held by another instance"),
                    Err(error) => {
                        tracing::debug!(%error, "{name}: cannot take the lease");
                        break;
                    }
                }
                tried();
            }
            // Holding: the server releases the lock the moment this session ends, so the
            // lease is this connection's life. Not holding: try again after a while.
            tokio::select! {
                () = stop.cancelled() => return,
                _ = &mut connection => break,
                () = tokio::time::sleep(LEASE_PROBE) => {}
            }
            if *held.borrow() && client.simple_query("SELECT 1").await.is_err() {
                break;
            }
        }
        if *held.borrow() {
            tracing::warn!("{name}: the connection holding the lease was lost");
        }
    }
}
