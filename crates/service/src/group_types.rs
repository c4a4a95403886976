//! Group types and their group specs (3.11+): named kinds of volume
//! groups, as Cinder keeps them. (Groups themselves are in [`crate::groups`].)

use std::collections::BTreeMap;

use sqlx::Row;

use crate::db::Conn;
use crate::error::{db, Result, ServiceError};
use crate::model::now_iso;
use crate::service::Service;

/// One group type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupType {
    /// UUID.
    pub id: String,
    /// Unique name.
    pub name: String,
    /// Description.
    pub description: Option<String>,
    /// Visible to every project.
    pub is_public: bool,
    /// Group specs.
    pub group_specs: BTreeMap<String, String>,
}

/// Which group types a list shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Visibility {
    /// Public only.
    Public,
    /// Private only.
    Private,
    /// Both.
    All,
}

fn not_found(id: &str) -> ServiceError {
    ServiceError::not_found("Group type", id)
}

fn check_name(n: &str) -> Result<()> {
    if n.trim().is_empty() || n.len() > 255 {
        return Err(ServiceError::invalid("Invalid input received: name must be 1 to 255 characters"));
    }
    Ok(())
}

fn check_specs(specs: &BTreeMap<String, String>) -> Result<()> {
    for (k, v) in specs {
        if k.trim().is_empty() || k.len() > 255 || v.len() > 255 {
            return Err(ServiceError::invalid("Invalid input received: group spec keys and values must be 1 to 255 characters"));
        }
    }
    Ok(())
}

async fn load(c: &mut Conn, id: &str) -> Result<Option<GroupType>> {
    let row = sqlx::query("SELECT id, name, description, is_public FROM group_types WHERE id = $1")
        .bind(id)
        .fetch_optional(&mut *c)
        .await
        .map_err(db("read group type"))?;
    let Some(r) = row else { return Ok(None) };
    let specs = sqlx::query("SELECT spec_key, spec_value FROM group_type_specs WHERE type_id = $1")
        .bind(id)
        .fetch_all(&mut *c)
        .await
        .map_err(db("read group specs"))?;
    Ok(Some(GroupType {
        id: r.get("id"),
        name: r.get("name"),
        description: r.get("description"),
        is_public: r.get::<i64, _>("is_public") != 0,
        group_specs: specs.iter().map(|s| (s.get("spec_key"), s.get("spec_value"))).collect(),
    }))
}

/// A group type by id, or else by name (Cinder's lookup for a group's type).
pub(crate) async fn find(c: &mut Conn, id_or_name: &str) -> Result<Option<GroupType>> {
    if let Some(t) = load(c, id_or_name).await? {
        return Ok(Some(t));
    }
    let id: Option<String> = sqlx::query_scalar("SELECT id FROM group_types WHERE name = $1")
        .bind(id_or_name)
        .fetch_optional(&mut *c)
        .await
        .map_err(db("read group type"))?;
    match id {
        Some(id) => load(c, &id).await,
        None => Ok(None),
    }
}

async fn name_taken(c: &mut Conn, name: &str, except: &str) -> Result<bool> {
    let clash: Option<String> = sqlx::query_scalar("SELECT id FROM group_types WHERE name = $1 AND id <> $2")
        .bind(name)
        .bind(except)
        .fetch_optional(&mut *c)
        .await
        .map_err(db("read group types"))?;
    Ok(clash.is_some())
}

async fn put_specs(c: &mut Conn, id: &str, specs: &BTreeMap<String, String>) -> Result<()> {
    for (k, v) in specs {
        sqlx::query(
            "INSERT INTO group_type_specs (type_id, spec_key, spec_value) VALUES ($1, $2, $3)
             ON CONFLICT (type_id, spec_key) DO UPDATE SET spec_value = excluded.spec_value",
        )
        .bind(id)
        .bind(k)
        .bind(v)
        .execute(&mut *c)
        .await
        .map_err(db("write group spec"))?;
    }
    Ok(())
}

impl Service {
    /// Creates a group type.
    pub async fn create_group_type(
        &self,
        name: &str,
        description: Option<String>,
        is_public: bool,
        group_specs: BTreeMap<String, String>,
    ) -> Result<GroupType> {
        check_name(name)?;
        check_specs(&group_specs)?;
        let t = GroupType { id: uuid::Uuid::new_v4().to_string(), name: name.to_owned(), description, is_public, group_specs };
        let mut tx = self.tx().await?;
        if name_taken(&mut tx, &t.name, "").await? {
            return Err(ServiceError::Conflict(format!("Group Type {} already exists.", t.name)));
        }
        sqlx::query("INSERT INTO group_types (id, name, description, is_public, created_at) VALUES ($1, $2, $3, $4, $5)")
            .bind(&t.id)
            .bind(&t.name)
            .bind(&t.description)
            .bind(i64::from(t.is_public))
            .bind(now_iso())
            .execute(&mut *tx)
            .await
            .map_err(db("create group type"))?;
        put_specs(&mut tx, &t.id, &t.group_specs).await?;
        tx.commit().await.map_err(db("commit"))?;
        Ok(t)
    }

    /// Group types by name (`descending` reverses), of `visibility`.
    pub async fn list_group_types(&self, visibility: Visibility, descending: bool) -> Result<Vec<GroupType>> {
        let mut c = self.conn().await?;
        let ids: Vec<String> = sqlx::query_scalar("SELECT id FROM group_types ORDER BY name, id")
            .fetch_all(&mut *c)
            .await
            .map_err(db("list group types"))?;
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            if let Some(t) = load(&mut c, &id).await? {
                let shown = match visibility {
                    Visibility::All => true,
                    Visibility::Public => t.is_public,
                    Visibility::Private => !t.is_public,
                };
                if shown {
                    out.push(t);
                }
            }
        }
        if descending {
            out.reverse();
        }
        Ok(out)
    }

    /// One group type.
    pub async fn get_group_type(&self, id: &str) -> Result<GroupType> {
        let mut c = self.conn().await?;
        load(&mut c, id).await?.ok_or_else(|| not_found(id))
    }

    /// Changes name, description or visibility.
    pub async fn update_group_type(
        &self,
        id: &str,
        name: Option<String>,
        description: Option<Option<String>>,
        is_public: Option<bool>,
    ) -> Result<GroupType> {
        let mut tx = self.tx().await?;
        let mut t = load(&mut tx, id).await?.ok_or_else(|| not_found(id))?;
        if let Some(n) = name {
            check_name(&n)?;
            if name_taken(&mut tx, &n, id).await? {
                return Err(ServiceError::Conflict(format!("Group Type {n} already exists.")));
            }
            t.name = n;
        }
        if let Some(d) = description {
            t.description = d;
        }
        if let Some(p) = is_public {
            t.is_public = p;
        }
        sqlx::query("UPDATE group_types SET name = $1, description = $2, is_public = $3 WHERE id = $4")
            .bind(&t.name)
            .bind(&t.description)
            .bind(i64::from(t.is_public))
            .bind(id)
            .execute(&mut *tx)
            .await
            .map_err(db("update group type"))?;
        tx.commit().await.map_err(db("commit"))?;
        Ok(t)
    }

    /// Deletes a group type and its specs.
    pub async fn delete_group_type(&self, id: &str) -> Result<()> {
        let mut tx = self.tx().await?;
        load(&mut tx, id).await?.ok_or_else(|| not_found(id))?;
        let used: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM volume_groups WHERE group_type_id = $1")
            .bind(id)
            .fetch_one(&mut *tx)
            .await
            .map_err(db("read groups"))?;
        if used > 0 {
            return Err(ServiceError::invalid(format!(
                "Group Type {id} deletion is not allowed with groups present with the type."
            )));
        }
        for q in ["DELETE FROM group_type_specs WHERE type_id = $1", "DELETE FROM group_types WHERE id = $1"] {
            sqlx::query(q).bind(id).execute(&mut *tx).await.map_err(db("delete group type"))?;
        }
        tx.commit().await.map_err(db("commit"))
    }

    /// Adds or replaces group specs.
    pub async fn set_group_specs(&self, id: &str, specs: &BTreeMap<String, String>) -> Result<()> {
        check_specs(specs)?;
        let mut tx = self.tx().await?;
        load(&mut tx, id).await?.ok_or_else(|| not_found(id))?;
        put_specs(&mut tx, id, specs).await?;
        tx.commit().await.map_err(db("commit"))
    }

    /// One group spec's value.
    pub async fn group_spec(&self, id: &str, key: &str) -> Result<String> {
        let t = self.get_group_type(id).await?;
        t.group_specs.get(key).cloned().ok_or_else(|| missing_spec(id, key))
    }

    /// Deletes one group spec.
    pub async fn delete_group_spec(&self, id: &str, key: &str) -> Result<()> {
        let mut tx = self.tx().await?;
        load(&mut tx, id).await?.ok_or_else(|| not_found(id))?;
        let n = sqlx::query("DELETE FROM group_type_specs WHERE type_id = $1 AND spec_key = $2")
            .bind(id)
            .bind(key)
            .execute(&mut *tx)
            .await
            .map_err(db("delete group spec"))?
            .rows_affected();
        if n == 0 {
            return Err(missing_spec(id, key));
        }
        tx.commit().await.map_err(db("commit"))
    }
}

fn missing_spec(id: &str, key: &str) -> ServiceError {
    ServiceError::not_found("Group type spec", format!("{key} of group type {id}"))
}
