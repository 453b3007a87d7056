//! A connection's output: small packets are copied into one growing buffer (so that a
//! whole poll round of them leaves in one write), large payloads are queued by
//! reference to the reader's buffer (no copy of a 1 MiB payload per subscriber). Unbounded:
//! the null broker is a ceiling tool for loopback runs, not a server.

use std::collections::VecDeque;
use std::io::{self, IoSlice, Write};

use bytes::{Buf, Bytes};

/// Sent bytes at the front of `tail` are dropped (a memmove of the rest) past this much,
/// so that a subscriber that never catches up does not keep everything ever sent.
const COMPACT_AT: usize = 64 * 1024;
/// Buffers handed to one writev.
const MAX_IOV: usize = 64;

#[derive(Default)]
pub struct Out {
    /// Queued before `tail`: shared payloads and the bytes that preceded them.
    segs: VecDeque<Bytes>,
    /// Bytes in `segs`.
    seg_bytes: usize,
    pub tail: Vec<u8>,
    /// Bytes of `tail` already written.
    pos: usize,
}

impl Out {
    pub fn is_empty(&self) -> bool {
        self.segs.is_empty() && self.pos == self.tail.len()
    }

    /// Bytes queued and not written yet.
    pub fn len(&self) -> usize {
        self.seg_bytes + self.tail.len() - self.pos
    }

    /// Queues `b` after everything appended to `tail` so far.
    pub fn push_shared(&mut self, b: Bytes) {
        if self.pos < self.tail.len() {
            // A few header bytes at most while large payloads flow: copied.
            self.seg_bytes += self.tail.len() - self.pos;
            self.segs
                .push_back(Bytes::copy_from_slice(&self.tail[self.pos..]));
        }
        self.tail.clear();
        self.pos = 0;
        self.seg_bytes += b.len();
        self.segs.push_back(b);
    }

    /// Writes as much as `w` takes. `Ok(true)`: all written; `Ok(false)`: the socket is
    /// full (a short write or `WouldBlock`), wait until it is writable again.
    pub fn write_to(&mut self, mut w: impl Write) -> io::Result<bool> {
        loop {
            let result = if self.segs.is_empty() {
                if self.pos == self.tail.len() {
                    self.tail.clear();
                    self.pos = 0;
                    return Ok(true);
                }
                let want = self.tail.len() - self.pos;
                w.write(&self.tail[self.pos..]).map(|n| (n, want))
            } else {
                let mut iov: Vec<IoSlice<'_>> = Vec::with_capacity(MAX_IOV);
                iov.extend(self.segs.iter().take(MAX_IOV - 1).map(|b| IoSlice::new(b)));
                if self.segs.len() < MAX_IOV {
                    iov.push(IoSlice::new(&self.tail[self.pos..]));
                }
                let want = iov.iter().map(|s| s.len()).sum();
                w.write_vectored(&iov).map(|n| (n, want))
            };
            match result {
                Ok((0, want)) if want > 0 => {
                    return Err(io::Error::new(io::ErrorKind::WriteZero, "wrote nothing"))
                }
                Ok((n, want)) => {
                    self.consume(n);
                    if n < want {
                        self.compact();
                        return Ok(false);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    fn consume(&mut self, mut n: usize) {
        while n > 0 {
            match self.segs.front_mut() {
                Some(b) if b.len() <= n => {
                    n -= b.len();
                    self.seg_bytes -= b.len();
                    self.segs.pop_front();
                }
                Some(b) => {
                    b.advance(n);
                    self.seg_bytes -= n;
                    return;
                }
                None => {
                    self.pos = (self.pos + n).min(self.tail.len());
                    return;
                }
            }
        }
    }

    fn compact(&mut self) {
        if self.pos >= COMPACT_AT && self.pos * 2 >= self.tail.len() {
            self.tail.drain(..self.pos);
            self.pos = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Takes at most `room` bytes per call, then `WouldBlock`.
    struct Sink {
        got: Vec<u8>,
        room: usize,
    }

    impl Write for &mut Sink {
        fn write(&mut self, b: &[u8]) -> io::Result<usize> {
            if self.room == 0 {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            let n = b.len().min(self.room);
            self.room -= n;
            self.got.extend_from_slice(&b[..n]);
            Ok(n)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn order_is_kept_across_partial_writes() {
        let mut o = Out::default();
        let mut want = Vec::new();
        let mut sink = Sink {
            got: Vec::new(),
            room: 0,
        };
        for i in 0..200u32 {
            let small = [i as u8; 3];
            o.tail.extend_from_slice(&small);
            want.extend_from_slice(&small);
            if i % 7 == 0 {
                let big = Bytes::from(vec![(i + 1) as u8; 1000]);
                want.extend_from_slice(&big);
                o.push_shared(big);
            }
            sink.room = 517;
            assert!(!o.write_to(&mut sink).unwrap() || o.is_empty());
            assert_eq!(o.len(), want.len() - sink.got.len());
        }
        sink.room = usize::MAX;
        assert!(o.write_to(&mut sink).unwrap());
        assert!(o.is_empty());
        assert_eq!(sink.got, want);
    }

    #[test]
    fn a_slow_reader_does_not_keep_what_was_sent() {
        let mut o = Out::default();
        let mut sink = Sink {
            got: Vec::new(),
            room: 0,
        };
        for _ in 0..1000 {
            o.tail.extend_from_slice(&[1; 1000]);
            sink.room = 900;
            assert!(!o.write_to(&mut sink).unwrap());
        }
        assert!(o.tail.len() < 200_000, "{}", o.tail.len());
        assert_eq!(sink.got.len() + o.tail.len() - o.pos, 1_000_000);
    }
}
