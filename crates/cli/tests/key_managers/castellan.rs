//! castellan interop: castellan's own Vault key manager (python, from PyPI)
//! and rekey share keys both ways.

use std::path::{Path, PathBuf};
use std::process::Command;

use rekey_keys::{KeyId, KeyManagerConfig, Project, VaultConfig};
use zeroize::Zeroizing;

use crate::harness::*;
use crate::*;

fn castellan(bao: &Bao, kv: &str, args: &[&str]) -> String {
    let venv = PathBuf::from(need("REKEY_CASTELLAN_VENV"));
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/key_managers/castellan_vault.py");
    let out = Command::new(venv.join("bin/python"))
        .arg(script)
        .args([bao.url.as_str(), bao.token.as_str(), kv])
        .args(args)
        .output()
        .expect("run python with castellan");
    assert!(out.status.success(), "castellan {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// A LUKS2 file formatted by cryptsetup itself with `pass`.
fn luks_format(path: &Path, pass: &str) {
    std::fs::File::create(path).unwrap().set_len(32 << 20).unwrap();
    let mut child = Command::new("cryptsetup")
        .args(["luksFormat", "--batch-mode", "--type", "luks2", "--pbkdf", "pbkdf2", "--pbkdf-force-iterations", "1000", "--key-file=-"])
        .arg(path)
        .stdin(std::process::Stdio::piped())
        .spawn()
        .expect("run cryptsetup");
    use std::io::Write;
    child.stdin.take().unwrap().write_all(pass.as_bytes()).unwrap();
    assert!(child.wait().unwrap().success(), "cryptsetup luksFormat");
}

/// castellan creates a key; rekey's Vault manager reads it and rekey's LUKS
/// engine opens a volume cryptsetup formatted with castellan's passphrase.
#[test]
fn a_key_castellan_created_opens_a_volume_in_rekey() {
    require_cryptsetup();
    let bao = Bao::from_env();
    let kv = kv_path("castellan-made");
    let line = castellan(&bao, &kv, &["create"]);
    let (id, castellan_pass) = line.split_once(' ').expect("id and value");
    assert_eq!(id.len(), 32, "castellan ids are uuid4().hex: {id}");

    let dir = tempfile::tempdir().unwrap();
    let vol = dir.path().join("vol.img");
    luks_format(&vol, castellan_pass);

    let config = VaultConfig::new(&bao.url).with_token(Zeroizing::new(bao.token.clone())).with_kv_path(kv.as_str());
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let key = rt.block_on(async {
        let km = rekey_keys::open_key_manager(&KeyManagerConfig::Vault(config)).await.unwrap();
        km.get_key(&Project::new("any-project").unwrap(), &KeyId::parse(id).unwrap()).await.unwrap()
    });
    let pass = rekey_keys::passphrase_hex(&key);
    assert_eq!(pass.as_str(), castellan_pass);
    let v = rekey_luks::Volume::open(rekey_luks::FileIo::open_read_only(&vol).unwrap()).unwrap();
    assert!(v.unlock(pass.as_bytes(), None).is_ok(), "rekey opens the volume with the key castellan made");
}

/// rekey serve makes an encrypted volume with its key in Vault; castellan
/// reads that key by the id Cinder's API shows (dashes dropped, as castellan
/// spells ids) and its passphrase opens the volume with cryptsetup.
#[test]
fn castellan_reads_a_key_rekey_created() {
    venv();
    require_cryptsetup();
    let bao = Bao::from_env();
    let kv = kv_path("rekey-made");
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let srv = serve_on_vault(&data, &bao, &kv);
    make_type(&srv);
    let v = json_ok(&srv.openstack(&["volume", "create", "--size", "1", "--type", "LUKS", "v", "-f", "json"]));
    let id = v["id"].as_str().unwrap().to_owned();
    let v = srv.wait_settled(&id);
    assert_eq!(v["status"], "available", "{v}");
    let key_id = v["encryption_key_id"].as_str().unwrap().replace('-', "");
    let pass = castellan(&bao, &kv, &["get", &key_id]);
    assert!(cryptsetup_opens(&volume_path(&data, &id), pass.as_bytes()), "castellan's copy of the key opens the volume");
}
