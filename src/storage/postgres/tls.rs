//! Connections to the server: in clear, or with TLS when the URL says `sslmode=require`.
//!
//! With TLS the server's certificate is always verified (rustls, the system's CAs plus
//! `database.ca_file`), stricter than libpq's `require`, which does not verify; so a URL
//! never sends a password to a server that merely claims the name. Without
//! `sslmode=require` the connection is in clear (`prefer` does not try TLS: a server with
//! a self-signed certificate would otherwise fail a start that worked in clear).

use std::path::Path;
use std::sync::Arc;

use deadpool_postgres::{Manager, ManagerConfig, RecyclingMethod};
use futures_util::StreamExt;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_postgres::config::SslMode;
use tokio_postgres::{AsyncMessage, Client, Config, Connection, NoTls, Notification};
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::error::{Error, Result};

/// How this store reaches the server.
#[derive(Clone)]
pub(super) enum Tls {
    Off,
    On(MakeRustlsConnect),
}

impl Tls {
    /// TLS when `config` asks for it (`sslmode=require`), trusting the system's CAs and
    /// those of `ca_file`.
    pub(super) fn for_config(config: &Config, ca_file: Option<&Path>, name: &str) -> Result<Tls> {
        if config.get_ssl_mode() != SslMode::Require {
            return Ok(Tls::Off);
        }
        let extra: Vec<CertificateDer<'static>> = match ca_file {
            Some(path) => CertificateDer::pem_file_iter(path)
                .and_then(Iterator::collect)
                .map_err(|error| Error::internal(format!("database.ca_file {}: {error}", path.display())))?,
            None => Vec::new(),
        };
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let verifier = rustls_platform_verifier::Verifier::new_with_extra_roots(extra, provider.clone())
            .map_err(|error| Error::internal(format!("{name}: cannot set up TLS: {error}")))?;
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|error| Error::internal(format!("{name}: cannot set up TLS: {error}")))?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(verifier))
            .with_no_client_auth();
        Ok(Tls::On(MakeRustlsConnect::new(config)))
    }

    /// The pool's connection manager.
    pub(super) fn manager(&self, config: Config) -> Manager {
        let manager = ManagerConfig { recycling_method: RecyclingMethod::Fast };
        match self {
            Tls::Off => Manager::from_config(config, NoTls, manager),
            Tls::On(tls) => Manager::from_config(config, tls.clone(), manager),
        }
    }

    /// A connection of its own, served by a task that ends when the connection does (it is
    /// the returned handle) and passes on what the server notifies.
    pub(super) async fn connect(
        &self,
        config: &Config,
    ) -> std::result::Result<(Client, JoinHandle<()>, mpsc::UnboundedReceiver<Notification>), tokio_postgres::Error>
    {
        let (notified, notifications) = mpsc::unbounded_channel();
        let (client, served) = match self {
            Tls::Off => {
                let (client, connection) = config.connect(NoTls).await?;
                (client, tokio::spawn(serve(connection, notified)))
            }
            Tls::On(tls) => {
                let (client, connection) = config.connect(tls.clone()).await?;
                (client, tokio::spawn(serve(connection, notified)))
            }
        };
        Ok((client, served, notifications))
    }
}

/// Serve `connection` until it ends, passing notifications on.
async fn serve<S, T>(mut connection: Connection<S, T>, notified: mpsc::UnboundedSender<Notification>)
where
    S: AsyncRead + AsyncWrite + Unpin,
    T: AsyncRead + AsyncWrite + Unpin,
{
    let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
    while let Some(Ok(message)) = messages.next().await {
        if let AsyncMessage::Notification(notification) = message {
            let _ = notified.send(notification);
        }
    }
}
