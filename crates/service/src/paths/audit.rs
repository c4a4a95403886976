//! The key-independence audit: for every encrypted volume, unlock it with its
//! own key and report
//!
//! - key ids that more than one record (volume, snapshot, backup) names;
//! - passphrases that open more than one volume (volumes whose keys have the
//!   same bytes under different ids: Cinder's clone-by-copy);
//! - volumes whose LUKS header shows an unfinished re-encryption (rekey's or
//!   cryptsetup's requirement), with how to finish it;
//! - groups of volumes that share a volume (master) key — a keyslot rekey
//!   does not change it, so anyone who held one volume's key and header can
//!   decrypt the others — each with the fix: re-encrypt under a new volume
//!   key (`rekey:mode=volume-key`).
//!
//! Keys are compared by keyed fingerprints, HMAC-SHA256 under a secret kept
//! in the data directory (`audit.secret`, made on first use), never raw: the
//! report can be shared without helping anyone guess a key. Memory is one
//! fingerprint per volume; time is one fast-KDF unlock per volume.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

use hmac::{Hmac, Mac};
use rekey_keys::{passphrase_hex, KeyId, Project};
use rekey_luks::Volume as LuksVolume;
use serde::Serialize;
use sha2::Sha256;
use zeroize::Zeroizing;

use crate::error::{Result, ServiceError};
use crate::service::Service;

const SECRET_FILE: &str = "audit.secret";

/// The audit's findings.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct AuditReport {
    /// Volumes looked at.
    pub volumes: usize,
    /// Of which encrypted (and unlocked).
    pub encrypted: usize,
    /// Key ids named by more than one record.
    pub shared_key_ids: Vec<SharedKeyId>,
    /// Groups of volumes that open with the same passphrase.
    pub shared_passphrases: Vec<Group>,
    /// Groups of volumes that share a volume key.
    pub shared_volume_keys: Vec<Group>,
    /// Volumes with more than one active keyslot (another passphrase may open them).
    pub extra_keyslots: Vec<ExtraKeyslots>,
    /// Keys the service made (named `rekey-job-…`) that no volume, snapshot,
    /// backup, running job or deletion queue entry names: orphans.
    pub unreferenced_keys: Vec<UnreferencedKey>,
    /// Volumes whose header shows a re-encryption not yet finished (read
    /// from the header alone, whatever the volume's status).
    pub unfinished_reencryptions: Vec<UnfinishedReencryption>,
    /// Volumes that could not be checked, and why.
    pub errors: Vec<AuditError>,
    /// Per key manager in use: how many of its keys (in the projects the
    /// records name) something references, and how many nothing does.
    pub key_managers: Vec<KeyManagerKeys>,
}

/// The keys one key manager holds, counted against the records.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct KeyManagerKeys {
    /// `embedded`, `barbican` or `vault`.
    pub backend: String,
    /// Keys a volume, snapshot, backup, job or the deletion queue names.
    pub referenced: usize,
    /// Keys nothing names (whoever made them).
    pub unreferenced: usize,
}

impl AuditReport {
    /// True when no two volumes share anything.
    pub fn is_clean(&self) -> bool {
        self.shared_key_ids.is_empty()
            && self.shared_passphrases.is_empty()
            && self.shared_volume_keys.is_empty()
            && self.unreferenced_keys.is_empty()
            && self.errors.is_empty()
    }
}

/// A key id named by several records.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct SharedKeyId {
    /// The key id.
    pub key_id: String,
    /// `volume:<id>`, `snapshot:<id>`, `backup:<id>`.
    pub records: Vec<String>,
}

/// Volumes sharing one secret.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Group {
    /// Keyed fingerprint (HMAC-SHA256, first 16 bytes, hex) of the shared secret.
    pub fingerprint: String,
    /// The volumes, sorted.
    pub volumes: Vec<String>,
    /// What to do about it.
    pub fix: String,
}

/// A volume with more than one keyslot.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ExtraKeyslots {
    /// The volume.
    pub volume: String,
    /// Its active keyslots.
    pub keyslots: Vec<u32>,
}

/// A volume in the middle of a re-encryption.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct UnfinishedReencryption {
    /// The volume.
    pub volume: String,
    /// Its status in the database (`maintenance` while a job runs).
    pub status: String,
    /// The header's requirement: `online-reencrypt-v2` (cryptsetup's format,
    /// which either tool finishes) or `rekey-reencrypt-v1/v2` (rekey only).
    pub requirement: String,
    /// The unfinished job re-encrypting it, if there is one.
    pub job: Option<String>,
    /// How to finish it.
    pub fix: String,
}

/// A key of the service's that nothing refers to.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct UnreferencedKey {
    /// The project that owns it.
    pub project: String,
    /// Its id.
    pub key_id: String,
    /// Its name: the job and step that made it.
    pub name: String,
}

/// A volume the audit could not check.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct AuditError {
    /// The volume.
    pub volume: String,
    /// Why.
    pub error: String,
}

/// The per-installation fingerprint secret, created on first use.
fn secret(data_dir: &Path) -> Result<Zeroizing<Vec<u8>>> {
    let path = data_dir.join(SECRET_FILE);
    match std::fs::read(&path) {
        Ok(b) if b.len() == 32 => return Ok(Zeroizing::new(b)),
        Ok(_) => return Err(ServiceError::Config(format!("{} is not 32 bytes", path.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(ServiceError::Config(format!("{}: {e}", path.display()))),
    }
    let fresh = rekey_luks::Secret::random(32);
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    match opts.open(&path) {
        Ok(mut f) => {
            f.write_all(fresh.expose()).and_then(|()| f.sync_all()).map_err(|e| ServiceError::Config(format!("{}: {e}", path.display())))?;
            Ok(Zeroizing::new(fresh.expose().to_vec()))
        }
        // Another process made it first: use theirs.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => secret(data_dir),
        Err(e) => Err(ServiceError::Config(format!("{}: {e}", path.display()))),
    }
}

fn fingerprint(secret: &[u8], domain: &str, data: &[u8]) -> String {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(domain.as_bytes());
    mac.update(&[0]);
    mac.update(data);
    hex::encode(&mac.finalize().into_bytes()[..16])
}

fn groups(map: BTreeMap<String, Vec<String>>, fix: impl Fn(&[String]) -> String) -> Vec<Group> {
    let mut out: Vec<Group> = map
        .into_iter()
        .filter(|(_, v)| v.len() > 1)
        .map(|(fingerprint, mut volumes)| {
            volumes.sort();
            let fix = fix(&volumes);
            Group { fingerprint, volumes, fix }
        })
        .collect();
    out.sort_by(|a, b| a.volumes.cmp(&b.volumes));
    out
}

/// Runs the audit over every volume of every project.
pub async fn run(svc: &Service) -> Result<AuditReport> {
    let secret = secret(&svc.config().data_dir)?;
    let (vols, recorded) = {
        let mut c = svc.conn().await?;
        (crate::db::list_volumes(&mut c, None, None, None).await?, super::db::all_recorded_keys(&mut c).await?)
    };
    let mut report = AuditReport { volumes: vols.len(), ..AuditReport::default() };

    let mut by_key: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (key, kind, id) in recorded {
        by_key.entry(key).or_default().push(format!("{kind}:{id}"));
    }
    report.shared_key_ids = by_key
        .into_iter()
        .filter(|(_, r)| r.len() > 1)
        .map(|(key_id, mut records)| {
            records.sort();
            SharedKeyId { key_id, records }
        })
        .collect();

    let jobs = {
        let mut c = svc.conn().await?;
        crate::db::list_jobs(&mut c).await?
    };
    let mut by_pass: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut by_vk: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for v in vols {
        let Some(key) = v.encryption_key_id.clone() else { continue };
        match unfinished_reencryption(svc, &v, &jobs).await {
            Ok(Some(u)) => report.unfinished_reencryptions.push(u),
            Ok(None) => {}
            Err(e) => report.errors.push(AuditError { volume: v.id.clone(), error: e.to_string() }),
        }
        if v.status != crate::model::status::AVAILABLE {
            continue;
        }
        let checked: Result<(String, String, Vec<u32>)> = async {
            let bytes = svc.keys.get_key(&Project::new(v.project_id.clone())?, &KeyId::parse(&key)?).await?;
            let pass = passphrase_hex(&bytes);
            let pfp = fingerprint(&secret, "passphrase", pass.as_bytes());
            let (backend, id, secret) = (svc.backend.clone(), v.id.clone(), secret.clone());
            let (vfp, slots) = crate::engine::blocking(move || {
                let lv = LuksVolume::open(backend.open(&id)?)?;
                let (_, vk) = lv.unlock(pass.as_bytes(), None)?;
                Ok((fingerprint(&secret, "volume-key", vk.expose()), lv.active_keyslots()))
            })
            .await?;
            Ok((pfp, vfp, slots))
        }
        .await;
        match checked {
            Ok((pfp, vfp, slots)) => {
                report.encrypted += 1;
                by_pass.entry(pfp).or_default().push(v.id.clone());
                by_vk.entry(vfp).or_default().push(v.id.clone());
                if slots.len() > 1 {
                    report.extra_keyslots.push(ExtraKeyslots { volume: v.id.clone(), keyslots: slots });
                }
            }
            Err(e) => report.errors.push(AuditError { volume: v.id.clone(), error: e.to_string() }),
        }
    }
    report.unreferenced_keys = unreferenced_keys(svc).await?;
    report.key_managers = vec![key_manager_keys(svc).await?];
    report.shared_passphrases = groups(by_pass, |vs| {
        format!(
            "give each volume but {} its own key: clone it with rekey:mode=keyslot or volume-key (a keyslot rekey)",
            vs[0]
        )
    });
    report.shared_volume_keys = groups(by_vk, |vs| {
        format!(
            "re-encrypt every volume but {} under a new volume key (rekey:mode=volume-key, or `rekey luks reencrypt \
             --key-file <(rekey key show KEY --passphrase) --new-key-file NEW VOLUME_PATH` with the service stopped, \
             then record NEW's key id); a keyslot rekey alone leaves the volume key shared",
            vs[0]
        )
    });
    Ok(report)
}

/// The re-encryption `v`'s header records, if any. Needs no key: the
/// requirement is in the plaintext header.
async fn unfinished_reencryption(
    svc: &Service,
    v: &crate::model::Volume,
    jobs: &[crate::db::JobRow],
) -> Result<Option<UnfinishedReencryption>> {
    let (backend, id) = (svc.backend.clone(), v.id.clone());
    let requirement = crate::engine::blocking(move || {
        let lv = LuksVolume::open(backend.open(&id)?)?;
        let rekey_luks::Header::Luks2(h) = lv.header() else { return Ok(None) };
        Ok(h.meta.mandatory_requirements().iter().find(|r| is_reencryption(r)).cloned())
    })
    .await?;
    let Some(requirement) = requirement else { return Ok(None) };
    let job = jobs.iter().find(|j| j.target_id == v.id);
    let fix = match (job.and_then(|j| j.new_key_id.as_deref()), requirement == rekey_luks::luks2::reenc::REQUIREMENT) {
        (Some(new_key), true) => format!(
            "start the service and job {} resumes it; or, with the service stopped, finish it with stock cryptsetup (`cryptsetup repair` \
             first when luksDump shows a segment in-reencryption): `cryptsetup reencrypt --resume-only --force-offline-reencrypt --key-file <(rekey key show {new_key} \
             --passphrase) $(rekey volume path {})`, then start the service (the job sees it finished and records the new key)",
            job.map_or("", |j| j.id.as_str()),
            v.id
        ),
        (Some(_), false) => format!("start the service: job {} resumes it", job.map_or("", |j| j.id.as_str())),
        (None, _) => "no job is re-encrypting it: finish it with `rekey luks reencrypt --resume` (or `cryptsetup reencrypt \
                      --resume-only` for online-reencrypt-v2) with the passphrase of its new keyslot"
            .to_owned(),
    };
    Ok(Some(UnfinishedReencryption { volume: v.id.clone(), status: v.status.clone(), requirement, job: job.map(|j| j.id.clone()), fix }))
}

fn is_reencryption(requirement: &str) -> bool {
    rekey_luks::luks2::reenc::requirement_version(requirement).is_some()
        || rekey_luks::reencrypt::requirement_format(requirement).is_some()
}

/// Keys the service made that nothing names any more (see
/// [`AuditReport::unreferenced_keys`]). A key of a job still running is not
/// one: the job records it at its next step.
async fn unreferenced_keys(svc: &Service) -> Result<Vec<UnreferencedKey>> {
    use std::collections::HashSet;
    let (projects, referenced, live_jobs) = {
        let mut c = svc.conn().await?;
        let mut referenced: HashSet<String> = super::db::all_recorded_keys(&mut c).await?.into_iter().map(|(k, _, _)| k).collect();
        referenced.extend(crate::db::due_key_deletions(&mut c, i64::MAX).await?.into_iter().map(|(k, _, _)| k));
        let jobs = crate::db::list_jobs(&mut c).await?;
        referenced.extend(jobs.iter().flat_map(|j| [j.old_key_id.clone(), j.new_key_id.clone()]).flatten());
        let live: HashSet<String> = jobs.into_iter().map(|j| j.id).collect();
        (super::db::known_projects(&mut c).await?, referenced, live)
    };
    let mut out = Vec::new();
    for p in projects {
        let project = Project::new(p.clone())?;
        for (id, name) in svc.keys.list_named(&project, crate::engine::KEY_NAME_PREFIX).await? {
            let running = crate::engine::key_name_job(&name).is_some_and(|j| live_jobs.contains(j));
            if !running && !referenced.contains(id.as_str()) {
                out.push(UnreferencedKey { project: p.clone(), key_id: id.to_string(), name });
            }
        }
    }
    Ok(out)
}

/// [`AuditReport::key_managers`] for the service's one key manager.
async fn key_manager_keys(svc: &Service) -> Result<KeyManagerKeys> {
    use std::collections::HashSet;
    let (projects, referenced) = {
        let mut c = svc.conn().await?;
        let mut referenced: HashSet<String> = super::db::all_recorded_keys(&mut c).await?.into_iter().map(|(k, _, _)| k).collect();
        referenced.extend(crate::db::due_key_deletions(&mut c, i64::MAX).await?.into_iter().map(|(k, _, _)| k));
        let jobs = crate::db::list_jobs(&mut c).await?;
        referenced.extend(jobs.iter().flat_map(|j| [j.old_key_id.clone(), j.new_key_id.clone()]).flatten());
        (super::db::known_projects(&mut c).await?, referenced)
    };
    let mut counts = KeyManagerKeys { backend: svc.keys.backend().to_owned(), ..Default::default() };
    for p in projects {
        for id in svc.keys.list(&Project::new(p)?).await? {
            if referenced.contains(id.as_str()) {
                counts.referenced += 1;
            } else {
                counts.unreferenced += 1;
            }
        }
    }
    Ok(counts)
}
