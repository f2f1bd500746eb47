//! `/v1/products`.

use serde_json::json;

use crate::common::spawn_app;

#[tokio::test]
async fn the_seed_product_comes_back_with_the_seed_fields() {
    let app = spawn_app().await;
    let res = app
        .post(
            "/v1/products",
            json!({"product": {"name": "Test Product","description": "Test Product Description","visit_type": "gym","hsa_fsa_eligibility": "letter_of_medical_necessity"}}),
        )
        .await;
    assert_eq!(res.status, 200, "{}", res.text);
    let p = &res.body["product"];
    let id = p["product_id"].as_str().unwrap();
    assert!(id.starts_with("fprod_") && id.len() == "fprod_".len() + 26, "{id}");
    assert_eq!(p["name"], "Test Product");
    assert_eq!(p["description"], "Test Product Description");
    assert_eq!(p["visit_type"], "gym");
    assert_eq!(p["active"], true);
    assert_eq!(p["upc_code"], json!(null));
    assert_eq!(p["gtin"], json!(null));
    assert_eq!(p["hsa_fsa_eligibility"], "letter_of_medical_necessity");
    assert_eq!(p["test_mode"], true);
    let created = p["created_at"].as_str().unwrap();
    assert!(created.ends_with('Z') && created.contains('T'), "{created}");

    let got = app.get(&format!("/v1/products/{id}")).await;
    assert_eq!(got.status, 200);
    assert_eq!(got.body, res.body);
    assert_eq!(app.count("events").await, 1, "product.created is in the outbox");
}

#[tokio::test]
async fn lists_are_newest_first_and_paginate_both_ways() {
    let app = spawn_app().await;
    let mut ids = Vec::new();
    for i in 0..5 {
        let r = app.post("/v1/products", json!({"product": {"name": format!("P{i}")}})).await;
        ids.push(r.body["product"]["product_id"].as_str().unwrap().to_string());
    }
    let page1 = app.get("/v1/products?limit=2").await;
    assert_eq!(page1.status, 200);
    let names: Vec<_> = page1.body["products"].as_array().unwrap().iter().map(|p| p["name"].clone()).collect();
    assert_eq!(names, vec![json!("P4"), json!("P3")]);
    assert_eq!(page1.body["has_more"], true);
    let page2 = app.get(&format!("/v1/products?limit=2&starting_after={}", ids[3])).await;
    let names: Vec<_> = page2.body["products"].as_array().unwrap().iter().map(|p| p["name"].clone()).collect();
    assert_eq!(names, vec![json!("P2"), json!("P1")]);
    let last = app.get(&format!("/v1/products?limit=10&starting_after={}", ids[1])).await;
    assert_eq!(last.body["products"].as_array().unwrap().len(), 1);
    assert_eq!(last.body["has_more"], false);
    let back = app.get(&format!("/v1/products?limit=2&ending_before={}", ids[1])).await;
    let names: Vec<_> = back.body["products"].as_array().unwrap().iter().map(|p| p["name"].clone()).collect();
    assert_eq!(names, vec![json!("P3"), json!("P2")]);
}

#[tokio::test]
async fn archiving_and_editing_a_product() {
    let app = spawn_app().await;
    let r = app
        .post(
            "/v1/products",
            json!({"product": {"name": "Yoga", "description": "Classes", "metadata": {"sku": "Y-1"}}}),
        )
        .await;
    let id = r.body["product"]["product_id"].as_str().unwrap().to_string();
    let patched = app
        .send(
            reqwest::Method::PATCH,
            &format!("/v1/products/{id}"),
            Some(&app.test_key),
            Some(json!({"product": {"active": false, "description": null, "name": "Yoga+"}}).to_string()),
            None,
        )
        .await;
    assert_eq!(patched.status, 200, "{}", patched.text);
    assert_eq!(patched.body["product"]["active"], false);
    assert_eq!(patched.body["product"]["description"], json!(null));
    assert_eq!(patched.body["product"]["name"], "Yoga+");
    assert_eq!(patched.body["product"]["metadata"], json!({"sku": "Y-1"}));
    let active = app.get("/v1/products?active=true").await;
    assert_eq!(active.body["products"].as_array().unwrap().len(), 0);
    let archived = app.get("/v1/products?active=false").await;
    assert_eq!(archived.body["products"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn a_letter_of_medical_necessity_product_needs_a_visit_type() {
    let app = spawn_app().await;
    let before = app.snapshot().await;
    let r = app
        .post("/v1/products", json!({"product": {"name": "Gym", "hsa_fsa_eligibility": "letter_of_medical_necessity"}}))
        .await;
    assert_eq!(r.status, 400);
    assert_eq!(r.body["error"]["type"], "invalid_request_error");
    assert_eq!(r.body["error"]["param"], "product.visit_type");
    assert_eq!(app.snapshot().await, before);
}

#[tokio::test]
async fn product_fields_are_checked_one_by_one() {
    let app = spawn_app().await;
    let cases = [
        (json!({"product": {}}), "product.name"),
        (json!({"product": {"name": ""}}), "product.name"),
        (json!({"product": {"name": "x".repeat(251)}}), "product.name"),
        (json!({"product": {"name": "A", "nme": "typo"}}), "product.nme"),
        (json!({"product": {"name": "A", "hsa_fsa_eligibility": "maybe"}}), "product.hsa_fsa_eligibility"),
        (json!({"product": {"name": "A", "visit_type": "spa"}}), "product.visit_type"),
        (json!({"product": {"name": "A", "upc_code": "123"}}), "product.upc_code"),
        (json!({"product": {"name": "A", "gtin": "4006381333932"}}), "product.gtin"),
        (json!({"product": {"name": "A", "url": "ftp://x"}}), "product.url"),
        (json!({"product": {"name": "A", "active": "yes"}}), "product.active"),
        (json!({"product": {"name": "A", "metadata": {"k": 1}}}), "product.metadata.k"),
        (json!({"product": {"name": 5}}), "product.name"),
        (json!({"name": "A"}), "product"),
        (json!({"product": {"name": "A"}, "extra": 1}), "extra"),
    ];
    let before = app.snapshot().await;
    for (body, param) in cases {
        let r = app.post("/v1/products", body.clone()).await;
        assert_eq!(r.status, 400, "{body} -> {}", r.text);
        assert_eq!(r.body["error"]["param"], param, "{body} -> {}", r.text);
        assert!(!r.body["error"]["message"].as_str().unwrap().is_empty());
    }
    assert_eq!(app.snapshot().await, before);
}

#[tokio::test]
async fn ids_of_another_kind_or_malformed_ids_are_404() {
    let app = spawn_app().await;
    for id in ["fprice_01HWDV9J9JWY5SDFJZNFXN5S6P", "fprod_nope", "fprod_01HW5MXAPBE79RHMMJJGB4ACAB", "%00"] {
        let r = app.get(&format!("/v1/products/{id}")).await;
        assert_eq!(r.status, 404, "{id}: {}", r.text);
        assert_eq!(r.body["error"]["type"], "not_found");
    }
}
