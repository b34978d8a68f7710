//! A lightweight registree simulator for `bench/run.sh` (scenario 6, liveliness at scale):
//! ONE loopback HTTP/1.1 server that plays the registree side of many remote CSEs. It is also
//! the notification receiver of scenario 8 (notifications).
//!
//! - Any request whose path names `mn<N>` (e.g. the probe `GET /~/id-mn17/cse-mn17`) but is
//!   not a discovery (`fu=1`) is a probe of registree N: its arrival time is recorded and it
//!   is answered `200`,
//!   `X-M2M-RSC: 2000`, `X-M2M-RI` echoed and a small `{"m2m:cb": {...}}` body, unless N is
//!   "gone": then the connection is closed without an answer (a transport failure, as for a
//!   CSE whose process died).
//! - Admin paths: `GET /_sim/drop?from=A&to=B` marks registrees A..=B gone,
//!   `GET /_sim/revive` clears that, `GET /_sim/probes` returns one line `N NANOS GONE` per
//!   probe received since the start or the last `GET /_sim/reset` (NANOS since the simulator
//!   started), `GET /_sim/now` the current NANOS.
//! - Notifications: any request whose path starts with `/notify` is answered `200`,
//!   `X-M2M-RSC: 2000` with `X-M2M-RI` echoed, and counted with its arrival time (nanoseconds
//!   since the Unix epoch, the clock a driver in another process can read too).
//!   `GET /_sim/notes` returns `COUNT FIRST LAST DISTINCT` (arrival times of the first and
//!   the last notification since the start or the last reset; DISTINCT counts different
//!   path and `X-M2M-RI` pairs, so COUNT - DISTINCT are repeats); `GET /_sim/wait?n=K&ms=T`
//!   returns the same once COUNT reaches K, or after T milliseconds.
//!
//! Run: `cargo run --release --example registree_sim -- <port>` (port 0: any free one; the
//! first line printed is `listening <port>`).

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;

#[derive(Default)]
struct State {
    gone: HashSet<u64>,
    probes: Vec<(u64, u128, bool)>,
    notes: Notes,
}

/// The notifications received: how many, when the first and the last arrived, and which
/// (path, request ID) pairs were seen.
#[derive(Default)]
struct Notes {
    count: u64,
    first: u128,
    last: u128,
    seen: HashSet<(String, String)>,
}

impl Notes {
    fn line(&self) -> String {
        format!("{} {} {} {}\n", self.count, self.first, self.last, self.seen.len())
    }
}

struct Sim {
    started: Instant,
    state: Mutex<State>,
    /// Woken at every notification (for `/_sim/wait`).
    arrived: Notify,
}

impl Sim {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let port: u16 = std::env::args().nth(1).unwrap_or_else(|| "0".into()).parse()?;
    let listener = TcpListener::bind(("127.0.0.1", port)).await?;
    println!("listening {}", listener.local_addr()?.port());
    let sim = Arc::new(Sim { started: Instant::now(), state: Mutex::new(State::default()), arrived: Notify::new() });
    loop {
        let (stream, _) = listener.accept().await?;
        let sim = sim.clone();
        tokio::spawn(async move {
            let _ = serve(stream, sim).await;
        });
    }
}

/// The registree number in a path: the digits after the last `mn`.
fn registree(path: &str) -> Option<u64> {
    let at = path.rfind("mn")?;
    let digits: String = path[at + 2..].chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

fn epoch_nanos() -> u128 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |since| since.as_nanos())
}

/// `/_sim/wait?n=K&ms=T`: the notes once K notifications arrived, or after T milliseconds.
async fn wait_for_notes(sim: &Sim, path: &str) -> String {
    let want = query_value(path, "n").unwrap_or(1);
    let deadline = tokio::time::Instant::now() + Duration::from_millis(query_value(path, "ms").unwrap_or(10_000));
    loop {
        let arrived = sim.arrived.notified();
        {
            let state = sim.lock();
            if state.notes.count >= want {
                return state.notes.line();
            }
        }
        if tokio::time::timeout_at(deadline, arrived).await.is_err() {
            return sim.lock().notes.line();
        }
    }
}

fn query_value(path: &str, key: &str) -> Option<u64> {
    let query = path.split_once('?')?.1;
    query.split('&').find_map(|pair| pair.strip_prefix(key)?.strip_prefix('=')?.parse().ok())
}

async fn serve(stream: TcpStream, sim: Arc<Sim>) -> std::io::Result<()> {
    stream.set_nodelay(true)?;
    let mut reader = BufReader::new(stream);
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).await? == 0 {
            return Ok(());
        }
        let path = line.split_whitespace().nth(1).unwrap_or("/").to_string();
        let (mut ri, mut length, mut close) = (String::from("sim"), 0usize, false);
        loop {
            let mut header = String::new();
            if reader.read_line(&mut header).await? == 0 {
                return Ok(());
            }
            let header = header.trim_end();
            if header.is_empty() {
                break;
            }
            if let Some((name, value)) = header.split_once(':') {
                let value = value.trim();
                match name.to_ascii_lowercase().as_str() {
                    "x-m2m-ri" => ri = value.to_string(),
                    "content-length" => length = value.parse().unwrap_or(0),
                    "connection" => close = value.eq_ignore_ascii_case("close"),
                    _ => {}
                }
            }
        }
        if length > 0 {
            let mut body = vec![0; length];
            reader.read_exact(&mut body).await?;
        }
        let now = sim.started.elapsed().as_nanos();
        let (status, extra, body) = if path.starts_with("/notify") {
            let at = epoch_nanos();
            {
                let mut state = sim.lock();
                let notes = &mut state.notes;
                if notes.count == 0 {
                    notes.first = at;
                }
                notes.count += 1;
                notes.last = at;
                notes.seen.insert((path.clone(), ri.clone()));
            }
            sim.arrived.notify_waiters();
            ("200 OK", format!("X-M2M-RSC: 2000\r\nX-M2M-RI: {ri}\r\n"), String::new())
        } else if path.starts_with("/_sim/wait") {
            ("200 OK", String::new(), wait_for_notes(&sim, &path).await)
        } else if let Some(admin) = path.strip_prefix("/_sim/") {
            let mut state = sim.lock();
            let text = match admin.split('?').next().unwrap_or_default() {
                "drop" => {
                    let (from, to) = (query_value(&path, "from").unwrap_or(0), query_value(&path, "to").unwrap_or(0));
                    state.gone.extend(from..=to);
                    format!("{}\n", state.gone.len())
                }
                "revive" => {
                    state.gone.clear();
                    "0\n".into()
                }
                "reset" => {
                    state.probes.clear();
                    state.notes = Notes::default();
                    "0\n".into()
                }
                "now" => format!("{now}\n"),
                "notes" => state.notes.line(),
                "probes" => {
                    state.probes.iter().map(|(id, at, gone)| format!("{id} {at} {}\n", u8::from(*gone))).collect()
                }
                _ => "unknown\n".into(),
            };
            ("200 OK", String::new(), text)
        } else if let Some(id) = registree(&path) {
            // A discovery (`fu=1`: a registrar's announcer looking for stale copies after a
            // registration) is answered as a probe is but not recorded as one, so that the
            // rounds of scenario 6 hold the liveliness probes alone.
            let probe = query_value(&path, "fu").is_none();
            let gone = {
                let mut state = sim.lock();
                let gone = state.gone.contains(&id);
                if probe {
                    state.probes.push((id, now, gone));
                }
                gone
            };
            if gone {
                // The registree is gone: close the connection without an answer.
                return Ok(());
            }
            let body = format!(
                concat!(
                    r#"{{"m2m:cb":{{"ty":5,"ri":"cse-mn{id}","rn":"cse-mn{id}","pi":"","csi":"/id-mn{id}","#,
                    r#""cst":2,"srv":["3","4","5"],"rr":true,"ct":"20260101T000000,000000","#,
                    r#""lt":"20260101T000000,000000","poa":["http://127.0.0.1"]}}}}"#
                ),
                id = id
            );
            ("200 OK", format!("Content-Type: application/json\r\nX-M2M-RSC: 2000\r\nX-M2M-RI: {ri}\r\n"), body)
        } else {
            ("404 Not Found", format!("X-M2M-RSC: 4004\r\nX-M2M-RI: {ri}\r\n"), String::new())
        };
        let head = format!("HTTP/1.1 {status}\r\n{extra}Content-Length: {}\r\n\r\n", body.len());
        let stream = reader.get_mut();
        stream.write_all(head.as_bytes()).await?;
        stream.write_all(body.as_bytes()).await?;
        if close {
            return Ok(());
        }
    }
}
