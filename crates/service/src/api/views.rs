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

/// `GET /v3/`: Cinder answers with the same `versions` list, of one.
pub fn version(base: &str) -> Value {
    json!({ "versions": [v3(base)] })
}

/// A resource's `self` and `bookmark` links.
pub fn links(base: &str, project: &str, kind: &str, id: &str) -> Value {
    json!([
        {"rel": "self", "href": format!("{base}/v3/{project}/{kind}/{id}")},
        {"rel": "bookmark", "href": format!("{base}/{project}/{kind}/{id}")}
    ])
}

/// `volumes` list entry.
pub fn volume_summary(base: &str, v: &Volume) -> Value {
    json!({ "id": v.id, "name": v.name, "links": links(base, &v.project_id, "volumes", &v.id) })
}

/// Full volume view at microversion `mv`, as Cinder's view builder makes
/// it: `migration_status` only for admins; the `os-vol-*` attributes only
/// on `show` and detailed lists (`shown`), where Cinder's extensions add
/// them: the tenant for everyone who may see the volume, host and migration
/// only for admins. Create and update answers have neither extension.
///
/// `encrypted` is true for a volume of an encrypted type from the moment it
/// is accepted (Cinder assigns the key in the API), not only once the key
/// exists. `metadata` carries the visible admin metadata (`readonly`) as
/// Cinder's does once it has been set.
pub fn volume_detail(base: &str, v: &Volume, type_name: Option<&str>, type_encrypted: bool, mv: (u32, u32), admin: bool, shown: bool) -> Value {
    let mut m = Map::new();
    let mut put = |k: &str, val: Value| {
        m.insert(k.to_owned(), val);
    };
    let mut metadata = json!(v.metadata);
    if let Some(ro) = v.readonly {
        metadata["readonly"] = json!(if ro { "True" } else { "False" });
    }
    put("id", json!(v.id));
    put("name", json!(v.name));
    put("description", json!(v.description));
    put("size", json!(v.size_gb));
    put("status", json!(v.status));
    put("metadata", metadata);
    put("attachments", json!([]));
    put("links", links(base, &v.project_id, "volumes", &v.id));
    put("availability_zone", json!("nova"));
    put("bootable", json!(if v.bootable { "true" } else { "false" }));
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
    }
    // Cinder's default policy shows the tenant to the project's readers, the
    // host and migration attributes to admins only.
    if shown {
        put("os-vol-tenant-attr:tenant_id", json!(v.project_id));
    }
    if admin && shown {
        put("os-vol-host-attr:host", json!("rekey@file#file"));
        put("os-vol-mig-status-attr:migstat", Value::Null);
        put("os-vol-mig-status-attr:name_id", Value::Null);
    }
    if mv >= (3, 13) {
        put("group_id", json!(v.group_id));
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

/// The type as `POST /types` answers it: the show view without
/// `qos_specs_id` (a new type has none; tempest's schema forbids the key).
pub fn volume_type_created(t: &VolumeType) -> Value {
    without(volume_type(t), &["qos_specs_id"])
}

/// The type as `PUT /types/{id}` answers it: without the access extension's
/// field and `qos_specs_id`, as Cinder's update view.
pub fn volume_type_updated(t: &VolumeType) -> Value {
    without(volume_type(t), &["qos_specs_id", "os-volume-type-access:is_public"])
}

fn without(mut v: Value, keys: &[&str]) -> Value {
    if let Some(m) = v.as_object_mut() {
        for k in keys {
            m.remove(*k);
        }
    }
    v
}

/// Encryption type view.
pub fn encryption(e: &Encryption) -> Value {
    json!({
        "volume_type_id": e.volume_type_id,
        "encryption_id": e.encryption_id,
        "provider": e.provider_name,
        "cipher": e.cipher,
        "key_size": e.key_size,
        "control_location": e.control_location,
        "created_at": e.created_at,
        "updated_at": e.updated_at,
        "deleted": false,
        "deleted_at": null,
    })
}

/// The encryption as `POST`/`PUT /types/{id}/encryption` answer it: the
/// fields given, without the record's timestamps and deletion flags.
pub fn encryption_written(e: &Encryption) -> Value {
    without(encryption(e), &["created_at", "updated_at", "deleted", "deleted_at"])
}

/// `GET /volumes/{id}/encryption`.
pub fn volume_encryption(v: &Volume, e: Option<&Encryption>) -> Value {
    match e {
        Some(e) => json!({
            "encryption_key_id": v.encryption_key_id,
            "provider": e.provider_name,
            "cipher": e.cipher(),
            "key_size": e.key_size(),
            "control_location": e.control_location,
        }),
        None => json!({ "encryption_key_id": v.encryption_key_id }),
    }
}
