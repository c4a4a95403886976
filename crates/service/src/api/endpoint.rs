//! Routing as a pure function: method + path → [`Endpoint`].
//!
//! Both `/v3/...` and `/v3/{project_id}/...` are accepted: after `/v3`, a
//! first segment that is not one of our collections is the project id.

use axum::http::Method;

use super::error::ApiError;

/// Every operation the API serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// `GET /`: all versions.
    Versions,
    /// `GET /v3`, `GET /v3/`: the v3 version document.
    V3Version,
    /// `GET /openapi.json`: the OpenAPI document of this API.
    OpenApi,
    /// `GET /resource_filters` (3.33): the filters each list takes.
    ResourceFilters,
    /// `GET /volumes`.
    ListVolumes,
    /// `GET /volumes/detail`.
    ListVolumesDetail,
    /// `POST /volumes`.
    CreateVolume,
    /// `GET /volumes/{id}`.
    ShowVolume(String),
    /// `PUT /volumes/{id}`.
    UpdateVolume(String),
    /// `DELETE /volumes/{id}`.
    DeleteVolume(String),
    /// `GET /volumes/{id}/encryption`.
    VolumeEncryption(String),
    /// `POST /volumes/{id}/action`: one action (only `os-rekey` is known).
    VolumeAction(String),
    /// `GET /types`.
    ListTypes,
    /// `POST /types`.
    CreateType,
    /// `GET /types/{id}`.
    ShowType(String),
    /// `PUT /types/{id}`.
    UpdateType(String),
    /// `DELETE /types/{id}`.
    DeleteType(String),
    /// `GET /types/{id}/extra_specs`.
    ListExtraSpecs(String),
    /// `POST /types/{id}/extra_specs`.
    SetExtraSpecs(String),
    /// `GET /types/{id}/extra_specs/{key}`.
    ShowExtraSpec(String, String),
    /// `PUT /types/{id}/extra_specs/{key}`.
    UpdateExtraSpec(String, String),
    /// `DELETE /types/{id}/extra_specs/{key}`.
    DeleteExtraSpec(String, String),
    /// `GET /types/{id}/encryption`.
    ShowEncryption(String),
    /// `POST /types/{id}/encryption`.
    CreateEncryption(String),
    /// `GET /types/{id}/encryption/{key}`: one field of the encryption.
    ShowEncryptionSpec(String, String),
    /// `PUT /types/{id}/encryption/{encryption_id}`.
    UpdateEncryption(String),
    /// `DELETE /types/{id}/encryption/{encryption_id}`.
    DeleteEncryption(String),
    /// `GET /attachments` (3.27+).
    ListAttachments,
    /// `GET /attachments/detail`.
    ListAttachmentsDetail,
    /// `POST /attachments`.
    CreateAttachment,
    /// `GET /attachments/{id}`.
    ShowAttachment(String),
    /// `PUT /attachments/{id}`: a connector → connection info.
    UpdateAttachment(String),
    /// `DELETE /attachments/{id}`: detach.
    DeleteAttachment(String),
    /// `POST /attachments/{id}/action` (`os-complete`, 3.44+).
    AttachmentAction(String),
    /// Snapshots, backups, transfers and the audit (`super::paths`).
    Paths(super::paths::PathsEndpoint),
    /// Per-project default volume types (`super::defaults`).
    Defaults(super::defaults::DefaultsEndpoint),
    /// The back end's manageable volumes and snapshots (`super::manageable`).
    Manageable(super::manageable::ManageableEndpoint),
    /// Quota sets, quota classes and limits (`super::quotas`).
    Quotas(super::quotas::QuotasEndpoint),
    /// Zones, extensions, services, hosts, pools, capabilities (`super::admin`).
    Operator(super::admin::AdminEndpoint),
    /// QoS specs and their type associations (`super::qos`).
    Qos(super::qos::QosEndpoint),
    /// Group types and their specs (`super::group_types`).
    GroupTypes(super::group_types::GroupTypesEndpoint),
    /// Groups and group snapshots (`super::groups`).
    Groups(super::groups::GroupsEndpoint),
}

/// Collections that can follow `/v3/` directly (so are not project ids).
const COLLECTIONS: &[&str] = &[
    "volumes", "types", "attachments", "snapshots", "backups", "volume-transfers", "os-volume-transfer", "os-rekey", "default-types",
    "os-quota-sets", "os-quota-class-sets", "limits", "os-availability-zone", "extensions", "os-services", "os-hosts",
    "scheduler-stats", "capabilities", "messages", "qos-specs", "group_types", "resource_filters", "manageable_volumes",
    "manageable_snapshots", "groups", "group_snapshots", "workers",
];

/// Words after a collection that name a list or an operation, never an id,
/// and the one method each is served with: any other is 405 (not an update
/// or delete of a resource called `detail`), so a 405's `Allow` is true.
const NOT_IDS: &[(&str, &str, Method)] = &[
    ("volumes", "detail", Method::GET),
    ("volumes", "summary", Method::GET),
    ("attachments", "detail", Method::GET),
    ("snapshots", "detail", Method::GET),
    ("backups", "detail", Method::GET),
    ("backups", "import_record", Method::POST),
    ("volume-transfers", "detail", Method::GET),
    ("os-volume-transfer", "detail", Method::GET),
    ("group_types", "default", Method::GET),
    ("groups", "detail", Method::GET),
    ("groups", "action", Method::POST),
    ("group_snapshots", "detail", Method::GET),
];

/// A routed request: the endpoint and the project named in the path, if any.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// What to do.
    pub endpoint: Endpoint,
    /// `{project_id}` from `/v3/{project_id}/...`.
    pub path_project: Option<String>,
}

impl Route {
    /// Routes `method path` (path without the query string).
    pub fn parse(method: &Method, path: &str) -> Result<Route, ApiError> {
        let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
        let route = |endpoint| Ok(Route { endpoint, path_project: None });
        match segs.as_slice() {
            [] => only(method, &[Method::GET]).and_then(|_| route(Endpoint::Versions)),
            ["v3"] => only(method, &[Method::GET]).and_then(|_| route(Endpoint::V3Version)),
            ["openapi.json"] => only(method, &[Method::GET]).and_then(|_| route(Endpoint::OpenApi)),
            ["v3", rest @ ..] => {
                let (project, rest) = match rest {
                    [first, tail @ ..] if !COLLECTIONS.contains(first) => (Some((*first).to_owned()), tail),
                    _ => (None, rest),
                };
                // `volumes/` or `volumes//action`: an empty id, which Cinder answers 404.
                if !rest.is_empty() && (path.ends_with('/') || path.contains("//")) {
                    return Err(ApiError::not_found_path());
                }
                let endpoint = resource(method, rest)?;
                Ok(Route { endpoint, path_project: project })
            }
            _ => Err(ApiError::not_found_path()),
        }
    }
}

fn only(method: &Method, allowed: &[Method]) -> Result<(), ApiError> {
    if allowed.contains(method) {
        Ok(())
    } else {
        Err(ApiError::bad_method())
    }
}

fn resource(m: &Method, segs: &[&str]) -> Result<Endpoint, ApiError> {
    use Endpoint::*;
    let s = |x: &&str| (*x).to_owned();
    let e = match (segs, m) {
        ([collection, word], m) if NOT_IDS.iter().any(|(c, w, only)| c == collection && w == word && only != m) => {
            return Err(ApiError::bad_method())
        }
        (["resource_filters"], &Method::GET) => ResourceFilters,
        (["resource_filters"], _) => return Err(ApiError::bad_method()),
        (["volumes"], &Method::GET) => ListVolumes,
        (["volumes"], &Method::POST) => CreateVolume,
        (["volumes", "detail"], &Method::GET) => ListVolumesDetail,
        (["volumes", "summary"], &Method::GET) => return super::paths::resource(m, segs).map(Paths),
        (["volumes", id], &Method::GET) => ShowVolume(s(id)),
        (["volumes", id], &Method::PUT) => UpdateVolume(s(id)),
        (["volumes", id], &Method::DELETE) => DeleteVolume(s(id)),
        (["volumes", id, "encryption"], &Method::GET) => VolumeEncryption(s(id)),
        (["volumes", id, "action"], &Method::POST) => VolumeAction(s(id)),
        (["attachments"], &Method::GET) => ListAttachments,
        (["attachments"], &Method::POST) => CreateAttachment,
        (["attachments", "detail"], &Method::GET) => ListAttachmentsDetail,
        (["attachments", id], &Method::GET) => ShowAttachment(s(id)),
        (["attachments", id], &Method::PUT) => UpdateAttachment(s(id)),
        (["attachments", id], &Method::DELETE) => DeleteAttachment(s(id)),
        (["attachments", id, "action"], &Method::POST) => AttachmentAction(s(id)),
        (["types"], &Method::GET) => ListTypes,
        (["types"], &Method::POST) => CreateType,
        (["types", id], &Method::GET) => ShowType(s(id)),
        (["types", id], &Method::PUT) => UpdateType(s(id)),
        (["types", id], &Method::DELETE) => DeleteType(s(id)),
        (["types", id, "extra_specs"], &Method::GET) => ListExtraSpecs(s(id)),
        (["types", id, "extra_specs"], &Method::POST) => SetExtraSpecs(s(id)),
        (["types", id, "extra_specs", k], &Method::GET) => ShowExtraSpec(s(id), s(k)),
        (["types", id, "extra_specs", k], &Method::PUT) => UpdateExtraSpec(s(id), s(k)),
        (["types", id, "extra_specs", k], &Method::DELETE) => DeleteExtraSpec(s(id), s(k)),
        (["types", id, "encryption"], &Method::GET) => ShowEncryption(s(id)),
        (["types", id, "encryption"], &Method::POST) => CreateEncryption(s(id)),
        (["types", id, "encryption", k], &Method::GET) => ShowEncryptionSpec(s(id), s(k)),
        (["types", id, "encryption", _], &Method::PUT) => UpdateEncryption(s(id)),
        (["types", id, "encryption", _], &Method::DELETE) => DeleteEncryption(s(id)),
        // A known path with another method.
        (["volumes"] | ["volumes", _] | ["volumes", _, "encryption" | "action"], _)
        | (["attachments"] | ["attachments", _] | ["attachments", _, "action"], _)
        | (["types"] | ["types", _] | ["types", _, "extra_specs"] | ["types", _, "extra_specs", _], _)
        | (["types", _, "encryption"] | ["types", _, "encryption", _], _) => return Err(ApiError::bad_method()),
        (["os-quota-sets" | "os-quota-class-sets" | "limits", ..], _) => return super::quotas::resource(m, segs).map(Quotas),
        ([first, ..], _) if super::admin::COLLECTIONS.contains(first) => return super::admin::resource(m, segs).map(Operator),
        (["types", _, "os-volume-type-access" | "action"], _) => return super::admin::resource(m, segs).map(Operator),
        ([super::group_types::COLLECTION, ..], _) => return super::group_types::resource(m, segs).map(GroupTypes),
        ([super::qos::COLLECTION, ..], _) => return super::qos::resource(m, segs).map(Qos),
        ([first, ..], _) if super::groups::COLLECTIONS.contains(first) => return super::groups::resource(m, segs).map(Groups),
        _ => {
            if let Some(d) = super::defaults::resource(m, segs) {
                return d.map(Defaults);
            }
            if let Some(d) = super::manageable::resource(m, segs) {
                return d.map(Manageable);
            }
            return super::paths::resource(m, segs).map(Paths);
        }
    };
    Ok(e)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(m: Method, p: &str) -> Route {
        Route::parse(&m, p).unwrap()
    }

    #[test]
    fn with_and_without_project() {
        assert_eq!(r(Method::GET, "/v3/volumes/detail").endpoint, Endpoint::ListVolumesDetail);
        let x = r(Method::GET, "/v3/p1/volumes/detail");
        assert_eq!(x.endpoint, Endpoint::ListVolumesDetail);
        assert_eq!(x.path_project.as_deref(), Some("p1"));
        assert_eq!(r(Method::DELETE, "/v3/p1/volumes/abc").endpoint, Endpoint::DeleteVolume("abc".into()));
        assert_eq!(r(Method::GET, "/v3/").endpoint, Endpoint::V3Version);
        assert_eq!(r(Method::GET, "/").endpoint, Endpoint::Versions);
        assert_eq!(r(Method::GET, "/v3/p1/attachments/detail").endpoint, Endpoint::ListAttachmentsDetail);
        assert_eq!(r(Method::POST, "/v3/attachments/a/action").endpoint, Endpoint::AttachmentAction("a".into()));
        assert_eq!(
            r(Method::PUT, "/v3/types/t/encryption/e").endpoint,
            Endpoint::UpdateEncryption("t".into())
        );
    }

    #[test]
    fn unknown_paths_and_methods() {
        assert_eq!(Route::parse(&Method::GET, "/v2/volumes").unwrap_err().status, 404);
        assert_eq!(Route::parse(&Method::GET, "/v3/p/snapshotz").unwrap_err().status, 404);
        assert_eq!(Route::parse(&Method::PATCH, "/v3/volumes/x").unwrap_err().status, 405);
        assert_eq!(Route::parse(&Method::POST, "/").unwrap_err().status, 405);
        assert_eq!(Route::parse(&Method::PUT, "/v3/p/volumes/detail").unwrap_err().status, 405);
        assert_eq!(Route::parse(&Method::DELETE, "/v3/snapshots/detail").unwrap_err().status, 405);
        assert_eq!(Route::parse(&Method::PUT, "/v3/volumes/summary").unwrap_err().status, 405);
        assert_eq!(Route::parse(&Method::GET, "/v3/backups/import_record").unwrap_err().status, 405);
        assert_eq!(Route::parse(&Method::POST, "/v3/os-rekey/audit").unwrap_err().status, 405);
    }
}
