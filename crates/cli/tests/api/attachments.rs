//! Attachments: the real `cinder attachment-*` CLI and raw HTTP attach
//! volumes; real qemu (`qemu-io`, `qemu-img`) reads and writes them through
//! the NBD export the connection info names; cryptsetup and the engine
//! check what landed in the volume file.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use rekey_luks::{BlockIo, FileIo, Volume};
use serde_json::{json, Value};

use crate::harness::*;
use crate::paths::{cinder_as, json_ok, os};

struct Env {
    srv: Server,
    nbd_port: u16,
    dir: tempfile::TempDir,
}

impl Env {
    fn start() -> Env {
        require_cryptsetup();
        require_tool("qemu-io", &["--version"]);
        require_tool("qemu-img", &["--version"]);
        let dir = tempfile::tempdir().unwrap();
        let nbd_port = free_port();
        let srv = start_server(&dir.path().join("data"), nbd_port);
        Env { srv, nbd_port, dir }
    }

    fn data(&self) -> &Path {
        &self.srv.data_dir
    }

    fn restart(&mut self) {
        self.srv.kill9();
        self.srv = start_server(&self.dir.path().join("data"), self.nbd_port);
    }

    /// A type with encryption `provider` decrypted at `location`; returns its name.
    fn typed(&self, name: &str, provider: &str, location: &str) -> String {
        let (st, t) = self.srv.http("POST", "/v3/types", Some(json!({"volume_type": {"name": name}}).to_string().as_bytes()));
        assert_eq!(st, 200, "{t}");
        let id = t["volume_type"]["id"].as_str().unwrap();
        let enc = json!({"encryption": {"provider": provider, "cipher": "aes-xts-plain64", "key_size": 256, "control_location": location}});
        let (st, e) = self.srv.http("POST", &format!("/v3/types/{id}/encryption"), Some(enc.to_string().as_bytes()));
        assert_eq!(st, 200, "{e}");
        name.to_owned()
    }

    /// An available 1 GiB volume of `type_name`; returns its id.
    fn volume(&self, type_name: &str) -> String {
        let v = self.srv.create_volume(json!({"volume": {"size": 1, "volume_type": type_name}}));
        assert_eq!(v["status"], "available", "{v}");
        v["id"].as_str().unwrap().to_owned()
    }

    fn post(&self, path: &str, body: Value) -> (u16, Value) {
        self.srv.http("POST", path, Some(body.to_string().as_bytes()))
    }

    fn action(&self, vol: &str, body: Value) -> (u16, Value) {
        self.post(&format!("/v3/volumes/{vol}/action"), body)
    }

    /// `POST /attachments` with `connector`; returns the attachment.
    fn attach(&self, vol: &str, connector: Value) -> Value {
        let (st, a) = self.post("/v3/attachments", json!({"attachment": {"volume_uuid": vol, "instance_uuid": "server-1", "connector": connector}}));
        assert_eq!(st, 200, "{a}");
        a["attachment"].clone()
    }

    fn status(&self, vol: &str) -> String {
        self.srv.volume(vol)["status"].as_str().unwrap().to_owned()
    }

    /// The passphrase of the volume's key, in a file for qemu's `secret` object.
    fn pass_file(&self, vol: &str) -> (Vec<u8>, PathBuf) {
        let key = self.srv.volume(vol)["encryption_key_id"].as_str().unwrap().to_owned();
        let pass = passphrase(self.data(), &key);
        let file = self.dir.path().join(format!("pass-{key}"));
        std::fs::write(&file, &pass).unwrap();
        (pass, file)
    }
}

fn start_server(data: &Path, nbd_port: u16) -> Server {
    let listen = format!("127.0.0.1:{nbd_port}");
    Server::start_with(data, &["--nbd-listen", &listen], &[])
}

fn require_tool(tool: &str, args: &[&str]) {
    let ok = Command::new(tool).args(args).output().map(|o| o.status.success()).unwrap_or(false);
    assert!(ok, "{tool} not found: apt-get install qemu-utils (qemu 10)");
}

fn run(cmd: &mut Command) -> Output {
    cmd.output().unwrap_or_else(|e| panic!("run {cmd:?}: {e}"))
}

fn ok(out: &Output, what: &str) -> String {
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{what} failed:\n{text}\n{}", String::from_utf8_lossy(&out.stderr));
    // qemu-io reports a failed `read -P` on stdout and still exits 0.
    assert!(!text.contains("Pattern verification failed") && !text.contains("failed:"), "{what}:\n{text}");
    text
}

/// `qemu-io` over an NBD export decrypted by qemu's LUKS driver (the
/// passphrase from `pass_file`, as Nova hands it to qemu), running `cmds`.
fn qemu_io_luks(data: &Value, pass_file: &Path, cmds: &[&str]) -> Output {
    let opts = format!(
        "driver=luks,key-secret=s0,file.driver=nbd,file.server.type=inet,file.server.host={},file.server.port={},file.export={}",
        data["host"].as_str().unwrap(),
        data["port"],
        data["export_name"].as_str().unwrap()
    );
    let mut c = Command::new("qemu-io");
    c.arg("--object").arg(format!("secret,id=s0,file={}", pass_file.display())).args(["--image-opts", &opts]);
    for cmd in cmds {
        c.args(["-c", cmd]);
    }
    run(&mut c)
}

/// `qemu-io -f raw URI` (plain NBD: what a back-end export serves).
fn qemu_io_raw(uri: &str, cmds: &[&str]) -> Output {
    let mut c = Command::new("qemu-io");
    c.args(["-f", "raw", uri]);
    for cmd in cmds {
        c.args(["-c", cmd]);
    }
    run(&mut c)
}

/// Whether an NBD server answers for `uri` (qemu-img opens the export).
fn export_answers(uri: &str) -> bool {
    run(Command::new("qemu-img").args(["info", "-f", "raw", uri])).status.success()
}

fn conn_data(a: &Value) -> Value {
    let ci = &a["connection_info"];
    assert_eq!(ci["driver_volume_type"], "nbd", "{a}");
    ci["data"].clone()
}

/// The plaintext at `offset` of a volume file, through the engine.
fn plaintext_at(path: &Path, pass: &[u8], offset: u64, len: usize) -> Vec<u8> {
    let v = Volume::open(FileIo::open_read_only(path).unwrap()).unwrap();
    let plain = v.decrypted(pass).unwrap();
    let mut buf = vec![0u8; len];
    plain.read_at(&mut buf, offset).unwrap();
    buf
}

fn head(path: &Path, len: usize) -> Vec<u8> {
    use std::io::Read;
    let mut buf = vec![0u8; len];
    std::fs::File::open(path).unwrap().read_exact(&mut buf).unwrap();
    buf
}

fn wait_status(e: &Env, vol: &str, want: &str) {
    let start = Instant::now();
    loop {
        let st = e.status(vol);
        if st == want {
            return;
        }
        assert!(start.elapsed() < Duration::from_secs(60), "volume {vol} is {st}, not {want}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

const CONNECTOR: &str = r#"{"host": "compute-1", "ip": "127.0.0.1", "initiator": "iqn.1993-08.org.debian:01:c1", "platform": "x86_64", "os_type": "linux", "multipath": false}"#;

fn connector() -> Value {
    serde_json::from_str(CONNECTOR).unwrap()
}

/// Front-end LUKS1 (what Nova's native qemu path decrypts): the real
/// `cinder attachment-create --connect True` returns nbd connection info;
/// qemu's LUKS driver writes and reads a pattern through the export; after
/// `attachment-delete` the export is gone, and cryptsetup opens the volume
/// file with the key whose plaintext is the pattern.
#[test]
fn front_end_luks1_volume_attached_with_the_cinder_cli_is_written_by_qemu_through_its_export() {
    venv();
    let e = Env::start();
    e.typed("FE1", "luks", "front-end");
    let vol = e.volume("FE1");
    let args = [
        "attachment-create", &vol, "server-1", "--connect", "True", "--initiator", "iqn.1993-08.org.debian:01:c1", "--ip",
        "127.0.0.1", "--host", "compute-1", "--platform", "x86_64", "--ostype", "linux", "--multipath", "False",
        "--mountpoint", "/dev/vdb", "--mode", "rw",
    ];
    let out = cinder_as(&e.srv, PROJECT, "3.54", &args);
    let att_id = table_field(&out, "id");
    let printed = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(printed.contains("nbd://127.0.0.1:"), "the CLI shows the NBD URI:\n{printed}");
    assert_eq!(table_field(&out, "status"), "attaching");
    assert_eq!(e.status(&vol), "attaching");

    let (st, a) = e.srv.http("GET", &format!("/v3/attachments/{att_id}"), None);
    assert_eq!(st, 200, "{a}");
    let data = conn_data(&a["attachment"]);
    assert_eq!(data["encrypted"], true, "front-end: the consumer decrypts");
    assert_eq!((data["volume_id"].as_str(), data["access_mode"].as_str()), (Some(vol.as_str()), Some("rw")));
    let (name, uri) = (data["export_name"].as_str().unwrap(), data["uri"].as_str().unwrap());
    assert_eq!(name.len(), 32, "128 random bits as hex: {name}");
    assert_eq!(uri, format!("nbd://127.0.0.1:{}/{name}", e.nbd_port));
    assert_eq!(a["attachment"]["connection_info"]["attachment_id"], att_id.as_str());

    let (pass, pass_file) = e.pass_file(&vol);
    ok(&qemu_io_luks(&data, &pass_file, &["write -P 0x5a 0 1M", "write -P 0xa5 512M 1M"]), "qemu-io luks write");
    ok(&qemu_io_luks(&data, &pass_file, &["read -P 0x5a 0 1M", "read -P 0xa5 512M 1M"]), "qemu-io luks read back");

    let out = cinder_as(&e.srv, PROJECT, "3.54", &["attachment-complete", &att_id]);
    assert!(out.status.success(), "complete: {}", String::from_utf8_lossy(&out.stderr));
    let v = e.srv.volume(&vol);
    assert_eq!(v["status"], "in-use");
    assert_eq!(v["attachments"][0]["attachment_id"], att_id.as_str(), "{v}");
    assert_eq!(v["attachments"][0]["server_id"], "server-1");
    let listed = json_ok(&os(&e.srv, "3.27", &["volume", "attachment", "list", "--volume-id", &vol, "-f", "json"]));
    assert_eq!(listed[0]["ID"], att_id.as_str(), "openstack lists it: {listed}");
    assert_eq!(listed[0]["Status"], "attached", "{listed}");

    let out = cinder_as(&e.srv, PROJECT, "3.54", &["attachment-delete", &att_id]);
    assert!(out.status.success(), "delete: {}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(e.status(&vol), "available");
    assert_eq!(e.srv.volume(&vol)["attachments"], json!([]));
    assert!(!export_answers(uri), "the export must be gone after detach");

    let path = volume_path(e.data(), &vol);
    assert!(cryptsetup_opens(&path, &pass), "cryptsetup opens the volume with its key");
    let mib = 1 << 20;
    assert_eq!(plaintext_at(&path, &pass, 0, mib), vec![0x5a; mib]);
    assert_eq!(plaintext_at(&path, &pass, 512 << 20, mib), vec![0xa5; mib]);
    // And qemu itself reads the file the same, without rekey in the way.
    let opts = format!("driver=luks,key-secret=s0,file.filename={}", path.display());
    let out = run(Command::new("qemu-io")
        .arg("--object")
        .arg(format!("secret,id=s0,file={}", pass_file.display()))
        .args(["--image-opts", &opts, "-c", "read -P 0x5a 0 1M"]));
    ok(&out, "qemu-io on the detached volume file");
}

/// Front-end LUKS2: qemu 10's LUKS driver reads LUKS1 only, so a LUKS2
/// consumer decrypts with cryptsetup/os-brick. Shown without dm-crypt: the
/// export's ciphertext is copied out with `qemu-img convert`, cryptsetup
/// opens the copy with the volume's key, a pattern is written into the
/// copy's plaintext and the ciphertext goes back through the export; the
/// volume file then decrypts to the pattern.
#[test]
fn front_end_luks2_export_carries_ciphertext_that_cryptsetup_opens() {
    venv();
    let e = Env::start();
    e.typed("FE2", "luks2", "front-end");
    let vol = e.volume("FE2");
    let a = e.attach(&vol, connector());
    let data = conn_data(&a);
    assert_eq!(data["encrypted"], true);
    let uri = data["uri"].as_str().unwrap();
    let (pass, _) = e.pass_file(&vol);

    let copy = e.dir.path().join("copy.img");
    let out = run(Command::new("qemu-img").args(["convert", "-f", "raw", "-O", "raw", uri]).arg(&copy));
    ok(&out, "qemu-img convert from the export");
    assert!(cryptsetup_opens(&copy, &pass), "the export carries the LUKS2 volume itself");
    {
        let v = Volume::open(FileIo::open(&copy).unwrap()).unwrap();
        let plain = v.decrypted(&pass).unwrap();
        plain.write_at(&pattern(3), 64 << 20).unwrap();
        plain.flush().unwrap();
    }
    let out = run(Command::new("qemu-img").args(["convert", "-n", "-f", "raw", "-O", "raw"]).arg(&copy).arg(uri));
    ok(&out, "qemu-img convert back into the export");

    let (st, body) = e.srv.http("DELETE", &format!("/v3/attachments/{}", a["id"].as_str().unwrap()), None);
    assert_eq!(st, 200, "{body}");
    assert!(!export_answers(uri), "the export must be gone after detach");
    let path = volume_path(e.data(), &vol);
    assert!(cryptsetup_opens(&path, &pass));
    assert_eq!(plaintext_at(&path, &pass, 64 << 20, 1 << 20), pattern(3));
}

/// Back-end: rekey decrypts; `qemu-io nbd://…` writes and reads plaintext
/// with no key at all, the volume file holds it encrypted under the
/// volume's key, and a wrong or detached export name is refused.
#[test]
fn back_end_export_serves_plaintext_and_the_volume_stays_encrypted() {
    venv();
    let e = Env::start();
    e.typed("BE", "luks2", "back-end");
    let vol = e.volume("BE");
    let a = e.attach(&vol, connector());
    let data = conn_data(&a);
    assert_eq!(data["encrypted"], false, "back-end: the consumer never decrypts");
    let uri = data["uri"].as_str().unwrap().to_owned();

    ok(&qemu_io_raw(&uri, &["write -P 0x3c 4M 1M", "write -P 0xc3 1000M 1M"]), "qemu-io plaintext write");
    ok(&qemu_io_raw(&uri, &["read -P 0x3c 4M 1M", "read -P 0xc3 1000M 1M"]), "qemu-io plaintext read");

    let wrong = format!("nbd://127.0.0.1:{}/{}", e.nbd_port, "0".repeat(32));
    assert!(export_answers(&uri));
    assert!(!export_answers(&wrong), "an export name nobody was given is refused");

    let (pass, _) = e.pass_file(&vol);
    let path = volume_path(e.data(), &vol);
    assert!(cryptsetup_opens(&path, &pass), "cryptsetup opens the volume with its key");
    let mib = 1 << 20;
    assert_eq!(plaintext_at(&path, &pass, 4 << 20, mib), vec![0x3c; mib]);
    assert_eq!(plaintext_at(&path, &pass, 1000 << 20, mib), vec![0xc3; mib]);
    // The first 64 MiB of the file: headers, keyslots and the data at 4 MiB.
    let raw = head(&path, 64 << 20);
    assert!(!raw.chunks(4096).any(|w| w.iter().all(|b| *b == 0x3c)), "the plaintext must not be in the file");
    assert_eq!(volume_key_hex(&path, &pass).len(), 64, "cryptsetup derives the volume key from the volume's key");

    let (st, body) = e.srv.http("DELETE", &format!("/v3/attachments/{}", a["id"].as_str().unwrap()), None);
    assert_eq!(st, 200, "{body}");
    assert!(!export_answers(&uri), "a detached export name is refused");
}

/// Cinder's transitions and refusals: reserved → attaching → in-use →
/// available; a second attachment of a non-multiattach volume and deleting
/// an attached volume refused with Cinder's 400s; the API below 3.27 is 404;
/// `mode: ro` (3.54) gives an export that refuses writes.
#[test]
fn attachments_move_the_volume_through_cinders_statuses_and_refuse_what_cinder_refuses() {
    venv();
    let e = Env::start();
    e.typed("FE", "luks2", "front-end");
    let vol = e.volume("FE");

    let old = http(e.srv.port, "GET", "/v3/attachments", &[("X-Auth-Token", "u:notused"), ("OpenStack-API-Version", "volume 3.26")], None).unwrap();
    assert_eq!(old.0, 404, "{}", old.1);

    let (st, a) = e.post("/v3/attachments", json!({"attachment": {"volume_uuid": vol, "instance_uuid": "server-1"}}));
    assert_eq!(st, 200, "{a}");
    let a = &a["attachment"];
    assert_eq!((a["status"].as_str(), a["connection_info"].is_null()), (Some("reserved"), true), "{a}");
    assert_eq!(e.status(&vol), "reserved");
    let id = a["id"].as_str().unwrap().to_owned();

    let (st, second) = e.post("/v3/attachments", json!({"attachment": {"volume_uuid": vol, "instance_uuid": "server-2", "connector": connector()}}));
    assert_eq!(st, 400, "{second}");
    assert_eq!(second["badRequest"]["message"], format!("Invalid volume: Volume {vol} status must be available or downloading"));

    let (st, u) = e.srv.http("PUT", &format!("/v3/attachments/{id}"), Some(json!({"attachment": {"connector": connector()}}).to_string().as_bytes()));
    assert_eq!(st, 200, "{u}");
    assert_eq!(u["attachment"]["status"], "attaching");
    let uri = conn_data(&u["attachment"])["uri"].as_str().unwrap().to_owned();
    assert!(export_answers(&uri));
    assert_eq!(e.status(&vol), "attaching");

    let (st, c) = e.post(&format!("/v3/attachments/{id}/action"), json!({"os-complete": {}}));
    assert_eq!(st, 204, "{c}");
    assert_eq!(e.status(&vol), "in-use");
    let (st, list) = e.srv.http("GET", &format!("/v3/attachments?volume_id={vol}"), None);
    assert_eq!(st, 200, "{list}");
    assert_eq!(list["attachments"][0]["status"], "attached");

    // A forced backup of the attached volume leaves it in-use.
    let b = crate::paths::backup(&e.srv, &["--force", &vol]);
    assert_eq!(b["volume_id"], vol.as_str());
    assert_eq!(e.status(&vol), "in-use", "back to in-use after the backup");
    assert!(export_answers(&uri), "the export stayed up");

    let (st, d) = e.srv.http("DELETE", &format!("/v3/volumes/{vol}"), None);
    assert_eq!(st, 400, "{d}");
    assert!(d["badRequest"]["message"].as_str().unwrap().contains("must not be migrating, attached"), "{d}");
    let (st, d) = e.srv.http("DELETE", &format!("/v3/volumes/{vol}?force=true"), None);
    assert_eq!(st, 400, "forcing does not delete an attached volume either: {d}");

    let (st, gone) = e.srv.http("DELETE", &format!("/v3/attachments/{id}"), None);
    assert_eq!((st, gone["attachments"].clone()), (200, json!([])));
    assert_eq!(e.status(&vol), "available");
    assert!(!export_answers(&uri));
    let (st, _) = e.srv.http("GET", &format!("/v3/attachments/{id}"), None);
    assert_eq!(st, 404);

    // Read-only: the export refuses writes, reads work.
    let (st, ro) = e.post("/v3/attachments", json!({"attachment": {"volume_uuid": vol, "instance_uuid": "s", "connector": connector(), "mode": "ro"}}));
    assert_eq!(st, 200, "{ro}");
    let data = conn_data(&ro["attachment"]);
    assert_eq!(data["access_mode"], "ro");
    let uri = data["uri"].as_str().unwrap();
    let w = qemu_io_raw(uri, &["write -P 1 0 4k"]);
    let text = String::from_utf8_lossy(&w.stderr);
    assert!(!w.status.success() && text.contains("Permission denied"), "qemu cannot open a read-only export for writing: {text}");
    ok(&run(Command::new("qemu-io").args(["-r", "-f", "raw", uri, "-c", "read 0 4k"])), "read-only read");

    // Another project sees none of it.
    let (st, other) = e.srv.http_as("bob", "GET", &format!("/v3/attachments/{}", ro["attachment"]["id"].as_str().unwrap()), None);
    assert_eq!(st, 404, "{other}");
}

/// The legacy actions Nova's old path uses, in its order: os-reserve,
/// os-initialize_connection (a live export), os-attach, os-begin_detaching,
/// os-roll_detaching, os-begin_detaching, os-terminate_connection (export
/// gone), os-detach; and os-reserve undone by os-unreserve.
#[test]
fn legacy_attach_actions_round_trip() {
    let e = Env::start();
    e.typed("FE", "luks", "front-end");
    let vol = e.volume("FE");

    assert_eq!(e.action(&vol, json!({"os-reserve": {}})).0, 202);
    assert_eq!(e.status(&vol), "attaching");
    assert_eq!(e.action(&vol, json!({"os-unreserve": {}})).0, 202);
    assert_eq!(e.status(&vol), "available");

    assert_eq!(e.action(&vol, json!({"os-reserve": null})).0, 202);
    let (st, ci) = e.action(&vol, json!({"os-initialize_connection": {"connector": connector()}}));
    assert_eq!(st, 200, "{ci}");
    let data = ci["connection_info"]["data"].clone();
    assert_eq!(ci["connection_info"]["driver_volume_type"], "nbd");
    let uri = data["uri"].as_str().unwrap().to_owned();
    assert!(export_answers(&uri));
    let (_, pass_file) = e.pass_file(&vol);
    ok(&qemu_io_luks(&data, &pass_file, &["write -P 0x11 0 64k", "read -P 0x11 0 64k"]), "qemu-io over the legacy connection");

    let (st, body) = e.action(&vol, json!({"os-attach": {"instance_uuid": "server-9", "mountpoint": "/dev/vdc", "mode": "rw"}}));
    assert_eq!(st, 202, "{body}");
    let v = e.srv.volume(&vol);
    assert_eq!(v["status"], "in-use");
    assert_eq!((v["attachments"][0]["server_id"].as_str(), v["attachments"][0]["device"].as_str()), (Some("server-9"), Some("/dev/vdc")));

    assert_eq!(e.action(&vol, json!({"os-begin_detaching": {}})).0, 202);
    assert_eq!(e.status(&vol), "detaching");
    assert_eq!(e.action(&vol, json!({"os-roll_detaching": {}})).0, 202);
    assert_eq!(e.status(&vol), "in-use");
    assert_eq!(e.action(&vol, json!({"os-begin_detaching": {}})).0, 202);
    assert_eq!(e.action(&vol, json!({"os-terminate_connection": {"connector": connector()}})).0, 202);
    assert!(!export_answers(&uri), "terminate_connection closes the export");
    let att = v["attachments"][0]["attachment_id"].as_str().unwrap();
    assert_eq!(e.action(&vol, json!({"os-detach": {"attachment_id": att}})).0, 202);
    let v = e.srv.volume(&vol);
    assert_eq!((v["status"].as_str(), v["attachments"].clone()), (Some("available"), json!([])));

    let (st, body) = e.action(&vol, json!({"os-begin_detaching": {}}));
    assert_eq!(st, 400, "nothing attached: {body}");
    let (st, body) = e.action(&vol, json!({"os-initialize_connection": {}}));
    assert_eq!(st, 400, "a connector is required: {body}");
}

/// Keyslot mode on attached volumes of both control locations: the
/// consumer keeps reading through the same export while the key changes,
/// and the volume is in-use again afterwards; volume-key mode on an
/// attached front-end volume is a 409.
#[test]
fn keyslot_rekey_works_on_attached_volumes_and_volume_key_on_front_end_is_409() {
    let e = Env::start();
    e.typed("FE", "luks", "front-end");
    e.typed("BE", "luks2", "back-end");
    let (fe, be) = (e.volume("FE"), e.volume("BE"));
    let (fa, ba) = (e.attach(&fe, connector()), e.attach(&be, connector()));
    for a in [&fa, &ba] {
        assert_eq!(e.post(&format!("/v3/attachments/{}/action", a["id"].as_str().unwrap()), json!({"os-complete": {}})).0, 204);
    }
    let (fdata, bdata) = (conn_data(&fa), conn_data(&ba));
    let (_, fpass) = e.pass_file(&fe);
    ok(&qemu_io_luks(&fdata, &fpass, &["write -P 0x21 0 1M"]), "front-end write");
    let buri = bdata["uri"].as_str().unwrap();
    ok(&qemu_io_raw(buri, &["write -P 0x22 0 1M"]), "back-end write");

    let (st, body) = e.action(&fe, json!({"os-rekey": {"mode": "volume-key"}}));
    assert_eq!(st, 409, "{body}");
    assert!(body["conflictingRequest"]["message"].as_str().unwrap().contains("front-end"), "{body}");
    // (Volume-key mode on the attached back-end volume is admitted and runs
    // online: `volume_key_rekey_of_an_attached_back_end_volume_…`.)

    for vol in [&fe, &be] {
        let before = e.srv.volume(vol)["encryption_key_id"].as_str().unwrap().to_owned();
        let (st, body) = e.action(vol, json!({"os-rekey": {"mode": "keyslot"}}));
        assert_eq!(st, 202, "{body}");
        wait_status(&e, vol, "in-use");
        let after = e.srv.volume(vol)["encryption_key_id"].as_str().unwrap().to_owned();
        assert_ne!(before, after, "a new key");
        let path = volume_path(e.data(), vol);
        assert!(cryptsetup_opens(&path, &passphrase(e.data(), &after)), "the new key opens the volume");
    }
    // The consumers go on: the back-end one through the same export, the
    // front-end one reopening with the new key (same volume key).
    ok(&qemu_io_raw(buri, &["read -P 0x22 0 1M", "write -P 0x23 1M 1M", "read -P 0x23 1M 1M"]), "back-end after rekey");
    let (_, fpass) = e.pass_file(&fe);
    ok(&qemu_io_luks(&fdata, &fpass, &["read -P 0x21 0 1M"]), "front-end after rekey, new key");
}

/// A restarted `rekey serve` serves its attached volumes' exports again
/// under the same names: the consumer reconnects to the same URI and finds
/// what it wrote (and flushed) before the kill.
#[test]
fn restart_serves_attached_exports_again() {
    let mut e = Env::start();
    e.typed("BE", "luks2", "back-end");
    e.typed("FE", "luks", "front-end");
    let (be, fe) = (e.volume("BE"), e.volume("FE"));
    let (ba, fa) = (e.attach(&be, connector()), e.attach(&fe, connector()));
    let (buri, furi) = (conn_data(&ba)["uri"].as_str().unwrap().to_owned(), conn_data(&fa)["uri"].as_str().unwrap().to_owned());
    ok(&qemu_io_raw(&buri, &["write -P 0x44 8M 1M", "flush"]), "write before the kill");

    e.restart();
    assert!(export_answers(&buri) && export_answers(&furi), "both exports are back");
    ok(&qemu_io_raw(&buri, &["read -P 0x44 8M 1M"]), "read after the restart");
    let (st, a) = e.srv.http("GET", &format!("/v3/attachments/{}", ba["id"].as_str().unwrap()), None);
    assert_eq!(st, 200, "{a}");
    assert_eq!(conn_data(&a["attachment"])["uri"], buri.as_str(), "the same URI");
    let (st, _) = e.srv.http("DELETE", &format!("/v3/attachments/{}", ba["id"].as_str().unwrap()), None);
    assert_eq!(st, 200);
    assert!(!export_answers(&buri));
    assert!(export_answers(&furi), "the other export is untouched");
}

/// A CA and a server certificate for 127.0.0.1 (openssl CLI): `server/` in
/// the layout `[nbd] tls_dir` reads, `client/` with the CA for qemu's
/// `tls-creds-x509,endpoint=client`.
fn make_certs(dir: &Path) -> (PathBuf, PathBuf) {
    let (server, client) = (dir.join("server"), dir.join("client"));
    std::fs::create_dir_all(&server).unwrap();
    std::fs::create_dir_all(&client).unwrap();
    let (ca_key, ca_cert, csr, ext) = (dir.join("ca-key.pem"), client.join("ca-cert.pem"), dir.join("s.csr"), dir.join("ext.cnf"));
    let openssl = |args: &[&str]| ok(&run(Command::new("openssl").args(args)), "openssl");
    let p = |x: &Path| x.to_str().unwrap().to_owned();
    openssl(&["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=rekey attach test CA",
        "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        "-keyout", &p(&ca_key), "-out", &p(&ca_cert)]);
    openssl(&["req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1", "-keyout", &p(&server.join("server-key.pem")), "-out", &p(&csr)]);
    std::fs::write(&ext, "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\nkeyUsage=critical,digitalSignature,keyEncipherment\n").unwrap();
    openssl(&["x509", "-req", "-days", "2", "-set_serial", "7", "-in", &p(&csr), "-CA", &p(&ca_cert), "-CAkey", &p(&ca_key),
        "-extfile", &p(&ext), "-out", &p(&server.join("server-cert.pem"))]);
    (server, client)
}

/// `--nbd-socket` and `--nbd-tls-dir`: a connector asking for the Unix
/// socket gets an `nbds+unix://` URI, the TCP one `nbds://`; qemu reaches
/// the back-end export over both with x509 credentials, and without TLS it
/// gets nothing.
#[test]
fn unix_socket_and_tls_exports_follow_the_nbd_flags() {
    require_tool("qemu-io", &["--version"]);
    let dir = tempfile::tempdir().unwrap();
    // Credentials that cannot be read stop `rekey serve` at once.
    let out = run(Command::new(REKEY).args(["serve", "--listen", &format!("127.0.0.1:{}", free_port())]).arg("--data-dir").arg(dir.path().join("bad")).arg("--nbd-tls-dir").arg(dir.path()));
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("[nbd] tls_dir"), "{}", String::from_utf8_lossy(&out.stderr));
    let (server_creds, client_creds) = make_certs(dir.path());
    let sock = dir.path().join("nbd.sock");
    let nbd = format!("127.0.0.1:{}", free_port());
    let args = ["--nbd-listen", &nbd, "--nbd-socket", sock.to_str().unwrap(), "--nbd-tls-dir", server_creds.to_str().unwrap()];
    let srv = Server::start_with(&dir.path().join("data"), &args, &[]);
    let e = Env { srv, nbd_port: 0, dir };
    e.typed("BE", "luks2", "back-end");
    let vol = e.volume("BE");
    let mut c = connector();
    c["nbd_socket"] = json!(true);
    let data = conn_data(&e.attach(&vol, c));
    let name = data["export_name"].as_str().unwrap();
    assert_eq!(data["tls"], true);
    assert_eq!(data["uri"], format!("nbds+unix:///{name}?socket={}", sock.display()));
    assert_eq!(data["socket"], sock.to_str().unwrap());

    let creds = format!("tls-creds-x509,id=t0,endpoint=client,dir={}", client_creds.display());
    let over_unix = format!(
        "driver=raw,file.driver=nbd,file.server.type=unix,file.server.path={},file.export={name},file.tls-creds=t0,file.tls-hostname=127.0.0.1",
        sock.display()
    );
    let out = run(Command::new("qemu-io").args(["--object", &creds, "--image-opts", &over_unix, "-c", "write -P 0x55 0 1M", "-c", "read -P 0x55 0 1M"]));
    ok(&out, "qemu-io over the Unix socket with TLS");
    let over_tcp = format!(
        "driver=raw,file.driver=nbd,file.server.type=inet,file.server.host={},file.server.port={},file.export={name},file.tls-creds=t0",
        data["host"].as_str().unwrap(),
        data["port"]
    );
    ok(&run(Command::new("qemu-io").args(["--object", &creds, "--image-opts", &over_tcp, "-c", "read -P 0x55 0 1M"])), "qemu-io over TCP with TLS");
    let clear = format!("nbd://{}:{}/{name}", data["host"].as_str().unwrap(), data["port"]);
    assert!(!export_answers(&clear), "without TLS the export is not served");
}

// ---- volume-key rekey under live I/O -------------------------------------

#[path = "../../../nbd/tests/client/mod.rs"]
mod nbd_client;

/// Per written block: last version flushed, last version sent.
struct Ledger {
    flushed: Vec<std::sync::atomic::AtomicU64>,
    sent: Vec<std::sync::atomic::AtomicU64>,
    unanswered: Vec<std::sync::atomic::AtomicBool>,
    writes: std::sync::atomic::AtomicU64,
}

const LIVE_BLOCK: usize = 4096;
/// Blocks written: one per 128 KiB over the plaintext of a 1 GiB LUKS2
/// volume (1008 MiB after its 16 MiB header).
const LIVE_BLOCKS: usize = 1008 * 8;
const LIVE_STRIDE: u64 = 128 << 10;

fn live_block(i: usize, v: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(LIVE_BLOCK);
    while out.len() < LIVE_BLOCK {
        out.extend_from_slice(&(i as u64).to_be_bytes());
        out.extend_from_slice(&v.to_be_bytes());
        out.extend_from_slice(&(i as u64 ^ v.rotate_left(17) ^ 0x5eed).to_be_bytes());
        out.extend_from_slice(b"rekey-ok");
    }
    out
}

/// A writer on its own NBD connection, owning blocks `i % 2 == w`; it
/// reconnects (the same URI) whenever the server goes away.
fn live_writer(port: u16, export: &str, l: &Ledger, w: usize, stop: &std::sync::atomic::AtomicBool) {
    use std::sync::atomic::Ordering::SeqCst;
    let mut seed = 0x2545_f491_4f6c_dd1du64 ^ (w as u64 + 1);
    'connect: while !stop.load(SeqCst) {
        let Ok(mut c) = nbd_client::Client::connect(port, export) else {
            std::thread::sleep(Duration::from_millis(50));
            continue;
        };
        let mut pending = vec![];
        while !stop.load(SeqCst) {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let i = (seed as usize % (LIVE_BLOCKS / 2)) * 2 + w;
            let v = l.sent[i].load(SeqCst) + 1;
            l.sent[i].store(v, SeqCst);
            if c.write(i as u64 * LIVE_STRIDE, &live_block(i, v)).is_err() {
                l.unanswered[i].store(true, SeqCst);
                continue 'connect;
            }
            l.writes.fetch_add(1, SeqCst);
            pending.push((i, v));
            if pending.len() == 4 {
                if c.flush().is_err() {
                    continue 'connect;
                }
                for (i, v) in pending.drain(..) {
                    l.flushed[i].store(v, SeqCst);
                }
            }
        }
    }
}

/// How far the re-encryption recorded in the volume's header got, if one is
/// recorded (an error while the header is being rewritten under the read).
fn reencrypt_done(path: &Path) -> rekey_luks::Result<Option<(u64, u64)>> {
    let rekey_luks::Header::Luks2(h) = rekey_luks::volume::read_header(&FileIo::open_read_only(path).unwrap())? else {
        return Ok(None);
    };
    let Some(st) = rekey_luks::luks2::reenc::parse(&h.meta)? else { return Ok(None) };
    Ok(Some(match st.progress(&h.meta, 1 << 30)? {
        rekey_luks::luks2::reenc::Progress::Between { done } => (done, 1 << 30),
        rekey_luks::luks2::reenc::Progress::Hot { offset, .. } => (offset, 1 << 30),
    }))
}

/// `os-rekey` volume-key on an attached back-end volume: two consumers keep
/// writing versioned blocks (and flushing) through the export while the
/// volume is re-encrypted under them; `rekey serve` is killed with SIGKILL
/// at randomized points mid-re-encryption and started again; the consumers
/// reconnect to the same URI, the job resumes and finishes. Afterwards every
/// block holds its last flushed version (or a later one sent), cryptsetup
/// shows a new volume key, and the old key opens nothing.
#[test]
fn volume_key_rekey_of_an_attached_back_end_volume_runs_under_live_writes_and_kill_9() {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
    use std::sync::Arc;
    let mut e = Env::start();
    e.typed("BE", "luks2", "back-end");
    let vol = e.volume("BE");
    let a = e.attach(&vol, connector());
    assert_eq!(e.post(&format!("/v3/attachments/{}/action", a["id"].as_str().unwrap()), json!({"os-complete": {}})).0, 204);
    let data = conn_data(&a);
    let export = data["export_name"].as_str().unwrap().to_owned();
    let path = volume_path(e.data(), &vol);
    let (old_pass, _) = e.pass_file(&vol);
    let old_vk = volume_key_hex(&path, &old_pass);
    let old_key_id = e.srv.volume(&vol)["encryption_key_id"].as_str().unwrap().to_owned();

    let ledger = Arc::new(Ledger {
        flushed: (0..LIVE_BLOCKS).map(|_| AtomicU64::new(0)).collect(),
        sent: (0..LIVE_BLOCKS).map(|_| AtomicU64::new(0)).collect(),
        unanswered: (0..LIVE_BLOCKS).map(|_| AtomicBool::new(false)).collect(),
        writes: AtomicU64::new(0),
    });
    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..2)
        .map(|w| {
            let (l, stop, export, port) = (ledger.clone(), stop.clone(), export.clone(), e.nbd_port);
            std::thread::spawn(move || live_writer(port, &export, &l, w, &stop))
        })
        .collect();
    while ledger.writes.load(SeqCst) < 200 {
        std::thread::sleep(Duration::from_millis(10));
    }

    let (st, body) = e.action(&vol, json!({"os-rekey": {"mode": "volume-key"}}));
    assert_eq!(st, 202, "{body}");
    let mut seed = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64 | 1;
    eprintln!("kill-point seed {seed}");
    // The issue asks for at least 20 randomized kill points of `rekey serve`.
    const KILLS: usize = 20;
    let mut kills = 0;
    let mut last = 0;
    // Kill whenever the header shows progress past the last kill, after a
    // random extra wait, until the re-encryption ends by itself.
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        assert!(Instant::now() < deadline, "the re-encryption did not finish");
        match reencrypt_done(&path) {
            Ok(Some((done, total))) if done > last && done < total && kills < KILLS + 4 => {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                std::thread::sleep(Duration::from_millis(seed % 300));
                let before = ledger.writes.load(SeqCst);
                e.restart();
                kills += 1;
                last = reencrypt_done(&path).ok().flatten().map_or(total, |(d, _)| d);
                eprintln!("kill {kills}: at {last} of {total}, {before} writes so far");
            }
            Ok(None) if e.status(&vol) == "in-use" => break,
            _ => std::thread::sleep(Duration::from_millis(20)),
        }
    }
    assert!(kills >= KILLS, "only {kills} kills landed mid-re-encryption");
    let new_key_id = e.srv.volume(&vol)["encryption_key_id"].as_str().unwrap().to_owned();
    assert_ne!(new_key_id, old_key_id, "the volume has a new key");
    let at_end = ledger.writes.load(SeqCst);
    while ledger.writes.load(SeqCst) < at_end + 100 {
        std::thread::sleep(Duration::from_millis(10));
    }
    stop.store(true, SeqCst);
    for w in writers {
        w.join().unwrap();
    }

    let mut c = nbd_client::Client::connect(e.nbd_port, &export).unwrap();
    let mut buf = vec![0u8; LIVE_BLOCK];
    let mut checked = 0;
    for i in 0..LIVE_BLOCKS {
        let (flushed, sent) = (ledger.flushed[i].load(SeqCst), ledger.sent[i].load(SeqCst));
        if sent == 0 {
            continue;
        }
        checked += 1;
        c.read(i as u64 * LIVE_STRIDE, &mut buf).unwrap();
        let v = u64::from_be_bytes(buf[8..16].try_into().unwrap());
        if live_block(i, v) != buf {
            assert!(ledger.unanswered[i].load(SeqCst), "block {i} is torn, yet every write to it was answered");
            continue;
        }
        assert!((flushed..=sent).contains(&v), "block {i}: version {v}, flushed {flushed}, sent {sent}");
    }
    assert!(checked > 1000, "only {checked} blocks written");
    drop(c);

    let new_pass = passphrase(e.data(), &new_key_id);
    let new_vk = volume_key_hex(&path, &new_pass);
    assert_ne!(new_vk, old_vk, "cryptsetup shows a new volume key");
    assert!(!cryptsetup_opens(&path, &old_pass), "the old passphrase opens nothing");
    let key_file = e.dir.path().join("old.vk");
    let bytes: Vec<u8> = (0..old_vk.len()).step_by(2).map(|i| u8::from_str_radix(&old_vk[i..i + 2], 16).unwrap()).collect();
    std::fs::write(&key_file, bytes).unwrap();
    let out = run(Command::new("cryptsetup").args(["open", "--test-passphrase", "--volume-key-file"]).arg(&key_file).arg(&path));
    assert!(!out.status.success(), "the old volume key opens nothing");
}
