//! A small HTTP/1.1 load generator for `bench/run.sh`.
//!
//! `loadgen rate   --url U --rate R --duration S [--warmup S] [common]`
//!     Open loop: request i is due at `start + i / R`, whether or not earlier requests have
//!     answered (each request is its own task; keep-alive connections come from a pool that grows
//!     when all are busy). Latency is measured from the moment the request was *due*, so time spent
//!     queueing behind a slow server (or a late generator) counts. Requests due during the warm-up
//!     are sent but not counted.
//!
//! `loadgen closed --url U --concurrency C --duration S [--warmup S] [common]`
//!     Closed loop: C workers, each sending its next request when the previous one has answered.
//!     Reports completed requests per second.
//!
//! Common: `--url-file PATH` (one URL a line, used in turn, instead of `--url`), `--method GET|POST`, `--header 'Name: value'` (repeatable), `--body-file PATH`,
//! `--timeout S` (per request, default 5).
//!
//! Output: one line of `key=value` pairs (times in milliseconds), for the script to parse.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request, Uri};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

type HttpClient = Client<HttpConnector, Full<Bytes>>;

struct Opts {
    mode: String,
    urls: Vec<Uri>,
    method: Method,
    headers: Vec<(String, String)>,
    body: Bytes,
    rate: f64,
    concurrency: usize,
    duration: f64,
    warmup: f64,
    timeout: f64,
}

fn usage(msg: &str) -> ! {
    eprintln!("loadgen: {msg}");
    eprintln!("usage: loadgen rate (--url U | --url-file F) --rate R --duration S [--warmup S] [--method M] [--header 'K: V']... [--body-file F] [--timeout S]");
    eprintln!(
        "       loadgen closed (--url U | --url-file F) --concurrency C --duration S [--warmup S] [...same options]"
    );
    std::process::exit(2);
}

fn parse_args() -> Opts {
    let mut args = std::env::args().skip(1);
    let mode = args.next().unwrap_or_else(|| usage("missing mode"));
    if mode != "rate" && mode != "closed" {
        usage("mode must be `rate` or `closed`");
    }
    let mut o = Opts {
        mode,
        urls: Vec::new(),
        method: Method::GET,
        headers: Vec::new(),
        body: Bytes::new(),
        rate: 0.0,
        concurrency: 0,
        duration: 0.0,
        warmup: 0.0,
        timeout: 5.0,
    };
    while let Some(flag) = args.next() {
        let value = args.next().unwrap_or_else(|| usage(&format!("{flag} needs a value")));
        let num = |v: &str| v.parse::<f64>().unwrap_or_else(|_| usage(&format!("{flag}: not a number: {v}")));
        match flag.as_str() {
            "--url" => o.urls.push(value.parse().unwrap_or_else(|_| usage("bad --url"))),
            "--url-file" => {
                let text = std::fs::read_to_string(&value).unwrap_or_else(|e| usage(&format!("{value}: {e}")));
                for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
                    o.urls.push(line.parse().unwrap_or_else(|_| usage(&format!("bad URL in {value}: {line}"))));
                }
            }
            "--method" => o.method = value.parse().unwrap_or_else(|_| usage("bad --method")),
            "--header" => {
                let (k, v) = value.split_once(':').unwrap_or_else(|| usage("--header needs `Name: value`"));
                o.headers.push((k.trim().to_string(), v.trim().to_string()));
            }
            "--body-file" => {
                o.body = Bytes::from(std::fs::read(&value).unwrap_or_else(|e| usage(&format!("{value}: {e}"))))
            }
            "--rate" => o.rate = num(&value),
            "--concurrency" => o.concurrency = num(&value) as usize,
            "--duration" => o.duration = num(&value),
            "--warmup" => o.warmup = num(&value),
            "--timeout" => o.timeout = num(&value),
            _ => usage(&format!("unknown flag {flag}")),
        }
    }
    if o.urls.is_empty() {
        usage("--url or --url-file is required");
    }
    if !(o.duration > 0.0 && o.duration <= 600.0 && (0.0..=60.0).contains(&o.warmup)) {
        usage("--duration must be in (0, 600] and --warmup in [0, 60] seconds");
    }
    if o.mode == "rate" && !(o.rate > 0.0 && o.rate <= 1_000_000.0) {
        usage("--rate must be in (0, 1000000]");
    }
    if o.mode == "closed" && !(1..=10_000).contains(&o.concurrency) {
        usage("--concurrency must be in [1, 10000]");
    }
    o
}

/// One finished request: latency in nanoseconds (from due time in `rate` mode, from send in
/// `closed` mode), and whether it got a 2xx answer.
#[derive(Clone, Copy)]
struct Sample {
    latency_ns: u64,
    send_lag_ns: u64,
    ok: bool,
}

#[derive(Default)]
struct Tally {
    samples: Vec<Sample>,
    non_2xx: u64,
    failed: u64,
}

async fn send(client: &HttpClient, o: &Opts, i: u64) -> Result<u16, String> {
    let uri = o.urls[(i % o.urls.len() as u64) as usize].clone();
    let mut req = Request::builder().method(o.method.clone()).uri(uri);
    for (k, v) in &o.headers {
        req = req.header(k.as_str(), v.as_str());
    }
    let req = req.body(Full::new(o.body.clone())).map_err(|e| e.to_string())?;
    let fut = async {
        let resp = client.request(req).await.map_err(|e| format!("{e:?}"))?;
        let status = resp.status().as_u16();
        // The whole body is read: latency is to the last byte.
        resp.into_body().collect().await.map_err(|e| e.to_string())?;
        Ok::<u16, String>(status)
    };
    match tokio::time::timeout(Duration::from_secs_f64(o.timeout), fut).await {
        Ok(r) => r,
        Err(_) => Err("timeout".into()),
    }
}

fn record(tally: &Mutex<Tally>, counted: bool, result: Result<u16, String>, latency: Duration, lag: Duration) {
    let mut t = tally.lock().unwrap();
    match result {
        Ok(status) => {
            let ok = (200..300).contains(&status);
            if !ok {
                t.non_2xx += 1;
                if t.non_2xx <= 3 {
                    eprintln!("loadgen: HTTP {status}");
                }
            }
            if counted {
                t.samples.push(Sample {
                    latency_ns: latency.as_nanos() as u64,
                    send_lag_ns: lag.as_nanos() as u64,
                    ok,
                });
            }
        }
        Err(e) => {
            t.failed += 1;
            if t.failed <= 3 {
                eprintln!("loadgen: request failed: {e}");
            }
        }
    }
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    // Nearest rank.
    let rank = ((p / 100.0) * sorted.len() as f64).ceil().max(1.0) as usize;
    sorted[rank.min(sorted.len()) - 1] as f64 / 1e6
}

fn main() {
    let o = Arc::new(parse_args());
    // Precise sleeps for the pacer: the default 50 µs timer slack would make it late.
    unsafe {
        libc::prctl(libc::PR_SET_TIMERSLACK, 1 as libc::c_ulong, 0, 0, 0);
    }
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    let client: HttpClient = Client::builder(TokioExecutor::new()).pool_max_idle_per_host(10_000).build(connector);
    let tally = Arc::new(Mutex::new(Tally::default()));

    let measured_secs;
    if o.mode == "rate" {
        let period = 1.0 / o.rate;
        let total = ((o.warmup + o.duration) * o.rate).round() as u64;
        let warm = (o.warmup * o.rate).round() as u64;
        let outstanding = Arc::new(AtomicU64::new(0));
        let max_outstanding = Arc::new(AtomicU64::new(0));
        let handle = rt.handle().clone();
        let pacer = {
            let (o, client, tally, outstanding, max_outstanding) =
                (o.clone(), client.clone(), tally.clone(), outstanding.clone(), max_outstanding.clone());
            std::thread::spawn(move || {
                let start = Instant::now() + Duration::from_millis(20);
                for i in 0..total {
                    let due = start + Duration::from_secs_f64(i as f64 * period);
                    let now = Instant::now();
                    if due > now {
                        std::thread::sleep(due - now);
                    }
                    let n = outstanding.fetch_add(1, Ordering::Relaxed) + 1;
                    max_outstanding.fetch_max(n, Ordering::Relaxed);
                    let (o, client, tally, outstanding) =
                        (o.clone(), client.clone(), tally.clone(), outstanding.clone());
                    handle.spawn(async move {
                        let sent = Instant::now();
                        let r = send(&client, &o, i).await;
                        let done = Instant::now();
                        record(&tally, i >= warm, r, done - due, sent.saturating_duration_since(due));
                        outstanding.fetch_sub(1, Ordering::Relaxed);
                    });
                }
            })
        };
        pacer.join().unwrap();
        // Let the last requests finish (each is bounded by --timeout).
        let deadline = Instant::now() + Duration::from_secs_f64(o.timeout + 1.0);
        while outstanding.load(Ordering::Relaxed) > 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        measured_secs = o.duration;
        let extra = format!(" target_rps={:.0} max_in_flight={}", o.rate, max_outstanding.load(Ordering::Relaxed));
        report(&o, &tally, measured_secs, &extra);
    } else {
        let counting = Arc::new(AtomicBool::new(o.warmup == 0.0));
        let stop = Arc::new(AtomicBool::new(false));
        let next = Arc::new(AtomicU64::new(0));
        let measured_start = Arc::new(Mutex::new(None::<Instant>));
        rt.block_on(async {
            let mut tasks = Vec::new();
            for _ in 0..o.concurrency {
                let (o, client, tally, counting, stop, next) =
                    (o.clone(), client.clone(), tally.clone(), counting.clone(), stop.clone(), next.clone());
                tasks.push(tokio::spawn(async move {
                    while !stop.load(Ordering::Relaxed) {
                        let counted = counting.load(Ordering::Relaxed);
                        let sent = Instant::now();
                        let r = send(&client, &o, next.fetch_add(1, Ordering::Relaxed)).await;
                        // A request that started in the warm-up or ended after the stop is not counted.
                        let counted = counted && !stop.load(Ordering::Relaxed);
                        record(&tally, counted, r, sent.elapsed(), Duration::ZERO);
                    }
                }));
            }
            tokio::time::sleep(Duration::from_secs_f64(o.warmup)).await;
            counting.store(true, Ordering::Relaxed);
            *measured_start.lock().unwrap() = Some(Instant::now());
            tokio::time::sleep(Duration::from_secs_f64(o.duration)).await;
            stop.store(true, Ordering::Relaxed);
            for t in tasks {
                let _ = t.await;
            }
        });
        measured_secs = o.duration;
        report(&o, &tally, measured_secs, &format!(" concurrency={}", o.concurrency));
    }
    rt.shutdown_timeout(Duration::from_secs(1));
}

fn report(o: &Opts, tally: &Mutex<Tally>, secs: f64, extra: &str) {
    let t = tally.lock().unwrap();
    let ok = t.samples.iter().filter(|s| s.ok).count();
    let mut lat: Vec<u64> = t.samples.iter().map(|s| s.latency_ns).collect();
    lat.sort_unstable();
    let mut lag: Vec<u64> = t.samples.iter().map(|s| s.send_lag_ns).collect();
    lag.sort_unstable();
    println!(
        "mode={} urls={} requests={} ok={} non_2xx={} failed={} rps={:.1} p50_ms={:.3} p90_ms={:.3} p99_ms={:.3} p999_ms={:.3} max_ms={:.3} send_lag_p99_ms={:.3}{}",
        o.mode,
        o.urls.len(),
        t.samples.len(),
        ok,
        t.non_2xx,
        t.failed,
        ok as f64 / secs,
        percentile(&lat, 50.0),
        percentile(&lat, 90.0),
        percentile(&lat, 99.0),
        percentile(&lat, 99.9),
        percentile(&lat, 100.0),
        percentile(&lag, 99.0),
        extra
    );
}
