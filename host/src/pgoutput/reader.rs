//! A cursor over one pgoutput message with checked, big-endian reads.
//!
//! Every read names what it was reading, so that a short or malformed
//! message fails with an error like "truncated reading column type OID at
//! byte 37: needed 4 bytes, 2 left" instead of a panic. The cursor never
//! allocates: strings and byte runs are returned as slices of the input, and
//! callers size any collection they build by the bytes that remain, never by
//! a count read from the wire alone.

use super::message::DecodeError;

/// A position in a message being decoded.
#[derive(Clone, Debug)]
pub(crate) struct Reader<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(data: &'a [u8]) -> Self {
        Reader { data, pos: 0 }
    }

    /// The offset of the next byte, counted from the start of the message.
    pub(crate) fn offset(&self) -> usize {
        self.pos
    }

    pub(crate) fn remaining(&self) -> usize {
        self.data.len() - self.pos
    }

    /// Takes the next `n` bytes.
    pub(crate) fn bytes(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], DecodeError> {
        let rest = &self.data[self.pos..];
        if rest.len() < n {
            return Err(DecodeError::Truncated {
                what,
                offset: self.pos,
                needed: n,
                remaining: rest.len(),
            });
        }
        let (taken, _) = rest.split_at(n);
        self.pos += n;
        Ok(taken)
    }

    fn array<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N], DecodeError> {
        let bytes = self.bytes(N, what)?;
        let mut out = [0u8; N];
        out.copy_from_slice(bytes);
        Ok(out)
    }

    pub(crate) fn u8(&mut self, what: &'static str) -> Result<u8, DecodeError> {
        Ok(self.array::<1>(what)?[0])
    }

    pub(crate) fn i16(&mut self, what: &'static str) -> Result<i16, DecodeError> {
        Ok(i16::from_be_bytes(self.array(what)?))
    }

    pub(crate) fn i32(&mut self, what: &'static str) -> Result<i32, DecodeError> {
        Ok(i32::from_be_bytes(self.array(what)?))
    }

    pub(crate) fn u32(&mut self, what: &'static str) -> Result<u32, DecodeError> {
        Ok(u32::from_be_bytes(self.array(what)?))
    }

    pub(crate) fn u64(&mut self, what: &'static str) -> Result<u64, DecodeError> {
        Ok(u64::from_be_bytes(self.array(what)?))
    }

    pub(crate) fn i64(&mut self, what: &'static str) -> Result<i64, DecodeError> {
        Ok(i64::from_be_bytes(self.array(what)?))
    }

    /// A count that the protocol sends as a signed 16-bit integer but that
    /// can never be negative.
    pub(crate) fn count16(&mut self, what: &'static str) -> Result<usize, DecodeError> {
        let offset = self.pos;
        let n = self.i16(what)?;
        non_negative(what, offset, n.into())
    }

    /// A count or length sent as a signed 32-bit integer that can never be
    /// negative.
    pub(crate) fn count32(&mut self, what: &'static str) -> Result<usize, DecodeError> {
        let offset = self.pos;
        let n = self.i32(what)?;
        non_negative(what, offset, n.into())
    }

    /// A NUL-terminated string, which pgoutput sends in the database
    /// encoding; the host asks for UTF-8, so anything else is an error.
    pub(crate) fn string(&mut self, what: &'static str) -> Result<&'a str, DecodeError> {
        let offset = self.pos;
        let rest = &self.data[self.pos..];
        let Some(len) = rest.iter().position(|&b| b == 0) else {
            return Err(DecodeError::UnterminatedString { what, offset });
        };
        let text =
            std::str::from_utf8(&rest[..len]).map_err(|source| DecodeError::InvalidUtf8 {
                what,
                offset,
                source,
            })?;
        self.pos += len + 1;
        Ok(text)
    }

    /// Fails unless the whole message has been consumed: trailing bytes mean
    /// the message was not what its tag said, and guessing would hide that.
    pub(crate) fn finish(&self, message: &'static str) -> Result<(), DecodeError> {
        match self.remaining() {
            0 => Ok(()),
            count => Err(DecodeError::TrailingBytes {
                message,
                offset: self.pos,
                count,
            }),
        }
    }
}

/// `value`, read at `offset`, as a count: negative is malformed.
fn non_negative(what: &'static str, offset: usize, value: i64) -> Result<usize, DecodeError> {
    usize::try_from(value).map_err(|_| DecodeError::NegativeCount {
        what,
        offset,
        value,
    })
}
