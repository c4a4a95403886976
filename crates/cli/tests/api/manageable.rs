//! Manageable lists (3.8) with the real `cinder` CLI (`manageable-list`,
//! `snapshot-manageable-list`): every image of the back end is listed, rekey's
//! own with their record's id, a stray one with none, and none is offered as
//! safe to manage (rekey adopts nothing it has no key for).

use serde_json::Value;

use crate::harness::*;

fn cinder_ok(srv: &Server, args: &[&str]) -> String {
    let mut all = vec!["--os-volume-api-version", "3.8"];
    all.extend_from_slice(args);
    let o = srv.cinder(&all);
    assert!(o.status.success(), "cinder {args:?}: {}\n{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn get(srv: &Server, mv: &str, path: &str) -> (u16, Value) {
    let tok = format!("u:{PROJECT}");
    let mv = format!("volume {mv}");
    http(srv.port, "GET", path, &[("X-Auth-Token", &tok), ("OpenStack-API-Version", &mv)], None).unwrap()
}

#[test]
fn manageable_lists_show_every_image_and_offer_none_with_the_cinder_cli() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path(), &[]);
    let v = srv.create_volume(serde_json::json!({"volume": {"size": 1, "name": "mine"}}));
    let vid = v["id"].as_str().unwrap().to_owned();
    let (st, s) = srv.http("POST", "/v3/snapshots", Some(serde_json::json!({"snapshot": {"volume_id": vid, "name": "s"}}).to_string().as_bytes()));
    assert_eq!(st, 202, "{s}");
    let sid = s["snapshot"]["id"].as_str().unwrap().to_owned();
    // An image rekey did not make: a 2 GiB file in the back end's volume directory.
    let stray = "0b0b0b0b-1111-4222-8333-444444444444";
    let mine = volume_path(dir.path(), &vid);
    let f = std::fs::File::create(mine.with_file_name(format!("volume-{stray}"))).unwrap();
    f.set_len(2 << 30).unwrap();
    let (st, svcs) = get(&srv, "3.8", "/v3/os-services?binary=cinder-volume");
    assert_eq!(st, 200, "{svcs}");
    let host = svcs["services"][0]["host"].as_str().unwrap().to_owned();

    let out = cinder_ok(&srv, &["manageable-list", &host]);
    assert!(out.contains(&format!("volume-{vid}")) && out.contains(&vid), "{out}");
    assert!(out.contains(&format!("volume-{stray}")), "{out}");
    let (st, b) = get(&srv, "3.8", &format!("/v3/manageable_volumes/detail?host={host}&sort=size:desc"));
    assert_eq!(st, 200, "{b}");
    let rows = b["manageable-volumes"].as_array().unwrap();
    assert_eq!(rows.len(), 2, "{b}");
    assert_eq!(rows[0]["reference"]["source-name"], format!("volume-{stray}"), "largest first: {b}");
    assert_eq!((rows[0]["size"].as_u64(), rows[0]["cinder_id"].clone()), (Some(2), Value::Null), "{b}");
    assert_eq!(rows[1]["cinder_id"], vid.as_str(), "{b}");
    assert_eq!(rows[1]["reason_not_safe"], "already managed", "{b}");
    assert!(rows.iter().all(|r| r["safe_to_manage"] == false), "{b}");

    let out = cinder_ok(&srv, &["snapshot-manageable-list", &host]);
    assert!(out.contains(&format!("snapshot-{sid}")) && out.contains(&format!("volume-{vid}")), "{out}");

    // Bad requests: Cinder's 400s and 404s.
    for (mv, q, want) in [
        ("3.8", String::new(), 400),
        ("3.17", format!("?host={host}&cluster=c"), 400),
        ("3.8", format!("?host={host}&sort=colour"), 400),
        ("3.8", format!("?host={host}&sort=size:sideways"), 400),
        ("3.8", format!("?host={host}&limit=-1"), 400),
        ("3.8", format!("?host={host}&marker=volume-nope"), 404),
        ("3.8", "?host=elsewhere@lvm".to_owned(), 404),
        ("3.7", format!("?host={host}"), 404),
    ] {
        let (st, b) = get(&srv, mv, &format!("/v3/manageable_volumes{q}"));
        assert_eq!(st, want, "{mv} {q}: {b}");
    }
    let o = srv.cinder(&["--os-volume-api-version", "3.8", "manageable-list", "elsewhere@lvm"]);
    assert!(!o.status.success(), "listed a host that is not there");
}
