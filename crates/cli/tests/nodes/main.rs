//! Several `rekey serve` nodes on one PostgreSQL, requests spread
//! round-robin, nodes killed with SIGKILL in the middle of rekeys and
//! re-encryptions, then restarted under their old names. The same run on
//! each set-up a cloud would have: the file backend on one shared data
//! directory with the embedded key store (both shared between the processes
//! of one host), the real Barbican (REKEY_BARBICAN_URL), and the real Ceph
//! (CEPH_CONF; builds with `--features rekey-cli/rbd`) with Barbican.
//! Needs REKEY_TEST_PG_URL (from `scripts/postgres.sh start`) and
//! cryptsetup; a missing service fails the test that needs it.

#[allow(dead_code)]
#[path = "../api/harness.rs"]
mod harness;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};

use rekey_service::fault::{Point, Step};

use harness::*;

/// Lease without heartbeat: how long a dead node's jobs wait for another.
const LEASE_S: u64 = 3;
/// Jobs of each kind (clone, from snapshot, restore): 60 in all.
const PER_KIND: usize = 20;

/// The first MiB of plaintext of the LUKS volume in `path`.
fn plaintext_at_0(path: &Path, pass: &[u8]) -> Vec<u8> {
    let v = rekey_luks::Volume::open(rekey_luks::FileIo::open_read_only(path).unwrap()).unwrap();
    let plain = v.decrypted(pass).unwrap();
    let mut buf = vec![0u8; 1 << 20];
    rekey_luks::BlockIo::read_at(&plain, &mut buf, 0).unwrap();
    buf
}

/// One step attempt from the log: (node, epoch, started, ended or -1, step).
type Attempt = (String, i64, i64, i64, String);

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as i64
}

/// Where the nodes keep keys.
#[derive(Debug, Clone, Copy)]
enum Keys {
    /// The embedded store in the shared data directory.
    Embedded,
    /// The real Barbican of REKEY_BARBICAN_URL.
    Barbican,
}

/// Where the nodes keep volumes.
#[derive(Debug, Clone, Copy)]
enum Volumes {
    /// The file backend in the shared data directory.
    File,
    /// Pool `rbd` of the real Ceph of CEPH_CONF.
    #[cfg_attr(not(feature = "rbd"), allow(dead_code))]
    Rbd,
}

/// One set-up: its configuration file (database, key manager, backend),
/// which every node and every admin command of the test reads.
struct Setup {
    keys: Keys,
    volumes: Volumes,
    data: PathBuf,
    url: String,
    config: PathBuf,
}

impl Setup {
    fn new(dir: &Path, keys: Keys, volumes: Volumes) -> Setup {
        let data = dir.join("data");
        std::fs::create_dir_all(&data).unwrap();
        let url = postgres_url(&data).expect("a PostgreSQL database");
        let mut toml = format!("data_dir = {:?}\ndatabase_url = {url:?}\n", data.to_str().unwrap());
        if let Keys::Barbican = keys {
            let b = std::env::var("REKEY_BARBICAN_URL").unwrap_or_else(|_| panic!("REKEY_BARBICAN_URL is not set: start `scripts/barbican.sh start`"));
            toml += &format!("[key_manager]\nbackend = \"barbican\"\nurl = {b:?}\n");
        }
        if let Volumes::Rbd = volumes {
            let conf = ceph_conf();
            toml += &format!("[backend]\ntype = \"rbd\"\npool = \"rbd\"\nceph_conf = {:?}\n", conf.to_str().unwrap());
        }
        // The harness's admin commands (`rekey key show`, `volume audit`,
        // `volume path`) read `<data>.db.toml` (see `db_args`): the whole
        // configuration goes there, so they see this set-up's key manager
        // and backend as the nodes do.
        let config = data.with_extension("db.toml");
        std::fs::write(&config, toml).unwrap();
        Setup { keys, volumes, data, url, config }
    }

    /// A copy of the first `len` bytes of volume `id` in a local file, for
    /// cryptsetup and the plaintext checks (the file backend's volume is
    /// such a file already; an RBD image is read through librbd, no map).
    fn image(&self, id: &str, len: u64) -> PathBuf {
        match self.volumes {
            Volumes::File => volume_path(&self.data, id),
            Volumes::Rbd => rbd_head(&ceph_conf(), id, len, &self.data.with_extension(format!("{id}.head"))),
        }
    }

    /// Who holds or watches volume `id` (RBD: `rbd status` and `rbd lock
    /// ls`), for a failure's message.
    fn image_locks(&self, id: &str) -> String {
        let Volumes::Rbd = self.volumes else { return String::new() };
        let conf = ceph_conf();
        ["status", "lock ls"]
            .iter()
            .map(|cmd| {
                let mut args: Vec<&str> = cmd.split(' ').collect();
                let image = format!("rbd/volume-{id}");
                args.push(&image);
                let out = Command::new("rbd").arg("-c").arg(&conf).args(&args).output().expect("run rbd");
                format!("rbd {cmd}: {}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
            })
            .collect()
    }

    /// Writes `data` as plaintext into volume `id` (at each of the
    /// harness's OFFSETS on files; at 0 on RBD, through `rekey luks import`).
    fn write_plaintext(&self, id: &str, pass: &[u8], data: &[u8]) {
        match self.volumes {
            Volumes::File => write_plaintext(&volume_path(&self.data, id), pass, data),
            Volumes::Rbd => {
                let (key, plain) = (self.data.with_extension("import.key"), self.data.with_extension("import.bin"));
                std::fs::write(&key, pass).unwrap();
                std::fs::write(&plain, data).unwrap();
                let out = Command::new(REKEY)
                    .args(["luks", "import", "-d", key.to_str().unwrap(), plain.to_str().unwrap(), &format!("rbd:rbd/volume-{id}")])
                    .output()
                    .unwrap();
                assert!(out.status.success(), "rekey luks import: {}", String::from_utf8_lossy(&out.stderr));
            }
        }
    }
}

fn ceph_conf() -> PathBuf {
    std::env::var_os("CEPH_CONF").map(PathBuf::from).unwrap_or_else(|| {
        panic!("CEPH_CONF is not set: start `scripts/ceph.sh start` and export the CEPH_CONF it prints")
    })
}

/// The first `len` bytes of RBD image `volume-<id>` (header, keyslots and
/// the first plaintext pattern) copied to `to`.
#[cfg(feature = "rbd")]
fn rbd_head(conf: &Path, id: &str, len: u64, to: &Path) -> PathBuf {
    let io = rekey_storage::open_rbd_spec(&format!("rbd:rbd/volume-{id}"), Some(conf), None).unwrap();
    let mut buf = vec![0u8; len as usize];
    io.read_at(&mut buf, 0).unwrap();
    std::fs::write(to, &buf).unwrap();
    to.to_owned()
}

#[cfg(not(feature = "rbd"))]
fn rbd_head(_: &Path, _: &str, _: u64, _: &Path) -> PathBuf {
    unreachable!("the RBD set-up is built with --features rekey-cli/rbd only")
}

/// What the checks read of a volume: the LUKS2 area and the first MiB of data.
const HEAD: u64 = 18 << 20;

struct Cluster {
    setup: Setup,
    /// The project every request is made in: this run's own, so the audit
    /// of a key manager other tests share sees only this run's keys.
    project: String,
    nodes: Vec<Option<Server>>,
}

/// A node, called as the run's project.
struct Node<'a> {
    srv: &'a Server,
    project: &'a str,
}

impl Node<'_> {
    fn http(&self, method: &str, path: &str, body: Option<&[u8]>) -> (u16, Value) {
        self.srv.http_as(self.project, method, path, body)
    }
    fn volume(&self, id: &str) -> Value {
        let (st, v) = self.http("GET", &format!("/v3/volumes/{id}"), None);
        assert_eq!(st, 200, "{v}");
        v["volume"].clone()
    }
    fn create_type(&self, name: &str, provider: Option<&str>, specs: &[(&str, &str)]) -> String {
        self.srv.create_type(name, provider, specs)
    }
    /// Creates a volume and waits for it to settle; its record.
    fn create_volume(&self, body: Value) -> Value {
        let (st, v) = self.http("POST", "/v3/volumes", Some(body.to_string().as_bytes()));
        assert_eq!(st, 202, "{v}");
        let id = v["volume"]["id"].as_str().unwrap().to_owned();
        wait_status(self, &format!("/v3/volumes/{id}"), "volume", &["creating"], Duration::from_secs(120))
    }
}

impl Cluster {
    fn start_node(&mut self, i: usize, env: &[(&str, &str)]) {
        let name = format!("node{i}");
        let args = vec![
            "--config".to_owned(),
            self.setup.config.to_str().unwrap().to_owned(),
            "--node-name".to_owned(),
            name.clone(),
            "--lease-seconds".to_owned(),
            LEASE_S.to_string(),
        ];
        let log = self.setup.data.with_extension(format!("{name}.log"));
        self.nodes[i] = Some(Server::start_logged(&self.setup.data, &args, env, &log));
    }
    fn node(&self, i: usize) -> Node<'_> {
        Node { srv: self.nodes[i].as_ref().expect("node running"), project: &self.project }
    }
    /// The nodes' log lines that name `id`, for a failure's message.
    fn log_lines(&self, id: &str) -> String {
        (0..self.nodes.len())
            .filter_map(|i| std::fs::read_to_string(self.setup.data.with_extension(format!("node{i}.log"))).ok())
            .flat_map(|l| l.lines().filter(|l| l.contains(id)).map(str::to_owned).collect::<Vec<_>>())
            .collect::<Vec<_>>()
            .join("\n")
    }
    /// Any live node, round-robin by `n`.
    fn any(&self, n: usize) -> Node<'_> {
        let live: Vec<&Server> = self.nodes.iter().flatten().collect();
        Node { srv: live[n % live.len()], project: &self.project }
    }
}

/// Waits until `node` is in the middle of `step` (an attempt it started
/// and has not ended) of some job (of target `target`, if given): a key
/// manager or backend slower than another shifts when that happens.
fn wait_mid_step(url: &str, node: &str, step: &str, target: Option<&str>) {
    let of_target = target.map(|t| format!(" AND job_id IN (SELECT id FROM jobs WHERE target_id = '{t}')")).unwrap_or_default();
    let sql = format!("SELECT COUNT(*) FROM step_log WHERE node = '{node}' AND step = '{step}' AND ended_at IS NULL{of_target}");
    let t = Instant::now();
    while psql(url, &sql).trim() == "0" {
        assert!(t.elapsed() < Duration::from_secs(120), "{node} never started {step}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The sum of a counter's samples in a node's `/metrics`.
fn metric_sum(srv: &Server, name: &str) -> f64 {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", srv.port)).unwrap();
    write!(s, "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    text.lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
        .filter_map(|l| l.rsplit_once(' ').and_then(|(_, v)| v.parse::<f64>().ok()))
        .sum()
}

fn psql(url: &str, sql: &str) -> String {
    let out = Command::new("psql").args([url, "-AtX", "-F", "|", "-c", sql]).output().expect("run psql");
    assert!(out.status.success(), "psql: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

fn wait_status(srv: &Node, path: &str, field: &str, busy: &[&str], within: Duration) -> Value {
    let start = Instant::now();
    loop {
        let (st, v) = srv.http("GET", path, None);
        assert_eq!(st, 200, "{path}: {v}");
        let s = v[field]["status"].as_str().unwrap_or("").to_owned();
        if !busy.contains(&s.as_str()) {
            return v[field].clone();
        }
        assert!(start.elapsed() < within, "{path} still {s} after {within:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Deletes each of `ids` (`/v3/<what>/<id>`) and waits until all are gone.
fn delete_all(node: &Node, what: &str, ids: &[String]) {
    for id in ids {
        let (st, v) = node.http("DELETE", &format!("/v3/{what}/{id}"), None);
        assert_eq!(st, 202, "delete {what} {id}: {v}");
    }
    let t = Instant::now();
    for id in ids {
        while node.http("GET", &format!("/v3/{what}/{id}"), None).0 != 404 {
            assert!(t.elapsed() < Duration::from_secs(120), "{what} {id} not deleted");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// No step of any job ran on two nodes at once: per job, each attempt
/// starts after every earlier one ended; an attempt that never ended (its
/// node was killed) belongs to a killed node, is older than every later
/// attempt's epoch, and the kill came before the next attempt started.
/// Returns the takeovers: (job, step, killed node, node that went on).
fn check_step_log(url: &str, kills: &[(String, i64)], logs: &dyn Fn(&str) -> String) -> Vec<(String, String, String, String)> {
    // Times are milliseconds, so a short step (persist) can start and end in
    // the millisecond its successor starts: among attempts that started at
    // once, the one that ended first goes first (one that never ended, last).
    let rows = psql(
        url,
        "SELECT job_id, node, epoch, started_at, COALESCE(ended_at, -1), step, COALESCE(outcome, '') FROM step_log
         ORDER BY job_id, started_at, COALESCE(ended_at, 9223372036854775807), id",
    );
    let mut by_job: HashMap<String, Vec<Attempt>> = HashMap::new();
    let mut outcomes: HashMap<String, Vec<String>> = HashMap::new();
    for line in rows.lines().filter(|l| !l.is_empty()) {
        let f: Vec<&str> = line.split('|').collect();
        by_job.entry(f[0].to_owned()).or_default().push((
            f[1].to_owned(),
            f[2].parse().unwrap(),
            f[3].parse().unwrap(),
            f[4].parse().unwrap(),
            f[5].to_owned(),
        ));
        outcomes.entry(f[0].to_owned()).or_default().push(f[6].to_owned());
    }
    // A violation names the job's whole log, the kills and the nodes' log
    // lines about it: what a flaky run needs to be understood.
    let check = |ok: bool, job: &str, what: String| {
        if ok {
            return;
        }
        let attempts: Vec<String> = by_job[job]
            .iter()
            .zip(&outcomes[job])
            .map(|(a, o)| format!("  {} on {} epoch {}: {} .. {} {o}", a.4, a.0, a.1, a.2, a.3))
            .collect();
        panic!("job {job}: {what}\nits attempts (step on node epoch: started .. ended outcome):\n{}\nkills: {kills:?}\nnode logs:\n{}", attempts.join("\n"), logs(job));
    };
    let mut takeovers = Vec::new();
    for (job, steps) in &by_job {
        let mut ended_max = i64::MIN;
        for w in steps.windows(2) {
            let (a, b) = (&w[0], &w[1]);
            ended_max = ended_max.max(a.3);
            check(ended_max <= b.2, job, format!("an attempt ended at {ended_max}, after {} on {} started at {}", b.4, b.0, b.2));
            let killed_before_b = kills.iter().any(|(n, t)| *n == a.0 && *t >= a.2 && *t <= b.2);
            if killed_before_b && a.0 != b.0 {
                takeovers.push((job.clone(), a.4.clone(), a.0.clone(), b.0.clone()));
            }
            if a.3 >= 0 {
                check(a.3 <= b.2, job, format!("{} on {} (epoch {}) ended at {} after {} on {} started at {}", a.4, a.0, a.1, a.3, b.4, b.0, b.2));
            } else {
                let killed = kills.iter().filter(|(n, _)| *n == a.0).any(|(_, t)| *t >= a.2 && *t <= b.2);
                check(killed, job, format!("{} on {} never ended, and its node was not killed before {} on {} started", a.4, a.0, b.4, b.0));
                check(a.1 < b.1 || a.0 == b.0, job, format!("{} on {} epoch {} then {} on {} epoch {}", a.4, a.0, a.1, b.4, b.0, b.1));
            }
            check(a.1 <= b.1, job, format!("epochs went down: {} then {}", a.1, b.1));
        }
    }
    takeovers
}

#[test]
fn three_nodes_share_the_work_and_take_over_from_killed_ones() {
    three_nodes(Keys::Embedded, Volumes::File);
}

#[test]
fn three_nodes_on_barbican() {
    three_nodes(Keys::Barbican, Volumes::File);
}

// A killed node's librbd client keeps its exclusive lock and watch on the
// images it had open until the OSDs time the watch out (30 s): the node that
// takes its jobs over blocklists it first (`Backend::fence`), which the run
// checks in `ceph osd blocklist ls`.
//
// It failed under the full suite's load before (2026-12-02): a live node's
// leases ran out while its heartbeat waited behind a stalled step commit's
// row lock (node1 dwells 1.5 s between its add_keyslot write and the
// commit), so another node took the clone over while the first attempt's
// temporary RBD clone was still there (EBUSY). The heartbeat now skips rows
// a commit holds and every step's commit extends its own lease; the RBD
// backend retries rbd_clone on ENOENT and removes a leftover clone first.
// Alone, and beside the other two three-node runs, it then passed (73 s).
//
// In the full suite (2026-12-02 18:43 UTC, clean clone) a volume-key clone
// taken over by node0 at add_keyslot (after node2's kill -9) never finished
// that step in 153 s, and beside it
// `rbd::paths::api_volume_from_snapshot_on_rbd_in_volume_key_mode…` lost
// its HTTP connection: not understood (a re-encryption blocked on the dead
// client's image lock, or only starved). Alone it passes (206 s on the
// 2-core AMD machine, 2026-12-03), so scripts/test.sh runs it on its own
// after the main run instead of beside the RBD tests that share its Ceph.
#[cfg(feature = "rbd")]
#[test]
fn three_nodes_on_rbd_and_barbican() {
    three_nodes(Keys::Barbican, Volumes::Rbd);
}

fn three_nodes(keys: Keys, volumes: Volumes) {
    require_cryptsetup();
    std::env::set_var("REKEY_TEST_DATABASE", "postgres");
    let dir = tempfile::tempdir().unwrap();
    let setup = Setup::new(dir.path(), keys, volumes);
    eprintln!("set-up: {:?} keys, {:?} volumes", setup.keys, setup.volumes);
    let (data, url) = (setup.data.clone(), setup.url.clone());
    let project = format!("nodes{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
    let mut c = Cluster { setup, project, nodes: vec![None, None, None] };
    // node0 first: it makes the embedded key store's KEK; the others open it.
    c.start_node(0, &[]);
    // node1 dwells 1.5 s in each add_keyslot step, its keyslot written but
    // not yet recorded, so it holds jobs in the middle of their rekey when
    // it is killed.
    let stall = format!("{}:1500", Point::done(Step::AddKeyslot));
    c.start_node(1, &[("REKEY_STALL_AT", &stall)]);
    c.start_node(2, &[]);
    // Each node's storage session (RBD: its librbd client address), which
    // the node taking over a killed one's jobs must have fenced.
    let sessions: HashMap<String, String> = psql(&url, "SELECT node, session FROM storage_sessions")
        .lines()
        .filter_map(|l| l.split_once('|').map(|(n, s)| (n.to_owned(), s.to_owned())))
        .collect();

    // 60 volumes are past Cinder's default quota of 10: lift it.
    let unlimited = json!({"quota_set": {"volumes": -1, "snapshots": -1, "gigabytes": -1, "backups": -1}});
    let (st, q) = c.node(0).http("PUT", &format!("/v3/os-quota-sets/{}", c.project), Some(unlimited.to_string().as_bytes()));
    assert_eq!(st, 200, "{q}");
    // Sources: an encrypted volume with data, a snapshot and a backup of it.
    c.node(0).create_type("LUKS", Some("luks2"), &[]);
    let src = c.node(1).create_volume(json!({"volume": {"size": 1, "name": "src", "volume_type": "LUKS"}}));
    assert_eq!(src["status"], "available", "{src}");
    let src_id = src["id"].as_str().unwrap().to_owned();
    let src_key = src["encryption_key_id"].as_str().unwrap().to_owned();
    let src_pass = passphrase(&data, &src_key);
    c.setup.write_plaintext(&src_id, &src_pass, &pattern(5));
    let (st, s) = c.node(2).http("POST", "/v3/snapshots", Some(json!({"snapshot": {"volume_id": src_id}}).to_string().as_bytes()));
    assert_eq!(st, 202, "{s}");
    let snap_id = s["snapshot"]["id"].as_str().unwrap().to_owned();
    assert_eq!(wait_status(&c.node(0), &format!("/v3/snapshots/{snap_id}"), "snapshot", &["creating"], Duration::from_secs(60))["status"], "available");
    let (st, b) = c.node(0).http("POST", "/v3/backups", Some(json!({"backup": {"volume_id": src_id}}).to_string().as_bytes()));
    assert_eq!(st, 202, "{b}");
    let backup_id = b["backup"]["id"].as_str().unwrap().to_owned();
    assert_eq!(wait_status(&c.node(1), &format!("/v3/backups/{backup_id}"), "backup", &["creating"], Duration::from_secs(60))["status"], "available");
    wait_status(&c.node(2), &format!("/v3/volumes/{src_id}"), "volume", &["backing-up"], Duration::from_secs(60));

    // 60 requests, round-robin over the three nodes. Restores one at a
    // time per backup is Cinder's rule, so they go through `backup_id`
    // creates, which may run side by side here only if the backup is
    // `available`: they are sent after the clones, each once the last is done.
    let mut made: Vec<(String, &str)> = Vec::new();
    let mut n = 0;
    for i in 0..PER_KIND {
        for (kind, body) in [
            ("clone", json!({"volume": {"name": format!("clone-{i}"), "source_volid": src_id}})),
            ("from_snapshot", json!({"volume": {"name": format!("snap-{i}"), "snapshot_id": snap_id}})),
        ] {
            let (st, v) = c.any(n).http("POST", "/v3/volumes", Some(body.to_string().as_bytes()));
            assert_eq!(st, 202, "{kind} {i}: {v}");
            made.push((v["volume"]["id"].as_str().unwrap().to_owned(), kind));
            n += 1;
        }
    }
    // Kill node1 while it holds jobs mid-rekey (it dwells after new_key);
    // once its leases ran out and the others took its jobs, restart it
    // under its old name: its old leases are no longer its own.
    wait_mid_step(&url, "node1", "add_keyslot", None);
    let mut kills = Vec::new();
    c.nodes[1].as_mut().unwrap().kill9();
    kills.push(("node1".to_owned(), now_ms()));
    c.nodes[1] = None;
    std::thread::sleep(Duration::from_millis(LEASE_S * 1000 + 1500));
    c.start_node(1, &[]);
    for i in 0..PER_KIND {
        let body = json!({"volume": {"name": format!("restore-{i}"), "backup_id": backup_id}});
        let srv = c.any(n);
        let start = Instant::now();
        let v = loop {
            let token = format!("u:{}", c.project);
            let (st, v) = http(srv.srv.port, "POST", "/v3/volumes", &[("X-Auth-Token", &token), ("OpenStack-API-Version", "volume 3.47")], Some(body.to_string().as_bytes())).unwrap();
            if st == 202 {
                break v;
            }
            // The backup is `restoring` for the previous restore: wait for it.
            assert_eq!(st, 400, "restore {i}: {v}");
            assert!(start.elapsed() < Duration::from_secs(60), "restore {i}: backup never free: {v}");
            std::thread::sleep(Duration::from_millis(100));
        };
        made.push((v["volume"]["id"].as_str().unwrap().to_owned(), "restore"));
        n += 1;
    }

    // Mid re-encryption: a volume-key mode clone on node2, killed after
    // 300 ms, taken over by another node, which resumes the re-encryption.
    c.node(0).create_type("LUKS-VK", Some("luks2"), &[("rekey:mode", "volume-key")]);
    let vk_src = c.node(0).create_volume(json!({"volume": {"size": 1, "name": "vk-src", "volume_type": "LUKS-VK"}}));
    let vk_src_id = vk_src["id"].as_str().unwrap().to_owned();
    let vk_pass = passphrase(&data, vk_src["encryption_key_id"].as_str().unwrap());
    c.setup.write_plaintext(&vk_src_id, &vk_pass, &pattern(6));
    let (st, v) = c.node(2).http("POST", "/v3/volumes", Some(json!({"volume": {"name": "vk-clone", "source_volid": vk_src_id}}).to_string().as_bytes()));
    assert_eq!(st, 202, "{v}");
    let vk_id = v["volume"]["id"].as_str().unwrap().to_owned();
    wait_mid_step(&url, "node2", "add_keyslot", Some(&vk_id));
    std::thread::sleep(Duration::from_millis(300));
    c.nodes[2].as_mut().unwrap().kill9();
    kills.push(("node2".to_owned(), now_ms()));
    c.nodes[2] = None;

    // Every job ends available through a live node within lease + 30 s.
    let within = Duration::from_secs(LEASE_S + 30);
    // The volume-key clone is taken up within that time too; it then
    // re-encrypts its 1 GiB, which on a loaded 2-core machine through librbd
    // alone can take longer than 30 s (at 20 MiB/s, 50 s): its end is given
    // that much more, its takeover is held to lease + 30 s (below).
    let settled = Instant::now();
    let reencryption = Duration::from_secs(120);
    for (id, kind) in made.iter().map(|(i, k)| (i.as_str(), *k)).chain([(vk_id.as_str(), "vk-clone")]) {
        let budget = if id == vk_id { within + reencryption } else { within };
        let v = loop {
            let v = c.any(0).volume(id);
            if !["creating", "restoring-backup", "maintenance"].contains(&v["status"].as_str().unwrap_or("")) {
                break v;
            }
            if settled.elapsed() >= budget {
                let steps = psql(&url, &format!("SELECT node, epoch, step, started_at, ended_at, outcome FROM step_log WHERE job_id IN (SELECT id FROM jobs WHERE target_id = '{id}') ORDER BY started_at"));
                panic!("{kind} {id} still {} after {budget:?} (now {})\n{}\nsteps:\n{steps}\n{}\nstorage sessions: {sessions:?}", v["status"], now_ms(), c.log_lines(id), c.setup.image_locks(id));
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        assert_eq!(v["status"], "available", "{kind} {id}: {v}\n{}", c.log_lines(id));
    }
    let killed_at = kills.last().unwrap().1;
    let resumed: Vec<i64> = psql(&url, &format!("SELECT started_at FROM step_log WHERE step = 'add_keyslot' AND node <> 'node2' AND job_id IN (SELECT job_id FROM step_log WHERE node = 'node2' AND step = 'add_keyslot' AND ended_at IS NULL AND started_at <= {killed_at})"))
        .lines()
        .filter_map(|l| l.parse().ok())
        .collect();
    assert!(
        resumed.iter().any(|&t| t >= killed_at && t - killed_at <= within.as_millis() as i64),
        "the re-encryption node2 was killed in was not taken up within {within:?}: {resumed:?} (killed at {killed_at})"
    );
    c.start_node(2, &[]);

    // Each opens with its recorded key and not with its source's.
    for (id, kind) in &made {
        let v = c.any(1).volume(id);
        let key = v["encryption_key_id"].as_str().unwrap();
        assert_ne!(key, src_key, "{kind} {id} shares the source's key id");
        let path = c.setup.image(id, HEAD);
        let pass = passphrase(&data, key);
        assert!(cryptsetup_opens(&path, &pass), "{kind} {id} does not open with its recorded key");
        assert!(!cryptsetup_opens(&path, &src_pass), "{kind} {id} opens with the source's key");
        assert_eq!(plaintext_at_0(&path, &pass), pattern(5), "{kind} {id}: plaintext");
    }
    let v = c.any(2).volume(&vk_id);
    let path = c.setup.image(&vk_id, HEAD);
    let pass = passphrase(&data, v["encryption_key_id"].as_str().unwrap());
    assert!(cryptsetup_opens(&path, &pass), "vk-clone does not open with its recorded key");
    assert!(!cryptsetup_opens(&path, &vk_pass), "vk-clone opens with its source's key");
    assert_ne!(volume_key_hex(&path, &pass), volume_key_hex(&c.setup.image(&vk_src_id, HEAD), &vk_pass), "vk-clone shares its source's volume key");
    assert_eq!(plaintext_at_0(&path, &pass), pattern(6), "vk-clone plaintext");

    // The audit finds no key without a record, once the queue is drained.
    let t = Instant::now();
    while psql(&url, "SELECT COUNT(*) FROM key_deletions").trim() != "0" {
        assert!(t.elapsed() < Duration::from_secs(60), "key deletion queue not drained");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_no_orphan_keys(&data, "three nodes");
    assert_eq!(psql(&url, "SELECT COUNT(*) FROM jobs").trim(), "0", "jobs left");

    // The step log: no overlap, and the killed nodes' jobs were finished by
    // other nodes: node1's at a rekey step, node2's in the re-encryption.
    let takeovers = check_step_log(&url, &kills, &|job| c.log_lines(job));
    for t in &takeovers {
        eprintln!("taken over: job {} at {} from {} by {}", t.0, t.1, t.2, t.3);
    }
    assert!(takeovers.iter().any(|t| t.2 == "node1" && t.1 == "add_keyslot"), "no job of node1 was taken over mid-rekey: {takeovers:?}");
    assert!(
        takeovers.iter().any(|t| t.2 == "node2" && t.1 == "add_keyslot"),
        "the re-encryption node2 was killed in was not taken over: {takeovers:?}"
    );
    let nodes = psql(&url, "SELECT DISTINCT node FROM step_log ORDER BY 1");
    assert_eq!(nodes.lines().collect::<Vec<_>>(), ["node0", "node1", "node2"], "every node ran steps");
    eprintln!("jobs taken over by another node: {}", takeovers.len());

    // The live nodes' /metrics saw it too: takeovers counted, and the
    // taken-over re-encryption's 1 GiB (the restarted nodes count from zero).
    let total = |name: &str| -> f64 {
        c.nodes.iter().flatten().map(|srv| metric_sum(srv, name)).sum()
    };
    assert!(total("rekey_lease_takeovers_total") >= 1.0, "no lease takeover counted in /metrics");

    // The run's volumes go: on RBD they would stay in the cluster (the two
    // volume-key ones with 1 GiB written each) and fill a test OSD within a
    // few runs. Clones first, then what they were made from.
    let node = c.any(0);
    let clones: Vec<String> = made.iter().map(|(id, _)| id.clone()).chain([vk_id.clone()]).collect();
    delete_all(&node, "volumes", &clones);
    delete_all(&node, "snapshots", std::slice::from_ref(&snap_id));
    delete_all(&node, "backups", std::slice::from_ref(&backup_id));
    delete_all(&node, "volumes", &[src_id.clone(), vk_src_id.clone()]);

    if let Volumes::Rbd = c.setup.volumes {
        let out = Command::new("ceph").arg("-c").arg(ceph_conf()).args(["osd", "blocklist", "ls"]).output().expect("run ceph");
        assert!(out.status.success(), "ceph osd blocklist ls: {}", String::from_utf8_lossy(&out.stderr));
        let listed = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
        for node in ["node1", "node2"] {
            let s = sessions.get(node).unwrap_or_else(|| panic!("{node} recorded no storage session: {sessions:?}"));
            assert!(listed.contains(s.as_str()), "killed {node}'s client {s} was not blocklisted:\n{listed}");
        }
        assert!(!listed.contains(sessions["node0"].as_str()), "live node0's client was blocklisted:\n{listed}");
    } else {
        assert!(sessions.is_empty(), "the file backend has no storage sessions: {sessions:?}");
    }
    assert!(total("rekey_reencrypted_bytes_total") >= (1u64 << 30) as f64, "the re-encryption's bytes are not counted");
}
