//! Attachments: Cinder's 3.27+ attachments API and the legacy volume
//! actions Nova still uses, over one record per attachment, and the
//! connection info that tells a consumer how to reach the volume.
//!
//! | operation                           | attachment      | volume status            |
//! |-------------------------------------|-----------------|--------------------------|
//! | create, no connector / `os-reserve` | `reserved`      | `reserved` / `attaching` |
//! | create with connector, update, `os-initialize_connection` | `attaching`, export made | `attaching` |
//! | `os-complete` / `os-attach`         | `attached`      | `in-use`                 |
//! | `os-begin_detaching` / `os-roll_detaching` | —        | `detaching` / `in-use`   |
//! | delete / `os-detach` / `os-unreserve` | gone, export removed | `available` when none is left |
//! | `os-terminate_connection`           | export removed  | —                        |
//!
//! Who decrypts follows the type's `control_location`: `front-end` gets
//! the ciphertext (the consumer decrypts with the key from the key
//! manager, as Nova does); `back-end` gets a plaintext export (only rekey
//! holds the key). The export record (name, node) is in the database, so a
//! restarted node serves its attachments' exports again
//! ([`restore_exports`]).

use std::sync::Arc;

use rekey_keys::{passphrase_hex, KeyId, Project};
use rekey_luks::{BlockIo, Volume as LuksVolume};
use rekey_storage::BackendConfig;
use serde_json::{json, Value};

use crate::config::RbdTransport;
use crate::db;
use crate::engine::blocking;
use crate::error::{Result, ServiceError};
use crate::exports::{Carries, NbdEndpoint};
use crate::model::{attach_status, now_iso, status, AttachMode, Attachment, Caller, Encryption, Volume};
use crate::service::Service;

/// An attachment as the API shows it: the record and, once it has a
/// connector, its connection info.
#[derive(Debug, Clone)]
pub struct AttachmentInfo {
    /// The record.
    pub attachment: Attachment,
    /// `{"driver_volume_type", "data", "attachment_id"}`.
    pub connection_info: Option<Value>,
}

/// How the consumer of one attachment reaches the volume.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Transport {
    Nbd,
    Rbd,
}

fn is_back_end(enc: Option<&Encryption>) -> bool {
    enc.is_some_and(|e| e.control_location == "back-end")
}

impl Service {
    /// The owned attachment `id` (another project's is "not found").
    async fn owned_attachment(&self, c: &mut db::Conn, caller: &Caller, id: &str) -> Result<Attachment> {
        db::get_attachment(c, id)
            .await?
            .filter(|a| a.project_id == caller.project)
            .ok_or_else(|| ServiceError::not_found("Attachment", id))
    }

    async fn owned_volume(&self, c: &mut db::Conn, caller: &Caller, id: &str) -> Result<Volume> {
        db::get_volume(c, id)
            .await?
            .filter(|v| v.project_id == caller.project)
            .ok_or_else(|| ServiceError::not_found("Volume", id))
    }

    /// The attachments the caller sees (every project's with `all` for an
    /// admin), of one volume when `volume` is given.
    pub async fn list_attachments(&self, caller: &Caller, volume: Option<&str>, all: bool) -> Result<Vec<AttachmentInfo>> {
        let project = (!(all && caller.admin)).then_some(caller.project.as_str());
        let rows = {
            let mut c = self.conn().await?;
            db::list_attachments(&mut c, project, volume).await?
        };
        let mut out = Vec::with_capacity(rows.len());
        for a in rows {
            out.push(self.info(a).await?);
        }
        Ok(out)
    }

    /// The records of a volume's attachments (no connection info).
    pub async fn attachments_of(&self, volume_id: &str) -> Result<Vec<Attachment>> {
        let mut c = self.conn().await?;
        db::list_attachments(&mut c, None, Some(volume_id)).await
    }

    /// One attachment.
    pub async fn get_attachment(&self, caller: &Caller, id: &str) -> Result<AttachmentInfo> {
        let a = {
            let mut c = self.conn().await?;
            self.owned_attachment(&mut c, caller, id).await?
        };
        self.info(a).await
    }

    /// `POST /attachments`: reserves the volume for `instance`; with a
    /// connector, connects it at once (connection info in the answer).
    pub async fn create_attachment(
        &self,
        caller: &Caller,
        volume_id: &str,
        instance: Option<String>,
        connector: Option<Value>,
        mode: AttachMode,
    ) -> Result<AttachmentInfo> {
        let _g = self.exports.serialize().await;
        let a = self.reserve(caller, volume_id, instance, mode, status::RESERVED).await?;
        match connector {
            Some(conn) => self.connect(a, conn).await,
            None => self.info(a).await,
        }
    }

    /// Makes the attachment record and moves the volume from `available` to
    /// `volume_status`; a volume that is not available is refused, as Cinder
    /// refuses a second attachment of a volume that is not multiattach.
    async fn reserve(
        &self,
        caller: &Caller,
        volume_id: &str,
        instance: Option<String>,
        mode: AttachMode,
        volume_status: &str,
    ) -> Result<Attachment> {
        let mut tx = self.tx().await?;
        let v = self.owned_volume(&mut tx, caller, volume_id).await?;
        if v.status != status::AVAILABLE {
            return Err(ServiceError::invalid(format!(
                "Invalid volume: Volume {volume_id} status must be available or downloading"
            )));
        }
        let now = now_iso();
        let a = Attachment {
            id: uuid::Uuid::new_v4().to_string(),
            volume_id: v.id.clone(),
            project_id: v.project_id.clone(),
            instance_uuid: instance,
            attach_status: attach_status::RESERVED.into(),
            // A volume flagged read-only (`os-update_readonly_flag`) is attached read-only.
            attach_mode: if v.readonly == Some(true) { AttachMode::Ro } else { mode },
            mountpoint: None,
            attached_host: None,
            connector: None,
            export_name: None,
            node: self.config.node_name(),
            attach_time: None,
            created_at: now.clone(),
            updated_at: now,
        };
        db::put_attachment(&mut tx, &a).await?;
        db::set_status(&mut tx, &v.id, volume_status).await?;
        tx.commit().await.map_err(crate::error::db("commit"))?;
        Ok(a)
    }

    /// `PUT /attachments/{id}` with a connector: connection info.
    pub async fn update_attachment(&self, caller: &Caller, id: &str, connector: Value) -> Result<AttachmentInfo> {
        let _g = self.exports.serialize().await;
        let a = {
            let mut c = self.conn().await?;
            self.owned_attachment(&mut c, caller, id).await?
        };
        self.connect(a, connector).await
    }

    /// Records `connector` on `a` and, for an NBD connection, makes its
    /// export (unless it has one). The export is made before the record
    /// names it, and removed again if the record cannot be written.
    async fn connect(&self, mut a: Attachment, connector: Value) -> Result<AttachmentInfo> {
        if !connector.is_object() {
            return Err(ServiceError::invalid("Invalid input received: connector must be an object"));
        }
        let (v, enc) = self.volume_and_encryption(&a.volume_id).await?;
        let transport = self.transport(enc.as_ref(), &connector);
        let mut made = None;
        if transport == Transport::Nbd && a.export_name.is_none() {
            let name = rekey_nbd::random_export_name();
            self.open_export(&v, enc.as_ref(), &name, a.attach_mode).await?;
            made = Some(name.clone());
            a.export_name = Some(name);
        }
        a.attached_host = connector.get("host").and_then(Value::as_str).map(str::to_owned);
        a.connector = Some(connector);
        a.node = self.config.node_name();
        if a.attach_status == attach_status::RESERVED {
            a.attach_status = attach_status::ATTACHING.into();
        }
        let write = async {
            let mut tx = self.tx().await?;
            db::put_attachment(&mut tx, &a).await?;
            if a.attach_status == attach_status::ATTACHING {
                self.set_status_unless_busy(&mut tx, &a.volume_id, status::ATTACHING).await?;
            }
            tx.commit().await.map_err(crate::error::db("commit"))
        };
        if let Err(e) = write.await {
            if let Some(name) = made {
                self.exports.remove(&name).await;
            }
            return Err(e);
        }
        self.info(a).await
    }

    /// `POST /attachments/{id}/action {"os-complete": {}}`.
    pub async fn complete_attachment(&self, caller: &Caller, id: &str) -> Result<()> {
        let _g = self.exports.serialize().await;
        let mut tx = self.tx().await?;
        let mut a = self.owned_attachment(&mut tx, caller, id).await?;
        if a.connector.is_none() {
            return Err(ServiceError::invalid(format!(
                "Invalid input received: attachment {id} has no connector yet; update it with one before completing it"
            )));
        }
        a.attach_status = attach_status::ATTACHED.into();
        a.attach_time.get_or_insert_with(now_iso);
        db::put_attachment(&mut tx, &a).await?;
        self.set_status_unless_busy(&mut tx, &a.volume_id, status::IN_USE).await?;
        tx.commit().await.map_err(crate::error::db("commit"))
    }

    /// `DELETE /attachments/{id}`: the export is closed (requests in flight
    /// finish first), the record goes; returns the volume's remaining
    /// attachments, as Cinder's answer lists them.
    pub async fn delete_attachment(&self, caller: &Caller, id: &str) -> Result<Vec<AttachmentInfo>> {
        let _g = self.exports.serialize().await;
        let a = {
            let mut c = self.conn().await?;
            self.owned_attachment(&mut c, caller, id).await?
        };
        self.drop_attachment(&a).await?;
        self.list_attachments(caller, Some(&a.volume_id), false).await
    }

    async fn drop_attachment(&self, a: &Attachment) -> Result<()> {
        if let Some(name) = &a.export_name {
            self.exports.remove(name).await;
        }
        let mut tx = self.tx().await?;
        db::delete_attachment(&mut tx, &a.id).await?;
        let settled = db::settled_status(&mut tx, &a.volume_id).await?;
        self.set_status_unless_busy(&mut tx, &a.volume_id, settled).await?;
        tx.commit().await.map_err(crate::error::db("commit"))
    }

    /// A volume being rekeyed (`maintenance`) or backed up keeps that
    /// status: the job sets the settled one when it ends.
    async fn set_status_unless_busy(&self, c: &mut db::Conn, volume: &str, to: &str) -> Result<()> {
        match db::get_volume(c, volume).await? {
            Some(v) if [status::MAINTENANCE, status::DELETING, "backing-up"].contains(&v.status.as_str()) => Ok(()),
            Some(_) => db::set_status(c, volume, to).await,
            None => Ok(()),
        }
    }

    // ---- legacy volume actions -------------------------------------------

    /// The legacy attachment of a volume not yet attached (made by
    /// `os-reserve` or `os-initialize_connection`, with no instance).
    async fn pending_legacy(&self, volume: &str) -> Result<Option<Attachment>> {
        let mut c = self.conn().await?;
        Ok(db::list_attachments(&mut c, None, Some(volume))
            .await?
            .into_iter()
            .find(|a| a.attach_status != attach_status::ATTACHED && a.instance_uuid.is_none()))
    }

    /// `os-reserve`: the volume goes `attaching`.
    pub async fn os_reserve(&self, caller: &Caller, volume_id: &str) -> Result<()> {
        let _g = self.exports.serialize().await;
        self.reserve(caller, volume_id, None, AttachMode::Rw, status::ATTACHING).await.map(drop)
    }

    /// `os-unreserve`: a reservation not attached is dropped.
    pub async fn os_unreserve(&self, caller: &Caller, volume_id: &str) -> Result<()> {
        let _g = self.exports.serialize().await;
        self.get_volume(caller, volume_id).await?;
        if let Some(a) = self.pending_legacy(volume_id).await? {
            self.drop_attachment(&a).await?;
        }
        Ok(())
    }

    /// `os-initialize_connection`: connection info for `connector`.
    pub async fn os_initialize_connection(&self, caller: &Caller, volume_id: &str, connector: Value) -> Result<Value> {
        let _g = self.exports.serialize().await;
        let v = self.get_volume(caller, volume_id).await?;
        let a = match self.pending_legacy(volume_id).await? {
            Some(a) => a,
            None if v.status == status::AVAILABLE => {
                self.reserve(caller, volume_id, None, AttachMode::Rw, status::ATTACHING).await?
            }
            None => {
                return Err(ServiceError::invalid(format!(
                    "Invalid volume: Volume {volume_id} status must be available or attaching to initialize a connection, but is {}.",
                    v.status
                )))
            }
        };
        let info = self.connect(a, connector).await?;
        info.connection_info.ok_or_else(|| ServiceError::Internal("connection without connection info".into()))
    }

    /// `os-attach`: the pending legacy attachment (or a new one) becomes
    /// attached to `instance`.
    pub async fn os_attach(
        &self,
        caller: &Caller,
        volume_id: &str,
        instance: Option<String>,
        mountpoint: Option<String>,
        host: Option<String>,
        mode: AttachMode,
    ) -> Result<()> {
        let _g = self.exports.serialize().await;
        let mut a = match self.pending_legacy(volume_id).await? {
            Some(a) => a,
            None => self.reserve(caller, volume_id, None, mode, status::ATTACHING).await?,
        };
        if a.project_id != caller.project {
            return Err(ServiceError::not_found("Volume", volume_id));
        }
        a.instance_uuid = instance;
        a.mountpoint = mountpoint;
        if host.is_some() {
            a.attached_host = host;
        }
        a.attach_mode = mode;
        a.attach_status = attach_status::ATTACHED.into();
        a.attach_time = Some(now_iso());
        let mut tx = self.tx().await?;
        db::put_attachment(&mut tx, &a).await?;
        self.set_status_unless_busy(&mut tx, volume_id, status::IN_USE).await?;
        tx.commit().await.map_err(crate::error::db("commit"))
    }

    /// `os-begin_detaching` (`in-use` → `detaching`) and `os-roll_detaching`
    /// (back).
    pub async fn os_detaching(&self, caller: &Caller, volume_id: &str, begin: bool) -> Result<()> {
        let _g = self.exports.serialize().await;
        let mut tx = self.tx().await?;
        let v = self.owned_volume(&mut tx, caller, volume_id).await?;
        let (from, to) = if begin { (status::IN_USE, status::DETACHING) } else { (status::DETACHING, status::IN_USE) };
        if v.status != from {
            if !begin {
                // Cinder's roll-back is a no-op when nothing is detaching.
                return Ok(());
            }
            return Err(ServiceError::invalid(
                "Invalid volume: Unable to detach volume. Volume status must be 'in-use' and attach_status must be 'attached' to detach.",
            ));
        }
        db::set_status(&mut tx, volume_id, to).await?;
        tx.commit().await.map_err(crate::error::db("commit"))
    }

    /// `os-detach`: the attachment named (or the volume's only one) goes.
    pub async fn os_detach(&self, caller: &Caller, volume_id: &str, attachment_id: Option<&str>) -> Result<()> {
        let _g = self.exports.serialize().await;
        self.get_volume(caller, volume_id).await?;
        let all = {
            let mut c = self.conn().await?;
            db::list_attachments(&mut c, None, Some(volume_id)).await?
        };
        let a = match (attachment_id, all.as_slice()) {
            (Some(id), _) => all.iter().find(|a| a.id == id).ok_or_else(|| ServiceError::not_found("Attachment", id))?,
            (None, [one]) => one,
            (None, []) => return Err(ServiceError::invalid(format!("Invalid volume: Volume {volume_id} is not attached."))),
            (None, _) => {
                return Err(ServiceError::invalid(
                    "Invalid input received: the volume has several attachments; name one with attachment_id",
                ))
            }
        };
        self.drop_attachment(a).await
    }

    /// `os-terminate_connection`: the exports made for this connector's
    /// host (every export of the volume when it names none) are closed; the
    /// attachments stay until detached.
    pub async fn os_terminate_connection(&self, caller: &Caller, volume_id: &str, connector: &Value) -> Result<()> {
        let _g = self.exports.serialize().await;
        self.get_volume(caller, volume_id).await?;
        let host = connector.get("host").and_then(Value::as_str);
        let all = {
            let mut c = self.conn().await?;
            db::list_attachments(&mut c, None, Some(volume_id)).await?
        };
        for mut a in all.into_iter().filter(|a| a.export_name.is_some()) {
            if host.is_some() && a.attached_host.as_deref() != host {
                continue;
            }
            if let Some(name) = a.export_name.take() {
                self.exports.remove(&name).await;
            }
            let mut tx = self.tx().await?;
            db::put_attachment(&mut tx, &a).await?;
            tx.commit().await.map_err(crate::error::db("commit"))?;
        }
        Ok(())
    }

    // ---- connection info --------------------------------------------------

    async fn volume_and_encryption(&self, id: &str) -> Result<(Volume, Option<Encryption>)> {
        let mut c = self.conn().await?;
        let v = db::get_volume(&mut c, id).await?.ok_or_else(|| ServiceError::not_found("Volume", id))?;
        let enc = db::get_encryption(&mut c, &v.volume_type_id).await?;
        Ok((v, enc))
    }

    /// RBD with librbd for what the consumer can decrypt itself, unless the
    /// operator (`[nbd] rbd_transport`) or the connector (`"rekey_transport":
    /// "nbd"`) asks for NBD; NBD for everything else.
    fn transport(&self, enc: Option<&Encryption>, connector: &Value) -> Transport {
        let rbd_backend = matches!(self.config.backend(), BackendConfig::Rbd(_));
        let asked = connector.get("rekey_transport").and_then(Value::as_str);
        match asked {
            Some("nbd") => Transport::Nbd,
            _ if !rbd_backend || is_back_end(enc) => Transport::Nbd,
            Some("rbd") => Transport::Rbd,
            _ if self.config.nbd.rbd_transport == RbdTransport::Nbd => Transport::Nbd,
            _ => Transport::Rbd,
        }
    }

    /// Opens the volume's data path and offers it under `name`: the raw
    /// bytes for a front-end (or unencrypted) volume, the decrypted view for
    /// a back-end one.
    async fn open_export(&self, v: &Volume, enc: Option<&Encryption>, name: &str, mode: AttachMode) -> Result<NbdEndpoint> {
        let backend = self.backend.clone();
        let id = v.id.clone();
        let (io, carries): (Arc<dyn BlockIo>, Carries) = if is_back_end(enc) {
            let key_id = v
                .encryption_key_id
                .clone()
                .ok_or_else(|| ServiceError::invalid(format!("Invalid volume: volume {} has no key yet", v.id)))?;
            let key = self.keys.get_key(&Project::new(v.project_id.clone())?, &KeyId::parse(&key_id)?).await?;
            let pass = passphrase_hex(&key);
            blocking(move || {
                let plain = LuksVolume::open(backend.open(&id)?)?.decrypted(pass.as_bytes())?;
                let sector = plain.sector_size() as u32;
                Ok((Arc::new(plain) as Arc<dyn BlockIo>, Carries::Plaintext { sector }))
            })
            .await?
        } else {
            blocking(move || Ok((Arc::from(backend.open(&id)?) as Arc<dyn BlockIo>, Carries::Ciphertext))).await?
        };
        self.exports.add(name, io, carries, mode == AttachMode::Ro).await
    }

    /// The record with its connection info (once it has a connector).
    async fn info(&self, a: Attachment) -> Result<AttachmentInfo> {
        let Some(connector) = a.connector.clone() else {
            return Ok(AttachmentInfo { attachment: a, connection_info: None });
        };
        let (v, enc) = self.volume_and_encryption(&a.volume_id).await?;
        let front_end_encrypted = enc.is_some() && !is_back_end(enc.as_ref());
        let (driver, data) = match (&a.export_name, self.transport(enc.as_ref(), &connector)) {
            (Some(name), _) => {
                let ep = self.exports.endpoint().await?;
                let unix = connector.get("nbd_socket").and_then(Value::as_bool) == Some(true);
                ("nbd", nbd_data(&ep, name, unix))
            }
            (None, Transport::Rbd) => ("rbd", self.rbd_data(&v)?),
            // Its export was closed by os-terminate_connection.
            (None, Transport::Nbd) => return Ok(AttachmentInfo { attachment: a, connection_info: None }),
        };
        let mut data = data;
        data["volume_id"] = json!(v.id);
        data["encrypted"] = json!(front_end_encrypted);
        data["access_mode"] = json!(a.attach_mode.as_str());
        data["discard"] = json!(true);
        data["qos_specs"] = Value::Null;
        let info = json!({ "driver_volume_type": driver, "data": data, "attachment_id": a.id });
        Ok(AttachmentInfo { attachment: a, connection_info: Some(info) })
    }

    /// What Cinder's RBD driver returns for `v`.
    fn rbd_data(&self, v: &Volume) -> Result<Value> {
        let BackendConfig::Rbd(rbd) = self.config.backend() else {
            return Err(ServiceError::Internal("rbd connection info without the rbd backend".into()));
        };
        let conf = rbd.ceph_conf.clone().or_else(|| std::env::var_os("CEPH_CONF").map(Into::into));
        let (hosts, ports) = match &conf {
            Some(path) => std::fs::read_to_string(path).map(|t| mon_addrs(&t)).unwrap_or_default(),
            None => (Vec::new(), Vec::new()),
        };
        let cluster_name = conf
            .as_ref()
            .and_then(|p| p.file_stem())
            .and_then(|s| s.to_str())
            .filter(|s| *s != "ceph" && !s.is_empty())
            .unwrap_or("ceph")
            .to_owned();
        Ok(json!({
            "name": format!("{}/volume-{}", rbd.pool, v.id),
            "hosts": hosts,
            "ports": ports,
            "cluster_name": cluster_name,
            "auth_enabled": true,
            "auth_username": rbd.ceph_user,
            "secret_type": "ceph",
            "secret_uuid": null,
            "keyring": null,
        }))
    }
}

/// The `data` of an NBD connection: a URI qemu and libnbd take as it is.
fn nbd_data(ep: &NbdEndpoint, name: &str, unix: bool) -> Value {
    let host = if ep.host.contains(':') { format!("[{}]", ep.host) } else { ep.host.clone() };
    let scheme = if ep.tls { "nbds" } else { "nbd" };
    let mut d = json!({
        "uri": format!("{scheme}://{host}:{}/{name}", ep.port),
        "export_name": name,
        "host": ep.host,
        "port": ep.port,
        "tls": ep.tls,
    });
    if let (true, Some(sock)) = (unix, &ep.socket) {
        d["uri"] = json!(format!("{scheme}+unix:///{name}?socket={}", sock.display()));
        d["socket"] = json!(sock.display().to_string());
    }
    d
}

/// Monitor hosts and ports from a ceph.conf `mon_host` / `mon host` line:
/// `[v2:H:3300/0,v1:H:6789/0]` lists give their v1 (librbd's default
/// messenger for qemu) address, plain `H[:P]` entries theirs (6789 when
/// bare).
fn mon_addrs(conf: &str) -> (Vec<String>, Vec<String>) {
    let line = conf.lines().map(str::trim).find_map(|l| {
        let (k, v) = l.split_once('=')?;
        matches!(k.trim().replace(' ', "_").as_str(), "mon_host").then(|| v.trim().to_owned())
    });
    let Some(line) = line else { return (Vec::new(), Vec::new()) };
    let mut hosts = Vec::new();
    let mut ports = Vec::new();
    let mut push = |addr: &str| {
        let addr = addr.split('/').next().unwrap_or(addr);
        let (h, p) = match addr.rsplit_once(':') {
            Some((h, p)) if p.bytes().all(|b| b.is_ascii_digit()) && !p.is_empty() => (h, p),
            _ => (addr, "6789"),
        };
        hosts.push(h.trim_matches(['[', ']']).to_owned());
        ports.push(p.to_owned());
    };
    for entry in line.split([' ', ';']).filter(|e| !e.is_empty()) {
        if let Some(list) = entry.strip_prefix('[').and_then(|e| e.strip_suffix(']')) {
            let addrs: Vec<&str> = list.split(',').collect();
            let pick = addrs.iter().find_map(|a| a.strip_prefix("v1:")).or_else(|| addrs.first().map(|a| a.trim_start_matches("v2:")));
            if let Some(a) = pick {
                push(a);
            }
        } else {
            for a in entry.split(',').filter(|a| !a.is_empty()) {
                push(a.trim_start_matches("v1:").trim_start_matches("v2:"));
            }
        }
    }
    (hosts, ports)
}

/// Serves again, after a restart, the exports the database says this node
/// served. A volume that cannot be opened is logged and skipped: the
/// consumer sees its export refused, and the rest are served.
pub(crate) async fn restore_exports(svc: &Arc<Service>) -> Result<usize> {
    let rows = {
        let mut c = svc.conn().await?;
        db::node_exports(&mut c, &svc.config.node_name()).await?
    };
    let mut n = 0;
    for a in rows {
        let Some(name) = a.export_name.as_deref() else { continue };
        let opened = async {
            let (v, enc) = svc.volume_and_encryption(&a.volume_id).await?;
            svc.open_export(&v, enc.as_ref(), name, a.attach_mode).await
        };
        match opened.await {
            Ok(_) => n += 1,
            Err(e) => tracing::error!(attachment = %a.id, volume = %a.volume_id, error = %e, "cannot serve the export again"),
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn monitor_addresses_from_ceph_conf() {
        let (h, p) = mon_addrs("[global]\nfsid = x\nmon_host = [v2:127.0.0.1:3300/0,v1:127.0.0.1:6789/0]\n");
        assert_eq!((h, p), (vec!["127.0.0.1".to_owned()], vec!["6789".to_owned()]));
        let (h, p) = mon_addrs("mon host = 10.0.0.1:6790, 10.0.0.2\n");
        assert_eq!(h, ["10.0.0.1", "10.0.0.2"]);
        assert_eq!(p, ["6790", "6789"]);
        assert_eq!(mon_addrs("[global]\n"), (vec![], vec![]));
    }

    #[test]
    fn nbd_uris() {
        let ep = NbdEndpoint { host: "127.0.0.1".into(), port: 10809, socket: Some("/run/r.sock".into()), tls: false };
        let d = nbd_data(&ep, "abc", false);
        assert_eq!(d["uri"], "nbd://127.0.0.1:10809/abc");
        assert_eq!(nbd_data(&ep, "abc", true)["uri"], "nbd+unix:///abc?socket=/run/r.sock");
        let v6 = NbdEndpoint { host: "::1".into(), port: 1, socket: None, tls: true };
        assert_eq!(nbd_data(&v6, "n", true)["uri"], "nbds://[::1]:1/n");
    }
}
