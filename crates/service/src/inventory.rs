//! What an operator's Cinder tools see of the deployment: the services
//! (`os-services`, `os-hosts`), the one backend and its pool
//! (`scheduler-stats/get_pools`, `capabilities`).
//!
//! Every rekey node shares one database and one backend, so the backend is
//! one Cinder "host" for all of them, `rekey@<backend>` (what Cinder's
//! `backend_host` option does for nodes sharing a backend): its
//! `cinder-volume` service row is kept up by any node's heartbeat. The
//! scheduler and backup services are per node, under the node's name.

use std::sync::Arc;
use std::time::Duration;

use rekey_storage::BackendConfig;

use crate::engine::now_ms;
use crate::error::{db, Result, ServiceError};
use crate::model::now_iso;
use crate::service::Service;

/// The `cinder-volume` binary: the service that owns volumes.
pub const VOLUME_BINARY: &str = "cinder-volume";
/// The per-node binaries rekey stands in for besides the volume service.
const NODE_BINARIES: [&str; 2] = ["cinder-scheduler", "cinder-backup"];
/// Cinder's `service_down_time` default: a service silent this long is down.
const SERVICE_DOWN_MS: i64 = 60_000;
/// How often a node says it is alive.
const HEARTBEAT: Duration = Duration::from_secs(10);
/// The availability zone every service and volume is in.
pub const ZONE: &str = "nova";
/// Who made the driver, as tempest's `vendor_name` expects of open drivers.
pub const VENDOR: &str = "Open Source";

/// One service row, with its liveness as of the read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceInfo {
    /// `cinder-volume`, `cinder-scheduler`, `cinder-backup`.
    pub binary: String,
    /// Node name, or `rekey@<backend>` for the volume service.
    pub host: String,
    /// Scheduling turned off by an admin.
    pub disabled: bool,
    /// Why, if given.
    pub disabled_reason: Option<String>,
    /// Frozen (no management operations) by an admin.
    pub frozen: bool,
    /// Last heartbeat (ISO 8601, UTC).
    pub updated_at: String,
    /// A heartbeat came within Cinder's `service_down_time`.
    pub up: bool,
}

/// The backend's pool and what it can tell of its capacity.
#[derive(Debug, Clone, PartialEq)]
pub struct PoolInfo {
    /// `rekey@<backend>#<pool>`.
    pub name: String,
    /// `rekey@<backend>`.
    pub backend_host: String,
    /// `file` or `rbd`.
    pub backend_name: String,
    /// How attachments reach the data.
    pub storage_protocol: &'static str,
    /// GiB, or `None` where the backend cannot tell.
    pub total_gb: Option<f64>,
    /// GiB, or `None` where the backend cannot tell.
    pub free_gb: Option<f64>,
}

/// Volume and snapshot usage of one project on a host (`os-hosts/{host}`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HostUsage {
    /// Project id, `None` for the total over all projects.
    pub project: Option<String>,
    /// Volumes.
    pub volume_count: i64,
    /// Their GiB.
    pub volume_gb: i64,
    /// Snapshots.
    pub snapshot_count: i64,
    /// Their GiB.
    pub snapshot_gb: i64,
}

/// What `os-services/{enable,disable,disable-log-reason}` sets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServiceChange {
    /// Enable (clears the reason).
    Enable,
    /// Disable, keeping any reason.
    Disable,
    /// Disable with a reason.
    DisableWithReason(String),
}

fn backend_name(c: &BackendConfig) -> &'static str {
    match c {
        BackendConfig::File { .. } => "file",
        _ => "rbd",
    }
}

/// `rekey@<backend>`: the Cinder host of the shared backend.
pub fn backend_host(svc: &Service) -> String {
    format!("rekey@{}", backend_name(&svc.config().backend()))
}

/// The part of a `host@backend#pool` name before the `#`.
fn without_pool(host: &str) -> &str {
    host.split_once('#').map_or(host, |(h, _)| h)
}

/// Cinder's host filter: the host itself or any backend on it (`host@…`).
fn host_matches(filter: &str, host: &str) -> bool {
    host == filter || host.strip_prefix(filter).is_some_and(|rest| rest.starts_with('@'))
}

/// Records this node's services as alive now (made enabled on first sight),
/// then keeps doing so every [`HEARTBEAT`] until the process ends.
pub async fn start_heartbeat(svc: Arc<Service>) -> Result<()> {
    beat(&svc).await?;
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(HEARTBEAT).await;
            if let Err(e) = beat(&svc).await {
                tracing::warn!(error = %e, "service heartbeat failed");
            }
        }
    });
    Ok(())
}

async fn beat(svc: &Service) -> Result<()> {
    let node = svc.config().node_name();
    let volume_host = backend_host(svc);
    let rows = NODE_BINARIES.iter().map(|b| (node.as_str(), *b)).chain([(volume_host.as_str(), VOLUME_BINARY)]);
    let (now, ms) = (now_iso(), now_ms());
    let mut tx = svc.tx().await?;
    for (host, binary) in rows {
        sqlx::query(
            "INSERT INTO services (host, service_binary, disabled, disabled_reason, frozen, created_at, updated_at, heartbeat_ms)
             VALUES ($1, $2, 0, NULL, 0, $3, $3, $4)
             ON CONFLICT (host, service_binary) DO UPDATE SET updated_at = excluded.updated_at, heartbeat_ms = excluded.heartbeat_ms",
        )
        .bind(host)
        .bind(binary)
        .bind(&now)
        .bind(ms)
        .execute(&mut *tx)
        .await
        .map_err(db("record service heartbeat"))?;
    }
    tx.commit().await.map_err(db("commit"))
}

type ServiceRow = (String, String, i64, Option<String>, i64, String, i64);

fn service_info(r: ServiceRow, now: i64) -> ServiceInfo {
    let (host, binary, disabled, disabled_reason, frozen, updated_at, heartbeat_ms) = r;
    ServiceInfo {
        binary,
        host,
        disabled: disabled != 0,
        disabled_reason,
        frozen: frozen != 0,
        updated_at,
        up: (now - heartbeat_ms).abs() <= SERVICE_DOWN_MS,
    }
}

impl Service {
    /// Services, optionally only those on `host` (or its backends) and of
    /// `binary`, as Cinder's `os-services` filters them.
    pub async fn list_services(&self, host: Option<&str>, binary: Option<&str>) -> Result<Vec<ServiceInfo>> {
        let mut c = self.conn().await?;
        let rows: Vec<ServiceRow> = sqlx::query_as(
            "SELECT host, service_binary, disabled, disabled_reason, frozen, updated_at, heartbeat_ms
             FROM services ORDER BY service_binary, host",
        )
        .fetch_all(&mut *c)
        .await
        .map_err(db("read services"))?;
        let now = now_ms();
        Ok(rows
            .into_iter()
            .map(|r| service_info(r, now))
            .filter(|s| host.is_none_or(|h| host_matches(h, &s.host)))
            .filter(|s| binary.is_none_or(|b| s.binary == b))
            .collect())
    }

    /// Enables or disables the service `binary` on `host`.
    pub async fn change_service(&self, host: &str, binary: &str, change: ServiceChange) -> Result<ServiceInfo> {
        let (sql, reason) = match change {
            // A plain disable keeps the reason an earlier one gave.
            ServiceChange::Disable => ("UPDATE services SET disabled = 1 WHERE host = $1 AND service_binary = $2", None),
            ServiceChange::Enable => {
                ("UPDATE services SET disabled = 0, disabled_reason = NULL WHERE host = $1 AND service_binary = $2", None)
            }
            ServiceChange::DisableWithReason(r) => {
                ("UPDATE services SET disabled = 1, disabled_reason = $3 WHERE host = $1 AND service_binary = $2", Some(r))
            }
        };
        let mut tx = self.tx().await?;
        let mut q = sqlx::query(sql).bind(host).bind(binary);
        if let Some(r) = reason {
            q = q.bind(r);
        }
        let n = q.execute(&mut *tx).await.map_err(db("update service"))?.rows_affected();
        if n == 0 {
            return Err(ServiceError::not_found("Service", format!("{binary} on host {host}")));
        }
        tx.commit().await.map_err(db("commit"))?;
        let found = self.list_services(Some(host), Some(binary)).await?.into_iter().find(|s| s.host == host);
        found.ok_or_else(|| ServiceError::not_found("Service", format!("{binary} on host {host}")))
    }

    /// Freezes (or thaws) the volume service of `host`: Cinder's failover
    /// preparation, refused for a host with no volume service.
    pub async fn freeze_host(&self, host: &str, frozen: bool) -> Result<()> {
        let host = without_pool(host);
        let mut tx = self.tx().await?;
        let n = sqlx::query("UPDATE services SET frozen = $1 WHERE host = $2 AND service_binary = $3")
            .bind(i64::from(frozen))
            .bind(host)
            .bind(VOLUME_BINARY)
            .execute(&mut *tx)
            .await
            .map_err(db("freeze service"))?
            .rows_affected();
        if n == 0 {
            return Err(ServiceError::invalid(format!("Invalid input received: No service found with host={host}.")));
        }
        tx.commit().await.map_err(db("commit"))
    }

    /// The usage on `host`'s volume service: the total first, then each
    /// project's. Every volume lives on the one shared backend.
    pub async fn host_usage(&self, host: &str) -> Result<Vec<HostUsage>> {
        let volume_host = backend_host(self);
        let known = self.list_services(Some(host), Some(VOLUME_BINARY)).await?.into_iter().any(|s| !s.disabled);
        if host != volume_host || !known {
            return Err(ServiceError::not_found("Host", host));
        }
        let mut c = self.conn().await?;
        let vols: Vec<(String, i64, i64)> =
            sqlx::query_as("SELECT project_id, CAST(COUNT(*) AS BIGINT), CAST(COALESCE(SUM(size_gb), 0) AS BIGINT) FROM volumes GROUP BY project_id ORDER BY project_id")
                .fetch_all(&mut *c)
                .await
                .map_err(db("read volume usage"))?;
        let snaps: Vec<(String, i64, i64)> = sqlx::query_as(
            "SELECT project_id, CAST(COUNT(*) AS BIGINT), CAST(COALESCE(SUM(size_gb), 0) AS BIGINT) FROM snapshots GROUP BY project_id ORDER BY project_id",
        )
        .fetch_all(&mut *c)
        .await
        .map_err(db("read snapshot usage"))?;
        let mut per: std::collections::BTreeMap<String, HostUsage> = Default::default();
        for (p, n, gb) in vols {
            let u = per.entry(p.clone()).or_insert_with(|| HostUsage { project: Some(p), ..Default::default() });
            (u.volume_count, u.volume_gb) = (n, gb);
        }
        for (p, n, gb) in snaps {
            let u = per.entry(p.clone()).or_insert_with(|| HostUsage { project: Some(p), ..Default::default() });
            (u.snapshot_count, u.snapshot_gb) = (n, gb);
        }
        let mut total = HostUsage::default();
        for u in per.values() {
            total.volume_count += u.volume_count;
            total.volume_gb += u.volume_gb;
            total.snapshot_count += u.snapshot_count;
            total.snapshot_gb += u.snapshot_gb;
        }
        Ok(std::iter::once(total).chain(per.into_values()).collect())
    }

    /// The backend's one pool.
    pub async fn pools(&self) -> Result<Vec<PoolInfo>> {
        let config = self.config().backend();
        let (pool, protocol) = match &config {
            BackendConfig::File { .. } => ("file".to_owned(), "nbd"),
            BackendConfig::Rbd(r) => (r.pool.clone(), "ceph"),
            _ => ("default".to_owned(), "nbd"),
        };
        let (total_gb, free_gb) = match &config {
            BackendConfig::File { data_dir } => capacity(data_dir.clone()).await,
            _ => (None, None),
        };
        let backend_host = backend_host(self);
        Ok(vec![PoolInfo {
            name: format!("{backend_host}#{pool}"),
            backend_host,
            backend_name: backend_name(&config).to_owned(),
            storage_protocol: protocol,
            total_gb,
            free_gb,
        }])
    }

    /// The pool of the backend `host` names (`rekey@file` or with `#pool`),
    /// if it is this deployment's.
    pub async fn capabilities(&self, host: &str) -> Result<PoolInfo> {
        let pools = self.pools().await?;
        pools
            .into_iter()
            .find(|p| p.name == host || p.backend_host == host)
            .ok_or_else(|| ServiceError::not_found("Host", host))
    }
}

/// What `POST /workers/cleanup` (3.24) selects: Cinder's filters, all
/// optional; `is_up` defaults to false (the services that are down).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CleanupRequest {
    /// The service's id (its place in the `os-services` order, from 1).
    pub service_id: Option<u64>,
    /// Cluster: rekey has none, so any name selects nothing.
    pub cluster_name: Option<String>,
    /// Host (or its backend prefix, as `os-services` filters).
    pub host: Option<String>,
    /// `cinder-volume` or `cinder-scheduler`.
    pub binary: Option<String>,
    /// Up (true) or down (false, the default) services.
    pub is_up: Option<bool>,
    /// Disabled or enabled services.
    pub disabled: Option<bool>,
    /// Only the job working on this volume or snapshot.
    pub resource_id: Option<String>,
    /// `Volume` or `Snapshot`.
    pub resource_type: Option<String>,
}

/// The resource types a cleanup may name, as Cinder's cleanable objects.
pub const CLEANABLE_TYPES: &[&str] = &["Volume", "Snapshot"];

impl Service {
    /// Cinder's worker cleanup: of the services the request selects, the
    /// nodes' jobs are released at once — their leases end now — so that a
    /// live node's claimer takes them up at its next beat instead of when
    /// the leases run out. A service that is up has no stale work (its node
    /// renews the leases of the jobs it runs), so nothing of it is released.
    /// Every selected service is in the first list (`cleaning`: this node,
    /// alive, does the cleaning); the second (`unavailable`) is for
    /// services with no live node to clean for them, which cannot happen
    /// while a node answers, and is empty. Returns the released job count too.
    pub async fn workers_cleanup(&self, req: &CleanupRequest) -> Result<(Vec<(u64, ServiceInfo)>, Vec<(u64, ServiceInfo)>, u64)> {
        if let Some(t) = &req.resource_type {
            if !CLEANABLE_TYPES.contains(&t.as_str()) {
                return Err(ServiceError::invalid(format!(
                    "Invalid input received: Resource type {t} not valid, must be {}",
                    CLEANABLE_TYPES.join(" or ")
                )));
            }
        }
        // A resource without a place: the node whose job works on it.
        let mut host = req.host.clone();
        if let Some(r) = &req.resource_id {
            if req.host.is_none() && req.service_id.is_none() && req.cluster_name.is_none() {
                let mut c = self.conn().await?;
                let owner: Option<Option<String>> = sqlx::query_scalar("SELECT lease_owner FROM jobs WHERE target_id = $1")
                    .bind(r)
                    .fetch_optional(&mut *c)
                    .await
                    .map_err(db("read jobs"))?;
                match owner.flatten() {
                    Some(node) => host = Some(node),
                    None => return Err(ServiceError::invalid(format!("Invalid input received: There is no resource with UUID {r} pending cleanup."))),
                }
            }
        }
        let all = self.list_services(None, None).await?;
        let is_up = req.is_up.unwrap_or(false);
        let chosen: Vec<(u64, ServiceInfo)> = all
            .into_iter()
            .enumerate()
            .map(|(i, s)| (i as u64 + 1, s))
            .filter(|(id, s)| {
                req.service_id.is_none_or(|x| x == *id)
                    && req.cluster_name.is_none()
                    && host.as_deref().is_none_or(|h| host_matches(h, &s.host))
                    && req.binary.as_deref().is_none_or(|b| s.binary == b)
                    && req.disabled.is_none_or(|d| s.disabled == d)
                    && s.up == is_up
                    && s.binary != "cinder-backup"
            })
            .collect();
        let mut released = 0;
        let mut tx = self.tx().await?;
        for (_, s) in chosen.iter().filter(|(_, s)| !s.up && s.binary != VOLUME_BINARY) {
            let r = sqlx::query("UPDATE jobs SET lease_until = 0 WHERE lease_owner = $1 AND ($2 IS NULL OR target_id = $2)")
                .bind(&s.host)
                .bind(&req.resource_id)
                .execute(&mut *tx)
                .await
                .map_err(db("release jobs"))?;
            released += r.rows_affected();
        }
        tx.commit().await.map_err(db("commit"))?;
        if released > 0 {
            tracing::warn!(released, "worker cleanup: the jobs of down nodes are released to the live ones");
        }
        Ok((chosen, Vec::new(), released))
    }
}

/// Size and free space of the file system holding `dir`, GiB.
async fn capacity(dir: std::path::PathBuf) -> (Option<f64>, Option<f64>) {
    let stat = tokio::task::spawn_blocking(move || rustix::fs::statvfs(&dir)).await;
    match stat {
        Ok(Ok(s)) => {
            let gib = |blocks: u64| (blocks as f64 * s.f_frsize as f64 / (1u64 << 30) as f64 * 100.0).round() / 100.0;
            (Some(gib(s.f_blocks)), Some(gib(s.f_bavail)))
        }
        _ => (None, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_filter_is_cinders() {
        assert!(host_matches("rekey", "rekey@file"));
        assert!(host_matches("rekey@file", "rekey@file"));
        assert!(host_matches("node1", "node1"));
        assert!(!host_matches("rekey", "rekeyx@file"));
        assert!(!host_matches("rekey@file", "rekey"));
        assert_eq!(without_pool("rekey@file#file"), "rekey@file");
        assert_eq!(without_pool("rekey@file"), "rekey@file");
    }
}

/// Why no backend can take a volume of type `type_id`, if none can: the
/// type's extra specs name a capability (unscoped or `capabilities:`) the
/// backend reports otherwise, as Cinder's capabilities filter decides.
/// Only the capabilities that say what the backend is are checked
/// (`vendor_name`, `storage_protocol`, `volume_backend_name`); other keys
/// are not refused, so types with specs rekey does not know stay usable.
pub(crate) async fn unschedulable(svc: &Service, type_id: &str) -> Result<Option<String>> {
    let t = {
        let mut c = svc.conn().await?;
        crate::db::get_type(&mut c, type_id).await?
    };
    let Some(t) = t else { return Ok(None) };
    let host = backend_host(svc);
    // The scheduler passes over a disabled volume service, as Cinder's does.
    if svc.list_services(Some(&host), Some(VOLUME_BINARY)).await?.iter().any(|s| s.host == host && s.disabled) {
        return Ok(Some(format!("The volume service of {host} is disabled.")));
    }
    let pool = svc.pools().await?.remove(0);
    for (key, want) in &t.extra_specs {
        let key = key.strip_prefix("capabilities:").unwrap_or(key);
        let have = match key {
            "vendor_name" => VENDOR,
            "storage_protocol" => pool.storage_protocol,
            "volume_backend_name" => pool.backend_name.as_str(),
            _ => continue,
        };
        if !spec_matches(want, have) {
            return Ok(Some(format!("No weighed backend has {key} {want:?} (the backend has {have:?}).")));
        }
    }
    Ok(None)
}

/// Cinder's extra-spec operators for strings: `<in>`, `<or>`, `s==`, `=`,
/// or a plain value (compared ignoring case, as protocols are).
fn spec_matches(want: &str, have: &str) -> bool {
    let want = want.trim();
    if let Some(rest) = want.strip_prefix("<in>") {
        return have.contains(rest.trim());
    }
    if want.starts_with("<or>") {
        return want.split("<or>").map(str::trim).filter(|w| !w.is_empty()).any(|w| w.eq_ignore_ascii_case(have));
    }
    let want = want.strip_prefix("s==").or_else(|| want.strip_prefix('=')).map_or(want, str::trim);
    want.eq_ignore_ascii_case(have)
}

#[cfg(test)]
mod spec_tests {
    use super::spec_matches;

    #[test]
    fn operators() {
        assert!(spec_matches("Open Source", "Open Source"));
        assert!(spec_matches("NBD", "nbd"));
        assert!(!spec_matches("iSCSI", "nbd"));
        assert!(spec_matches("<or> iSCSI <or> nbd", "nbd"));
        assert!(!spec_matches("<or> iSCSI <or> FC", "nbd"));
        assert!(spec_matches("<in> Source", "Open Source"));
        assert!(spec_matches("s== file", "file"));
    }
}
