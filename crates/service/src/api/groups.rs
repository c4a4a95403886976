//! `/groups` (3.13+) and `/group_snapshots` (3.14+): routing, bodies and
//! views; the domain is [`crate::groups`].

use std::sync::Arc;

use axum::body::Bytes;
use axum::http::{Method, StatusCode, Uri};
use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::error::ApiError;
use super::listing::Paging;
use super::{body, one_action, query, Reply};
use crate::groups::{id_list, CreateGroup, Group, GroupSnapshot, GroupSource, UpdateGroup};
use crate::model::Caller;
use crate::service::Service;

/// Operations of this module.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GroupsEndpoint {
    /// `GET /groups[/detail]`.
    List(bool),
    /// `POST /groups`.
    Create,
    /// `POST /groups/action`: `create-from-src` (3.14).
    CreateFromSource,
    /// `GET /groups/{id}`.
    Show(String),
    /// `PUT /groups/{id}`.
    Update(String),
    /// `POST /groups/{id}/action`: `delete`, `reset_status` (3.20).
    Action(String),
    /// `GET /group_snapshots[/detail]`.
    ListSnapshots(bool),
    /// `POST /group_snapshots`.
    CreateSnapshot,
    /// `GET /group_snapshots/{id}`.
    ShowSnapshot(String),
    /// `DELETE /group_snapshots/{id}`.
    DeleteSnapshot(String),
    /// `POST /group_snapshots/{id}/action`: `reset_status` (3.19).
    SnapshotAction(String),
}

/// The first path segments this module answers.
pub(super) const COLLECTIONS: &[&str] = &["groups", "group_snapshots"];

/// Routes the path segments after `/v3[/{project}]`.
pub(super) fn resource(m: &Method, segs: &[&str]) -> Result<GroupsEndpoint, ApiError> {
    use GroupsEndpoint::*;
    let s = |x: &&str| (*x).to_owned();
    let e = match (segs, m) {
        (["groups"], &Method::GET) => List(false),
        (["groups", "detail"], &Method::GET) => List(true),
        (["groups"], &Method::POST) => Create,
        (["groups", "action"], &Method::POST) => CreateFromSource,
        (["groups", id], &Method::GET) => Show(s(id)),
        (["groups", id], &Method::PUT) => Update(s(id)),
        (["groups", id, "action"], &Method::POST) => Action(s(id)),
        (["group_snapshots"], &Method::GET) => ListSnapshots(false),
        (["group_snapshots", "detail"], &Method::GET) => ListSnapshots(true),
        (["group_snapshots"], &Method::POST) => CreateSnapshot,
        (["group_snapshots", id], &Method::GET) => ShowSnapshot(s(id)),
        (["group_snapshots", id], &Method::DELETE) => DeleteSnapshot(s(id)),
        (["group_snapshots", id, "action"], &Method::POST) => SnapshotAction(s(id)),
        (["groups" | "group_snapshots"] | ["groups" | "group_snapshots", _] | ["groups" | "group_snapshots", _, "action"], _) => {
            return Err(ApiError::bad_method())
        }
        _ => return Err(ApiError::not_found_path()),
    };
    Ok(e)
}

/// `POST /groups`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct GroupCreateBody {
    group: GroupCreate,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct GroupCreate {
    group_type: String,
    volume_types: Vec<String>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    availability_zone: Option<String>,
}

/// `POST /groups/action`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct GroupFromSourceBody {
    #[serde(rename = "create-from-src")]
    create_from_src: GroupFromSource,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct GroupFromSource {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    source_group_id: Option<String>,
    #[serde(default)]
    group_snapshot_id: Option<String>,
}

/// `PUT /groups/{id}`: the volume lists are comma-separated ids.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct GroupUpdateBody {
    group: GroupUpdate,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct GroupUpdate {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    add_volumes: Option<String>,
    #[serde(default)]
    remove_volumes: Option<String>,
}

/// `POST /group_snapshots`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct GroupSnapshotCreateBody {
    group_snapshot: GroupSnapshotCreate,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct GroupSnapshotCreate {
    group_id: String,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    description: Option<String>,
}

/// Sortable fields of both lists.
const SORT_KEYS: &[&str] = &["id", "name", "description", "status", "created_at", "updated_at"];

fn check_text(v: &Option<String>, what: &str) -> Result<(), ApiError> {
    match v {
        Some(s) if s.chars().count() > 255 => Err(ApiError::bad_request(format!("Invalid input received: {what} must be at most 255 characters"))),
        _ => Ok(()),
    }
}

fn too_old(what: &str, needs: (u32, u32)) -> ApiError {
    ApiError { status: 404, message: format!("API version {}.{} or later is needed for {what}.", needs.0, needs.1) }
}

fn admin_only(who: &Caller, rule: &str) -> Result<(), ApiError> {
    if who.admin {
        Ok(())
    } else {
        Err(super::policy::forbidden(rule))
    }
}

fn group_summary(g: &Group) -> Value {
    json!({ "id": g.id, "name": g.name })
}

/// Cinder's group view at `mv`; `volumes` (3.25 with `list_volume`) when given.
fn group_detail(g: &Group, mv: (u32, u32), volumes: Option<Vec<String>>, admin: bool) -> Value {
    let mut m = Map::new();
    let mut put = |k: &str, v: Value| {
        m.insert(k.to_owned(), v);
    };
    put("id", json!(g.id));
    put("status", json!(g.status));
    put("availability_zone", json!(g.availability_zone));
    put("created_at", json!(g.created_at));
    put("name", json!(g.name));
    put("description", json!(g.description));
    put("group_type", json!(g.group_type_id));
    put("volume_types", json!(g.volume_type_ids));
    if mv >= (3, 14) {
        put("group_snapshot_id", json!(g.group_snapshot_id));
        put("source_group_id", json!(g.source_group_id));
    }
    if let Some(v) = volumes.filter(|_| mv >= (3, 25)) {
        put("volumes", json!(v));
    }
    if mv >= (3, 38) {
        put("replication_status", json!("disabled"));
    }
    if mv >= (3, 58) && admin {
        put("project_id", json!(g.project_id));
    }
    Value::Object(m)
}

fn group_snapshot_summary(g: &GroupSnapshot) -> Value {
    json!({ "id": g.id, "name": g.name, "group_type_id": g.group_type_id })
}

fn group_snapshot_detail(g: &GroupSnapshot, mv: (u32, u32), admin: bool) -> Value {
    let mut v = json!({
        "id": g.id,
        "group_id": g.group_id,
        "group_type_id": g.group_type_id,
        "status": g.status,
        "created_at": g.created_at,
        "name": g.name,
        "description": g.description,
    });
    if mv >= (3, 58) && admin {
        v["project_id"] = json!(g.project_id);
    }
    v
}

fn sort_fields(id: &str, name: &Option<String>, description: &Option<String>, status: &str, created: &str, updated: &str) -> Value {
    json!({ "id": id, "name": name, "description": description, "status": status, "created_at": created, "updated_at": updated })
}

/// One page of a list, `{"<list>": [...]}` with `"<links>"` when there may be more.
fn list_page<T>(
    paging: &Paging,
    rows: impl Iterator<Item = (Value, T)>,
    (list, links): (&str, &str),
    (base, uri): (&str, &Uri),
    id: impl Fn(&T) -> &String,
    view: impl Fn(&T) -> Value,
) -> Result<Value, ApiError> {
    let (page, _) = paging.apply(rows.map(|(f, t)| (t, f)).collect())?;
    let mut out = json!({ list: page.iter().map(view).collect::<Vec<_>>() });
    if let Some(l) = paging.next_link(base, uri, page.len(), page.last().map(|t| id(t).as_str())) {
        out[links] = l;
    }
    Ok(out)
}

fn all_tenants(q: &[(String, String)]) -> bool {
    q.iter().any(|(k, v)| k == "all_tenants" && super::strict_bool(v).unwrap_or(true))
}

/// `{"status": "..."}` of a `reset_status`, lower-cased as Cinder's.
fn status_arg(args: &Value) -> Result<String, ApiError> {
    let obj = args.as_object().ok_or_else(|| ApiError::bad_request("Invalid input received: reset_status must be an object"))?;
    if let Some(k) = obj.keys().find(|k| *k != "status") {
        return Err(ApiError::bad_request(format!("Invalid input received: Additional properties are not allowed ('{k}' was unexpected)")));
    }
    match obj.get("status") {
        Some(Value::String(s)) => Ok(s.to_lowercase()),
        _ => Err(ApiError::bad_request("Invalid input received: 'status' is a required property")),
    }
}

pub(super) async fn handle(svc: &Arc<Service>, who: &Caller, e: GroupsEndpoint, uri: &Uri, bytes: &Bytes, base: &str, mv: (u32, u32)) -> Reply {
    use GroupsEndpoint::*;
    let snapshots = matches!(e, ListSnapshots(_) | CreateSnapshot | ShowSnapshot(_) | DeleteSnapshot(_) | SnapshotAction(_));
    if snapshots && mv < (3, 14) {
        return Err(too_old("group snapshots", (3, 14)));
    }
    if mv < (3, 13) {
        return Err(too_old("groups", (3, 13)));
    }
    let ok = |v: Value| Ok((StatusCode::OK, v));
    let accepted = || Ok((StatusCode::ACCEPTED, Value::Null));
    match e {
        List(detail) => {
            let q = query(uri);
            let paging = Paging::parse(&q, SORT_KEYS, mv)?;
            let groups = svc.list_groups(who, all_tenants(&q)).await?;
            let rows = groups.into_iter().map(|g| (sort_fields(&g.id, &g.name, &g.description, &g.status, &g.created_at, &g.updated_at), g));
            let view = |g: &Group| if detail { group_detail(g, mv, None, who.admin) } else { group_summary(g) };
            ok(list_page(&paging, rows, ("groups", "group_links"), (base, uri), |g| &g.id, view)?)
        }
        Create => {
            let b: GroupCreateBody = body(bytes)?;
            let g = b.group;
            check_text(&g.name, "name")?;
            check_text(&g.description, "description")?;
            let req = CreateGroup {
                name: g.name,
                description: g.description,
                group_type: g.group_type,
                volume_types: g.volume_types,
                availability_zone: g.availability_zone,
            };
            let made = svc.create_group(who, req).await?;
            Ok((StatusCode::ACCEPTED, json!({ "group": group_summary(&made) })))
        }
        CreateFromSource => {
            if mv < (3, 14) {
                return Err(too_old("creating a group from a source", (3, 14)));
            }
            let b: GroupFromSourceBody = body(bytes)?;
            let f = b.create_from_src;
            check_text(&f.name, "name")?;
            check_text(&f.description, "description")?;
            let source = match (&f.source_group_id, &f.group_snapshot_id) {
                (Some(g), None) => GroupSource::Group(g),
                (None, Some(s)) => GroupSource::GroupSnapshot(s),
                _ => {
                    return Err(ApiError::bad_request(
                        "Invalid input received: exactly one of source_group_id and group_snapshot_id must be given",
                    ))
                }
            };
            let (g, jobs) = svc.create_group_from_source(who, f.name.clone(), f.description.clone(), source).await?;
            for job in jobs {
                crate::engine::spawn(svc.clone(), job);
            }
            Ok((StatusCode::ACCEPTED, json!({ "group": group_summary(&g) })))
        }
        Show(id) => {
            let g = svc.get_group(who, &id).await?;
            let q = query(uri);
            let list_volume = q.iter().any(|(k, v)| k == "list_volume" && super::strict_bool(v) == Some(true));
            let volumes = if list_volume { Some(svc.group_volume_ids(&g).await?) } else { None };
            ok(json!({ "group": group_detail(&g, mv, volumes, who.admin) }))
        }
        Update(id) => {
            let b: GroupUpdateBody = body(bytes)?;
            let u = b.group;
            check_text(&u.name, "name")?;
            check_text(&u.description, "description")?;
            if u.name.is_none() && u.description.is_none() && u.add_volumes.is_none() && u.remove_volumes.is_none() {
                return Err(ApiError::bad_request(
                    "Invalid input received: one of name, description, add_volumes and remove_volumes is required",
                ));
            }
            let req = UpdateGroup {
                name: u.name,
                description: u.description,
                add_volumes: u.add_volumes.as_deref().map(id_list).unwrap_or_default(),
                remove_volumes: u.remove_volumes.as_deref().map(id_list).unwrap_or_default(),
            };
            svc.update_group(who, &id, req).await?;
            accepted()
        }
        Action(id) => {
            let (name, args) = one_action(bytes)?;
            match name.as_str() {
                "delete" => {
                    let obj = args.as_object().ok_or_else(|| ApiError::bad_request("Invalid input received: delete must be an object"))?;
                    if let Some(k) = obj.keys().find(|k| *k != "delete-volumes") {
                        return Err(ApiError::bad_request(format!(
                            "Invalid input received: Additional properties are not allowed ('{k}' was unexpected)"
                        )));
                    }
                    let delete_volumes = match obj.get("delete-volumes") {
                        None => false,
                        Some(Value::Bool(b)) => *b,
                        Some(Value::String(s)) => super::strict_bool(s)
                            .ok_or_else(|| ApiError::bad_request(format!("Invalid input received: delete-volumes {s:?} is not a boolean")))?,
                        Some(v) => return Err(ApiError::bad_request(format!("Invalid input received: delete-volumes {v} is not a boolean"))),
                    };
                    for job in svc.delete_group(who, &id, delete_volumes).await? {
                        crate::engine::spawn(svc.clone(), job);
                    }
                }
                "reset_status" if mv >= (3, 20) => {
                    admin_only(who, "group:reset_status")?;
                    svc.reset_group_status(who, &id, &status_arg(&args)?).await?;
                }
                other => return Err(ApiError::bad_request(format!("There is no such action: {other}"))),
            }
            accepted()
        }
        ListSnapshots(detail) => {
            let q = query(uri);
            let paging = Paging::parse(&q, SORT_KEYS, mv)?;
            let all = svc.list_group_snapshots(who, all_tenants(&q)).await?;
            let rows = all.into_iter().map(|g| (sort_fields(&g.id, &g.name, &g.description, &g.status, &g.created_at, &g.updated_at), g));
            let view = |g: &GroupSnapshot| if detail { group_snapshot_detail(g, mv, who.admin) } else { group_snapshot_summary(g) };
            ok(list_page(&paging, rows, ("group_snapshots", "group_snapshot_links"), (base, uri), |g| &g.id, view)?)
        }
        CreateSnapshot => {
            let b: GroupSnapshotCreateBody = body(bytes)?;
            let f = b.group_snapshot;
            check_text(&f.name, "name")?;
            check_text(&f.description, "description")?;
            let (gs, jobs) = svc.create_group_snapshot(who, &f.group_id, f.name, f.description).await?;
            for job in jobs {
                crate::engine::spawn(svc.clone(), job);
            }
            Ok((StatusCode::ACCEPTED, json!({ "group_snapshot": group_snapshot_summary(&gs) })))
        }
        ShowSnapshot(id) => ok(json!({ "group_snapshot": group_snapshot_detail(&svc.get_group_snapshot(who, &id).await?, mv, who.admin) })),
        DeleteSnapshot(id) => {
            svc.delete_group_snapshot(who, &id).await?;
            accepted()
        }
        SnapshotAction(id) => {
            let (name, args) = one_action(bytes)?;
            match name.as_str() {
                "reset_status" if mv >= (3, 19) => {
                    admin_only(who, "group:reset_group_snapshot_status")?;
                    svc.reset_group_snapshot_status(who, &id, &status_arg(&args)?).await?;
                }
                other => return Err(ApiError::bad_request(format!("There is no such action: {other}"))),
            }
            accepted()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        use GroupsEndpoint::*;
        assert_eq!(resource(&Method::GET, &["groups", "detail"]).unwrap(), List(true));
        assert_eq!(resource(&Method::POST, &["groups", "action"]).unwrap(), CreateFromSource);
        assert_eq!(resource(&Method::POST, &["groups", "g", "action"]).unwrap(), Action("g".into()));
        assert_eq!(resource(&Method::DELETE, &["group_snapshots", "s"]).unwrap(), DeleteSnapshot("s".into()));
        assert_eq!(resource(&Method::DELETE, &["groups", "g"]).unwrap_err().status, 405);
        assert_eq!(resource(&Method::GET, &["groups", "g", "x"]).unwrap_err().status, 404);
    }

    #[test]
    fn views_follow_the_microversion() {
        let g = Group {
            id: "g".into(),
            project_id: "p".into(),
            user_id: "u".into(),
            name: Some("n".into()),
            description: None,
            group_type_id: "t".into(),
            volume_type_ids: vec!["v".into()],
            status: "available".into(),
            availability_zone: "nova".into(),
            group_snapshot_id: None,
            source_group_id: None,
            created_at: "c".into(),
            updated_at: "u".into(),
            settling: false,
        };
        let v = group_detail(&g, (3, 13), Some(vec!["x".into()]), false);
        assert!(v.get("group_snapshot_id").is_none() && v.get("volumes").is_none(), "{v}");
        let v = group_detail(&g, (3, 25), Some(vec!["x".into()]), false);
        assert_eq!(v["volumes"], json!(["x"]));
        assert!(v.get("replication_status").is_none() && v.get("project_id").is_none(), "{v}");
        assert_eq!(group_detail(&g, (3, 58), None, true)["project_id"], "p");
    }
}
