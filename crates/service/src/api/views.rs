//! JSON views of the domain records, as Cinder's clients expect them.

use serde_json::{json, Map, Value};

use crate::model::{Attachment, Encryption, Volume, VolumeType};

/// Newest microversion served.
pub const MAX_VERSION: (u32, u32) = (3, 71);
/// Oldest microversion served.
pub const MIN_VERSION: (u32, u32) = (3, 0);

/// The v3 version entry.
fn v3(base: &str) -> Value {
    json!({
        "id": "v3.0",
        "status": "CURRENT",
        "version": format!("{}.{}", MAX_VERSION.0, MAX_VERSION.1),
        "min_version": format!("{}.{}", MIN_VERSION.0, MIN_VERSION.1),
        "updated": "2023-08-31T00:00:00Z",
        "links": [
            {"rel": "describedby", "type": "text/html", "href": "https://docs.openstack.org/"},
            {"rel": "self", "href": format!("{base}/v3/")}
        ],
        "media-types": [
            {"base": "application/json", "type": "application/vnd.openstack.volume+json;version=3"}
        ]
    })
}

/// `GET /`.
pub fn versions(base: &str) -> Value {
    json!({ "versions": [v3(base)] })
}

/// `GET /v3/`.
pub fn version(base: &str) -> Value {
    json!({ "version": v3(base) })
}

fn links(base: &str, project: &str, kind: &str, id: &str) -> Value {
    json!([
        {"rel": "self", "href": format!("{base}/v3/{project}/{kind}/{id}")},
        {"rel": "bookmark", "href": format!("{base}/{project}/{kind}/{id}")}
    ])
}

/// `volumes` list entry.
pub fn volume_summary(base: &str, v: &Volume) -> Value {
    json!({ "id": v.id, "name": v.name, "links": links(base, &v.project_id, "volumes", &v.id) })
}

/// Full volume view at microversion `mv`; the `os-vol-*` attributes
/// (tenant, host, migration) only for admins, as Cinder's policy shows them.
///
/// `encrypted` is true for a volume of an encrypted type from the moment it
/// is accepted (Cinder assigns the key in the API), not only once the key
/// exists.
pub fn volume_detail(base: &str, v: &Volume, type_name: Option<&str>, type_encrypted: bool, mv: (u32, u32), admin: bool) -> Value {
    let mut m = Map::new();
    let mut put = |k: &str, val: Value| {
        m.insert(k.to_owned(), val);
    };
    put("id", json!(v.id));
    put("name", json!(v.name));
    put("description", json!(v.description));
    put("size", json!(v.size_gb));
    put("status", json!(v.status));
    put("metadata", json!(v.metadata));
    put("attachments", json!([]));
    put("links", links(base, &v.project_id, "volumes", &v.id));
    put("availability_zone", json!("nova"));
    put("bootable", json!("false"));
    put("encrypted", json!(type_encrypted || v.encryption_key_id.is_some()));
    put("created_at", json!(v.created_at));
    put("updated_at", json!(v.updated_at));
    put("volume_type", json!(type_name));
    put("snapshot_id", json!(v.snapshot_id));
    put("source_volid", json!(v.source_volid));
    put("user_id", json!(v.user_id));
    put("multiattach", json!(false));
    put("consistencygroup_id", Value::Null);
    put("replication_status", Value::Null);
    if admin {
        put("migration_status", Value::Null);
        put("os-vol-tenant-attr:tenant_id", json!(v.project_id));
        put("os-vol-host-attr:host", json!("rekey@file#file"));
        put("os-vol-mig-status-attr:migstat", Value::Null);
        put("os-vol-mig-status-attr:name_id", Value::Null);
    }
    if mv >= (3, 13) {
        put("group_id", Value::Null);
    }
    if mv >= (3, 21) {
        put("provider_id", Value::Null);
    }
    if mv >= (3, 48) {
        put("shared_targets", json!(false));
        put("service_uuid", Value::Null);
    }
    if mv >= (3, 61) {
        put("cluster_name", Value::Null);
    }
    if mv >= (3, 63) {
        put("volume_type_id", json!(v.volume_type_id));
    }
    if mv >= (3, 64) {
        put("encryption_key_id", json!(v.encryption_key_id));
    }
    if mv >= (3, 65) {
        put("consumes_quota", json!(true));
    }
    Value::Object(m)
}

/// An entry of a volume's `attachments`.
pub fn volume_attachment(a: &Attachment) -> Value {
    json!({
        "id": a.volume_id,
        "attachment_id": a.id,
        "volume_id": a.volume_id,
        "server_id": a.instance_uuid,
        "host_name": a.attached_host,
        "device": a.mountpoint,
        "attached_at": a.attach_time,
    })
}

/// Volume type view.
pub fn volume_type(t: &VolumeType) -> Value {
    let mut v = json!({
        "id": t.id,
        "name": t.name,
        "description": t.description,
        "is_public": t.is_public,
        "os-volume-type-access:is_public": t.is_public,
        "extra_specs": t.extra_specs,
    });
    // Only an associated type carries it: tempest's create schema has no
    // such field, its show and list schemas allow it.
    if let Some(q) = &t.qos_specs_id {
        v["qos_specs_id"] = json!(q);
    }
    v
}

/// Encryption type view.
pub fn encryption(e: &Encryption) -> Value {
    json!({
        "volume_type_id": e.volume_type_id,
        "encryption_id": e.encryption_id,
        "provider": e.provider.as_str(),
        "cipher": e.cipher,
        "key_size": e.key_size,
        "control_location": e.control_location,
        "created_at": e.created_at,
        "updated_at": e.updated_at,
        "deleted": false,
        "deleted_at": null,
    })
}

/// `GET /volumes/{id}/encryption`.
pub fn volume_encryption(v: &Volume, e: Option<&Encryption>) -> Value {
    match e {
        Some(e) => json!({
            "encryption_key_id": v.encryption_key_id,
            "provider": e.provider.as_str(),
            "cipher": e.cipher(),
            "key_size": e.key_size(),
            "control_location": e.control_location,
        }),
        None => json!({ "encryption_key_id": v.encryption_key_id }),
    }
}
