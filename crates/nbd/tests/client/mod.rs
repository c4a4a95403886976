//! A minimal synchronous NBD client for tests and benchmarks: fixed
//! newstyle, NBD_OPT_GO, simple replies, one request at a time.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use rekey_nbd::proto::{self, cmd, opt, rep};

/// A minimal synchronous NBD client: fixed newstyle, NBD_OPT_GO, simple
/// replies, one request at a time.
pub struct Client {
    s: TcpStream,
    handle: u64,
}

impl Client {
    pub fn connect(port: u16, export: &str) -> std::io::Result<Client> {
        let mut s = TcpStream::connect(("127.0.0.1", port))?;
        s.set_read_timeout(Some(Duration::from_secs(60)))?;
        s.set_nodelay(true)?;
        let mut hello = [0u8; 18];
        s.read_exact(&mut hello)?;
        assert_eq!(
            u64::from_be_bytes(hello[..8].try_into().unwrap()),
            proto::NBD_MAGIC
        );
        s.write_all(&(proto::client::FIXED_NEWSTYLE | proto::client::NO_ZEROES).to_be_bytes())?;
        let mut data = (export.len() as u32).to_be_bytes().to_vec();
        data.extend_from_slice(export.as_bytes());
        data.extend_from_slice(&0u16.to_be_bytes());
        let mut o = proto::IHAVEOPT.to_be_bytes().to_vec();
        o.extend_from_slice(&opt::GO.to_be_bytes());
        o.extend_from_slice(&(data.len() as u32).to_be_bytes());
        o.extend_from_slice(&data);
        s.write_all(&o)?;
        loop {
            let mut head = [0u8; 20];
            s.read_exact(&mut head)?;
            let kind = u32::from_be_bytes(head[12..16].try_into().unwrap());
            let len = u32::from_be_bytes(head[16..20].try_into().unwrap());
            let mut body = vec![0u8; len as usize];
            s.read_exact(&mut body)?;
            match kind {
                rep::ACK => return Ok(Client { s, handle: 0 }),
                rep::INFO => continue,
                other => {
                    return Err(std::io::Error::other(format!(
                        "option GO refused: {other:#x}"
                    )))
                }
            }
        }
    }

    fn request(
        &mut self,
        kind: u16,
        offset: u64,
        len: u32,
        payload: &[u8],
        out: &mut [u8],
    ) -> std::io::Result<()> {
        self.handle += 1;
        let mut r = proto::REQUEST_MAGIC.to_be_bytes().to_vec();
        r.extend_from_slice(&0u16.to_be_bytes());
        r.extend_from_slice(&kind.to_be_bytes());
        r.extend_from_slice(&self.handle.to_be_bytes());
        r.extend_from_slice(&offset.to_be_bytes());
        r.extend_from_slice(&len.to_be_bytes());
        r.extend_from_slice(payload);
        self.s.write_all(&r)?;
        let mut head = [0u8; 16];
        self.s.read_exact(&mut head)?;
        assert_eq!(
            u32::from_be_bytes(head[..4].try_into().unwrap()),
            proto::SIMPLE_REPLY_MAGIC
        );
        assert_eq!(
            u64::from_be_bytes(head[8..16].try_into().unwrap()),
            self.handle
        );
        let err = u32::from_be_bytes(head[4..8].try_into().unwrap());
        if err != 0 {
            return Err(std::io::Error::other(format!("NBD error {err}")));
        }
        if kind == cmd::READ {
            self.s.read_exact(out)?;
        }
        Ok(())
    }

    pub fn write(&mut self, offset: u64, buf: &[u8]) -> std::io::Result<()> {
        self.request(cmd::WRITE, offset, buf.len() as u32, buf, &mut [])
    }

    pub fn flush(&mut self) -> std::io::Result<()> {
        self.request(cmd::FLUSH, 0, 0, &[], &mut [])
    }

    pub fn read(&mut self, offset: u64, out: &mut [u8]) -> std::io::Result<()> {
        let len = out.len() as u32;
        self.request(cmd::READ, offset, len, &[], out)
    }
}
