//! The behavioural suite against a real Barbican at `REKEY_BARBICAN_URL`
//! (start one with `scripts/barbican.sh start`). Fails when it is missing.

mod common;

use std::collections::HashSet;

async fn real_barbican() -> (std::sync::Arc<dyn rekey_keys::KeyManager>, ()) {
    (common::barbican().await, ())
}

suite_tests!(real_barbican());

/// Key ids are the secret UUIDs in Barbican, readable through Barbican's own
/// API under the project, and creating a key leaves no order behind
/// (castellan bug 1638018).
#[tokio::test]
async fn key_ids_are_barbican_secrets_and_orders_are_cleaned_up() {
    let km = common::barbican().await;
    let url = common::barbican_url();
    let p = common::project("orders");
    let id = km.create_key(&p, "aes", 256).await.unwrap();
    let key = km.get_key(&p, &id).await.unwrap();

    let http = reqwest::Client::new();
    let payload = http
        .get(format!(
            "{}/v1/secrets/{id}/payload",
            url.trim_end_matches('/')
        ))
        .header("X-Project-Id", p.as_str())
        .header("Accept", "application/octet-stream")
        .send()
        .await
        .unwrap();
    assert_eq!(payload.status(), 200);
    assert_eq!(
        payload.bytes().await.unwrap().as_ref(),
        key.expose(),
        "Barbican's own API returns the same bytes"
    );

    let orders: serde_json::Value = http
        .get(format!("{}/v1/orders", url.trim_end_matches('/')))
        .header("X-Project-Id", p.as_str())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(orders["total"], 0, "no order left behind: {orders}");

    let listed: HashSet<_> = km.list(&p).await.unwrap().into_iter().collect();
    assert_eq!(listed, HashSet::from([id.clone()]));
    km.delete_key(&p, &id).await.unwrap();
}

/// An order Barbican cannot fulfil (simple_crypto makes no 512-bit AES key)
/// is a typed error, and its order is deleted too.
#[tokio::test]
async fn failed_order_is_an_error_and_cleaned_up() {
    let km = common::barbican().await;
    let url = common::barbican_url();
    let p = common::project("badorder");
    let err = km.create_key(&p, "aes", 512).await.unwrap_err();
    assert!(err.to_string().contains("failed with status"), "{err}");
    let orders: serde_json::Value = reqwest::Client::new()
        .get(format!("{}/v1/orders", url.trim_end_matches('/')))
        .header("X-Project-Id", p.as_str())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(orders["total"], 0, "no order left behind: {orders}");
    assert!(km.list(&p).await.unwrap().is_empty());
}
