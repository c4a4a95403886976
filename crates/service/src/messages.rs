//! User messages (Cinder's `/messages`, 3.3+): what a project is told about
//! an asynchronous failure it could not see in the API answer, e.g. a
//! volume create that ended in `error`. Kept for Cinder's `message_ttl`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sqlx::Row;

use crate::db::Conn;
use crate::error::{db, Result, ServiceError};
use crate::model::{iso_at, Caller};
use crate::service::Service;

/// Cinder's default `message_ttl`: 30 days.
const MESSAGE_TTL: Duration = Duration::from_secs(2_592_000);

/// What was being done (Cinder's `message_field.Action`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// `001`: placing a new volume on a backend.
    ScheduleAllocateVolume,
    /// `008`: making the volume on the backend.
    CreateVolumeFromBackend,
}

/// Why it failed (Cinder's `message_field.Detail`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Detail {
    /// `001`.
    UnknownError,
    /// `003`: no backend has what the volume type asks for.
    NoBackendAvailable,
}

impl Action {
    fn code(self) -> (&'static str, &'static str) {
        match self {
            Action::ScheduleAllocateVolume => ("001", "schedule allocate volume"),
            Action::CreateVolumeFromBackend => ("008", "create volume from backend storage"),
        }
    }
}

impl Detail {
    fn code(self) -> (&'static str, &'static str) {
        match self {
            Detail::UnknownError => ("001", "An unknown error occurred."),
            Detail::NoBackendAvailable => ("003", "Could not find any available weighted backend."),
        }
    }
}

/// One message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// UUID.
    pub id: String,
    /// Whose.
    pub project_id: String,
    /// The request (or job) it came from.
    pub request_id: String,
    /// `VOLUME`.
    pub resource_type: String,
    /// The volume.
    pub resource_uuid: String,
    /// `VOLUME_VOLUME_<action>_<detail>`.
    pub event_id: String,
    /// `ERROR`.
    pub message_level: String,
    /// `<action>:<detail>` in words.
    pub user_message: String,
    /// When.
    pub created_at: String,
    /// Kept at least until.
    pub guaranteed_until: String,
}

/// Records, in the caller's transaction, that an operation on volume
/// `volume` of `project` failed.
pub(crate) async fn record_volume(c: &mut Conn, project: &str, volume: &str, request_id: &str, action: Action, detail: Detail) -> Result<()> {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    let ((a, a_text), (d, d_text)) = (action.code(), detail.code());
    sqlx::query(
        "INSERT INTO messages (id, project_id, request_id, resource_type, resource_uuid, event_id, message_level,
                               user_message, created_at, guaranteed_until, expires_ms)
         VALUES ($1, $2, $3, 'VOLUME', $4, $5, 'ERROR', $6, $7, $8, $9)",
    )
    .bind(uuid::Uuid::new_v4().to_string())
    .bind(project)
    .bind(request_id)
    .bind(volume)
    .bind(format!("VOLUME_VOLUME_{a}_{d}"))
    .bind(format!("{a_text}:{d_text}"))
    .bind(iso_at(now))
    .bind(iso_at(now + MESSAGE_TTL))
    .bind((now + MESSAGE_TTL).as_millis() as i64)
    .execute(&mut *c)
    .await
    .map_err(db("record user message"))?;
    Ok(())
}

fn from_row(r: &sqlx::any::AnyRow) -> Message {
    Message {
        id: r.get("id"),
        project_id: r.get("project_id"),
        request_id: r.get("request_id"),
        resource_type: r.get("resource_type"),
        resource_uuid: r.get("resource_uuid"),
        event_id: r.get("event_id"),
        message_level: r.get("message_level"),
        user_message: r.get("user_message"),
        created_at: r.get("created_at"),
        guaranteed_until: r.get("guaranteed_until"),
    }
}

fn now_ms() -> i64 {
    crate::engine::now_ms()
}

impl Service {
    /// The caller's project's messages that have not expired, oldest first.
    pub async fn list_messages(&self, who: &Caller) -> Result<Vec<Message>> {
        let mut c = self.conn().await?;
        let rows = sqlx::query("SELECT * FROM messages WHERE project_id = $1 AND expires_ms > $2 ORDER BY created_at, id")
            .bind(&who.project)
            .bind(now_ms())
            .fetch_all(&mut *c)
            .await
            .map_err(db("list user messages"))?;
        Ok(rows.iter().map(from_row).collect())
    }

    /// One of the caller's project's messages.
    pub async fn get_message(&self, who: &Caller, id: &str) -> Result<Message> {
        let mut c = self.conn().await?;
        let row = sqlx::query("SELECT * FROM messages WHERE id = $1 AND project_id = $2 AND expires_ms > $3")
            .bind(id)
            .bind(&who.project)
            .bind(now_ms())
            .fetch_optional(&mut *c)
            .await
            .map_err(db("read user message"))?;
        row.as_ref().map(from_row).ok_or_else(|| ServiceError::not_found("Message", id))
    }

    /// Deletes one of the caller's project's messages.
    pub async fn delete_message(&self, who: &Caller, id: &str) -> Result<()> {
        let mut tx = self.tx().await?;
        let n = sqlx::query("DELETE FROM messages WHERE id = $1 AND project_id = $2")
            .bind(id)
            .bind(&who.project)
            .execute(&mut *tx)
            .await
            .map_err(db("delete user message"))?
            .rows_affected();
        if n == 0 {
            return Err(ServiceError::not_found("Message", id));
        }
        tx.commit().await.map_err(db("commit"))
    }
}
