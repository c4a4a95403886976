//! Header identity that cryptsetup's luksUUID and `config` change: the UUID
//! (both versions) and the LUKS2 label and subsystem. Everything else in the
//! header, tokens included, is written back as it was.

use crate::blockio::BlockIo;
use crate::error::{Error, Result};
use crate::volume::{self, Header, Volume};

/// The volume's UUID.
pub fn uuid<IO: BlockIo>(v: &Volume<IO>) -> &str {
    match v.header() {
        Header::Luks1(h) => &h.uuid,
        Header::Luks2(h) => &h.uuid,
    }
}

/// Sets the UUID (canonical hyphenated form); returns the volume re-read.
pub fn set_uuid<IO: BlockIo>(mut v: Volume<IO>, new: &str) -> Result<Volume<IO>> {
    let u = uuid::Uuid::parse_str(new).map_err(|_| Error::InvalidArgument(format!("invalid UUID {new:?}")))?;
    let u = u.hyphenated().to_string();
    match v.header().clone() {
        Header::Luks1(mut h) => {
            h.uuid = u;
            h.validate()?;
            let phdr = h.encode()?;
            volume::write(v.io(), 0, &phdr)?;
            volume::flush(v.io())?;
            Volume::open(v.into_io())
        }
        Header::Luks2(mut h) => {
            h.check_requirements()?;
            h.uuid = u;
            v.commit_luks2(h)?;
            Ok(v)
        }
    }
}

/// Sets the LUKS2 label and/or subsystem (at most 47 bytes each).
pub fn set_label<IO: BlockIo>(v: &mut Volume<IO>, label: Option<&str>, subsystem: Option<&str>) -> Result<()> {
    let Header::Luks2(mut h) = v.header().clone() else {
        return Err(Error::Unsupported("LUKS1 has no label or subsystem".into()));
    };
    h.check_requirements()?;
    for (what, s) in [("label", label), ("subsystem", subsystem)] {
        if s.is_some_and(|s| s.len() > 47 || s.contains('\0')) {
            return Err(Error::InvalidArgument(format!("{what} longer than 47 bytes")));
        }
    }
    if let Some(l) = label {
        h.label = l.to_string();
    }
    if let Some(s) = subsystem {
        h.subsystem = s.to_string();
    }
    v.commit_luks2(h)
}
