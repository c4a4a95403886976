//! Per-project default volume types (Cinder 3.62), as domain operations.

use crate::db;
use crate::error::{Result, ServiceError};
use crate::service::Service;

impl Service {
    /// Every project's default: (project id, volume type id).
    pub async fn list_default_types(&self) -> Result<Vec<(String, String)>> {
        let mut c = self.conn().await?;
        db::list_default_types(&mut c).await
    }

    /// The default type id of `project`, if one is set.
    pub async fn default_type(&self, project: &str) -> Result<Option<String>> {
        let mut c = self.conn().await?;
        db::get_default_type(&mut c, project).await
    }

    /// Sets `project`'s default to the type named (or with the id)
    /// `type_name_or_id`; its id. An unknown type is bad input, as in Cinder.
    pub async fn set_default_type(&self, project: &str, type_name_or_id: &str) -> Result<String> {
        let mut tx = self.tx().await?;
        let t = db::find_type(&mut tx, type_name_or_id)
            .await?
            .ok_or_else(|| ServiceError::invalid(format!("Volume type {type_name_or_id} could not be found.")))?;
        db::set_default_type(&mut tx, project, &t.id).await?;
        tx.commit().await.map_err(crate::error::db("commit"))?;
        Ok(t.id)
    }

    /// Unsets `project`'s default; unsetting one that is not set is no error.
    pub async fn unset_default_type(&self, project: &str) -> Result<()> {
        let mut tx = self.tx().await?;
        db::unset_default_type(&mut tx, project).await?;
        tx.commit().await.map_err(crate::error::db("commit"))
    }
}
