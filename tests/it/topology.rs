//! The live topology page in a real headless Chromium: it shows the registration tree and
//! follows it without a reload. Skipped, loudly, where Chromium is not installed (`.ci/run`
//! installs it, so CI always runs it).

use std::process::Stdio;
use std::time::Duration;

use acme_cse::config::CseKind;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio_tungstenite::tungstenite::Message;

use crate::harness::{TestCse, registrar_settings, registree_settings};

const DEADLINE: Duration = Duration::from_secs(20);

/// The Chromium binary, if there is one (`CHROMIUM` names it explicitly).
fn chromium() -> Option<String> {
    if let Ok(path) = std::env::var("CHROMIUM") {
        return Some(path);
    }
    ["chromium", "chromium-browser", "google-chrome", "google-chrome-stable"].into_iter().find_map(|name| {
        std::env::var_os("PATH")
            .and_then(|paths| std::env::split_paths(&paths).map(|dir| dir.join(name)).find(|path| path.is_file()))
            .map(|path| path.display().to_string())
    })
}

/// A headless Chromium showing `url`, driven over the DevTools protocol.
struct Browser {
    child: tokio::process::Child,
    page: tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>,
    next_id: u64,
    _profile: tempfile::TempDir,
}

impl Browser {
    async fn open(binary: &str, url: &str) -> Browser {
        let profile = tempfile::tempdir().expect("a profile directory");
        let mut command = tokio::process::Command::new(binary);
        command
            .args(["--headless=new", "--disable-gpu", "--no-first-run", "--no-default-browser-check"])
            .args(["--remote-debugging-address=127.0.0.1", "--remote-debugging-port=0"])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg(url)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        if crate::harness::is_root() {
            command.arg("--no-sandbox");
        }
        let mut child = command.spawn().expect("Chromium starts");
        let stderr = child.stderr.take().expect("its stderr");
        let mut lines = BufReader::new(stderr).lines();
        let endpoint = tokio::time::timeout(DEADLINE, async {
            while let Ok(Some(line)) = lines.next_line().await {
                if let Some(endpoint) = line.strip_prefix("DevTools listening on ") {
                    return endpoint.to_string();
                }
            }
            panic!("Chromium ended without a DevTools endpoint");
        })
        .await
        .expect("Chromium offers its DevTools endpoint");
        // Keep reading its stderr so that it never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        let port = endpoint.trim_start_matches("ws://127.0.0.1:").split('/').next().unwrap_or_default().to_string();
        let mut page_socket = None;
        for _ in 0..100 {
            let targets: Value = reqwest::get(format!("http://127.0.0.1:{port}/json/list"))
                .await
                .expect("the DevTools target list")
                .json()
                .await
                .expect("JSON");
            page_socket = targets.as_array().into_iter().flatten().find_map(|target| {
                (target["type"] == "page" && target["url"].as_str().is_some_and(|at| at.starts_with("http")))
                    .then(|| target["webSocketDebuggerUrl"].as_str().map(str::to_string))
                    .flatten()
            });
            if page_socket.is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let page_socket = page_socket.expect("the page's DevTools socket");
        let (page, _) = tokio_tungstenite::connect_async(page_socket).await.expect("DevTools connection");
        Browser { child, page, next_id: 1, _profile: profile }
    }

    /// Evaluate `expression` in the page; its value.
    async fn evaluate(&mut self, expression: &str) -> Value {
        let id = self.next_id;
        self.next_id += 1;
        let call = json!({"id": id, "method": "Runtime.evaluate", "params": {"expression": expression, "returnByValue": true}});
        self.page.send(Message::Text(call.to_string().into())).await.expect("DevTools call");
        let answer = tokio::time::timeout(DEADLINE, async {
            while let Some(message) = self.page.next().await {
                let Ok(Message::Text(text)) = message else { continue };
                let answer: Value = serde_json::from_str(&text).unwrap_or_default();
                if answer["id"] == id {
                    return answer["result"]["result"]["value"].clone();
                }
            }
            Value::Null
        });
        answer.await.expect("Chromium answers within the deadline")
    }

    async fn text(&mut self) -> String {
        self.evaluate("document.body.innerText").await.as_str().unwrap_or_default().to_string()
    }

    /// Wait until the page's `condition` (a JavaScript expression) holds; fail naming
    /// `what` and showing the page when it does not within the deadline.
    async fn until(&mut self, what: &str, condition: &str) {
        let deadline = tokio::time::Instant::now() + DEADLINE;
        while tokio::time::Instant::now() < deadline {
            if self.evaluate(condition).await == json!(true) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("the page never showed {what}: {}", self.text().await);
    }
}

#[tokio::test]
async fn the_topology_page_shows_the_tree_and_follows_it_live_in_a_real_browser() {
    let Some(binary) = chromium() else {
        use std::io::Write;
        let _ = writeln!(
            std::io::stderr(),
            "SKIPPED the_topology_page_shows_the_tree_and_follows_it_live_in_a_real_browser: no Chromium (install the chromium package, or set CHROMIUM)"
        );
        return;
    };
    // An IN with an MN registered.
    let in_cse = TestCse::start(registrar_settings()).await;
    let mn = TestCse::start(registree_settings(CseKind::Mn, "/id-mn", "cse-mn", Some(&in_cse))).await;
    mn.remote.check_now().await.expect("monitor runs");
    let page = format!("{}/topology", in_cse.admin_url.as_deref().expect("an admin listener"));
    let mut browser = Browser::open(&binary, &page).await;

    // The page shows the IN and the MN, live.
    let text = |needle: &str| format!("document.body.innerText.includes({needle:?})");
    browser.until("the IN and the MN", &format!("{} && {}", text("/id-in"), text("/id-mn"))).await;
    browser.until("that it is live", &text("live")).await;
    let loaded_at = browser.evaluate("performance.timeOrigin").await;
    // A liveliness round: the page shows the probe.
    in_cse.remote.check_now().await.expect("monitor runs");
    browser.until("the probe", &text("last probe")).await;

    // An ASN registers at the MN: the page shows it below the MN, without a reload.
    let asn = TestCse::start(registree_settings(CseKind::Asn, "/id-asn", "cse-asn", Some(&mn))).await;
    asn.remote.check_now().await.expect("monitor runs");
    let below = r#"!!document.querySelector('#registrees li[data-cse="/id-mn"] li[data-cse="/id-asn"]')"#;
    browser.until("the ASN below the MN", below).await;

    // The ASN goes: the page drops it.
    asn.shutdown().await;
    browser.until("the ASN gone", &format!("!{}", text("/id-asn"))).await;
    assert_eq!(browser.evaluate("performance.timeOrigin").await, loaded_at, "the same page: no reload");

    // The MN goes too.
    mn.shutdown().await;
    browser.until("the MN gone", &format!("!{}", text("/id-mn"))).await;
    let _ = browser.child.kill().await;
    in_cse.shutdown().await;
}
