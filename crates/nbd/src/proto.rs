//! Wire format of the NBD protocol (fixed newstyle negotiation, simple
//! replies), as bytes in and bytes out. Nothing here does I/O.
//!
//! Numbers follow doc/proto.md of the NetworkBlockDevice/nbd project; all
//! integers are big-endian.

use std::fmt;

/// "NBDMAGIC", the first thing a server sends.
pub const NBD_MAGIC: u64 = 0x4e42_444d_4147_4943;
/// "IHAVEOPT": newstyle negotiation, and the prefix of every client option.
pub const IHAVEOPT: u64 = 0x4948_4156_454f_5054;
/// Prefix of every option reply.
pub const REPLY_MAGIC: u64 = 0x0003_e889_0455_65a9;
/// Prefix of every transmission request.
pub const REQUEST_MAGIC: u32 = 0x2560_9513;
/// Prefix of every simple reply.
pub const SIMPLE_REPLY_MAGIC: u32 = 0x6744_6698;

/// Handshake flags the server sends.
pub mod handshake {
    /// Fixed newstyle: unknown options get an error reply, not a hang-up.
    pub const FIXED_NEWSTYLE: u16 = 1 << 0;
    /// The client may ask to skip the 124 zero bytes after NBD_OPT_EXPORT_NAME.
    pub const NO_ZEROES: u16 = 1 << 1;
}

/// Client flags, answering the handshake flags.
pub mod client {
    /// The client speaks fixed newstyle.
    pub const FIXED_NEWSTYLE: u32 = 1 << 0;
    /// The client wants no zero padding after NBD_OPT_EXPORT_NAME.
    pub const NO_ZEROES: u32 = 1 << 1;
}

/// Option numbers.
pub mod opt {
    #![allow(missing_docs)]
    pub const EXPORT_NAME: u32 = 1;
    pub const ABORT: u32 = 2;
    pub const LIST: u32 = 3;
    pub const STARTTLS: u32 = 5;
    pub const INFO: u32 = 6;
    pub const GO: u32 = 7;
    pub const STRUCTURED_REPLY: u32 = 8;
}

/// Option reply types; errors have the top bit set.
pub mod rep {
    #![allow(missing_docs)]
    pub const ACK: u32 = 1;
    pub const SERVER: u32 = 2;
    pub const INFO: u32 = 3;
    pub const ERR_UNSUP: u32 = (1 << 31) + 1;
    pub const ERR_POLICY: u32 = (1 << 31) + 2;
    pub const ERR_INVALID: u32 = (1 << 31) + 3;
    pub const ERR_TLS_REQD: u32 = (1 << 31) + 5;
    pub const ERR_UNKNOWN: u32 = (1 << 31) + 6;
}

/// Information types carried by NBD_REP_INFO.
pub mod info {
    #![allow(missing_docs)]
    pub const EXPORT: u16 = 0;
    pub const NAME: u16 = 1;
    pub const DESCRIPTION: u16 = 2;
    pub const BLOCK_SIZE: u16 = 3;
}

/// Transmission flags, sent with the export size.
pub mod tflag {
    #![allow(missing_docs)]
    pub const HAS_FLAGS: u16 = 1 << 0;
    pub const READ_ONLY: u16 = 1 << 1;
    pub const SEND_FLUSH: u16 = 1 << 2;
    pub const SEND_FUA: u16 = 1 << 3;
    pub const SEND_TRIM: u16 = 1 << 5;
    pub const SEND_WRITE_ZEROES: u16 = 1 << 6;
    pub const CAN_MULTI_CONN: u16 = 1 << 8;
}

/// Command flags of a request.
pub mod cflag {
    #![allow(missing_docs)]
    pub const FUA: u16 = 1 << 0;
    pub const NO_HOLE: u16 = 1 << 1;
}

/// Command types of a request.
pub mod cmd {
    #![allow(missing_docs)]
    pub const READ: u16 = 0;
    pub const WRITE: u16 = 1;
    pub const DISC: u16 = 2;
    pub const FLUSH: u16 = 3;
    pub const TRIM: u16 = 4;
    pub const WRITE_ZEROES: u16 = 6;
}

/// Error values of a reply (the protocol's own numbering, Linux-like).
pub mod errno {
    #![allow(missing_docs)]
    pub const EPERM: u32 = 1;
    pub const EIO: u32 = 5;
    pub const ENOMEM: u32 = 12;
    pub const EINVAL: u32 = 22;
    pub const ENOSPC: u32 = 28;
    pub const ENOTSUP: u32 = 95;
    pub const ESHUTDOWN: u32 = 108;
}

/// Longest export name a client may send; proto.md asks servers to accept
/// at least 256 bytes and allows refusing past 4096.
pub const MAX_NAME: usize = 4096;
/// Largest option payload accepted; anything longer is a framing error.
pub const MAX_OPTION: u32 = 2 * MAX_NAME as u32 + 64;

/// Bytes that do not form a valid message; the peer gets an error reply
/// where the protocol has one, a closed connection where it has not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidMessage(pub &'static str);

impl fmt::Display for InvalidMessage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

impl std::error::Error for InvalidMessage {}

/// A cursor over a borrowed message that refuses short and trailing data.
pub struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    /// Reads from the start of `buf`.
    pub fn new(buf: &'a [u8]) -> Self {
        Reader { buf }
    }

    /// The next `n` bytes.
    pub fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], InvalidMessage> {
        if self.buf.len() < n {
            return Err(InvalidMessage(what));
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }

    /// A big-endian u16.
    pub fn u16(&mut self, what: &'static str) -> Result<u16, InvalidMessage> {
        Ok(u16::from_be_bytes(
            self.take(2, what)?.try_into().expect("2 bytes"),
        ))
    }

    /// A big-endian u32.
    pub fn u32(&mut self, what: &'static str) -> Result<u32, InvalidMessage> {
        Ok(u32::from_be_bytes(
            self.take(4, what)?.try_into().expect("4 bytes"),
        ))
    }

    /// A big-endian u64.
    pub fn u64(&mut self, what: &'static str) -> Result<u64, InvalidMessage> {
        Ok(u64::from_be_bytes(
            self.take(8, what)?.try_into().expect("8 bytes"),
        ))
    }

    /// Fails unless everything was consumed.
    pub fn finish(self, what: &'static str) -> Result<(), InvalidMessage> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(InvalidMessage(what))
        }
    }
}

/// The server's first 18 bytes.
pub fn greeting() -> [u8; 18] {
    let mut out = [0u8; 18];
    out[..8].copy_from_slice(&NBD_MAGIC.to_be_bytes());
    out[8..16].copy_from_slice(&IHAVEOPT.to_be_bytes());
    out[16..].copy_from_slice(&(handshake::FIXED_NEWSTYLE | handshake::NO_ZEROES).to_be_bytes());
    out
}

/// The client's answer to the greeting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientFlags {
    /// Skip the zero padding after NBD_OPT_EXPORT_NAME.
    pub no_zeroes: bool,
}

impl ClientFlags {
    /// Parses the 4 bytes; a client that is not fixed newstyle, or sets
    /// flags this server did not offer, is refused (proto.md: close).
    pub fn read(bytes: [u8; 4]) -> Result<Self, InvalidMessage> {
        let flags = u32::from_be_bytes(bytes);
        if flags & !(client::FIXED_NEWSTYLE | client::NO_ZEROES) != 0 {
            return Err(InvalidMessage("unknown client flags"));
        }
        if flags & client::FIXED_NEWSTYLE == 0 {
            return Err(InvalidMessage("client does not speak fixed newstyle"));
        }
        Ok(ClientFlags {
            no_zeroes: flags & client::NO_ZEROES != 0,
        })
    }
}

/// The fixed 16-byte head of a client option.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OptionHeader {
    /// Option number.
    pub opt: u32,
    /// Length of the data that follows.
    pub len: u32,
}

impl OptionHeader {
    /// Size on the wire.
    pub const LEN: usize = 16;

    /// Parses the head; a wrong magic or a length past [`MAX_OPTION`] is a
    /// framing error (the data cannot be skipped safely).
    pub fn read(bytes: &[u8; Self::LEN]) -> Result<Self, InvalidMessage> {
        let mut r = Reader::new(bytes);
        if r.u64("option magic")? != IHAVEOPT {
            return Err(InvalidMessage("bad option magic"));
        }
        let opt = r.u32("option")?;
        let len = r.u32("option length")?;
        if len > MAX_OPTION {
            return Err(InvalidMessage("option data too long"));
        }
        Ok(OptionHeader { opt, len })
    }

    /// Encodes the head (the client side, for tests).
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&IHAVEOPT.to_be_bytes());
        out.extend_from_slice(&self.opt.to_be_bytes());
        out.extend_from_slice(&self.len.to_be_bytes());
    }
}

/// A client option with its data parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientOption {
    /// NBD_OPT_EXPORT_NAME: the old way to pick an export; no reply on error.
    ExportName(String),
    /// NBD_OPT_ABORT.
    Abort,
    /// NBD_OPT_LIST.
    List,
    /// NBD_OPT_INFO (`go == false`) or NBD_OPT_GO.
    Info {
        /// The export asked for.
        name: String,
        /// Information types the client asked for.
        requests: Vec<u16>,
        /// Enter transmission after the reply.
        go: bool,
    },
    /// Anything else, by number.
    Unsupported(u32),
}

impl ClientOption {
    /// Parses option `opt` with its `data`.
    pub fn read(opt: u32, data: &[u8]) -> Result<Self, InvalidMessage> {
        match opt {
            opt::EXPORT_NAME => Ok(ClientOption::ExportName(name(data)?)),
            opt::ABORT => Ok(ClientOption::Abort),
            opt::LIST => {
                Reader::new(data).finish("NBD_OPT_LIST carries no data")?;
                Ok(ClientOption::List)
            }
            opt::INFO | opt::GO => {
                let mut r = Reader::new(data);
                let n = r.u32("name length")? as usize;
                if n > MAX_NAME {
                    return Err(InvalidMessage("export name too long"));
                }
                let name = name(r.take(n, "export name")?)?;
                let count = r.u16("information request count")?;
                let mut requests = Vec::with_capacity(count as usize);
                for _ in 0..count {
                    requests.push(r.u16("information request")?);
                }
                r.finish("trailing data after information requests")?;
                Ok(ClientOption::Info {
                    name,
                    requests,
                    go: opt == opt::GO,
                })
            }
            other => Ok(ClientOption::Unsupported(other)),
        }
    }
}

fn name(data: &[u8]) -> Result<String, InvalidMessage> {
    if data.len() > MAX_NAME {
        return Err(InvalidMessage("export name too long"));
    }
    String::from_utf8(data.to_vec()).map_err(|_| InvalidMessage("export name is not UTF-8"))
}

/// Encodes one option reply.
pub fn option_reply(out: &mut Vec<u8>, opt: u32, kind: u32, data: &[u8]) {
    out.extend_from_slice(&REPLY_MAGIC.to_be_bytes());
    out.extend_from_slice(&opt.to_be_bytes());
    out.extend_from_slice(&kind.to_be_bytes());
    out.extend_from_slice(&(data.len() as u32).to_be_bytes());
    out.extend_from_slice(data);
}

/// What a client learns about an export.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExportInfo {
    /// Size in bytes.
    pub size: u64,
    /// Transmission flags.
    pub flags: u16,
    /// Block size constraints.
    pub block: BlockSize,
}

/// NBD_INFO_BLOCK_SIZE: what the server can serve without extra work.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockSize {
    /// Smallest unit that needs no read-modify-write.
    pub minimum: u32,
    /// Best size for throughput.
    pub preferred: u32,
    /// Largest payload of one READ or WRITE.
    pub maximum: u32,
}

impl ExportInfo {
    /// The NBD_INFO_EXPORT payload.
    pub fn encode_export(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&info::EXPORT.to_be_bytes());
        out.extend_from_slice(&self.size.to_be_bytes());
        out.extend_from_slice(&self.flags.to_be_bytes());
    }

    /// The NBD_INFO_BLOCK_SIZE payload.
    pub fn encode_block_size(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&info::BLOCK_SIZE.to_be_bytes());
        out.extend_from_slice(&self.block.minimum.to_be_bytes());
        out.extend_from_slice(&self.block.preferred.to_be_bytes());
        out.extend_from_slice(&self.block.maximum.to_be_bytes());
    }
}

/// One transmission request head (the WRITE payload follows it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Request {
    /// Command flags.
    pub flags: u16,
    /// Command type.
    pub kind: u16,
    /// Opaque value echoed in the reply.
    pub cookie: u64,
    /// Byte offset.
    pub offset: u64,
    /// Byte length.
    pub len: u32,
}

impl Request {
    /// Size on the wire.
    pub const LEN: usize = 28;

    /// Parses a head; a wrong magic means the stream lost its framing.
    pub fn read(bytes: &[u8; Self::LEN]) -> Result<Self, InvalidMessage> {
        let mut r = Reader::new(bytes);
        if r.u32("request magic")? != REQUEST_MAGIC {
            return Err(InvalidMessage("bad request magic"));
        }
        Ok(Request {
            flags: r.u16("command flags")?,
            kind: r.u16("command type")?,
            cookie: r.u64("cookie")?,
            offset: r.u64("offset")?,
            len: r.u32("length")?,
        })
    }

    /// Encodes the head (the client side, for tests).
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&REQUEST_MAGIC.to_be_bytes());
        out.extend_from_slice(&self.flags.to_be_bytes());
        out.extend_from_slice(&self.kind.to_be_bytes());
        out.extend_from_slice(&self.cookie.to_be_bytes());
        out.extend_from_slice(&self.offset.to_be_bytes());
        out.extend_from_slice(&self.len.to_be_bytes());
    }
}

/// Encodes a simple reply head; a successful READ's data follows it.
pub fn simple_reply(out: &mut Vec<u8>, error: u32, cookie: u64) {
    out.extend_from_slice(&SIMPLE_REPLY_MAGIC.to_be_bytes());
    out.extend_from_slice(&error.to_be_bytes());
    out.extend_from_slice(&cookie.to_be_bytes());
}

/// Size of a simple reply head.
pub const SIMPLE_REPLY_LEN: usize = 16;

#[cfg(test)]
mod tests;
