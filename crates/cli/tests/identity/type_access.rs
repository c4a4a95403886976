//! Private volume types under Keystone: hidden from, and refused to, a
//! project until an admin grants it access (`os-volume-type-access`), as
//! Cinder does; the admin calls refused to a member.

use serde_json::json;

use crate::harness::{keystone_url, token, Server, Setup};

#[test]
fn a_private_type_is_hidden_from_other_projects_until_access_is_granted() {
    let ks = keystone_url();
    let srv = Server::start(Setup::new(&ks));
    let (admin, pa) = token("admin-a", "rekey-a");
    let (other, pb) = token("member-b", "rekey-b");
    let name = format!("priv-{}", std::process::id());
    let a = srv.call(&admin, "POST", &format!("/v3/{pa}/types"), Some(&json!({"volume_type": {"name": name, "os-volume-type-access:is_public": false}})));
    assert_eq!(a.status, 200, "{}", a.body);
    let id = a.body["volume_type"]["id"].as_str().unwrap().to_owned();
    assert_eq!(a.body["volume_type"]["is_public"], false);

    let listed = |tok: &str, project: &str| {
        let a = srv.call(tok, "GET", &format!("/v3/{project}/types"), None);
        assert_eq!(a.status, 200, "{}", a.body);
        a.body["volume_types"].as_array().unwrap().iter().any(|t| t["id"] == id.as_str())
    };
    let volumes_of_b = || {
        let a = srv.call(&other, "GET", &format!("/v3/{pb}/volumes"), None);
        a.body["volumes"].as_array().unwrap().len()
    };
    assert!(listed(&admin, &pa));
    assert!(!listed(&other, &pb));
    let a = srv.call(&other, "GET", &format!("/v3/{pb}/types/{id}"), None);
    assert_eq!((a.status, a.body["itemNotFound"]["code"].as_u64()), (404, Some(404)), "{}", a.body);
    let before = volumes_of_b();
    for ty in [id.as_str(), name.as_str()] {
        let a = srv.call(&other, "POST", &format!("/v3/{pb}/volumes"), Some(&json!({"volume": {"size": 1, "volume_type": ty}})));
        assert_eq!(a.status, 404, "{}", a.body);
    }
    assert_eq!(volumes_of_b(), before, "a refused create left a volume");

    // A member may not grant itself access, nor read the list.
    let grant = json!({"addProjectAccess": {"project": pb}});
    let a = srv.call(&other, "POST", &format!("/v3/{pb}/types/{id}/action"), Some(&grant));
    assert_eq!(a.status, 403, "{}", a.body);
    let a = srv.call(&other, "GET", &format!("/v3/{pb}/types/{id}/os-volume-type-access"), None);
    assert_eq!(a.status, 403, "{}", a.body);

    let a = srv.call(&admin, "POST", &format!("/v3/{pa}/types/{id}/action"), Some(&grant));
    assert_eq!(a.status, 202, "{}", a.body);
    let a = srv.call(&admin, "POST", &format!("/v3/{pa}/types/{id}/action"), Some(&grant));
    assert_eq!((a.status, a.body["conflictingRequest"]["code"].as_u64()), (409, Some(409)), "{}", a.body);
    let a = srv.call(&admin, "GET", &format!("/v3/{pa}/types/{id}/os-volume-type-access"), None);
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(a.body["volume_type_access"], json!([{"volume_type_id": id, "project_id": pb}]));

    assert!(listed(&other, &pb));
    let v = srv.volume(&other, &pb, json!({"volume": {"size": 1, "volume_type": id}}));
    assert_eq!(v["volume_type"], name.as_str());

    let revoke = json!({"removeProjectAccess": {"project": pb}});
    let a = srv.call(&admin, "POST", &format!("/v3/{pa}/types/{id}/action"), Some(&revoke));
    assert_eq!(a.status, 202, "{}", a.body);
    let a = srv.call(&admin, "POST", &format!("/v3/{pa}/types/{id}/action"), Some(&revoke));
    assert_eq!(a.status, 404, "{}", a.body);
    assert!(!listed(&other, &pb));
    for bad in [json!({"addProjectAccess": {}}), json!({"bogus": {"project": pb}}), json!({"addProjectAccess": {"project": 7}})] {
        let a = srv.call(&admin, "POST", &format!("/v3/{pa}/types/{id}/action"), Some(&bad));
        assert_eq!((a.status, a.body["badRequest"]["code"].as_u64()), (400, Some(400)), "{bad}: {}", a.body);
    }
    let a = srv.call(&admin, "GET", &format!("/v3/{pa}/types/{id}/os-volume-type-access"), None);
    assert_eq!(a.body["volume_type_access"], json!([]), "{}", a.body);
    srv.stop_and_check_log(&[&admin, &other]);
}
