#![no_main]
// Option and request heads: decode → encode → decode agree; any option data
// through the negotiation and any request through the checks never panics.
use rekey_nbd::negotiate::{check, Negotiation};
use rekey_nbd::proto::{BlockSize, ClientFlags, ExportInfo, OptionHeader, Request};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let info = ExportInfo { size: 1 << 30, flags: 1, block: BlockSize { minimum: 1, preferred: 4096, maximum: 1 << 25 } };
    if let Some(head) = data.get(..16) {
        if let Ok(h) = OptionHeader::read(head.try_into().unwrap()) {
            let mut out = Vec::new();
            h.encode(&mut out);
            assert_eq!(OptionHeader::read(&out.try_into().unwrap()).unwrap(), h);
            let n = Negotiation::new(ClientFlags { no_zeroes: data.len() % 2 == 0 });
            let _ = n.option(h.opt, &data[16..], |name| (name == "vol").then_some(((), info)));
        }
    }
    if let Some(head) = data.get(..28) {
        if let Ok(r) = Request::read(head.try_into().unwrap()) {
            let mut out = Vec::new();
            r.encode(&mut out);
            assert_eq!(Request::read(&out.try_into().unwrap()).unwrap(), r);
            let _ = check(&r, &info);
        }
    }
});
