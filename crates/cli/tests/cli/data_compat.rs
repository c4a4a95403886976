//! Data compatibility: plaintext written by qemu (LUKS1) or an independent
//! AES-XTS (Python `cryptography`, LUKS2) reads back here, and vice versa;
//! data re-encrypted by cryptsetup reads back here.

use std::process::Command;

use crate::harness::*;

const SECRET: &str = "qemu-secret-42";

fn random_file(env: &Env, name: &str, len: usize, seed: u32) -> std::path::PathBuf {
    let mut x = seed | 1;
    let mut v = vec![0u8; len];
    for (i, b) in v.iter_mut().enumerate() {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        // leave some all-zero regions so sparse export is exercised
        *b = if (i >> 20) % 3 == 1 { 0 } else { x as u8 };
    }
    let p = env.path(name);
    std::fs::write(&p, v).unwrap();
    p
}

fn qemu_img(args: &[&str]) -> Run {
    require_tool("qemu-img", "qemu-utils");
    let o = Command::new("qemu-img").args(args).output().unwrap();
    let r = Run {
        code: o.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&o.stdout).into(),
        stderr: String::from_utf8_lossy(&o.stderr).into(),
    };
    r.ok()
}

#[test]
fn luks1_written_by_qemu_exports_identically() {
    let env = Env::new();
    let key = env.key("k", SECRET.as_bytes());
    let img = env.path("q.img");
    let plain = random_file(&env, "plain", 8 << 20, 7);
    let secret = format!("secret,id=sec0,data={SECRET}");
    qemu_img(&["create", "-q", "-f", "luks", "--object", &secret, "-o", "key-secret=sec0,iter-time=10", s(&img), "8M"]);
    let target = format!("driver=luks,key-secret=sec0,file.filename={}", s(&img));
    qemu_img(&["convert", "-n", "--object", &secret, "-f", "raw", "--target-image-opts", s(&plain), &target]);
    let out = env.path("out");
    rekey(&["luks", "export", "--key-file", s(&key), s(&img), s(&out)]).ok();
    assert!(std::fs::read(&out).unwrap() == std::fs::read(&plain).unwrap(), "plaintext differs");
    assert_eq!(our_dump(&img)["version"], 1);
}

#[test]
fn luks1_written_here_reads_with_qemu() {
    let env = Env::new();
    let key = env.key("k", SECRET.as_bytes());
    let img = env.path("ours.img");
    rekey(&["luks", "format", "--type", "luks1", "--pbkdf-force-iterations", "1000", "--size", &(10u64 << 20).to_string(), "--key-file", s(&key), s(&img)]).ok();
    let data_len = 10usize * (1 << 20) - our_dump(&img)["data_offset"].as_u64().unwrap() as usize;
    let plain = random_file(&env, "plain", data_len, 11);
    rekey(&["luks", "import", "--key-file", s(&key), s(&plain), s(&img)]).ok();
    let secret = format!("secret,id=sec0,data={SECRET}");
    let src = format!("driver=luks,key-secret=sec0,file.filename={}", s(&img));
    let out = env.path("out.raw");
    qemu_img(&["convert", "--object", &secret, "--image-opts", &src, "-O", "raw", s(&out)]);
    assert!(std::fs::read(&out).unwrap() == std::fs::read(&plain).unwrap(), "qemu reads different plaintext");
}

/// Independent AES-XTS (Python `cryptography`) with the volume key cryptsetup
/// reports: decrypts what ours wrote, and encrypts what ours then reads.
#[test]
fn luks2_data_matches_an_independent_xts_with_cryptsetups_key() {
    require_tool("python3", "python3");
    for sector in [512u32, 4096] {
        let env = Env::new();
        let key = env.key("k", b"pw");
        let img = env.path("a.img");
        rekey(&["luks", "format", "--sector-size", &sector.to_string(), "--pbkdf", "pbkdf2", "--pbkdf-force-iterations", "1000", "--size", &(20u64 << 20).to_string(), "--key-file", s(&key), s(&img)]).ok();
        let plain = random_file(&env, "plain", 4 << 20, sector);
        rekey(&["luks", "import", "--key-file", s(&key), s(&plain), s(&img)]).ok();
        let vk = cryptsetup_volume_key(&img, &key);
        let script = r#"
import sys
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
img, plain, vk, sector, mode = sys.argv[1], sys.argv[2], bytes.fromhex(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
off = 16 << 20
data = open(plain, 'rb').read()
with open(img, 'r+b') as f:
    for i in range(0, len(data), sector):
        iv = (i // 512).to_bytes(16, 'little')
        c = Cipher(algorithms.AES(vk), modes.XTS(iv))
        f.seek(off + i)
        if mode == 'check':
            ct = f.read(sector)
            pt = c.decryptor().update(ct)
            if pt != data[i:i + sector]:
                sys.exit(f'sector at {i} differs')
        else:
            f.write(c.encryptor().update(data[i:i + sector][::-1]))
"#;
        let py = |mode: &str| {
            let o = Command::new("python3")
                .args(["-c", script, s(&img), s(&plain), &vk, &sector.to_string(), mode])
                .output()
                .unwrap();
            assert!(o.status.success(), "python {mode}: {}", String::from_utf8_lossy(&o.stderr));
        };
        py("check");
        // Python now writes each sector reversed; ours must read exactly that.
        py("write");
        let out = env.path("out");
        rekey(&["luks", "export", "--key-file", s(&key), s(&img), s(&out)]).ok();
        let got = std::fs::read(&out).unwrap();
        let want = std::fs::read(&plain).unwrap();
        for (i, chunk) in want.chunks(sector as usize).enumerate() {
            let rev: Vec<u8> = chunk.iter().rev().copied().collect();
            assert!(got[i * sector as usize..][..chunk.len()] == rev[..], "sector {i} differs (sector size {sector})");
        }
    }
}

/// cryptsetup re-encrypts (offline) a volume ours wrote; ours reads the same plaintext.
#[test]
fn data_reencrypted_by_cryptsetup_reads_here() {
    let env = Env::new();
    let key = env.key("k", b"pw");
    let img = env.path("a.img");
    rekey(&["luks", "format", "--pbkdf", "pbkdf2", "--pbkdf-force-iterations", "1000", "--size", &(24u64 << 20).to_string(), "--key-file", s(&key), s(&img)]).ok();
    let plain = random_file(&env, "plain", 8 << 20, 3);
    rekey(&["luks", "import", "--key-file", s(&key), s(&plain), s(&img)]).ok();
    let before = cryptsetup_volume_key(&img, &key);
    cryptsetup(&["reencrypt", "--force-offline-reencrypt", "--pbkdf", "pbkdf2", "--pbkdf-force-iterations", "1000", "--key-file", s(&key), s(&img)]).ok();
    assert_ne!(cryptsetup_volume_key(&img, &key), before);
    let out = env.path("out");
    rekey(&["luks", "export", "--key-file", s(&key), s(&img), s(&out)]).ok();
    let got = std::fs::read(&out).unwrap();
    assert!(got[..8 << 20] == std::fs::read(&plain).unwrap()[..], "plaintext differs after cryptsetup reencrypt");
}
