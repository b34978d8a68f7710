//! Embedding acme-cse: two CSEs in one process, and the registration callbacks.
//!
//! Run with: `cargo run --example embed`
//!
//! Starts an IN-CSE and an MN-CSE on loopback (ephemeral ports, in-memory stores), lets
//! the MN register to the IN, and prints what the callbacks report: the MN's registration
//! status (with the registrar address in use), the CSRs the IN gains and loses, and a
//! walk over the IN's CSRs. Then the MN stops (and deregisters) and the IN follows.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use acme_cse::App;
use acme_cse::config::{CseKind, RegistrarSettings, Settings};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // The IN-CSE, accepting /id-mn.
    let mut settings = Settings::default();
    settings.admin.listen = String::new();
    settings.http.listen = "127.0.0.1:0".into();
    settings.database.in_memory = true;
    settings.cse.registration.allowed_csr_originators = vec!["/id-mn".into()];
    let in_app = App::build(settings.validate()?, None).await?;
    let in_url = format!("http://{}", in_app.local_addr());

    // User data travels by closure capture: here, a counter of CSR changes.
    let changes = Arc::new(AtomicUsize::new(0));
    let counter = changes.clone();
    in_app.remote().on_csr_update(move |csr, added| {
        let n = counter.fetch_add(1, Ordering::Relaxed) + 1;
        let verb = if added { "added" } else { "removed" };
        println!("[IN] CSR change #{n}: {} {verb} (cb {}, poa {:?})", csr.csi, csr.cb, csr.poa);
    });
    let in_remote = in_app.remote().clone();
    let in_token = in_app.shutdown_token();
    let in_running = in_app.start().await?;

    // The MN-CSE, registering to the IN.
    let mut settings = Settings::default();
    settings.admin.listen = String::new();
    settings.cse.kind = CseKind::Mn;
    settings.cse.cse_id = "/id-mn".into();
    settings.cse.resource_name = "cse-mn".into();
    settings.http.listen = "127.0.0.1:0".into();
    settings.database.in_memory = true;
    settings.cse.registrar = Some(RegistrarSettings {
        address: vec![in_url.clone()],
        cse_id: "/id-in".into(),
        resource_name: "cse-in".into(),
        ..RegistrarSettings::default()
    });
    let mn_app = App::build(settings.validate()?, None).await?;
    mn_app.remote().on_status(|registrar, status, address| {
        println!("[MN] registrar {} is now {status:?} (address {})", registrar.cse_id, address.unwrap_or("-"));
    });
    let mn_remote = mn_app.remote().clone();
    let mn_token = mn_app.shutdown_token();
    let mn_running = mn_app.start().await?;

    // A monitor round right now instead of waiting for check_interval.
    mn_remote.check_now().await?;
    println!("[MN] registered: {}", mn_remote.is_registered());
    in_remote.for_each_csr(|csr| {
        println!("[IN] has CSR {} (registrar: {}, descendants {:?})", csr.csi, csr.registrar, csr.dcse);
    });

    // Stop the MN: it deregisters (unregister_when_stopping defaults to true).
    mn_token.cancel();
    mn_running.stopped().await?;
    // Callbacks run on their own threads; give them a moment to print.
    tokio::time::sleep(Duration::from_millis(200)).await;
    println!("[IN] CSR changes seen: {}", changes.load(Ordering::Relaxed));
    in_token.cancel();
    in_running.stopped().await?;
    Ok(())
}
