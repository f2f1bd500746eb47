//! Browser helpers for end-to-end tests: headless Chromium through chromedriver (`WEBDRIVER_URL`),
//! polling waits with deadlines, and a tiny merchant site for success and cancel URLs.
#![allow(dead_code)]

use std::future::Future;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Once};
use std::time::{Duration, Instant};

use fantoccini::elements::Element;
use fantoccini::error::{CmdError, ErrorStatus};
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{json, Value};

/// Long enough for a loaded 2-core CI machine running two browsers and a build; a healthy page
/// answers in well under a second.
pub const DEADLINE: Duration = Duration::from_secs(20);
const POLL: Duration = Duration::from_millis(50);

fn ci() -> bool {
    matches!(std::env::var("CI").as_deref(), Ok("true" | "1" | "yes"))
}

/// Options for one browser session.
#[derive(Clone, Copy, Debug)]
pub struct Options {
    pub javascript: bool,
    /// Commands return without waiting for page loads, so two tabs can submit at the same time.
    pub eager_commands: bool,
}

impl Default for Options {
    fn default() -> Options {
        Options { javascript: true, eager_commands: false }
    }
}

pub struct Browser {
    client: Client,
    // Chrome writes its profile here until the session ends; dropped after `close`.
    _profile: tempfile::TempDir,
}

/// A browser with default options, or `None` (after a notice) when no WebDriver is configured
/// outside CI. In CI a missing WebDriver fails the test: browser coverage must never vanish
/// silently.
pub async fn start() -> Option<Browser> {
    start_with(Options::default()).await
}

pub async fn start_with(options: Options) -> Option<Browser> {
    let webdriver = match std::env::var("WEBDRIVER_URL") {
        Ok(url) if !url.trim().is_empty() => url,
        _ if ci() => panic!(
            "WEBDRIVER_URL is not set and CI=true: browser tests must run in CI (scripts/test.sh starts chromedriver)"
        ),
        _ => {
            static NOTICE: Once = Once::new();
            NOTICE.call_once(|| {
                // Straight to stderr: libtest captures `eprintln!` of passing tests.
                let _ = writeln!(
                    std::io::stderr(),
                    "notice: WEBDRIVER_URL is not set; skipping browser tests (run scripts/test.sh for all of them)"
                );
            });
            return None;
        }
    };
    let chrome = std::env::var("CHROME_BIN").unwrap_or_else(|_| "/usr/bin/chromium".into());
    let profile = tempfile::Builder::new().prefix("flex-chrome-").tempdir().expect("profile dir");
    let mut args: Vec<String> = [
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--disable-quic",
        "--window-size=1280,900",
    ]
    .iter()
    .map(|a| a.to_string())
    .collect();
    args.push(format!("--user-data-dir={}", profile.path().display()));
    let mut chrome_options = json!({ "binary": chrome, "args": args });
    if !options.javascript {
        chrome_options["prefs"] = json!({ "profile.managed_default_content_settings.javascript": 2 });
    }
    let mut caps = serde_json::Map::new();
    caps.insert("browserName".into(), json!("chrome"));
    // An alert must stay open so a test can see it, instead of being dismissed by the next command.
    caps.insert("unhandledPromptBehavior".into(), json!("ignore"));
    if options.eager_commands {
        caps.insert("pageLoadStrategy".into(), json!("none"));
    }
    caps.insert("goog:chromeOptions".into(), chrome_options);
    // Both rustls providers are compiled in (feature unification), so rustls cannot pick one.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = ClientBuilder::rustls()
        .expect("rustls")
        .capabilities(caps)
        .connect(&webdriver)
        .await
        .unwrap_or_else(|e| panic!("cannot start Chromium through {webdriver}: {e}"));
    Some(Browser { client, _profile: profile })
}

impl Browser {
    /// Runs `body` and ends the browser session even when `body` panics, so a failing test leaves
    /// no Chromium behind.
    pub async fn run<F, Fut>(self, body: F)
    where
        F: FnOnce(Client) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let outcome = tokio::spawn(body(self.client.clone())).await;
        let _ = self.client.close().await;
        if let Err(e) = outcome {
            match e.try_into_panic() {
                Ok(panic) => std::panic::resume_unwind(panic),
                Err(e) => panic!("browser test task failed: {e}"),
            }
        }
    }
}

fn is_missing(e: &CmdError) -> bool {
    matches!(e, CmdError::Standard(w) if matches!(w.error, ErrorStatus::NoSuchElement | ErrorStatus::StaleElementReference))
}

/// What the page says, for failure messages.
pub async fn page_text(c: &Client) -> String {
    match c.find(Locator::Css("body")).await {
        Ok(body) => body.text().await.unwrap_or_default(),
        Err(e) => format!("<no page body: {e}>"),
    }
}

async fn describe(c: &Client) -> String {
    let url = c.current_url().await.map(|u| u.to_string()).unwrap_or_else(|e| format!("<{e}>"));
    let text: String = page_text(c).await.chars().take(1500).collect();
    format!("at {url}, page says:\n{text}")
}

/// Polls until `check` gives a value or the deadline passes; `what` names the awaited condition.
pub async fn poll<T, F, Fut>(c: &Client, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Option<T>, CmdError>>,
{
    let deadline = Instant::now() + DEADLINE;
    loop {
        match check().await {
            Ok(Some(v)) => return v,
            Ok(None) => {}
            Err(e) if is_missing(&e) => {}
            Err(e) => panic!("while waiting for {what}: {e}\n{}", describe(c).await),
        }
        if Instant::now() > deadline {
            panic!("timed out after {DEADLINE:?} waiting for {what}\n{}", describe(c).await);
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Waits until the browser shows exactly `expected`.
pub async fn wait_for_url(c: &Client, expected: &str) {
    let expected = url::Url::parse(expected).expect("expected URL");
    poll(c, &format!("URL {expected}"), || async {
        Ok(if c.current_url().await? == expected { Some(()) } else { None })
    })
    .await
}

/// Waits until the URL path is `path` (any query).
pub async fn wait_for_path(c: &Client, path: &str) {
    poll(c, &format!("path {path}"), || async {
        Ok(if c.current_url().await?.path() == path { Some(()) } else { None })
    })
    .await
}

/// Waits for an element matching `css` to be on the page.
pub async fn wait_for(c: &Client, css: &str) -> Element {
    poll(c, &format!("an element matching `{css}`"), || async { c.find(Locator::Css(css)).await.map(Some) }).await
}

/// Waits until the page body contains `text`.
pub async fn wait_for_text(c: &Client, text: &str) {
    poll(c, &format!("the text {text:?}"), || async {
        let body = c.find(Locator::Css("body")).await?.text().await?;
        Ok(body.contains(text).then_some(()))
    })
    .await
}

/// Replaces whatever is in the field with id `id` by typing `text`, as a customer would.
pub async fn fill(c: &Client, id: &str, text: &str) {
    let field = wait_for(c, &format!("#{id}")).await;
    field.clear().await.unwrap_or_else(|e| panic!("clear #{id}: {e}"));
    field.send_keys(text).await.unwrap_or_else(|e| panic!("type into #{id}: {e}"));
}

/// Ticks a checkbox unless it is ticked already (the form keeps ticks after a decline).
pub async fn tick(c: &Client, css: &str) {
    let b = wait_for(c, css).await;
    if !b.is_selected().await.unwrap_or_else(|e| panic!("read {css}: {e}")) {
        b.click().await.unwrap_or_else(|e| panic!("click {css}: {e}"));
    }
}

pub async fn click(c: &Client, css: &str) {
    wait_for(c, css).await.click().await.unwrap_or_else(|e| panic!("click {css}: {e}"));
}

/// The current value of the field with id `id`.
pub async fn value(c: &Client, id: &str) -> String {
    wait_for(c, &format!("#{id}"))
        .await
        .prop("value")
        .await
        .unwrap_or_else(|e| panic!("read #{id}: {e}"))
        .unwrap_or_default()
}

pub async fn text(c: &Client, css: &str) -> String {
    wait_for(c, css).await.text().await.unwrap_or_else(|e| panic!("read {css}: {e}"))
}

/// Runs `script` in the page and returns its result.
pub async fn eval(c: &Client, script: &str) -> Value {
    c.execute(script, Vec::new()).await.unwrap_or_else(|e| panic!("script {script:?}: {e}"))
}

/// Whether a JavaScript dialog (alert, confirm, prompt) is open.
pub async fn dialog_open(c: &Client) -> bool {
    match c.get_alert_text().await {
        Ok(_) => true,
        Err(CmdError::Standard(w)) if w.error == ErrorStatus::NoSuchAlert => false,
        Err(e) => panic!("asking for a dialog: {e}"),
    }
}

/// Saves a PNG of the current viewport under `/tmp/screens` (or `SCREENSHOT_DIR`).
pub async fn screenshot(c: &Client, name: &str) -> std::path::PathBuf {
    let dir = std::path::PathBuf::from(std::env::var("SCREENSHOT_DIR").unwrap_or_else(|_| "/tmp/screens".into()));
    std::fs::create_dir_all(&dir).expect("screenshot dir");
    let png = c.screenshot().await.unwrap_or_else(|e| panic!("screenshot {name}: {e}"));
    let path = dir.join(format!("{name}.png"));
    std::fs::write(&path, png).expect("write screenshot");
    path
}

/// The merchant's own site: answers every request with a page naming the requested path and
/// query, and remembers what was asked.
pub struct MerchantSite {
    pub base: String,
    hits: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
}

impl MerchantSite {
    pub fn start() -> MerchantSite {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind merchant site");
        let base = format!("http://{}", listener.local_addr().unwrap());
        let hits = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (h, s) = (hits.clone(), stop.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                if s.load(Ordering::SeqCst) {
                    break;
                }
                if let Ok(stream) = stream {
                    let _ = serve(stream, &h);
                }
            }
        });
        MerchantSite { base, hits, stop }
    }

    pub fn url(&self, path_and_query: &str) -> String {
        format!("{}{path_and_query}", self.base)
    }

    /// Request targets (path and query) the site has answered, favicon requests left out.
    pub fn hits(&self) -> Vec<String> {
        self.hits.lock().unwrap().iter().filter(|p| !p.starts_with("/favicon")).cloned().collect()
    }
}

impl Drop for MerchantSite {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wakes the accept loop so the thread sees the flag and ends.
        let _ = TcpStream::connect(self.base.trim_start_matches("http://"));
    }
}

fn serve(stream: TcpStream, hits: &Mutex<Vec<String>>) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 || line == "\r\n" || line == "\n" {
            break;
        }
    }
    let target = request_line.split_whitespace().nth(1).unwrap_or("/").to_string();
    hits.lock().unwrap().push(target.clone());
    let escaped = target.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;");
    let body = format!(
        "<!doctype html><html><head><title>Merchant</title></head><body><h1>Acme Fitness</h1>\
         <p id=\"landed\">{escaped}</p></body></html>"
    );
    let mut stream = stream;
    write!(
        stream,
        "HTTP/1.1 200 OK\r\nContent-Type: text/html; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    stream.flush()
}

/// What the browser wrote to its console at level SEVERE since the last call (chromedriver keeps
/// errors by default: uncaught exceptions, `console.error`, Content-Security-Policy violations,
/// failed requests), each as "source: message". Reading the log empties it.
pub async fn console_errors(c: &Client) -> Vec<String> {
    let webdriver = std::env::var("WEBDRIVER_URL").expect("WEBDRIVER_URL");
    let session = c.session_id().await.ok().flatten().expect("a WebDriver session");
    let res = reqwest::Client::new()
        .post(format!("{}/session/{session}/se/log", webdriver.trim_end_matches('/')))
        .json(&json!({ "type": "browser" }))
        .send()
        .await
        .unwrap_or_else(|e| panic!("reading the browser log: {e}"));
    let body: Value = res.json().await.unwrap_or_else(|e| panic!("reading the browser log: {e}"));
    body["value"]
        .as_array()
        .map(|entries| {
            entries
                .iter()
                .filter(|e| e["level"] == "SEVERE")
                .map(|e| format!("{}: {}", e["source"].as_str().unwrap_or("?"), e["message"].as_str().unwrap_or("")))
                .collect()
        })
        .unwrap_or_default()
}
