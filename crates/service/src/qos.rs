//! QoS specs: named sets of limits for a consumer (front-end, back-end or
//! both), associated with volume types (at most one per type). rekey stores
//! and reports them as Cinder does; its data path does not throttle.

use std::collections::BTreeMap;

use sqlx::Row;

use crate::error::{db, Result, ServiceError};
use crate::model::now_iso;
use crate::service::Service;

/// The consumers Cinder knows.
const CONSUMERS: [&str; 3] = ["front-end", "back-end", "both"];
/// Cinder's default consumer.
const DEFAULT_CONSUMER: &str = "back-end";

/// One qos specs record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QosSpecs {
    /// UUID.
    pub id: String,
    /// Unique name.
    pub name: String,
    /// `front-end`, `back-end` or `both`.
    pub consumer: String,
    /// The limits.
    pub specs: BTreeMap<String, String>,
}

/// A type the specs are associated with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QosAssociation {
    /// Type id.
    pub type_id: String,
    /// Type name.
    pub type_name: String,
}

fn check_consumer(c: &str) -> Result<()> {
    if CONSUMERS.contains(&c) {
        Ok(())
    } else {
        Err(ServiceError::invalid(format!(
            "Invalid input received: consumer {c:?} is not one of front-end, back-end, both"
        )))
    }
}

fn check_keys(specs: &BTreeMap<String, String>) -> Result<()> {
    for (k, v) in specs {
        if k.trim().is_empty() || k.len() > 255 || v.len() > 255 {
            return Err(ServiceError::invalid("Invalid input received: qos spec keys and values must be 1 to 255 characters"));
        }
    }
    Ok(())
}

fn not_found(id: &str) -> ServiceError {
    ServiceError::not_found("QoS spec", id)
}

async fn load(c: &mut crate::db::Conn, id: &str) -> Result<Option<QosSpecs>> {
    let row = sqlx::query("SELECT id, name, consumer FROM qos_specs WHERE id = $1")
        .bind(id)
        .fetch_optional(&mut *c)
        .await
        .map_err(db("read qos specs"))?;
    let Some(row) = row else { return Ok(None) };
    let keys = sqlx::query("SELECT spec_key, spec_value FROM qos_spec_keys WHERE qos_id = $1")
        .bind(id)
        .fetch_all(&mut *c)
        .await
        .map_err(db("read qos spec keys"))?;
    Ok(Some(QosSpecs {
        id: row.get("id"),
        name: row.get("name"),
        consumer: row.get("consumer"),
        specs: keys.iter().map(|r| (r.get("spec_key"), r.get("spec_value"))).collect(),
    }))
}

async fn put_keys(c: &mut crate::db::Conn, id: &str, specs: &BTreeMap<String, String>) -> Result<()> {
    for (k, v) in specs {
        sqlx::query(
            "INSERT INTO qos_spec_keys (qos_id, spec_key, spec_value) VALUES ($1, $2, $3)
             ON CONFLICT (qos_id, spec_key) DO UPDATE SET spec_value = excluded.spec_value",
        )
        .bind(id)
        .bind(k)
        .bind(v)
        .execute(&mut *c)
        .await
        .map_err(db("write qos spec key"))?;
    }
    Ok(())
}

impl Service {
    /// Creates qos specs `name` for `consumer` (default `back-end`).
    pub async fn create_qos(&self, name: &str, consumer: Option<String>, specs: BTreeMap<String, String>) -> Result<QosSpecs> {
        let name = name.trim();
        if name.is_empty() || name.len() > 255 {
            return Err(ServiceError::invalid("Invalid input received: name must be 1 to 255 characters"));
        }
        let consumer = consumer.unwrap_or_else(|| DEFAULT_CONSUMER.to_owned());
        check_consumer(&consumer)?;
        check_keys(&specs)?;
        let q = QosSpecs { id: uuid::Uuid::new_v4().to_string(), name: name.to_owned(), consumer, specs };
        let mut tx = self.tx().await?;
        let clash: Option<String> = sqlx::query_scalar("SELECT id FROM qos_specs WHERE name = $1")
            .bind(&q.name)
            .fetch_optional(&mut *tx)
            .await
            .map_err(db("read qos specs"))?;
        if clash.is_some() {
            return Err(ServiceError::Conflict(format!("QoS Specs {} already exists.", q.name)));
        }
        sqlx::query("INSERT INTO qos_specs (id, name, consumer, created_at) VALUES ($1, $2, $3, $4)")
            .bind(&q.id)
            .bind(&q.name)
            .bind(&q.consumer)
            .bind(now_iso())
            .execute(&mut *tx)
            .await
            .map_err(db("create qos specs"))?;
        put_keys(&mut tx, &q.id, &q.specs).await?;
        tx.commit().await.map_err(db("commit"))?;
        Ok(q)
    }

    /// Every qos specs record, by name.
    pub async fn list_qos(&self) -> Result<Vec<QosSpecs>> {
        let mut c = self.conn().await?;
        let ids: Vec<String> =
            sqlx::query_scalar("SELECT id FROM qos_specs ORDER BY name").fetch_all(&mut *c).await.map_err(db("list qos specs"))?;
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            out.extend(load(&mut c, &id).await?);
        }
        Ok(out)
    }

    /// One record.
    pub async fn get_qos(&self, id: &str) -> Result<QosSpecs> {
        let mut c = self.conn().await?;
        load(&mut c, id).await?.ok_or_else(|| not_found(id))
    }

    /// Adds or replaces keys; a `consumer` key changes the consumer.
    pub async fn set_qos_keys(&self, id: &str, mut specs: BTreeMap<String, String>) -> Result<()> {
        check_keys(&specs)?;
        let consumer = specs.remove("consumer");
        if let Some(c) = &consumer {
            check_consumer(c)?;
        }
        let mut tx = self.tx().await?;
        load(&mut tx, id).await?.ok_or_else(|| not_found(id))?;
        if let Some(c) = consumer {
            sqlx::query("UPDATE qos_specs SET consumer = $1 WHERE id = $2")
                .bind(c)
                .bind(id)
                .execute(&mut *tx)
                .await
                .map_err(db("update qos specs"))?;
        }
        put_keys(&mut tx, id, &specs).await?;
        tx.commit().await.map_err(db("commit"))
    }

    /// Removes keys; all of them must exist (else nothing is removed).
    pub async fn unset_qos_keys(&self, id: &str, keys: &[String]) -> Result<()> {
        let mut tx = self.tx().await?;
        let q = load(&mut tx, id).await?.ok_or_else(|| not_found(id))?;
        if let Some(k) = keys.iter().find(|k| !q.specs.contains_key(*k)) {
            return Err(ServiceError::invalid(format!("QoS spec {id} has no spec with key {k}.")));
        }
        for k in keys {
            sqlx::query("DELETE FROM qos_spec_keys WHERE qos_id = $1 AND spec_key = $2")
                .bind(id)
                .bind(k)
                .execute(&mut *tx)
                .await
                .map_err(db("delete qos spec key"))?;
        }
        tx.commit().await.map_err(db("commit"))
    }

    /// Deletes a record; one still associated with types only with `force`
    /// (which disassociates them).
    pub async fn delete_qos(&self, id: &str, force: bool) -> Result<()> {
        let mut tx = self.tx().await?;
        load(&mut tx, id).await?.ok_or_else(|| not_found(id))?;
        let used: i64 = sqlx::query_scalar("SELECT CAST(COUNT(*) AS BIGINT) FROM qos_associations WHERE qos_id = $1")
            .bind(id)
            .fetch_one(&mut *tx)
            .await
            .map_err(db("read qos associations"))?;
        if used > 0 && !force {
            return Err(ServiceError::invalid(format!("QoS Specs {id} is still associated with entities.")));
        }
        for q in [
            "DELETE FROM qos_associations WHERE qos_id = $1",
            "DELETE FROM qos_spec_keys WHERE qos_id = $1",
            "DELETE FROM qos_specs WHERE id = $1",
        ] {
            sqlx::query(q).bind(id).execute(&mut *tx).await.map_err(db("delete qos specs"))?;
        }
        tx.commit().await.map_err(db("commit"))
    }

    /// The types the record is associated with.
    pub async fn qos_associations(&self, id: &str) -> Result<Vec<QosAssociation>> {
        let mut c = self.conn().await?;
        load(&mut c, id).await?.ok_or_else(|| not_found(id))?;
        let rows: Vec<(String, String)> = sqlx::query_as(
            "SELECT t.id, t.name FROM qos_associations a JOIN volume_types t ON t.id = a.type_id WHERE a.qos_id = $1 ORDER BY t.name",
        )
        .bind(id)
        .fetch_all(&mut *c)
        .await
        .map_err(db("read qos associations"))?;
        Ok(rows.into_iter().map(|(type_id, type_name)| QosAssociation { type_id, type_name }).collect())
    }

    /// Associates the record with type `type_id`; a type has at most one.
    pub async fn associate_qos(&self, id: &str, type_id: &str) -> Result<()> {
        let mut tx = self.tx().await?;
        load(&mut tx, id).await?.ok_or_else(|| not_found(id))?;
        let t = crate::db::get_type(&mut tx, type_id).await?.ok_or_else(|| ServiceError::not_found("Volume type", type_id))?;
        match t.qos_specs_id.as_deref() {
            Some(q) if q == id => return Ok(()),
            Some(q) => {
                return Err(ServiceError::invalid(format!(
                    "Type {type_id} is already associated with another qos specs: {q}"
                )))
            }
            None => {}
        }
        sqlx::query("INSERT INTO qos_associations (type_id, qos_id) VALUES ($1, $2)")
            .bind(&t.id)
            .bind(id)
            .execute(&mut *tx)
            .await
            .map_err(db("associate qos specs"))?;
        tx.commit().await.map_err(db("commit"))
    }

    /// Removes the association with `type_id` (`None`: with every type).
    pub async fn disassociate_qos(&self, id: &str, type_id: Option<&str>) -> Result<()> {
        let mut tx = self.tx().await?;
        load(&mut tx, id).await?.ok_or_else(|| not_found(id))?;
        match type_id {
            Some(t) => {
                crate::db::get_type(&mut tx, t).await?.ok_or_else(|| ServiceError::not_found("Volume type", t))?;
                sqlx::query("DELETE FROM qos_associations WHERE qos_id = $1 AND type_id = $2").bind(id).bind(t).execute(&mut *tx).await
            }
            None => sqlx::query("DELETE FROM qos_associations WHERE qos_id = $1").bind(id).execute(&mut *tx).await,
        }
        .map_err(db("disassociate qos specs"))?;
        tx.commit().await.map_err(db("commit"))
    }
}
