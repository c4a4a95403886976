//! Private volume types: visible to, and usable by, only the projects
//! granted access (and admins), as Cinder's `os-volume-type-access` has it.

use crate::db::Conn;
use crate::error::{db, Result, ServiceError};
use crate::model::{Caller, VolumeType};
use crate::service::Service;

/// Whether `who` may see and use `t`.
pub(crate) async fn visible(c: &mut Conn, who: &Caller, t: &VolumeType) -> Result<bool> {
    if t.is_public || who.admin {
        return Ok(true);
    }
    let n: i64 = sqlx::query_scalar("SELECT CAST(COUNT(*) AS BIGINT) FROM volume_type_projects WHERE type_id = $1 AND project_id = $2")
        .bind(&t.id)
        .bind(&who.project)
        .fetch_one(&mut *c)
        .await
        .map_err(db("read volume type access"))?;
    Ok(n > 0)
}

/// `t` if `who` may see it: a private type is "not found" to others.
pub(crate) async fn visible_or_none(c: &mut Conn, who: &Caller, t: Option<VolumeType>) -> Result<Option<VolumeType>> {
    match t {
        Some(t) if visible(c, who, &t).await? => Ok(Some(t)),
        _ => Ok(None),
    }
}

impl Service {
    /// The projects granted access to private type `type_id`.
    pub async fn type_access(&self, type_id: &str) -> Result<Vec<String>> {
        let mut c = self.conn().await?;
        let t = crate::db::get_type(&mut c, type_id).await?.ok_or_else(|| ServiceError::not_found("Volume type", type_id))?;
        if t.is_public {
            return Err(ServiceError::not_found("Access list for public volume type", type_id));
        }
        sqlx::query_scalar("SELECT project_id FROM volume_type_projects WHERE type_id = $1 ORDER BY project_id")
            .bind(type_id)
            .fetch_all(&mut *c)
            .await
            .map_err(db("read volume type access"))
    }

    /// Grants (`add`) or revokes project `project` access to type `type_id`.
    pub async fn change_type_access(&self, type_id: &str, project: &str, add: bool) -> Result<()> {
        if project.trim().is_empty() || project.len() > 255 {
            return Err(ServiceError::invalid("Invalid input received: project must be 1 to 255 characters"));
        }
        let mut tx = self.tx().await?;
        let t = crate::db::get_type(&mut tx, type_id).await?.ok_or_else(|| ServiceError::not_found("Volume type", type_id))?;
        if t.is_public {
            return Err(ServiceError::invalid(format!(
                "Invalid volume type: access cannot be {} for public volume type {type_id}.",
                if add { "added" } else { "removed" }
            )));
        }
        let has: i64 = sqlx::query_scalar("SELECT CAST(COUNT(*) AS BIGINT) FROM volume_type_projects WHERE type_id = $1 AND project_id = $2")
            .bind(type_id)
            .bind(project)
            .fetch_one(&mut *tx)
            .await
            .map_err(db("read volume type access"))?;
        let sql = match (add, has > 0) {
            (true, true) => {
                return Err(ServiceError::Conflict(format!(
                    "Volume type access for {type_id}/{project} combination already exists."
                )))
            }
            (false, false) => {
                return Err(ServiceError::not_found("Volume type access for", format!("{type_id}/{project} combination")))
            }
            (true, false) => "INSERT INTO volume_type_projects (type_id, project_id) VALUES ($1, $2)",
            (false, true) => "DELETE FROM volume_type_projects WHERE type_id = $1 AND project_id = $2",
        };
        sqlx::query(sql).bind(type_id).bind(project).execute(&mut *tx).await.map_err(db("change volume type access"))?;
        tx.commit().await.map_err(db("commit"))
    }

    /// Whether `who` may see type `t`.
    pub async fn type_visible(&self, who: &Caller, t: &VolumeType) -> Result<bool> {
        let mut c = self.conn().await?;
        visible(&mut c, who, t).await
    }
}
