//! Tokens, project isolation and Cinder's roles against the shared Keystone.

use serde_json::{json, Value};

use crate::harness::{keystone_url, revoke, token, Server, Setup};

fn uuid_like() -> String {
    format!("{:032x}", std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos())
}

#[test]
fn missing_forged_and_revoked_tokens_get_401_with_www_authenticate() {
    let ks = keystone_url();
    let srv = Server::start(Setup { token_cache_seconds: 2, ..Setup::new(&ks) });
    let (tok, project) = token("member-a", "rekey-a");
    let expect_uri = format!("Keystone uri=\"{}\"", ks.trim_end_matches("/v3"));

    // The version documents need no token (clients discover before they authenticate).
    assert_eq!(srv.call("", "GET", "/v3/", None).status, 200);
    let forged = format!("gAAAAA{}", "x".repeat(180));
    for bad in ["", forged.as_str(), "member-a:rekey-a"] {
        let a = srv.call(bad, "GET", &format!("/v3/{project}/volumes"), None);
        assert_eq!(a.status, 401, "{bad:?}: {}", a.body);
        assert_eq!(a.header("www-authenticate"), Some(expect_uri.as_str()), "{bad:?}");
        assert_eq!(a.body["unauthorized"]["code"], 401, "{}", a.body);
    }

    let a = srv.call(&tok, "GET", &format!("/v3/{project}/volumes"), None);
    assert_eq!(a.status, 200, "{}", a.body);
    revoke(&ks, &tok);
    // Cached for at most token_cache_seconds (2): past that it is refused.
    std::thread::sleep(std::time::Duration::from_millis(2500));
    let a = srv.call(&tok, "GET", &format!("/v3/{project}/volumes"), None);
    assert_eq!(a.status, 401, "a revoked token outlived the cache time: {}", a.body);
    assert_eq!(a.header("www-authenticate"), Some(expect_uri.as_str()));
    srv.stop_and_check_log(&[&tok, &forged]);
}

#[test]
fn another_project_cannot_see_clone_back_up_transfer_or_delete_a_volume() {
    let ks = keystone_url();
    let srv = Server::start(Setup::new(&ks));
    let (admin, pa) = token("admin-a", "rekey-a");
    let (member, _) = token("member-a", "rekey-a");
    let (other, pb) = token("member-b", "rekey-b");
    let ty = srv.encrypted_type(&admin, &pa, &format!("enc-{}", uuid_like()));
    let v = srv.volume(&member, &pa, json!({"volume": {"size": 1, "name": "a-vol", "volume_type": ty}}));
    let id = v["id"].as_str().unwrap();
    assert!(v["encryption_key_id"].is_string(), "{v}");

    let cases = [
        ("GET", format!("/v3/{pb}/volumes/{id}"), None),
        ("GET", format!("/v3/{pb}/volumes/{id}/encryption"), None),
        ("POST", format!("/v3/{pb}/volumes"), Some(json!({"volume": {"name": "steal", "source_volid": id}}))),
        ("POST", format!("/v3/{pb}/backups"), Some(json!({"backup": {"volume_id": id}}))),
        ("POST", format!("/v3/{pb}/snapshots"), Some(json!({"snapshot": {"volume_id": id}}))),
        ("POST", format!("/v3/{pb}/volume-transfers"), Some(json!({"transfer": {"volume_id": id}}))),
        ("DELETE", format!("/v3/{pb}/volumes/{id}"), None),
    ];
    for (m, path, body) in &cases {
        let a = srv.call(&other, m, path, body.as_ref());
        assert_eq!(a.status, 404, "{m} {path}: {}", a.body);
    }
    // Its project in the path with another project's token: Cinder's 400.
    let a = srv.call(&other, "GET", &format!("/v3/{pa}/volumes/{id}"), None);
    assert_eq!((a.status, a.body["badRequest"]["message"].as_str()), (400, Some("Malformed request url")), "{}", a.body);
    // Listing, even with all_tenants, shows none of it.
    let a = srv.call(&other, "GET", &format!("/v3/{pb}/volumes/detail?all_tenants=1"), None);
    assert_eq!(a.status, 200, "{}", a.body);
    assert!(a.body["volumes"].as_array().unwrap().iter().all(|x| x["id"] != id), "{}", a.body);
    // Still there, untouched, for its owner.
    assert_eq!(srv.wait_settled(&member, &pa, id)["status"], "available");
    srv.stop_and_check_log(&[&admin, &member, &other]);
}

#[test]
fn roles_decide_as_cinders_default_policy() {
    let ks = keystone_url();
    let srv = Server::start(Setup::new(&ks));
    let (admin, pa) = token("admin-a", "rekey-a");
    let (member, _) = token("member-a", "rekey-a");
    let (reader, _) = token("reader-a", "rekey-a");
    let (other, pb) = token("member-b", "rekey-b");
    let vols = format!("/v3/{pa}/volumes");

    // Types are admin-only to create.
    let body = json!({"volume_type": {"name": format!("t-{}", uuid_like())}});
    for t in [&member, &reader] {
        let a = srv.call(t, "POST", &format!("/v3/{pa}/types"), Some(&body));
        assert_eq!(a.status, 403, "{}", a.body);
        assert!(a.body["forbidden"]["message"].as_str().unwrap().contains("volume_extension:types_manage"), "{}", a.body);
    }
    assert_eq!(srv.call(&admin, "POST", &format!("/v3/{pa}/types"), Some(&body)).status, 200);

    let v = srv.volume(&member, &pa, json!({"volume": {"size": 1, "name": "by-member"}}));
    let id = v["id"].as_str().unwrap();
    srv.volume(&other, &pb, json!({"volume": {"size": 1, "name": "in-b"}}));

    // The reader lists and shows, and may not create or delete.
    assert_eq!(srv.call(&reader, "GET", &format!("{vols}/detail"), None).status, 200);
    let shown = srv.call(&reader, "GET", &format!("{vols}/{id}"), None);
    assert_eq!(shown.status, 200, "{}", shown.body);
    let a = srv.call(&reader, "POST", &vols, Some(&json!({"volume": {"size": 1}})));
    assert_eq!(a.status, 403, "{}", a.body);
    let a = srv.call(&reader, "DELETE", &format!("{vols}/{id}"), None);
    assert_eq!(a.status, 403, "{}", a.body);
    assert_eq!(srv.call(&reader, "POST", &format!("{vols}/{id}/action"), Some(&json!({"os-rekey": {"mode": "keyslot"}}))).status, 403);

    // Admin-only fields only for the admin; the tenant for the project's
    // readers too (Cinder's volume_extension:volume_tenant_attribute).
    assert_eq!(shown.body["volume"]["os-vol-tenant-attr:tenant_id"], pa.as_str(), "{}", shown.body);
    let admin_fields = ["os-vol-host-attr:host", "os-vol-mig-status-attr:migstat"];
    let as_admin = srv.call(&admin, "GET", &format!("{vols}/{id}"), None);
    for f in admin_fields {
        assert!(as_admin.body["volume"].get(f).is_some(), "admin misses {f}: {}", as_admin.body);
        assert!(shown.body["volume"].get(f).is_none(), "reader sees {f}: {}", shown.body);
    }
    assert_eq!(as_admin.body["volume"]["os-vol-tenant-attr:tenant_id"], pa.as_str());

    // all_tenants: every project for the admin, the own project for a member.
    let listed = |t: &str| -> Vec<String> {
        let a = srv.call(t, "GET", &format!("{vols}/detail?all_tenants=1"), None);
        assert_eq!(a.status, 200, "{}", a.body);
        a.body["volumes"].as_array().unwrap().iter().map(|v| v["name"].as_str().unwrap_or("").to_owned()).collect()
    };
    let all = listed(&admin);
    assert!(all.contains(&"in-b".to_owned()) && all.contains(&"by-member".to_owned()), "{all:?}");
    assert_eq!(listed(&member), vec!["by-member".to_owned()]);
    // Forced delete and the audit are admin-only.
    assert_eq!(srv.call(&member, "DELETE", &format!("{vols}/{id}?force=True"), None).status, 403);
    assert_eq!(srv.call(&member, "GET", &format!("/v3/{pa}/os-rekey/audit"), None).status, 403);
    // The member deletes its own volume.
    assert_eq!(srv.call(&member, "DELETE", &format!("{vols}/{id}"), None).status, 202);
    srv.stop_and_check_log(&[&admin, &member, &reader, &other]);
}

#[test]
fn an_admin_acts_on_other_projects_volumes_as_cinders_admin_does() {
    let ks = keystone_url();
    let srv = Server::start(Setup::new(&ks));
    let (admin, pa) = token("admin-a", "rekey-a");
    let (other, pb) = token("member-b", "rekey-b");
    let v = srv.volume(&other, &pb, json!({"volume": {"size": 1, "name": "in-b", "metadata": {"k": "v"}}}));
    let id = v["id"].as_str().unwrap();
    let action = |t: &str, p: &str, body: Value| srv.call(t, "POST", &format!("/v3/{p}/volumes/{id}/action"), Some(&body));

    // The member may not reset or force-delete its own volume: admin only.
    let a = action(&other, &pb, json!({"os-reset_status": {"status": "error"}}));
    assert_eq!(a.status, 403, "{}", a.body);
    assert!(a.body["forbidden"]["message"].as_str().unwrap().contains("reset_status"), "{}", a.body);
    assert_eq!(action(&other, &pb, json!({"os-force_delete": {}})).status, 403);

    // The admin of another project shows it, with the admin attributes, and acts on it.
    let shown = srv.call(&admin, "GET", &format!("/v3/{pa}/volumes/{id}"), None);
    assert_eq!(shown.status, 200, "{}", shown.body);
    assert_eq!(shown.body["volume"]["os-vol-tenant-attr:tenant_id"], pb.as_str());
    assert!(shown.body["volume"]["os-vol-host-attr:host"].is_string(), "{}", shown.body);
    let m = srv.call(&admin, "GET", &format!("/v3/{pa}/volumes/{id}/metadata"), None);
    assert_eq!((m.status, m.body.clone()), (200, json!({"metadata": {"k": "v"}})));
    let a = action(&admin, &pa, json!({"os-reset_status": {"status": "error"}}));
    assert_eq!(a.status, 202, "{}", a.body);
    assert_eq!(srv.wait_settled(&other, &pb, id)["status"], "error");
    let a = action(&admin, &pa, json!({"os-force_delete": {}}));
    assert_eq!(a.status, 202, "{}", a.body);
    let start = std::time::Instant::now();
    while srv.call(&other, "GET", &format!("/v3/{pb}/volumes/{id}"), None).status != 404 {
        assert!(start.elapsed() < std::time::Duration::from_secs(60), "force delete did not finish");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    srv.stop_and_check_log(&[&admin, &other]);
}
