//! Bounds-checked byte cursors shared by the relay-message and link-specifier codecs.
//!
//! Invariant: no method panics, whatever the input; running out of input is
//! [`Error::Truncated`] and running out of output space is [`Error::TooLarge`].

use crate::error::{Error, Result};
use bytes::BytesMut;

/// A read cursor over a byte slice.
#[derive(Debug, Clone)]
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Reader { buf }
    }

    pub(crate) fn remaining(&self) -> usize {
        self.buf.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// Everything not yet read.
    pub(crate) fn rest(&self) -> &'a [u8] {
        self.buf
    }

    pub(crate) fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8]> {
        if n > self.buf.len() {
            return Err(Error::Truncated(what));
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Ok(head)
    }

    pub(crate) fn take_array<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N]> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N, what)?);
        Ok(out)
    }

    pub(crate) fn u8(&mut self, what: &'static str) -> Result<u8> {
        Ok(self.take_array::<1>(what)?[0])
    }

    pub(crate) fn u16(&mut self, what: &'static str) -> Result<u16> {
        Ok(u16::from_be_bytes(self.take_array(what)?))
    }

    pub(crate) fn u32(&mut self, what: &'static str) -> Result<u32> {
        Ok(u32::from_be_bytes(self.take_array(what)?))
    }

    /// Reads up to (not including) the first `delim`, and consumes the delimiter too.
    pub(crate) fn take_until(&mut self, delim: u8, what: &'static str) -> Result<&'a [u8]> {
        let pos = self
            .buf
            .iter()
            .position(|&b| b == delim)
            .ok_or(Error::Truncated(what))?;
        let head = &self.buf[..pos];
        self.buf = &self.buf[pos + 1..];
        Ok(head)
    }
}

/// Somewhere to put encoded bytes: a fixed slice (the relay cell body, no allocation) or
/// a growable `BytesMut`.
pub(crate) trait Put {
    fn put(&mut self, b: &[u8]) -> Result<()>;

    fn put_u8(&mut self, v: u8) -> Result<()> {
        self.put(&[v])
    }
    fn put_u16(&mut self, v: u16) -> Result<()> {
        self.put(&v.to_be_bytes())
    }
    fn put_u32(&mut self, v: u32) -> Result<()> {
        self.put(&v.to_be_bytes())
    }
}

impl Put for BytesMut {
    fn put(&mut self, b: &[u8]) -> Result<()> {
        self.extend_from_slice(b);
        Ok(())
    }
}

/// Writes into a fixed slice; overflowing it is [`Error::TooLarge`].
#[derive(Debug)]
pub(crate) struct SliceWriter<'a> {
    buf: &'a mut [u8],
    pos: usize,
}

impl<'a> SliceWriter<'a> {
    pub(crate) fn new(buf: &'a mut [u8]) -> Self {
        SliceWriter { buf, pos: 0 }
    }
    pub(crate) fn written(&self) -> usize {
        self.pos
    }
}

impl Put for SliceWriter<'_> {
    fn put(&mut self, b: &[u8]) -> Result<()> {
        let end = self
            .pos
            .checked_add(b.len())
            .filter(|&e| e <= self.buf.len())
            .ok_or(Error::TooLarge("relay message does not fit the cell"))?;
        self.buf[self.pos..end].copy_from_slice(b);
        self.pos = end;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reader_refuses_to_overrun() {
        let mut r = Reader::new(&[1, 2, 3]);
        assert_eq!(r.u16("x"), Ok(0x0102));
        assert_eq!(r.u16("x"), Err(Error::Truncated("x")));
        // A failed read consumes nothing.
        assert_eq!(r.u8("x"), Ok(3));
        assert!(r.is_empty());
        let mut r = Reader::new(b"abc");
        assert_eq!(r.take_until(0, "nul"), Err(Error::Truncated("nul")));
        let mut r = Reader::new(b"ab\0c");
        assert_eq!(r.take_until(0, "nul"), Ok(&b"ab"[..]));
        assert_eq!(r.rest(), b"c");
    }

    #[test]
    fn slice_writer_refuses_to_overflow() {
        let mut buf = [0u8; 3];
        let mut w = SliceWriter::new(&mut buf);
        assert!(w.put_u16(0xabcd).is_ok());
        assert!(w.put_u16(1).is_err());
        assert!(w.put_u8(0xef).is_ok());
        assert_eq!(w.written(), 3);
        assert_eq!(buf, [0xab, 0xcd, 0xef]);
    }
}
