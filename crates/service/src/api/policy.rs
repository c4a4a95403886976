//! Cinder's default policy (the secure-RBAC defaults of its `policies/`
//! package), keyed by [`Endpoint`]: who may call what.
//!
//! - admin: the `admin` role (Cinder's `RULE_ADMIN_API`): volume types, their
//!   extra specs and encryption, `all_tenants`, the audit, forced deletes;
//! - member of the project (`RULE_ADMIN_OR_PROJECT_MEMBER`): create, change,
//!   delete, act on the project's resources;
//! - reader of the project (`RULE_ADMIN_OR_PROJECT_READER`): list and show.
//!
//! Keystone's bootstrap makes admin imply member and member imply reader, and
//! tokens carry the implied roles; the checks below do not rely on that.
//! Under noauth every caller passes (the noauth caller is admin; resources
//! stay scoped to its project).

use super::admin::AdminEndpoint;
use super::group_types::GroupTypesEndpoint;
use super::groups::GroupsEndpoint;
use super::qos::QosEndpoint;
use super::endpoint::Endpoint;
use super::error::ApiError;
use super::paths::{MetaOf, MetaOp, PathsEndpoint};
use crate::model::Caller;

/// The least a caller must be.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Rule {
    /// Reader (or member, or admin) of the project.
    Reader,
    /// Member (or admin) of the project.
    Member,
    /// Admin.
    Admin,
}

/// The rule for `e` and Cinder's policy name for it (used in the 403 body).
pub fn rule(e: &Endpoint) -> (Rule, &'static str) {
    use Endpoint::*;
    use Rule::*;
    match e {
        // Answered before identity; listed for completeness.
        Versions | V3Version | OpenApi => (Reader, "versions"),
        ResourceFilters => (Reader, "volume:get_all"),
        Manageable(_) => (Admin, "volume_extension:list_manageable"),
        ListVolumes | ListVolumesDetail => (Reader, "volume:get_all"),
        ShowVolume(_) => (Reader, "volume:get"),
        CreateVolume => (Member, "volume:create"),
        UpdateVolume(_) => (Member, "volume:update"),
        DeleteVolume(_) => (Member, "volume:delete"),
        VolumeEncryption(_) => (Reader, "volume_extension:volume_encryption_metadata"),
        VolumeAction(_) => (Member, "volume:rekey"),
        ListTypes => (Reader, "volume_extension:type_get_all"),
        ShowType(_) => (Reader, "volume_extension:type_get"),
        CreateType | UpdateType(_) | DeleteType(_) => (Admin, "volume_extension:types_manage"),
        ListExtraSpecs(_) => (Reader, "volume_extension:types_extra_specs:index"),
        ShowExtraSpec(..) => (Reader, "volume_extension:types_extra_specs:show"),
        SetExtraSpecs(_) => (Admin, "volume_extension:types_extra_specs:create"),
        UpdateExtraSpec(..) => (Admin, "volume_extension:types_extra_specs:update"),
        DeleteExtraSpec(..) => (Admin, "volume_extension:types_extra_specs:delete"),
        ShowEncryption(_) | ShowEncryptionSpec(..) => (Admin, "volume_extension:volume_type_encryption:get"),
        CreateEncryption(_) => (Admin, "volume_extension:volume_type_encryption:create"),
        UpdateEncryption(_) => (Admin, "volume_extension:volume_type_encryption:update"),
        DeleteEncryption(_) => (Admin, "volume_extension:volume_type_encryption:delete"),
        ListAttachments | ListAttachmentsDetail | ShowAttachment(_) => (Reader, "volume:get"),
        CreateAttachment => (Member, "volume:attachment_create"),
        UpdateAttachment(_) => (Member, "volume:attachment_update"),
        DeleteAttachment(_) => (Member, "volume:attachment_delete"),
        AttachmentAction(_) => (Member, "volume:attachment_complete"),
        Paths(p) => paths_rule(p),
        // Cinder: project (or system) admin; listing every project's is the system admin's.
        Defaults(d) => match d {
            super::defaults::DefaultsEndpoint::List => (Admin, "volume_extension:default_get_all"),
            super::defaults::DefaultsEndpoint::Show(_) => (Admin, "volume_extension:default_get"),
            super::defaults::DefaultsEndpoint::Set(_) => (Admin, "volume_extension:default_set_or_update"),
            super::defaults::DefaultsEndpoint::Unset(_) => (Admin, "volume_extension:default_unset"),
        },
        Quotas(q) => super::quotas::rule(q),
        Operator(a) => admin_rule(a),
        Qos(q) => qos_rule(q),
        GroupTypes(g) => group_types_rule(g),
        Groups(g) => groups_rule(g),
    }
}

/// Cinder's group and group-snapshot rules; `reset_status` (an action,
/// routed as one) is held to admins by its handler.
fn groups_rule(e: &GroupsEndpoint) -> (Rule, &'static str) {
    use GroupsEndpoint::*;
    match e {
        List(_) => (Rule::Reader, "group:get_all"),
        Show(_) => (Rule::Reader, "group:get"),
        Create | CreateFromSource => (Rule::Member, "group:create"),
        Update(_) => (Rule::Member, "group:update"),
        Action(_) => (Rule::Member, "group:delete"),
        ListSnapshots(_) => (Rule::Reader, "group:get_all_group_snapshots"),
        ShowSnapshot(_) => (Rule::Reader, "group:get_group_snapshot"),
        CreateSnapshot => (Rule::Member, "group:create_group_snapshot"),
        DeleteSnapshot(_) => (Rule::Member, "group:delete_group_snapshot"),
        SnapshotAction(_) => (Rule::Member, "group:update_group_snapshot"),
    }
}

fn group_types_rule(e: &GroupTypesEndpoint) -> (Rule, &'static str) {
    use GroupTypesEndpoint::*;
    match e {
        ListTypes | ShowType(_) | DefaultType => (Rule::Reader, "group:group_types:get"),
        CreateType | UpdateType(_) | DeleteType(_) => (Rule::Admin, "group:group_types:create"),
        ListSpecs(_) | ShowSpec(..) => (Rule::Admin, "group:group_types_specs:get"),
        SetSpecs(_) | UpdateSpec(..) | DeleteSpec(..) => (Rule::Admin, "group:group_types_specs:create"),
    }
}

fn qos_rule(e: &QosEndpoint) -> (Rule, &'static str) {
    use QosEndpoint::*;
    let name = match e {
        List | Associations(_) => "volume_extension:qos_specs_manage:get_all",
        Show(_) => "volume_extension:qos_specs_manage:get",
        Create => "volume_extension:qos_specs_manage:create",
        SetKeys(_) | UnsetKeys(_) | Associate(_) | Disassociate(_) | DisassociateAll(_) => "volume_extension:qos_specs_manage:update",
        Delete(_) => "volume_extension:qos_specs_manage:delete",
    };
    (Rule::Admin, name)
}

fn admin_rule(e: &AdminEndpoint) -> (Rule, &'static str) {
    use AdminEndpoint::*;
    use Rule::*;
    match e {
        AvailabilityZones => (Reader, "volume_extension:availability_zone_list"),
        Extensions => (Reader, "volume_extension:extension_list"),
        ListServices => (Admin, "volume_extension:services:index"),
        UpdateService(a) if a == "freeze" => (Admin, "volume:freeze_host"),
        UpdateService(a) if a == "thaw" => (Admin, "volume:thaw_host"),
        UpdateService(_) => (Admin, "volume_extension:services:update"),
        ListHosts | ShowHost(_) => (Admin, "volume_extension:hosts"),
        Pools => (Admin, "scheduler_extension:scheduler_stats:get_pools"),
        Capabilities(_) => (Admin, "volume_extension:capabilities"),
        ListMessages => (Reader, "message:get_all"),
        WorkersCleanup => (Admin, "workers:cleanup"),
        ShowMessage(_) => (Reader, "message:get"),
        DeleteMessage(_) => (Member, "message:delete"),
        TypeAccess(_) => (Admin, "volume_extension:volume_type_access"),
        TypeAccessAction(_) => (Admin, "volume_extension:volume_type_access:addProjectAccess"),
    }
}

fn paths_rule(e: &PathsEndpoint) -> (Rule, &'static str) {
    use PathsEndpoint::*;
    use Rule::*;
    match e {
        ListSnapshots(_) => (Reader, "volume:get_all_snapshots"),
        ShowSnapshot(_) => (Reader, "volume:get_snapshot"),
        CreateSnapshot => (Member, "volume:create_snapshot"),
        UpdateSnapshot(_) => (Member, "volume:update_snapshot"),
        DeleteSnapshot(_) => (Member, "volume:delete_snapshot"),
        ListBackups(_) => (Reader, "backup:get_all"),
        ShowBackup(_) => (Reader, "backup:get"),
        CreateBackup => (Member, "backup:create"),
        DeleteBackup(_) => (Member, "backup:delete"),
        RestoreBackup(_) => (Member, "backup:restore"),
        ListTransfers(_) => (Reader, "volume:get_all_transfers"),
        ShowTransfer(_) => (Reader, "volume:get_transfer"),
        CreateTransfer => (Member, "volume:create_transfer"),
        DeleteTransfer(_) => (Member, "volume:delete_transfer"),
        AcceptTransfer(_) => (Member, "volume:accept_transfer"),
        Audit => (Admin, "rekey:audit"),
        VolumeSummary => (Reader, "volume:get_all"),
        Metadata(MetaOf::Volume, _, op) if op.reads() => (Reader, "volume:get_volume_metadata"),
        Metadata(MetaOf::Volume, _, MetaOp::Delete(_)) => (Member, "volume:delete_volume_metadata"),
        Metadata(MetaOf::Volume, ..) => (Member, "volume:update_volume_metadata"),
        Metadata(MetaOf::Snapshot, _, op) if op.reads() => (Reader, "volume:get_snapshot_metadata"),
        Metadata(MetaOf::Snapshot, _, MetaOp::Delete(_)) => (Member, "volume:delete_snapshot_metadata"),
        Metadata(MetaOf::Snapshot, ..) => (Member, "volume:update_snapshot_metadata"),
        // The admin-only actions among these are checked by name in the handler.
        SnapshotAction(_) => (Member, "snapshot_extension:snapshot_actions:update_snapshot_status"),
        BackupAction(_) => (Admin, "volume_extension:backup_admin_actions:reset_status"),
        UpdateBackup(_) => (Member, "backup:update"),
        ExportBackup(_) => (Admin, "backup:export-import"),
        ImportBackup => (Admin, "backup:backup-import"),
    }
}

/// Whether `who` satisfies `rule`.
pub fn satisfies(who: &Caller, rule: Rule) -> bool {
    let admin = who.admin;
    let member = admin || who.has_role("member");
    let reader = member || who.has_role("reader");
    match rule {
        Rule::Admin => admin,
        Rule::Member => member,
        Rule::Reader => reader,
    }
}

/// Cinder's 403 unless `who` may call `e`. `noauth` callers always may.
pub fn authorize(who: &Caller, e: &Endpoint, noauth: bool) -> Result<(), ApiError> {
    let (r, name) = rule(e);
    if noauth || satisfies(who, r) {
        Ok(())
    } else {
        Err(forbidden(name))
    }
}

/// Cinder's body for a refused policy.
pub fn forbidden(name: &str) -> ApiError {
    ApiError::forbidden(format!("Policy doesn't allow {name} to be performed."))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn who(roles: &[&str]) -> Caller {
        Caller {
            user: "u".into(),
            project: "p".into(),
            admin: roles.contains(&"admin"),
            roles: roles.iter().map(|r| (*r).to_owned()).collect(),
            domain: None,
        }
    }

    #[test]
    fn roles_against_rules() {
        let (admin, member, reader, none) = (who(&["admin"]), who(&["member"]), who(&["reader"]), who(&[]));
        let create = Endpoint::CreateVolume;
        let list = Endpoint::ListVolumesDetail;
        let types = Endpoint::CreateType;
        for (c, ok_create, ok_list, ok_types) in
            [(&admin, true, true, true), (&member, true, true, false), (&reader, false, true, false), (&none, false, false, false)]
        {
            assert_eq!(authorize(c, &create, false).is_ok(), ok_create, "{:?}", c.roles);
            assert_eq!(authorize(c, &list, false).is_ok(), ok_list, "{:?}", c.roles);
            assert_eq!(authorize(c, &types, false).is_ok(), ok_types, "{:?}", c.roles);
        }
        assert!(authorize(&none, &types, true).is_ok());
        let e = authorize(&reader, &Endpoint::DeleteVolume("v".into()), false).unwrap_err();
        assert_eq!((e.status, e.message.as_str()), (403, "Policy doesn't allow volume:delete to be performed."));
        assert!(authorize(&member, &Endpoint::Paths(PathsEndpoint::Audit), false).is_err());
        assert!(authorize(&reader, &Endpoint::Paths(PathsEndpoint::ShowBackup("b".into())), false).is_ok());
        assert!(authorize(&reader, &Endpoint::Paths(PathsEndpoint::AcceptTransfer("t".into())), false).is_err());
    }
}
