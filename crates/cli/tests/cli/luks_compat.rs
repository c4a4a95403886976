//! Cross-compatibility with cryptsetup 2.6, both directions, over a matrix of
//! versions, ciphers, key sizes, KDFs, hashes and sector sizes.

use crate::harness::*;

#[derive(Clone, Copy, Debug)]
struct Case {
    version: &'static str,
    cipher: &'static str,
    key_bits: u32,
    pbkdf: &'static str,
    hash: &'static str,
    sector: u32,
    label: Option<&'static str>,
}

const CASES: &[Case] = &[
    Case { version: "luks1", cipher: "aes-xts-plain64", key_bits: 256, pbkdf: "pbkdf2", hash: "sha1", sector: 512, label: None },
    Case { version: "luks1", cipher: "aes-xts-plain64", key_bits: 512, pbkdf: "pbkdf2", hash: "sha256", sector: 512, label: None },
    Case { version: "luks1", cipher: "aes-cbc-essiv:sha256", key_bits: 256, pbkdf: "pbkdf2", hash: "sha512", sector: 512, label: None },
    Case { version: "luks2", cipher: "aes-xts-plain64", key_bits: 256, pbkdf: "pbkdf2", hash: "sha256", sector: 512, label: Some("clone-1") },
    Case { version: "luks2", cipher: "aes-xts-plain64", key_bits: 512, pbkdf: "argon2id", hash: "sha256", sector: 4096, label: Some("vol") },
    Case { version: "luks2", cipher: "aes-xts-plain64", key_bits: 512, pbkdf: "argon2i", hash: "sha512", sector: 512, label: None },
    Case { version: "luks2", cipher: "aes-xts-plain64", key_bits: 256, pbkdf: "pbkdf2", hash: "sha1", sector: 4096, label: None },
    Case { version: "luks2", cipher: "aes-cbc-essiv:sha256", key_bits: 256, pbkdf: "pbkdf2", hash: "sha512", sector: 512, label: None },
];

impl Case {
    /// KDF flags with cheap, fixed parameters (identical for both tools).
    fn kdf_args(&self) -> Vec<String> {
        let mut a = vec!["--pbkdf".into(), self.pbkdf.into(), "--hash".into(), self.hash.into()];
        if self.pbkdf == "pbkdf2" {
            a.extend(["--pbkdf-force-iterations".into(), "1000".into()]);
        } else {
            a.extend([
                "--pbkdf-force-iterations".into(),
                "4".into(),
                "--pbkdf-memory".into(),
                "32768".into(),
                "--pbkdf-parallel".into(),
                "2".into(),
            ]);
        }
        a
    }

    fn format_args(&self) -> Vec<String> {
        let mut a = vec![
            "--type".into(),
            self.version.into(),
            "--cipher".into(),
            self.cipher.into(),
            "--key-size".into(),
            self.key_bits.to_string(),
        ];
        if self.version == "luks2" {
            a.extend(["--sector-size".into(), self.sector.to_string()]);
        }
        if let Some(l) = self.label {
            a.extend(["--label".into(), l.into()]);
        }
        a.extend(self.kdf_args());
        a
    }
}

fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

/// cryptsetup makes the image; ours unlocks, rejects, changes, adds and
/// removes keys; cryptsetup agrees after each step.
#[test]
fn images_cryptsetup_makes_work_here() {
    for case in CASES {
        let env = Env::new();
        let img = env.sparse("cs.img", 20 << 20);
        let k1 = env.key("k1", b"first passphrase");
        let k2 = env.key("k2", b"second\npassphrase\n");
        let k3 = env.key("k3", b"third");
        let k4 = env.key("k4", b"fourth");
        let bad = env.key("bad", b"first passphrase\n");

        let mut fmt = vec!["luksFormat".to_string(), "--key-slot".into(), "3".into(), "--key-file".into(), s(&k1).into()];
        fmt.extend(case.format_args());
        fmt.push(s(&img).into());
        cryptsetup(&strs(&fmt)).ok();
        let mut add = vec!["luksAddKey".to_string(), "--key-file".into(), s(&k1).into(), "--new-key-slot".into(), "5".into()];
        add.extend(case.kdf_args());
        add.extend([s(&img).into(), s(&k2).into()]);
        cryptsetup(&strs(&add)).ok();

        assert_eq!(we_open(&img, &k1), Some(3), "{case:?}");
        assert_eq!(we_open(&img, &k2), Some(5), "{case:?}");
        assert_eq!(we_open(&img, &bad), None, "{case:?}: a wrong passphrase must not open");
        let r = rekey(&["luks", "test-key", "--key-file", s(&k2), "--key-slot", "3", s(&img)]);
        assert_eq!(r.code, 2, "{case:?}: passphrase of slot 5 must not open slot 3");
        assert_eq!(our_volume_key(&img, &k1), cryptsetup_volume_key(&img, &k1), "{case:?}");

        let dump = our_dump(&img);
        assert_eq!(dump["cipher"], case.cipher, "{case:?}");
        assert_eq!(dump["key_bits"], case.key_bits, "{case:?}");
        if let Some(l) = case.label {
            assert_eq!(dump["label"], l);
        }
        if case.version == "luks2" {
            assert_eq!(dump["sector_size"], case.sector, "{case:?}");
        }

        let kdf = case.kdf_args();
        let mut args = vec!["luks", "change-key", "--key-file", s(&k1), "--new-key-file", s(&k3)];
        args.extend(strs(&kdf));
        args.push(s(&img));
        rekey(&args).ok();
        assert!(cs_opens(&img, &k3, None), "{case:?}: cryptsetup must accept the new passphrase");
        assert!(!cs_opens(&img, &k1, None), "{case:?}: the old passphrase must be gone");
        assert!(cs_opens(&img, &k2, Some(5)), "{case:?}");

        let mut args = vec!["luks", "add-key", "--key-file", s(&k3), "--new-key-file", s(&k4), "--key-slot", "7"];
        args.extend(strs(&kdf));
        args.push(s(&img));
        rekey(&args).ok();
        assert!(cs_opens(&img, &k4, Some(7)), "{case:?}");

        rekey(&["luks", "remove-key", "--key-file", s(&k2), s(&img)]).ok();
        assert!(!cs_opens(&img, &k2, None), "{case:?}: removed passphrase must not open");
        rekey(&["luks", "kill-slot", "--key-file", s(&k3), s(&img), "7"]).ok();
        assert!(!cs_opens(&img, &k4, None), "{case:?}: killed slot must not open");
        assert!(cs_opens(&img, &k3, None), "{case:?}");
        assert_eq!(our_volume_key(&img, &k3), cryptsetup_volume_key(&img, &k3), "{case:?}: volume key unchanged");
        cryptsetup(&["luksDump", s(&img)]).ok();
    }
}

/// Ours makes the image; cryptsetup dumps it, opens it, reports the same
/// volume key, and changes keys on it that ours then accepts.
#[test]
fn images_made_here_work_with_cryptsetup() {
    for case in CASES {
        let env = Env::new();
        let img = env.path("ours.img");
        let k1 = env.key("k1", b"first passphrase");
        let k2 = env.key("k2", b"\x00binary\xffkey");
        let k3 = env.key("k3", b"third");
        let bad = env.key("bad", b"first passphrase ");

        let fa = case.format_args();
        let mut args = vec!["luks", "format", "--size", "20971520", "--key-slot", "2", "--key-file", s(&k1)];
        args.extend(strs(&fa));
        args.push(s(&img));
        rekey(&args).ok();

        let dump = cryptsetup(&["luksDump", s(&img)]).ok().stdout;
        assert!(dump.contains(case.cipher) || case.version == "luks1", "{case:?}: {dump}");
        if let Some(l) = case.label {
            assert!(dump.lines().any(|x| x.starts_with("Label:") && x.trim_end().ends_with(l)), "{case:?}: {dump}");
        }
        assert!(cs_opens(&img, &k1, Some(2)), "{case:?}: cryptsetup must open our keyslot 2");
        assert!(!cs_opens(&img, &bad, None), "{case:?}");
        assert_eq!(cryptsetup_volume_key(&img, &k1), our_volume_key(&img, &k1), "{case:?}");

        let mut add = vec!["luksAddKey".to_string(), "--key-file".into(), s(&k1).into(), "--new-key-slot".into(), "6".into()];
        add.extend(case.kdf_args());
        add.extend([s(&img).into(), s(&k2).into()]);
        cryptsetup(&strs(&add)).ok();
        assert_eq!(we_open(&img, &k2), Some(6), "{case:?}");
        let mut ch = vec!["luksChangeKey".to_string(), "--key-file".into(), s(&k2).into()];
        ch.extend(case.kdf_args());
        ch.extend([s(&img).into(), s(&k3).into()]);
        cryptsetup(&strs(&ch)).ok();
        assert!(we_open(&img, &k3).is_some(), "{case:?}");
        assert_eq!(we_open(&img, &k2), None, "{case:?}");
        cryptsetup(&["luksKillSlot", "--key-file", s(&k3), s(&img), "2"]).ok();
        assert_eq!(we_open(&img, &k1), None, "{case:?}");
        assert_eq!(our_volume_key(&img, &k3), cryptsetup_volume_key(&img, &k3), "{case:?}");
    }
}

/// A damaged primary LUKS2 header opens via the secondary and is repaired on
/// the next write (after which the primary alone suffices).
#[test]
fn damaged_primary_header_opens_and_is_repaired() {
    let env = Env::new();
    let img = env.path("a.img");
    let k1 = env.key("k1", b"pass one");
    let k2 = env.key("k2", b"pass two");
    let fast = ["--pbkdf", "pbkdf2", "--pbkdf-force-iterations", "1000"];
    let mut args = vec!["luks", "format", "--size", "20971520", "--key-file", s(&k1)];
    args.extend(fast);
    args.push(s(&img));
    rekey(&args).ok();

    let corrupt = |offset: u64, len: usize| {
        use std::os::unix::fs::FileExt;
        let f = std::fs::OpenOptions::new().write(true).open(&img).unwrap();
        f.write_all_at(&vec![0x5a; len], offset).unwrap();
    };
    corrupt(4096 + 100, 64); // inside the primary JSON area
    assert_eq!(our_dump(&img)["needs_repair"], true);
    assert_eq!(we_open(&img, &k1), Some(0));

    let mut args = vec!["luks", "add-key", "--key-file", s(&k1), "--new-key-file", s(&k2)];
    args.extend(fast);
    args.push(s(&img));
    rekey(&args).ok();
    assert_eq!(our_dump(&img)["needs_repair"], false);
    corrupt(16384, 4096); // now destroy the secondary: the repaired primary must do
    assert_eq!(we_open(&img, &k2), Some(1));
    assert!(cs_opens(&img, &k1, None));
    assert!(cs_opens(&img, &k2, None));
}
