use super::*;
use std::sync::atomic::AtomicUsize;

fn fill(pos: u64, buf: &mut [u8]) {
    for (i, b) in buf.iter_mut().enumerate() {
        *b = ((pos + i as u64) * 7 % 251) as u8;
    }
}

#[test]
fn writes_every_chunk_once_in_order_whatever_the_threads() {
    for threads in [1, 2, 3, 8] {
        for (total, chunk) in [(0u64, 4096usize), (4096, 4096), (10_000, 4096), (1 << 20, 4096), (1 << 20, 65536)] {
            let mut out = Vec::new();
            let mut positions = Vec::new();
            run(total, Options::new(threads, chunk), |pos, buf| {
                fill(pos, buf);
                // Uneven work so that chunks finish out of order.
                if (pos / chunk as u64).is_multiple_of(3) {
                    std::thread::yield_now();
                }
                Ok(())
            }, |pos, buf, ()| {
                positions.push(pos);
                out.extend_from_slice(buf);
                Ok(())
            })
            .unwrap();
            let mut want = vec![0u8; total as usize];
            fill(0, &mut want);
            assert!(out == want, "threads {threads} total {total} chunk {chunk}");
            assert!(positions.windows(2).all(|w| w[0] < w[1]));
        }
    }
}

#[test]
fn never_more_than_two_buffers_per_worker_in_flight() {
    let live = AtomicUsize::new(0);
    let peak = AtomicUsize::new(0);
    let threads = 3;
    run(256 * 1024, Options::new(threads, 1024), |_, _| {
        let n = live.fetch_add(1, Ordering::SeqCst) + 1;
        peak.fetch_max(n, Ordering::SeqCst);
        Ok(())
    }, |_, _, ()| {
        // A slow writer: workers must wait for buffers, not run ahead.
        std::thread::sleep(std::time::Duration::from_micros(50));
        live.fetch_sub(1, Ordering::SeqCst);
        Ok(())
    })
    .unwrap();
    assert!(peak.load(Ordering::SeqCst) <= 2 * threads, "peak {}", peak.load(Ordering::SeqCst));
}

#[test]
fn a_worker_error_stops_the_run_and_is_returned() {
    let written = Mutex::new(Vec::new());
    let r = run(1 << 20, Options::new(2, 4096), |pos, _| {
        if pos == 40 * 4096 {
            return Err(Error::InvalidArgument("boom".into()));
        }
        Ok(())
    }, |pos, _, ()| {
        written.lock().unwrap().push(pos);
        Ok(())
    });
    assert!(matches!(r, Err(Error::InvalidArgument(ref m)) if m == "boom"), "{r:?}");
    let w = written.into_inner().unwrap();
    // Everything before the failed chunk may be written, nothing at or after it.
    assert!(w.iter().all(|&p| p < 40 * 4096), "{w:?}");
}

/// Errors anywhere, with workers held up at random: every run ends with
/// its error. (A worker that saw the stop after claiming a chunk used to
/// leave a gap the writer waited at forever, holding the buffers the
/// other workers waited for; a watchdog turns such a hang into a failure.)
#[test]
fn errors_never_leave_the_run_hanging() {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for round in 0..2000u64 {
            let bad = (round * 7919 % 60) * 4096;
            let r = run(64 * 4096, Options::new(3, 4096), |pos, _| {
                if (pos / 4096 + round) % 5 == 0 {
                    std::thread::yield_now();
                }
                if (pos / 4096 + round) % 11 == 0 {
                    std::thread::sleep(std::time::Duration::from_micros(200));
                }
                if pos == bad {
                    return Err(Error::InvalidArgument("boom".into()));
                }
                Ok(())
            }, |_, _, ()| Ok(()));
            assert!(matches!(r, Err(Error::InvalidArgument(ref m)) if m == "boom"), "round {round}: {r:?}");
        }
        tx.send(()).unwrap();
    });
    rx.recv_timeout(std::time::Duration::from_secs(60)).expect("a pipeline run with an error hung");
}

#[test]
fn a_writer_error_stops_the_workers() {
    let worked = AtomicUsize::new(0);
    let r = run(64 << 20, Options::new(2, 4096), |_, _| {
        worked.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }, |pos, _, ()| if pos == 3 * 4096 { Err(Error::InvalidArgument("disk full".into())) } else { Ok(()) });
    assert!(matches!(r, Err(Error::InvalidArgument(ref m)) if m == "disk full"));
    // Bounded by the buffers in flight when the writer failed, not the 16384 chunks.
    assert!(worked.load(Ordering::SeqCst) < 64, "{}", worked.load(Ordering::SeqCst));
}
