//! Cinder's quota policy with real Keystone tokens: a project's reader sees
//! its own quotas, usage and limits but no other project's, and neither it
//! nor a member may change them; an admin sets another project's quota,
//! which its member then meets as a 413.

use serde_json::json;

use crate::harness::{keystone_url, token, Server, Setup};

#[test]
fn readers_see_their_own_quotas_and_only_admins_change_them() {
    let ks = keystone_url();
    let srv = Server::start(Setup::new(&ks));
    let (admin, pa) = token("admin-a", "rekey-a");
    let (member, _) = token("member-a", "rekey-a");
    let (reader, _) = token("reader-a", "rekey-a");
    let (member_b, pb) = token("member-b", "rekey-b");
    let refused = |tok: &str, method: &str, path: String, policy: &str| {
        let a = srv.call(tok, method, &path, Some(&json!({"quota_set": {"volumes": 1}})));
        assert_eq!(a.status, 403, "{method} {path}: {}", a.body);
        assert_eq!(a.body["forbidden"]["message"], format!("Policy doesn't allow {policy} to be performed."), "{}", a.body);
    };

    for path in [format!("/v3/{pa}/os-quota-sets/{pa}"), format!("/v3/{pa}/os-quota-sets/{pa}?usage=True"), format!("/v3/{pa}/os-quota-sets/{pa}/defaults")] {
        let a = srv.call(&reader, "GET", &path, None);
        assert_eq!((a.status, a.body["quota_set"]["id"].as_str()), (200, Some(pa.as_str())), "{path}: {}", a.body);
    }
    let a = srv.call(&reader, "GET", &format!("/v3/{pa}/limits"), None);
    assert_eq!((a.status, a.body["limits"]["absolute"]["maxTotalVolumes"].as_i64()), (200, Some(10)), "{}", a.body);
    refused(&reader, "GET", format!("/v3/{pa}/os-quota-sets/{pb}"), "volume_extension:quotas:show");
    refused(&member, "GET", format!("/v3/{pa}/os-quota-sets/{pb}/defaults"), "volume_extension:quotas:show");
    refused(&reader, "PUT", format!("/v3/{pa}/os-quota-sets/{pa}"), "volume_extension:quotas:update");
    refused(&member, "PUT", format!("/v3/{pa}/os-quota-sets/{pa}"), "volume_extension:quotas:update");
    refused(&member, "DELETE", format!("/v3/{pa}/os-quota-sets/{pa}"), "volume_extension:quotas:delete");
    refused(&member, "GET", format!("/v3/{pa}/os-quota-class-sets/default"), "volume_extension:quota_classes");
    refused(&member, "PUT", format!("/v3/{pa}/os-quota-class-sets/default"), "volume_extension:quota_classes:update");
    let a = srv.call(&admin, "GET", &format!("/v3/{pa}/os-quota-sets/{pa}"), None);
    assert_eq!(a.body["quota_set"]["volumes"], 10, "the refused calls changed nothing: {}", a.body);

    // The admin of rekey-a limits rekey-b to one volume; rekey-b's member meets it.
    let a = srv.call(&admin, "PUT", &format!("/v3/{pa}/os-quota-sets/{pb}"), Some(&json!({"quota_set": {"volumes": 1}})));
    assert_eq!((a.status, a.body["quota_set"]["volumes"].as_i64()), (200, Some(1)), "{}", a.body);
    let a = srv.call(&admin, "GET", &format!("/v3/{pa}/os-quota-sets/{pb}"), None);
    assert_eq!(a.body["quota_set"]["volumes"], 1, "{}", a.body);
    let v = srv.volume(&member_b, &pb, json!({"volume": {"size": 1}}));
    assert_eq!(v["status"], "available", "{v}");
    let a = srv.call(&member_b, "POST", &format!("/v3/{pb}/volumes"), Some(&json!({"volume": {"size": 1}})));
    assert_eq!(a.status, 413, "{}", a.body);
    assert_eq!(a.body["overLimit"]["message"], "VolumeLimitExceeded: Maximum number of volumes allowed (1) exceeded for quota 'volumes'.");
    let a = srv.call(&member_b, "GET", &format!("/v3/{pb}/limits"), None);
    assert_eq!((a.body["limits"]["absolute"]["maxTotalVolumes"].as_i64(), a.body["limits"]["absolute"]["totalVolumesUsed"].as_i64()), (Some(1), Some(1)), "{}", a.body);
    let a = srv.call(&admin, "DELETE", &format!("/v3/{pa}/os-quota-sets/{pb}"), None);
    assert_eq!(a.status, 200, "{}", a.body);
    let a = srv.call(&member_b, "GET", &format!("/v3/{pb}/os-quota-sets/{pb}"), None);
    assert_eq!(a.body["quota_set"]["volumes"], 10, "{}", a.body);
    srv.stop_and_check_log(&[&admin, &member, &reader, &member_b]);
}
