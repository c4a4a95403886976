//! The option haggling phase and request checking as pure functions: the
//! caller hands in a parsed message and a way to look exports up, and gets
//! back the bytes to send and what to do next.

use crate::proto::{
    self, cflag, cmd, errno, info, opt, rep, ClientFlags, ClientOption, ExportInfo, Request,
};

/// What the connection does after an option.
#[derive(Debug)]
pub enum Step<E> {
    /// Send `reply`, then read the next option.
    Continue {
        /// Bytes to send.
        reply: Vec<u8>,
    },
    /// Send `reply`, then serve `export`.
    Transmit {
        /// Bytes to send.
        reply: Vec<u8>,
        /// The export chosen.
        export: E,
        /// Its description, as sent.
        info: ExportInfo,
    },
    /// Send `reply` (the ACK), then run a TLS handshake as server on the
    /// bare stream and call [`Negotiation::tls_established`].
    StartTls {
        /// Bytes to send.
        reply: Vec<u8>,
    },
    /// Send `reply` (possibly empty), then close.
    Close {
        /// Bytes to send.
        reply: Vec<u8>,
    },
}

/// Where the connection stands with TLS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tls {
    /// The server has no certificate: STARTTLS is unsupported.
    Off,
    /// TLS is mandatory and not yet running: only STARTTLS and ABORT pass.
    Required,
    /// The handshake is done.
    On,
}

/// Negotiation after the client flags were accepted.
#[derive(Debug)]
pub struct Negotiation {
    flags: ClientFlags,
    tls: Tls,
}

impl Negotiation {
    /// Starts haggling with a client that sent `flags`, without TLS.
    pub fn new(flags: ClientFlags) -> Self {
        Negotiation {
            flags,
            tls: Tls::Off,
        }
    }

    /// Starts haggling where TLS is mandatory (proto.md's "FORCEDTLS"):
    /// nothing about exports is said before NBD_OPT_STARTTLS succeeds.
    pub fn with_tls_required(flags: ClientFlags) -> Self {
        Negotiation {
            flags,
            tls: Tls::Required,
        }
    }

    /// The TLS handshake after [`Step::StartTls`] succeeded.
    pub fn tls_established(&mut self) {
        self.tls = Tls::On;
    }

    /// Answers one option. `lookup` resolves an export name; it is asked
    /// only for options that name one. Malformed option data gets
    /// NBD_REP_ERR_INVALID, as proto.md asks, and haggling goes on.
    pub fn option<E>(
        &self,
        opt_num: u32,
        data: &[u8],
        lookup: impl FnOnce(&str) -> Option<(E, ExportInfo)>,
    ) -> Step<E> {
        let mut reply = Vec::new();
        if opt_num == opt::STARTTLS {
            let kind = match self.tls {
                Tls::Off => rep::ERR_UNSUP,
                Tls::On => rep::ERR_INVALID,
                Tls::Required if !data.is_empty() => rep::ERR_INVALID,
                Tls::Required => {
                    proto::option_reply(&mut reply, opt_num, rep::ACK, &[]);
                    return Step::StartTls { reply };
                }
            };
            proto::option_reply(&mut reply, opt_num, kind, b"TLS not available here");
            return Step::Continue { reply };
        }
        if self.tls == Tls::Required && opt_num != opt::ABORT {
            if opt_num == opt::EXPORT_NAME {
                return Step::Close { reply };
            }
            proto::option_reply(&mut reply, opt_num, rep::ERR_TLS_REQD, b"TLS is required");
            return Step::Continue { reply };
        }
        let parsed = match ClientOption::read(opt_num, data) {
            Ok(o) => o,
            Err(_) if opt_num == opt::EXPORT_NAME => return Step::Close { reply },
            Err(e) => {
                proto::option_reply(&mut reply, opt_num, rep::ERR_INVALID, e.0.as_bytes());
                return Step::Continue { reply };
            }
        };
        match parsed {
            ClientOption::ExportName(name) => match lookup(&name) {
                // This option has no error reply: an unknown name is a hang-up.
                None => Step::Close { reply },
                Some((export, info)) => {
                    reply.extend_from_slice(&info.size.to_be_bytes());
                    reply.extend_from_slice(&info.flags.to_be_bytes());
                    if !self.flags.no_zeroes {
                        reply.extend_from_slice(&[0u8; 124]);
                    }
                    Step::Transmit {
                        reply,
                        export,
                        info,
                    }
                }
            },
            ClientOption::Abort => {
                proto::option_reply(&mut reply, opt_num, rep::ACK, &[]);
                Step::Close { reply }
            }
            ClientOption::List => {
                // Listing would hand out the unguessable names that are the
                // only thing keeping other attachments' exports private.
                proto::option_reply(
                    &mut reply,
                    opt_num,
                    rep::ERR_POLICY,
                    b"export listing is disabled",
                );
                Step::Continue { reply }
            }
            ClientOption::Info { name, requests, go } => match lookup(&name) {
                None => {
                    proto::option_reply(&mut reply, opt_num, rep::ERR_UNKNOWN, b"no such export");
                    Step::Continue { reply }
                }
                Some((export, info)) => {
                    let mut payload = Vec::new();
                    info.encode_export(&mut payload);
                    proto::option_reply(&mut reply, opt_num, rep::INFO, &payload);
                    // Block sizes are sent whether asked or not: a client that
                    // did not ask may ignore them, and qemu does ask.
                    payload.clear();
                    info.encode_block_size(&mut payload);
                    proto::option_reply(&mut reply, opt_num, rep::INFO, &payload);
                    if requests.contains(&info::NAME) {
                        payload.clear();
                        payload.extend_from_slice(&info::NAME.to_be_bytes());
                        payload.extend_from_slice(name.as_bytes());
                        proto::option_reply(&mut reply, opt_num, rep::INFO, &payload);
                    }
                    proto::option_reply(&mut reply, opt_num, rep::ACK, &[]);
                    if go {
                        Step::Transmit {
                            reply,
                            export,
                            info,
                        }
                    } else {
                        Step::Continue { reply }
                    }
                }
            },
            ClientOption::Unsupported(n) => {
                // Structured replies and extended headers land here: proto.md lets
                // a server without them answer ERR_UNSUP and clients fall back.
                proto::option_reply(&mut reply, n, rep::ERR_UNSUP, b"option not supported");
                Step::Continue { reply }
            }
        }
    }
}

/// A request that passed every check against its export.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    /// Read `len` bytes.
    Read {
        /// Byte offset.
        offset: u64,
        /// Byte length.
        len: u32,
    },
    /// Write the payload; `fua` asks for it to be durable before the reply.
    Write {
        /// Byte offset.
        offset: u64,
        /// Byte length.
        len: u32,
        /// Force unit access.
        fua: bool,
    },
    /// Make completed writes durable.
    Flush,
    /// The range holds nothing worth keeping.
    Trim {
        /// Byte offset.
        offset: u64,
        /// Byte length.
        len: u32,
        /// Force unit access.
        fua: bool,
    },
    /// Write zeros over the range.
    WriteZeroes {
        /// Byte offset.
        offset: u64,
        /// Byte length.
        len: u32,
        /// Force unit access.
        fua: bool,
    },
    /// The client is done.
    Disconnect,
}

/// Whether a request carries a payload that must be read off the wire
/// whatever the verdict, so framing is kept after an error reply.
pub fn payload_len(req: &Request) -> u32 {
    if req.kind == cmd::WRITE {
        req.len
    } else {
        0
    }
}

/// Checks `req` against `info`; `Err` is the error value for the reply.
pub fn check(req: &Request, info: &ExportInfo) -> Result<Command, u32> {
    let read_only = info.flags & proto::tflag::READ_ONLY != 0;
    let fua = req.flags & cflag::FUA != 0;
    let known_flags = match req.kind {
        cmd::WRITE | cmd::TRIM => cflag::FUA,
        cmd::WRITE_ZEROES => cflag::FUA | cflag::NO_HOLE,
        _ => 0,
    };
    if req.flags & !known_flags != 0 {
        return Err(errno::EINVAL);
    }
    let end = req.offset.checked_add(req.len as u64);
    let within = matches!(end, Some(e) if e <= info.size);
    match req.kind {
        cmd::READ => {
            if req.len > info.block.maximum {
                return Err(errno::EINVAL);
            }
            if !within {
                return Err(errno::EINVAL);
            }
            Ok(Command::Read {
                offset: req.offset,
                len: req.len,
            })
        }
        cmd::WRITE | cmd::TRIM | cmd::WRITE_ZEROES => {
            if req.kind == cmd::WRITE && req.len > info.block.maximum {
                return Err(errno::EINVAL);
            }
            if read_only {
                return Err(errno::EPERM);
            }
            if !within {
                // proto.md: ENOSPC for a write past the end, EINVAL otherwise.
                return Err(if req.kind == cmd::TRIM {
                    errno::EINVAL
                } else {
                    errno::ENOSPC
                });
            }
            let (offset, len) = (req.offset, req.len);
            Ok(match req.kind {
                cmd::WRITE => Command::Write { offset, len, fua },
                cmd::TRIM => Command::Trim { offset, len, fua },
                _ => Command::WriteZeroes { offset, len, fua },
            })
        }
        cmd::FLUSH => Ok(Command::Flush),
        cmd::DISC => Ok(Command::Disconnect),
        _ => Err(errno::EINVAL),
    }
}

#[cfg(test)]
mod tests;
