//! Default volume types per project (3.62): `PUT`/`GET`/`DELETE
//! /default-types/{project_id}` and `GET /default-types`. A project's default
//! is the type its volumes get when a create names none (before the
//! service-wide `__DEFAULT__`).

use std::sync::Arc;

use axum::body::Bytes;
use axum::http::{Method, StatusCode};
use serde::Deserialize;
use serde_json::{json, Value};

use super::error::ApiError;
use super::{body, Reply};
use crate::service::Service;

/// The microversion default types came with.
const SINCE: (u32, u32) = (3, 62);

/// Operations of this module.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DefaultsEndpoint {
    /// `GET /default-types`.
    List,
    /// `GET /default-types/{project_id}`.
    Show(String),
    /// `PUT /default-types/{project_id}`.
    Set(String),
    /// `DELETE /default-types/{project_id}`.
    Unset(String),
}

/// Routes the path segments after `/v3[/{project}]`, `None` if they are not
/// this module's.
pub(super) fn resource(m: &Method, segs: &[&str]) -> Option<Result<DefaultsEndpoint, ApiError>> {
    use DefaultsEndpoint::*;
    let e = match (segs, m) {
        (["default-types"], &Method::GET) => Ok(List),
        (["default-types", p], &Method::GET) => Ok(Show((*p).to_owned())),
        (["default-types", p], &Method::PUT) => Ok(Set((*p).to_owned())),
        (["default-types", p], &Method::DELETE) => Ok(Unset((*p).to_owned())),
        (["default-types"] | ["default-types", _], _) => Err(ApiError::bad_method()),
        _ => return None,
    };
    Some(e)
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct SetBody {
    default_type: SetFields,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct SetFields {
    /// The type's name or id.
    volume_type: String,
}

fn view(project_id: &str, volume_type_id: &str) -> Value {
    json!({ "project_id": project_id, "volume_type_id": volume_type_id })
}

pub(super) async fn handle(svc: &Arc<Service>, e: DefaultsEndpoint, bytes: &Bytes, mv: (u32, u32)) -> Reply {
    if mv < SINCE {
        // Cinder answers a resource newer than the asked microversion as absent.
        return Err(ApiError::not_found_path());
    }
    match e {
        DefaultsEndpoint::List => {
            let all = svc.list_default_types().await?;
            Ok((StatusCode::OK, json!({ "default_types": all.iter().map(|(p, t)| view(p, t)).collect::<Vec<_>>() })))
        }
        DefaultsEndpoint::Show(project) => match svc.default_type(&project).await? {
            Some(t) => Ok((StatusCode::OK, json!({ "default_type": view(&project, &t) }))),
            None => Err(ApiError { status: 404, message: format!("Default type for project {project} not found.") }),
        },
        DefaultsEndpoint::Set(project) => {
            let b: SetBody = body(bytes)?;
            let name = b.default_type.volume_type.trim();
            if name.is_empty() || name.len() > 255 {
                return Err(ApiError::bad_request("Invalid input for field/attribute volume_type: a name of 1 to 255 characters."));
            }
            let t = svc.set_default_type(&project, name).await?;
            Ok((StatusCode::OK, json!({ "default_type": view(&project, &t) })))
        }
        DefaultsEndpoint::Unset(project) => {
            svc.unset_default_type(&project).await?;
            Ok((StatusCode::NO_CONTENT, Value::Null))
        }
    }
}
