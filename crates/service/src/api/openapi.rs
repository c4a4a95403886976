//! `GET /openapi.json`: an OpenAPI 3.1 document of every operation the API
//! serves, built from one table ([`OPERATIONS`]) whose request bodies are the
//! handlers' own body types (`utoipa::ToSchema` on the structs the handlers
//! deserialize, so a field a handler accepts or refuses is what the document
//! says). A unit test routes every documented operation through
//! [`Route::parse`], so the document never names what is not served.
//!
//! Paths are written without `{project_id}`: rekey serves `/v3/...` and
//! `/v3/{project_id}/...` alike (the project comes from the token), and the
//! shorter form is the one a client can call with any token.

use serde_json::{json, Value};
use utoipa::openapi::path::{HttpMethod, OperationBuilder, ParameterBuilder, ParameterIn, PathItem};
use utoipa::openapi::request_body::RequestBodyBuilder;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{ComponentsBuilder, ContentBuilder, InfoBuilder, OpenApi, OpenApiBuilder, PathsBuilder, RefOr, Required, ResponseBuilder, Schema};
use utoipa::{PartialSchema, ToSchema};

use super::views::MAX_VERSION;

/// The named schemas a body type refers to (its nested structs).
type Components = Vec<(String, RefOr<Schema>)>;

/// A request body: one of the handlers' types (its schema and the schemas
/// it refers to), or none.
#[derive(Clone, Copy)]
enum Body {
    None,
    Of(fn() -> RefOr<Schema>, fn(&mut Components)),
}

/// One documented operation.
struct Op {
    method: HttpMethod,
    /// Path template after the server root, e.g. `/v3/volumes/{volume_id}`.
    path: &'static str,
    id: &'static str,
    summary: &'static str,
    /// The success status.
    ok: u16,
    /// The key the success body is an object under (`volume`, `volumes`…),
    /// if it has a body.
    reply: Option<&'static str>,
    body: Body,
}

const fn op(method: HttpMethod, path: &'static str, id: &'static str, summary: &'static str, ok: u16, reply: Option<&'static str>, body: Body) -> Op {
    Op { method, path, id, summary, ok, reply, body }
}

fn schema_of<T: PartialSchema>() -> RefOr<Schema> {
    T::schema()
}

fn components_of<T: ToSchema>(out: &mut Components) {
    T::schemas(out);
}

fn no_components(_: &mut Components) {}

/// `Body::Of` for a handler's body type.
macro_rules! body {
    ($t:ty) => {
        Body::Of(schema_of::<$t>, components_of::<$t>)
    };
}

use super::types as tb;
use HttpMethod::{Delete, Get, Post, Put};

/// Every operation served, in the order of Cinder's API reference.
#[rustfmt::skip]
static OPERATIONS: &[Op] = &[
    op(Get, "/", "listVersions", "API versions (300 Multiple Choices)", 300, Some("versions"), Body::None),
    op(Get, "/v3/", "showV3Version", "The v3 version document", 200, Some("versions"), Body::None),
    op(Get, "/v3/volumes", "listVolumes", "Volumes (id, name, links)", 200, Some("volumes"), Body::None),
    op(Get, "/v3/volumes/detail", "listVolumesDetail", "Volumes with details", 200, Some("volumes"), Body::None),
    op(Post, "/v3/volumes", "createVolume", "Create a volume (new, clone, from snapshot, from backup)", 202, Some("volume"), body!(super::volumes::VolumeCreateBody)),
    op(Get, "/v3/volumes/{volume_id}", "showVolume", "A volume", 200, Some("volume"), Body::None),
    op(Put, "/v3/volumes/{volume_id}", "updateVolume", "Rename or describe a volume", 200, Some("volume"), Body::Of(any_object, no_components)),
    op(Delete, "/v3/volumes/{volume_id}", "deleteVolume", "Delete a volume", 202, None, Body::None),
    op(Get, "/v3/volumes/{volume_id}/encryption", "showVolumeEncryption", "A volume's encryption metadata", 200, None, Body::None),
    op(Post, "/v3/volumes/{volume_id}/action", "volumeAction", "One volume action (os-rekey, os-attach, os-reserve, …)", 202, None, Body::Of(any_object, no_components)),
    op(Get, "/v3/types", "listTypes", "Volume types", 200, Some("volume_types"), Body::None),
    op(Post, "/v3/types", "createType", "Create a volume type", 200, Some("volume_type"), body!(tb::TypeBody)),
    op(Get, "/v3/types/{type_id}", "showType", "A volume type", 200, Some("volume_type"), Body::None),
    op(Put, "/v3/types/{type_id}", "updateType", "Change a volume type", 200, Some("volume_type"), body!(tb::TypeBody)),
    op(Delete, "/v3/types/{type_id}", "deleteType", "Delete a volume type", 202, None, Body::None),
    op(Get, "/v3/types/{type_id}/extra_specs", "listExtraSpecs", "A type's extra specs", 200, Some("extra_specs"), Body::None),
    op(Post, "/v3/types/{type_id}/extra_specs", "setExtraSpecs", "Set extra specs", 200, Some("extra_specs"), body!(tb::SpecsBody)),
    op(Get, "/v3/types/{type_id}/extra_specs/{key}", "showExtraSpec", "One extra spec", 200, None, Body::None),
    op(Put, "/v3/types/{type_id}/extra_specs/{key}", "updateExtraSpec", "Change one extra spec", 200, None, Body::Of(string_map, no_components)),
    op(Delete, "/v3/types/{type_id}/extra_specs/{key}", "deleteExtraSpec", "Delete one extra spec", 202, None, Body::None),
    op(Get, "/v3/types/{type_id}/encryption", "showEncryptionType", "A type's encryption", 200, None, Body::None),
    op(Post, "/v3/types/{type_id}/encryption", "createEncryptionType", "Make a type encrypted", 200, Some("encryption"), body!(tb::EncryptionBody)),
    // One path for both: the GET names a field of the encryption (`cipher`, `provider`…) where PUT and DELETE take its id.
    op(Get, "/v3/types/{type_id}/encryption/{encryption_id}", "showEncryptionSpec", "One field of a type's encryption, named in place of the id", 200, None, Body::None),
    op(Put, "/v3/types/{type_id}/encryption/{encryption_id}", "updateEncryptionType", "Change a type's encryption", 200, Some("encryption"), body!(tb::EncryptionBody)),
    op(Delete, "/v3/types/{type_id}/encryption/{encryption_id}", "deleteEncryptionType", "Remove a type's encryption", 202, None, Body::None),
    op(Get, "/v3/attachments", "listAttachments", "Attachments (3.27)", 200, Some("attachments"), Body::None),
    op(Get, "/v3/attachments/detail", "listAttachmentsDetail", "Attachments with details", 200, Some("attachments"), Body::None),
    op(Post, "/v3/attachments", "createAttachment", "Attach a volume, with or without a connector", 200, Some("attachment"), Body::Of(any_object, no_components)),
    op(Get, "/v3/attachments/{attachment_id}", "showAttachment", "An attachment", 200, Some("attachment"), Body::None),
    op(Put, "/v3/attachments/{attachment_id}", "updateAttachment", "A connector → connection info", 200, Some("attachment"), Body::Of(any_object, no_components)),
    op(Delete, "/v3/attachments/{attachment_id}", "deleteAttachment", "Detach", 200, None, Body::None),
    op(Post, "/v3/attachments/{attachment_id}/action", "attachmentAction", "os-complete (3.44)", 204, None, Body::Of(any_object, no_components)),
    op(Get, "/v3/snapshots", "listSnapshots", "Snapshots", 200, Some("snapshots"), Body::None),
    op(Get, "/v3/snapshots/detail", "listSnapshotsDetail", "Snapshots with details", 200, Some("snapshots"), Body::None),
    op(Post, "/v3/snapshots", "createSnapshot", "Snapshot a volume", 202, Some("snapshot"), Body::Of(any_object, no_components)),
    op(Get, "/v3/snapshots/{snapshot_id}", "showSnapshot", "A snapshot", 200, Some("snapshot"), Body::None),
    op(Put, "/v3/snapshots/{snapshot_id}", "updateSnapshot", "Rename or describe a snapshot", 200, Some("snapshot"), Body::Of(any_object, no_components)),
    op(Delete, "/v3/snapshots/{snapshot_id}", "deleteSnapshot", "Delete a snapshot", 202, None, Body::None),
    op(Get, "/v3/backups", "listBackups", "Backups", 200, Some("backups"), Body::None),
    op(Get, "/v3/backups/detail", "listBackupsDetail", "Backups with details", 200, Some("backups"), Body::None),
    op(Post, "/v3/backups", "createBackup", "Back a volume up", 202, Some("backup"), Body::Of(any_object, no_components)),
    op(Get, "/v3/backups/{backup_id}", "showBackup", "A backup", 200, Some("backup"), Body::None),
    op(Delete, "/v3/backups/{backup_id}", "deleteBackup", "Delete a backup", 202, None, Body::None),
    op(Post, "/v3/backups/{backup_id}/restore", "restoreBackup", "Restore to a new or an existing volume", 202, Some("restore"), Body::Of(any_object, no_components)),
    op(Get, "/v3/volume-transfers", "listTransfers", "Volume transfers (3.55)", 200, Some("transfers"), Body::None),
    op(Get, "/v3/volume-transfers/detail", "listTransfersDetail", "Volume transfers with details", 200, Some("transfers"), Body::None),
    op(Post, "/v3/volume-transfers", "createTransfer", "Offer a volume to another project", 202, Some("transfer"), Body::Of(any_object, no_components)),
    op(Get, "/v3/volume-transfers/{transfer_id}", "showTransfer", "A transfer", 200, Some("transfer"), Body::None),
    op(Delete, "/v3/volume-transfers/{transfer_id}", "deleteTransfer", "Withdraw a transfer", 202, None, Body::None),
    op(Post, "/v3/volume-transfers/{transfer_id}/accept", "acceptTransfer", "Accept a transfer (the volume gets its own key)", 202, Some("transfer"), Body::Of(any_object, no_components)),
    op(Get, "/v3/default-types", "listDefaultTypes", "Every project's default volume type (3.62, admin)", 200, Some("default_types"), Body::None),
    op(Get, "/v3/default-types/{project_id}", "showDefaultType", "A project's default volume type (3.62)", 200, Some("default_type"), Body::None),
    op(Put, "/v3/default-types/{project_id}", "setDefaultType", "Set a project's default volume type (3.62)", 200, Some("default_type"), body!(super::defaults::SetBody)),
    op(Delete, "/v3/default-types/{project_id}", "unsetDefaultType", "Unset a project's default volume type (3.62)", 204, None, Body::None),
    op(Get, "/v3/os-rekey/audit", "rekeyAudit", "Key-independence audit (admin)", 200, None, Body::None),
    // Quotas and limits.
    op(Get, "/v3/os-quota-sets/{project_id}", "showQuotaSet", "A project's quotas (usage=True adds in_use/reserved/allocated)", 200, Some("quota_set"), Body::None),
    op(Put, "/v3/os-quota-sets/{project_id}", "updateQuotaSet", "Change a project's quotas (admin)", 200, Some("quota_set"), Body::Of(any_object, no_components)),
    op(Delete, "/v3/os-quota-sets/{project_id}", "deleteQuotaSet", "A project's quotas back to the defaults (admin)", 200, None, Body::None),
    op(Get, "/v3/os-quota-sets/{project_id}/defaults", "showQuotaDefaults", "The default quotas", 200, Some("quota_set"), Body::None),
    op(Get, "/v3/os-quota-class-sets/{class_name}", "showQuotaClass", "A quota class (admin)", 200, Some("quota_class_set"), Body::None),
    op(Put, "/v3/os-quota-class-sets/{class_name}", "updateQuotaClass", "Change a quota class (admin)", 200, Some("quota_class_set"), Body::Of(any_object, no_components)),
    op(Get, "/v3/limits", "showLimits", "Absolute limits and usage", 200, Some("limits"), Body::None),
    // Discovery and administration.
    op(Get, "/v3/os-availability-zone", "listAvailabilityZones", "Availability zones", 200, Some("availabilityZoneInfo"), Body::None),
    op(Get, "/v3/extensions", "listExtensions", "API extensions", 200, Some("extensions"), Body::None),
    op(Get, "/v3/os-services", "listServices", "Services (admin)", 200, Some("services"), Body::None),
    op(Put, "/v3/os-services/{action}", "updateService", "enable, disable, disable-log-reason, freeze, thaw, set-log, get-log (admin)", 200, None, Body::Of(any_object, no_components)),
    op(Get, "/v3/os-hosts", "listHosts", "Hosts (admin)", 200, Some("hosts"), Body::None),
    op(Get, "/v3/os-hosts/{host_name}", "showHost", "A host's usage (admin)", 200, Some("host"), Body::None),
    op(Get, "/v3/scheduler-stats/get_pools", "listPools", "Back-end pools (admin)", 200, Some("pools"), Body::None),
    op(Get, "/v3/capabilities/{host_name}", "showCapabilities", "A back end's capabilities (admin)", 200, None, Body::None),
    op(Get, "/v3/types/{type_id}/os-volume-type-access", "listTypeAccess", "Projects that may use a private type (admin)", 200, Some("volume_type_access"), Body::None),
    op(Post, "/v3/types/{type_id}/action", "typeAccessAction", "addProjectAccess, removeProjectAccess (admin)", 202, None, Body::Of(any_object, no_components)),
    op(Get, "/v3/messages", "listMessages", "User messages (3.3)", 200, Some("messages"), Body::None),
    op(Get, "/v3/messages/{message_id}", "showMessage", "A user message (3.3)", 200, Some("message"), Body::None),
    op(Delete, "/v3/messages/{message_id}", "deleteMessage", "Delete a user message (3.3)", 204, None, Body::None),
    // QoS specs.
    op(Get, "/v3/qos-specs", "listQosSpecs", "QoS specs (admin)", 200, Some("qos_specs"), Body::None),
    op(Post, "/v3/qos-specs", "createQosSpecs", "Create QoS specs (admin)", 200, Some("qos_specs"), Body::Of(any_object, no_components)),
    op(Get, "/v3/qos-specs/{qos_id}", "showQosSpecs", "QoS specs (admin)", 200, Some("qos_specs"), Body::None),
    op(Put, "/v3/qos-specs/{qos_id}", "setQosKeys", "Set QoS keys (admin)", 200, Some("qos_specs"), Body::Of(any_object, no_components)),
    op(Delete, "/v3/qos-specs/{qos_id}", "deleteQosSpecs", "Delete QoS specs, force=True if associated (admin)", 202, None, Body::None),
    op(Put, "/v3/qos-specs/{qos_id}/delete_keys", "unsetQosKeys", "Unset QoS keys (admin)", 202, None, Body::Of(any_object, no_components)),
    op(Get, "/v3/qos-specs/{qos_id}/associations", "listQosAssociations", "Types the specs are associated with (admin)", 200, Some("qos_associations"), Body::None),
    op(Get, "/v3/qos-specs/{qos_id}/associate", "associateQos", "Associate with vol_type_id (admin)", 202, None, Body::None),
    op(Get, "/v3/qos-specs/{qos_id}/disassociate", "disassociateQos", "Disassociate from vol_type_id (admin)", 202, None, Body::None),
    op(Get, "/v3/qos-specs/{qos_id}/disassociate_all", "disassociateAllQos", "Disassociate from every type (admin)", 202, None, Body::None),
    // Group types.
    op(Get, "/v3/group_types", "listGroupTypes", "Group types (3.11)", 200, Some("group_types"), Body::None),
    op(Post, "/v3/group_types", "createGroupType", "Create a group type (3.11, admin)", 202, Some("group_type"), Body::Of(any_object, no_components)),
    op(Get, "/v3/group_types/default", "showDefaultGroupType", "The default group type (3.11)", 200, Some("group_type"), Body::None),
    op(Get, "/v3/group_types/{group_type_id}", "showGroupType", "A group type (3.11)", 200, Some("group_type"), Body::None),
    op(Put, "/v3/group_types/{group_type_id}", "updateGroupType", "Change a group type (3.11, admin)", 200, Some("group_type"), Body::Of(any_object, no_components)),
    op(Delete, "/v3/group_types/{group_type_id}", "deleteGroupType", "Delete a group type (3.11, admin)", 202, None, Body::None),
    op(Get, "/v3/group_types/{group_type_id}/group_specs", "listGroupSpecs", "A group type's specs (3.11)", 200, Some("group_specs"), Body::None),
    op(Post, "/v3/group_types/{group_type_id}/group_specs", "setGroupSpecs", "Set group specs (3.11, admin)", 202, Some("group_specs"), Body::Of(string_map, no_components)),
    op(Get, "/v3/group_types/{group_type_id}/group_specs/{key}", "showGroupSpec", "One group spec (3.11)", 200, None, Body::None),
    op(Put, "/v3/group_types/{group_type_id}/group_specs/{key}", "updateGroupSpec", "Change one group spec (3.11, admin)", 202, None, Body::Of(string_map, no_components)),
    op(Delete, "/v3/group_types/{group_type_id}/group_specs/{key}", "deleteGroupSpec", "Delete one group spec (3.11, admin)", 202, None, Body::None),
    // Volume, snapshot and backup extras.
    op(Get, "/v3/volumes/summary", "volumesSummary", "Count, total size and metadata of the project's volumes (3.12)", 200, Some("volume-summary"), Body::None),
    op(Get, "/v3/volumes/{volume_id}/metadata", "showVolumeMetadata", "A volume's metadata", 200, Some("metadata"), Body::None),
    op(Post, "/v3/volumes/{volume_id}/metadata", "mergeVolumeMetadata", "Add to a volume's metadata", 200, Some("metadata"), Body::Of(any_object, no_components)),
    op(Put, "/v3/volumes/{volume_id}/metadata", "replaceVolumeMetadata", "Replace a volume's metadata", 200, Some("metadata"), Body::Of(any_object, no_components)),
    op(Get, "/v3/volumes/{volume_id}/metadata/{key}", "showVolumeMetadataItem", "One metadata item", 200, Some("meta"), Body::None),
    op(Put, "/v3/volumes/{volume_id}/metadata/{key}", "updateVolumeMetadataItem", "Change one metadata item", 200, Some("meta"), Body::Of(any_object, no_components)),
    op(Delete, "/v3/volumes/{volume_id}/metadata/{key}", "deleteVolumeMetadataItem", "Delete one metadata item", 200, None, Body::None),
    op(Get, "/v3/snapshots/{snapshot_id}/metadata", "showSnapshotMetadata", "A snapshot's metadata", 200, Some("metadata"), Body::None),
    op(Post, "/v3/snapshots/{snapshot_id}/metadata", "mergeSnapshotMetadata", "Add to a snapshot's metadata", 200, Some("metadata"), Body::Of(any_object, no_components)),
    op(Put, "/v3/snapshots/{snapshot_id}/metadata", "replaceSnapshotMetadata", "Replace a snapshot's metadata", 200, Some("metadata"), Body::Of(any_object, no_components)),
    op(Get, "/v3/snapshots/{snapshot_id}/metadata/{key}", "showSnapshotMetadataItem", "One snapshot metadata item", 200, Some("meta"), Body::None),
    op(Put, "/v3/snapshots/{snapshot_id}/metadata/{key}", "updateSnapshotMetadataItem", "Change one snapshot metadata item", 200, Some("meta"), Body::Of(any_object, no_components)),
    op(Delete, "/v3/snapshots/{snapshot_id}/metadata/{key}", "deleteSnapshotMetadataItem", "Delete one snapshot metadata item", 200, None, Body::None),
    op(Post, "/v3/snapshots/{snapshot_id}/action", "snapshotAction", "os-reset_status, os-update_snapshot_status, os-force_delete", 202, None, Body::Of(any_object, no_components)),
    op(Put, "/v3/backups/{backup_id}", "updateBackup", "Rename or describe a backup (3.9)", 200, Some("backup"), Body::Of(any_object, no_components)),
    op(Post, "/v3/backups/{backup_id}/action", "backupAction", "os-reset_status, os-force_delete (admin)", 202, None, Body::Of(any_object, no_components)),
    op(Get, "/v3/backups/{backup_id}/export_record", "exportBackupRecord", "A backup's record, to import elsewhere (admin)", 200, Some("backup-record"), Body::None),
    op(Post, "/v3/backups/import_record", "importBackupRecord", "Import a backup record (admin)", 201, Some("backup"), Body::Of(any_object, no_components)),
    op(Get, "/v3/resource_filters", "listResourceFilters", "The filters each list takes (3.33)", 200, Some("resource_filters"), Body::None),
    op(Get, "/v3/manageable_volumes", "listManageableVolumes", "The back end's volume images on a host (3.8, admin)", 200, Some("manageable-volumes"), Body::None),
    op(Get, "/v3/manageable_volumes/detail", "listManageableVolumesDetail", "The same, with why each is not safe to manage", 200, Some("manageable-volumes"), Body::None),
    op(Get, "/v3/manageable_snapshots", "listManageableSnapshots", "The back end's snapshot images on a host (3.8, admin)", 200, Some("manageable-snapshots"), Body::None),
    op(Get, "/v3/manageable_snapshots/detail", "listManageableSnapshotsDetail", "The same, with why each is not safe to manage", 200, Some("manageable-snapshots"), Body::None),
    op(Get, "/v3/groups", "listGroups", "Groups (3.13)", 200, Some("groups"), Body::None),
    op(Get, "/v3/groups/detail", "listGroupsDetail", "Groups, in detail (3.13)", 200, Some("groups"), Body::None),
    op(Post, "/v3/groups", "createGroup", "Create an empty group (3.13)", 202, Some("group"), body!(super::groups::GroupCreateBody)),
    op(Post, "/v3/groups/action", "createGroupFromSource", "A group from a group or a group snapshot, each volume with its own key (3.14)", 202, Some("group"), body!(super::groups::GroupFromSourceBody)),
    op(Get, "/v3/groups/{group_id}", "showGroup", "A group (3.13; its volumes with list_volume at 3.25)", 200, Some("group"), Body::None),
    op(Put, "/v3/groups/{group_id}", "updateGroup", "Rename a group, add or remove volumes (3.13)", 202, None, body!(super::groups::GroupUpdateBody)),
    op(Post, "/v3/groups/{group_id}/action", "groupAction", "delete (with delete-volumes), reset_status (3.20, admin)", 202, None, Body::Of(any_object, no_components)),
    op(Get, "/v3/group_snapshots", "listGroupSnapshots", "Group snapshots (3.14)", 200, Some("group_snapshots"), Body::None),
    op(Get, "/v3/group_snapshots/detail", "listGroupSnapshotsDetail", "Group snapshots, in detail (3.14)", 200, Some("group_snapshots"), Body::None),
    op(Post, "/v3/group_snapshots", "createGroupSnapshot", "Snapshot every volume of a group (3.14)", 202, Some("group_snapshot"), body!(super::groups::GroupSnapshotCreateBody)),
    op(Get, "/v3/group_snapshots/{group_snapshot_id}", "showGroupSnapshot", "A group snapshot (3.14)", 200, Some("group_snapshot"), Body::None),
    op(Delete, "/v3/group_snapshots/{group_snapshot_id}", "deleteGroupSnapshot", "Delete a group snapshot and its snapshots (3.14)", 202, None, Body::None),
    op(Post, "/v3/group_snapshots/{group_snapshot_id}/action", "groupSnapshotAction", "reset_status (3.19, admin)", 202, None, Body::Of(any_object, no_components)),
    op(Post, "/v3/workers/cleanup", "workersCleanup", "Release the jobs of down nodes to the live ones now (3.24, admin)", 202, Some("cleaning"), Body::Of(any_object, no_components)),
    op(Get, "/openapi.json", "openapi", "This document", 200, Some("openapi"), Body::None),
];

/// Which create operation makes the resource a path parameter names, and
/// where its answer holds the id: the document's links, so a client (and
/// schemathesis' stateful phase) can follow a create to the operations on
/// what it made.
const MADE_BY: &[(&str, &str, &str)] = &[
    ("volume_id", "createVolume", "/volume/id"),
    ("type_id", "createType", "/volume_type/id"),
    ("snapshot_id", "createSnapshot", "/snapshot/id"),
    ("backup_id", "createBackup", "/backup/id"),
    ("transfer_id", "createTransfer", "/transfer/id"),
    ("attachment_id", "createAttachment", "/attachment/id"),
    ("qos_id", "createQosSpecs", "/qos_specs/id"),
    ("group_type_id", "createGroupType", "/group_type/id"),
];

/// The links from the success answer of operation `id` to every operation
/// whose only path parameter it makes.
fn links_from(id: &str) -> Vec<(String, utoipa::openapi::link::Link)> {
    let Some((param, _, pointer)) = MADE_BY.iter().find(|(_, by, _)| *by == id) else {
        return Vec::new();
    };
    OPERATIONS
        .iter()
        .filter(|o| {
            let params: Vec<&str> = o.path.split('/').filter(|s| s.starts_with('{')).collect();
            params == [format!("{{{param}}}")]
        })
        .map(|o| {
            let link = utoipa::openapi::link::LinkBuilder::new().operation_id(o.id).parameter(*param, format!("$response.body#{pointer}")).build();
            (o.id.to_owned(), link)
        })
        .collect()
}

/// Operations answered without a token (the version documents, as in
/// Cinder, and this document).
const PUBLIC: &[&str] = &["listVersions", "showV3Version", "openapi"];

/// Error statuses any operation may answer with a Cinder error body.
const ERRORS: &[(u16, &str)] = &[
    (400, "Bad request (Cinder's badRequest body)"),
    (401, "No valid token"),
    (403, "Not allowed by policy"),
    (404, "No such resource"),
    (405, "Method not allowed on this path"),
    (406, "Microversion not supported"),
    (409, "Conflict with the resource's state"),
    (413, "Over quota, or the body is too large"),
    (415, "Not a JSON body"),
    (503, "A service rekey depends on (Keystone, the key manager) is unreachable"),
];

fn any_object() -> RefOr<Schema> {
    utoipa::openapi::ObjectBuilder::new().into()
}

fn string_map() -> RefOr<Schema> {
    utoipa::openapi::ObjectBuilder::new()
        .additional_properties(Some(utoipa::openapi::ObjectBuilder::new().schema_type(utoipa::openapi::Type::String)))
        .into()
}

/// `{ "<key>": object }`, the shape of every Cinder success body.
fn keyed(key: &str) -> RefOr<Schema> {
    utoipa::openapi::ObjectBuilder::new()
        .property(
            key,
            utoipa::openapi::ObjectBuilder::new().schema_type(utoipa::openapi::schema::SchemaType::AnyValue),
        )
        .required(key)
        .into()
}

/// Cinder's error body: one key (badRequest, itemNotFound, …) over code and
/// message.
fn error_body() -> RefOr<Schema> {
    let inner = utoipa::openapi::ObjectBuilder::new()
        .property("code", utoipa::openapi::ObjectBuilder::new().schema_type(utoipa::openapi::Type::Integer))
        .property("message", utoipa::openapi::ObjectBuilder::new().schema_type(utoipa::openapi::Type::String))
        .required("code")
        .required("message");
    utoipa::openapi::ObjectBuilder::new().additional_properties(Some(inner)).min_properties(Some(1)).max_properties(Some(1)).into()
}

fn path_params(path: &str) -> Vec<utoipa::openapi::path::Parameter> {
    path.split('/')
        .filter_map(|s| s.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
        .map(|name| {
            ParameterBuilder::new()
                .name(name)
                .parameter_in(ParameterIn::Path)
                .required(Required::True)
                .schema(Some(utoipa::openapi::ObjectBuilder::new().schema_type(utoipa::openapi::Type::String)))
                .build()
        })
        .collect()
}

fn json_content(schema: RefOr<Schema>) -> utoipa::openapi::Content {
    ContentBuilder::new().schema(Some(schema)).build()
}

/// The document, for the newest microversion.
pub fn document() -> OpenApi {
    let mut paths = PathsBuilder::new();
    let mut components = Components::new();
    let mut items: Vec<(&str, PathItem)> = Vec::new();
    for o in OPERATIONS {
        let mut b = OperationBuilder::new()
            .operation_id(Some(o.id))
            .securities(PUBLIC.contains(&o.id).then(Vec::new))
            .summary(Some(o.summary))
            .parameters(Some(path_params(o.path)));
        if let Body::Of(schema, refers_to) = o.body {
            refers_to(&mut components);
            b = b.request_body(Some(
                RequestBodyBuilder::new().content("application/json", json_content(schema())).required(Some(Required::True)).build(),
            ));
        }
        let mut ok = ResponseBuilder::new().description("Success");
        if let Some(key) = o.reply {
            ok = ok.content("application/json", json_content(keyed(key)));
        } else if o.ok != 202 && o.ok != 204 && !matches!(o.method, Delete) {
            ok = ok.content("application/json", json_content(any_object()));
        }
        for (name, link) in links_from(o.id) {
            ok = ok.link(name, link);
        }
        b = b.response(o.ok.to_string(), ok.build());
        if o.ok != 204 {
            // Cinder's noauth handshake, for a request that names no one.
            b = b.response(
                "204",
                ResponseBuilder::new().description("noauth only: the request names no user or project").build(),
            );
        }
        for (code, what) in ERRORS {
            b = b.response(
                code.to_string(),
                ResponseBuilder::new().description(*what).content("application/json", json_content(error_body())).build(),
            );
        }
        let operation = b.build();
        match items.iter_mut().find(|(p, _)| *p == o.path) {
            Some((_, item)) => item.merge_operations(PathItem::new(o.method.clone(), operation)),
            None => items.push((o.path, PathItem::new(o.method.clone(), operation))),
        }
    }
    for (p, item) in items {
        paths = paths.path(p, item);
    }
    let token = SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
        "X-Auth-Token",
        "A Keystone token (strategy keystone), or user:project under noauth",
    )));
    OpenApiBuilder::new()
        .info(InfoBuilder::new().title("rekey Block Storage API (Cinder v3 compatible)").version(format!("{}.{}", MAX_VERSION.0, MAX_VERSION.1)).build())
        .paths(paths.build())
        .components(Some(ComponentsBuilder::new().schemas_from_iter(components).security_scheme("token", token).build()))
        .security(Some([SecurityRequirement::new("token", Vec::<String>::new())]))
        .build()
}

/// The document as JSON.
pub fn json() -> Value {
    let mut doc = serde_json::to_value(document()).unwrap_or_else(|_| json!({}));
    spell_link_fields(&mut doc);
    doc
}

/// utoipa 5 writes a link's `operationId` as `operation_id`; OpenAPI and
/// its clients read only `operationId`.
fn spell_link_fields(doc: &mut Value) {
    let Some(paths) = doc.get_mut("paths").and_then(Value::as_object_mut) else {
        return;
    };
    for op in paths.values_mut().filter_map(Value::as_object_mut).flat_map(|item| item.values_mut()) {
        let Some(responses) = op.get_mut("responses").and_then(Value::as_object_mut) else {
            continue;
        };
        for links in responses.values_mut().filter_map(|r| r.get_mut("links")).filter_map(Value::as_object_mut) {
            for link in links.values_mut().filter_map(Value::as_object_mut) {
                if let Some(id) = link.remove("operation_id") {
                    link.insert("operationId".into(), id);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use axum::http::Method;

    use super::super::endpoint::Route;
    use super::*;

    fn method(m: &HttpMethod) -> Method {
        match m {
            Get => Method::GET,
            Post => Method::POST,
            Put => Method::PUT,
            Delete => Method::DELETE,
            _ => panic!("an operation uses a method the table does not expect"),
        }
    }

    /// Every documented operation is one the router serves.
    #[test]
    fn every_documented_operation_routes() {
        for o in OPERATIONS {
            let concrete: String = o.path.split('/').map(|s| if s.starts_with('{') { "x1" } else { s }).collect::<Vec<_>>().join("/");
            let concrete = if concrete.is_empty() { "/".to_owned() } else { concrete };
            assert!(
                Route::parse(&method(&o.method), &concrete).is_ok(),
                "{} {} ({}) is not routed",
                o.id,
                o.path,
                concrete
            );
        }
    }

    #[test]
    fn creates_link_to_the_operations_on_what_they_made() {
        let doc = json();
        let links = &doc["paths"]["/v3/volumes"]["post"]["responses"]["202"]["links"];
        assert_eq!(links["showVolume"]["operationId"], "showVolume", "{links}");
        assert_eq!(links["showVolume"]["parameters"]["volume_id"], "$response.body#/volume/id", "{links}");
        assert!(links.get("showType").is_none(), "{links}");
        for (_, by, _) in MADE_BY {
            assert!(OPERATIONS.iter().any(|o| o.id == *by), "{by} is not an operation");
            assert!(!links_from(by).is_empty(), "{by} links to nothing");
        }
    }

    #[test]
    fn operation_ids_are_unique_and_bodies_are_the_handlers_types() {
        let mut ids: Vec<&str> = OPERATIONS.iter().map(|o| o.id).collect();
        ids.sort_unstable();
        let n = ids.len();
        ids.dedup();
        assert_eq!(ids.len(), n, "duplicate operation ids");
        let doc = json();
        let create = &doc["paths"]["/v3/volumes"]["post"]["requestBody"]["content"]["application/json"]["schema"];
        // VolumeCreateBody: {"volume": {...}} refusing unknown fields, as the handler does.
        assert_eq!(create["required"], json!(["volume"]), "{create}");
        assert_eq!(create["additionalProperties"], json!(false), "{create}");
        let inner = create["properties"]["volume"]["$ref"].as_str().unwrap().rsplit('/').next().unwrap();
        let volume = &doc["components"]["schemas"][inner];
        assert_eq!(volume["additionalProperties"], json!(false), "{volume}");
        assert!(volume["properties"]["size"].is_object(), "{volume}");
    }
}
