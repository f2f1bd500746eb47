//! `flex-checkout listen`: the real binary against a real server, forwarding to a receiver of our
//! own that records what it is sent.

#[path = "common/mod.rs"]
mod common;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use flex_checkout::domain::webhook_signature;
use serde_json::{json, Value};

use common::{spawn_app, TestApp};

/// What the receiver was sent.
#[derive(Clone, Debug)]
struct Received {
    target: String,
    headers: HashMap<String, String>,
    body: Vec<u8>,
}

/// A merchant's webhook handler: records each request and answers 200.
struct Receiver {
    base: String,
    got: Arc<Mutex<Vec<Received>>>,
    stop: Arc<AtomicBool>,
}

impl Receiver {
    fn start() -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the receiver");
        let base = format!("http://{}", listener.local_addr().unwrap());
        let got = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (g, s) = (got.clone(), stop.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                if s.load(Ordering::SeqCst) {
                    break;
                }
                if let Ok(stream) = stream {
                    if let Ok(r) = receive(stream) {
                        g.lock().unwrap().push(r);
                    }
                }
            }
        });
        Receiver { base, got, stop }
    }

    fn received(&self) -> Vec<Received> {
        self.got.lock().unwrap().clone()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wakes the accept loop so the thread sees the flag and ends.
        let _ = TcpStream::connect(self.base.trim_start_matches("http://"));
    }
}

fn receive(stream: TcpStream) -> std::io::Result<Received> {
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    let mut headers = HashMap::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 || line == "\r\n" || line == "\n" {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            headers.insert(name.trim().to_ascii_lowercase(), value.trim().to_string());
        }
    }
    let length = headers.get("content-length").and_then(|l| l.parse().ok()).unwrap_or(0);
    let mut body = vec![0; length];
    reader.read_exact(&mut body)?;
    let mut stream = stream;
    stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")?;
    stream.flush()?;
    let target = request_line.split_whitespace().nth(1).unwrap_or_default().to_string();
    Ok(Received { target, headers, body })
}

/// The `listen` process, its output collected line by line; killed when dropped.
struct Listen {
    child: Child,
    stdout: Arc<Mutex<Vec<String>>>,
    stderr: Arc<Mutex<Vec<String>>>,
}

impl Listen {
    fn spawn(args: &[&str]) -> Listen {
        let mut child = Command::new(env!("CARGO_BIN_EXE_flex-checkout"))
            .arg("listen")
            .args(args)
            .env_remove("FLEX_API_URL")
            .env_remove("FLEX_API_KEY")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start flex-checkout listen");
        let collect = |pipe: Box<dyn Read + Send>| {
            let lines = Arc::new(Mutex::new(Vec::new()));
            let l = lines.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                    l.lock().unwrap().push(line);
                }
            });
            lines
        };
        let stdout = collect(Box::new(child.stdout.take().unwrap()));
        let stderr = collect(Box::new(child.stderr.take().unwrap()));
        Listen { child, stdout, stderr }
    }

    fn stdout(&self) -> String {
        self.stdout.lock().unwrap().join("\n")
    }

    fn stderr(&self) -> String {
        self.stderr.lock().unwrap().join("\n")
    }

    fn output(&self) -> String {
        format!("stdout:\n{}\nstderr:\n{}", self.stdout(), self.stderr())
    }

    async fn wait_until(&self, what: &str, timeout: Duration, done: impl Fn(&Listen) -> bool) {
        let deadline = Instant::now() + timeout;
        while !done(self) {
            assert!(Instant::now() < deadline, "gave up waiting for {what}; {}", self.output());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn ready(&self) {
        self.wait_until("the Ready line", Duration::from_secs(60), |l| l.stdout().contains("Ready!")).await;
    }

    async fn exit(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                // Lets the reader threads take the last lines.
                tokio::time::sleep(Duration::from_millis(100)).await;
                return status;
            }
            assert!(Instant::now() < deadline, "listen did not exit; {}", self.output());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Listen {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Creates a product (its `product.created` event) and returns that event as the API shows it.
async fn product_created(app: &TestApp, name: &str) -> Value {
    let p = app.post("/v1/products", json!({"product": {"name": name}})).await;
    assert_eq!(p.status, 200, "{}", p.text);
    let product = p.body["product"]["product_id"].as_str().unwrap();
    let events = app.get(&format!("/v1/events?object_id={product}")).await;
    assert_eq!(events.status, 200, "{}", events.text);
    let event = events.body["events"][0].clone();
    assert_eq!(event["event_type"], "product.created", "{}", events.text);
    event
}

/// A port nothing listens on.
fn closed_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_events_are_forwarded_signed_and_earlier_ones_are_not() {
    let app = spawn_app().await;
    let before = product_created(&app, "Before listening").await;
    let receiver = Receiver::start();
    let secret = webhook_signature::new_secret();
    let hook = format!("{}/hook", receiver.base);
    let mut listen = Listen::spawn(&[
        "--forward-to",
        &hook,
        "--api-url",
        &app.address,
        "--api-key",
        &app.test_key,
        "--secret",
        &secret,
        "--poll-interval-ms",
        "100",
    ]);
    listen.ready().await;
    assert!(listen.stdout().contains(&format!("Your webhook signing secret is {secret}")), "{}", listen.output());

    let after = product_created(&app, "After listening").await;
    let id = after["event_id"].as_str().unwrap().to_string();
    let deadline = Instant::now() + Duration::from_secs(20);
    let delivery = loop {
        if let Some(r) = receiver.received().into_iter().find(|r| r.headers.get("webhook-id") == Some(&id)) {
            break r;
        }
        assert!(Instant::now() < deadline, "{id} was not forwarded; {}", listen.output());
        tokio::time::sleep(Duration::from_millis(50)).await;
    };

    assert_eq!(delivery.target, "/hook");
    assert_eq!(delivery.headers.get("content-type").map(String::as_str), Some("application/json"));
    let body: Value = serde_json::from_slice(&delivery.body).expect("a JSON body");
    assert_eq!(body, after, "the event as the API shows it");
    let timestamp: i64 = delivery.headers["webhook-timestamp"].parse().expect("Unix seconds");
    let now = i64::try_from(SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()).unwrap();
    assert!((now - timestamp).abs() < 60, "timestamp {timestamp} is not now ({now})");
    let expected = webhook_signature::sign(&secret, &id, timestamp, &delivery.body).unwrap();
    assert_eq!(delivery.headers["webhook-signature"], expected, "signed over exactly the bytes sent");

    // A few more polls: nothing is sent twice, and the event from before the start never is.
    tokio::time::sleep(Duration::from_millis(800)).await;
    let ids: Vec<String> = receiver.received().iter().filter_map(|r| r.headers.get("webhook-id").cloned()).collect();
    assert_eq!(ids, vec![id.clone()]);
    let out = listen.stdout();
    assert!(out.contains(&format!("  --> product.created [{id}]")), "{out}");
    assert!(out.contains(&format!("  <-- [200] POST {hook} [{id}]")), "{out}");
    assert!(!out.contains(before["event_id"].as_str().unwrap()), "{out}");

    // SIGTERM stops it cleanly.
    let pid = listen.child.id().to_string();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    let status = listen.exit(Duration::from_secs(10)).await;
    assert!(status.success(), "{status}; {}", listen.output());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_key_stops_listen_with_a_message_about_the_key() {
    let app = spawn_app().await;
    let mut listen = Listen::spawn(&[
        "--api-url",
        &app.address,
        "--api-key",
        "fsk_test_thisisnotakeyanyoneknows0000000",
        "--poll-interval-ms",
        "100",
    ]);
    let status = listen.exit(Duration::from_secs(60)).await;
    assert!(!status.success(), "{}", listen.output());
    let err = listen.stderr();
    assert!(err.contains("refused the API key") && err.contains("--api-key"), "{err}");
    assert!(err.contains("Invalid API key"), "the server's reason is shown: {err}");
    assert!(!listen.stdout().contains("Ready!"), "{}", listen.output());

    // A key of the wrong shape is refused before asking the server.
    let mut listen = Listen::spawn(&["--api-url", &app.address, "--api-key", "sk_test_123"]);
    let status = listen.exit(Duration::from_secs(60)).await;
    assert!(!status.success());
    assert!(listen.stderr().contains("--api-key (FLEX_API_KEY) must be a secret API key"), "{}", listen.output());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_receiver_or_an_unreachable_server_does_not_stop_listening() {
    let app = spawn_app().await;
    let dead_hook = format!("http://127.0.0.1:{}/hook", closed_port());
    let mut listen = Listen::spawn(&[
        "--forward-to",
        &dead_hook,
        "--api-url",
        &app.address,
        "--api-key",
        &app.test_key,
        "--poll-interval-ms",
        "100",
    ]);
    listen.ready().await;
    let first = product_created(&app, "One").await;
    listen
        .wait_until("the first failed forward", Duration::from_secs(20), |l| {
            l.stdout().contains(&format!("<-- [ERROR] POST {dead_hook} [{}]", first["event_id"].as_str().unwrap()))
        })
        .await;
    let second = product_created(&app, "Two").await;
    listen
        .wait_until("the second event after a failed forward", Duration::from_secs(20), |l| {
            l.stdout().contains(&format!("--> product.created [{}]", second["event_id"].as_str().unwrap()))
        })
        .await;
    assert!(listen.child.try_wait().unwrap().is_none(), "{}", listen.output());

    // No server at all: a notice, and it keeps trying.
    let down = format!("http://127.0.0.1:{}", closed_port());
    let listen = Listen::spawn(&["--api-url", &down, "--api-key", &app.test_key, "--poll-interval-ms", "100"]);
    listen
        .wait_until("the notice that the server is unreachable", Duration::from_secs(60), |l| {
            l.stderr().contains("cannot reach") && l.stderr().contains("retrying")
        })
        .await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let mut listen = listen;
    assert!(listen.child.try_wait().unwrap().is_none(), "still waiting for the server; {}", listen.output());
}
