//! The server as a whole: health, unknown routes, migrations, static files.

use crate::common::spawn_app;

#[tokio::test]
async fn health_answers_ok_when_the_database_is_reachable() {
    let app = spawn_app().await;
    let r = app.client.get(format!("{}/healthz", app.address)).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
}

#[tokio::test]
async fn unknown_api_routes_and_methods_answer_in_the_error_envelope() {
    let app = spawn_app().await;
    let r = app.get("/v1/nothing-here").await;
    assert_eq!(r.status, 404);
    assert_eq!(r.body["error"]["code"], "not_found");
    let r = app.send(reqwest::Method::DELETE, "/v1/products", Some(&app.test_key), None, None).await;
    assert_eq!(r.status, 405);
    assert_eq!(r.body["error"]["type"], "invalid_request_error");
}

#[tokio::test]
async fn health_takes_only_get() {
    let app = spawn_app().await;
    let r = app.send(reqwest::Method::POST, "/healthz", None, None, None).await;
    assert_eq!(r.status, 405);
    assert!(r.body["error"]["message"].is_string());
}

#[tokio::test]
async fn unknown_pages_are_a_friendly_html_404() {
    let app = spawn_app().await;
    for path in ["/pay/c/fcs_01HWDVDMWQT1N8TJJYDWKW4ZHZ", "/pay/c/garbage", "/nope", "/static/missing.css"] {
        let r = app.client.get(format!("{}{path}", app.address)).send().await.unwrap();
        assert_eq!(r.status().as_u16(), 404, "{path}");
        assert!(r.headers()["content-type"].to_str().unwrap().starts_with("text/html"));
        let text = r.text().await.unwrap();
        assert!(text.contains("Page not found"), "{path}");
        assert!(!text.trim_start().starts_with('{'));
    }
}

#[tokio::test]
async fn static_files_are_served_with_long_cache_and_nosniff() {
    let app = spawn_app().await;
    for (path, mime) in [("/static/checkout.css", "text/css"), ("/static/checkout.js", "text/javascript")] {
        let r = app.client.get(format!("{}{path}", app.address)).send().await.unwrap();
        assert_eq!(r.status().as_u16(), 200);
        assert!(r.headers()["content-type"].to_str().unwrap().contains(mime.split('/').nth(1).unwrap()));
        assert_eq!(r.headers()["x-content-type-options"], "nosniff");
    }
}

#[test]
fn both_databases_have_the_same_migrations() {
    let list = |dir: &str| {
        let mut names: Vec<String> =
            std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        names.sort();
        names
    };
    let sqlite = list(concat!(env!("CARGO_MANIFEST_DIR"), "/migrations/sqlite"));
    let postgres = list(concat!(env!("CARGO_MANIFEST_DIR"), "/migrations/postgres"));
    assert!(!sqlite.is_empty());
    assert_eq!(sqlite, postgres);
}

/// The real binary refuses to start on a bad Stripe configuration and says which setting is wrong.
#[test]
fn stripe_misconfiguration_stops_the_start_and_names_the_setting() {
    let dir = tempfile::tempdir().unwrap();
    let cases: [(&[(&str, &str)], &str); 4] = [
        (&[("STRIPE_SECRET_KEY", "sk_test_abc123456")], "STRIPE_PUBLISHABLE_KEY"),
        (&[("STRIPE_SECRET_KEY", "sk_live_abc123456"), ("STRIPE_PUBLISHABLE_KEY", "pk_test_abc123456")], "same mode"),
        (
            &[
                ("STRIPE_SECRET_KEY", "sk_test_abc123456"),
                ("STRIPE_PUBLISHABLE_KEY", "pk_test_abc123456"),
                ("STRIPE_WEBHOOK_SECRET", "not-a-secret"),
            ],
            "STRIPE_WEBHOOK_SECRET",
        ),
        (&[("STRIPE_JS_URL", "http://127.0.0.1:1/js.stripe.com/v3/")], "STRIPE_JS_URL"),
    ];
    for (env, named) in cases {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_flex-checkout"));
        cmd.env_clear().env("DATABASE_URL", format!("sqlite://{}/never.db", dir.path().display())).env("PORT", "0");
        for (k, v) in env {
            cmd.env(k, v);
        }
        let out = cmd.output().expect("run the binary");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{env:?} started");
        assert!(stderr.contains(named), "{env:?}: {stderr}");
    }
    assert!(!dir.path().join("never.db").exists(), "nothing is created before the settings are checked");
}
