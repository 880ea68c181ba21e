//! Row tuples (pgoutput's TupleData) as sent: validated when the message is
//! decoded, converted into values only later, by the relation cache.
//!
//! Invariant: a [`TupleData`] only exists for bytes that [`TupleData::read`]
//! walked completely, so iterating it again cannot meet malformed input.

use super::message::DecodeError;
use super::reader::Reader;

/// One column of a tuple as sent: nothing is converted yet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ColumnData<'a> {
    Null,
    /// An unchanged TOASTed value the server did not resend.
    UnchangedToast,
    /// The type's text output (the host asks for text).
    Text(&'a [u8]),
    /// The type's binary send format (only if binary mode was requested).
    Binary(&'a [u8]),
}

/// A row as sent: validated, not yet converted. Iterate with [`TupleData::iter`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TupleData<'a> {
    columns: usize,
    /// The column entries, after the column count.
    raw: &'a [u8],
}

impl<'a> TupleData<'a> {
    /// Reads and validates one TupleData, leaving the reader after it.
    pub(crate) fn read(r: &mut Reader<'a>) -> Result<Self, DecodeError> {
        let columns = r.count16("tuple column count")?;
        let start = r.offset();
        let before = r.clone();
        for _ in 0..columns {
            read_column(r)?;
        }
        let len = r.offset() - start;
        let mut raw_reader = before;
        let raw = raw_reader.bytes(len, "tuple data")?;
        Ok(TupleData { columns, raw })
    }

    /// How many columns the tuple has.
    pub fn len(&self) -> usize {
        self.columns
    }

    pub fn is_empty(&self) -> bool {
        self.columns == 0
    }

    /// The columns, in table order.
    pub fn iter(&self) -> TupleIter<'a> {
        TupleIter {
            reader: Reader::new(self.raw),
            left: self.columns,
        }
    }
}

fn read_column<'a>(r: &mut Reader<'a>) -> Result<ColumnData<'a>, DecodeError> {
    let offset = r.offset();
    match r.u8("tuple column kind")? {
        b'n' => Ok(ColumnData::Null),
        b'u' => Ok(ColumnData::UnchangedToast),
        kind @ (b't' | b'b') => {
            let len = r.count32("column value length")?;
            let bytes = r.bytes(len, "column value")?;
            Ok(if kind == b't' {
                ColumnData::Text(bytes)
            } else {
                ColumnData::Binary(bytes)
            })
        }
        found => Err(DecodeError::UnexpectedByte {
            what: "tuple column kind",
            offset,
            found,
            expected: "'n', 'u', 't' or 'b'",
        }),
    }
}

/// The columns of a [`TupleData`]. The tuple was validated when decoded, so
/// iteration cannot fail; should it ever meet bad bytes it simply ends
/// early, and the relation cache's column-count check reports that.
#[derive(Clone, Debug)]
pub struct TupleIter<'a> {
    reader: Reader<'a>,
    left: usize,
}

impl<'a> Iterator for TupleIter<'a> {
    type Item = ColumnData<'a>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        read_column(&mut self.reader).ok()
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (0, Some(self.left))
    }
}
