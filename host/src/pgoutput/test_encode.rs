//! Test-only encoders that build pgoutput messages byte by byte, following
//! the protocol documentation, so that the decoder is tested against
//! independently constructed input.

/// A column of a TupleData.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Col<'a> {
    Null,
    Toast,
    Text(&'a str),
    Binary(&'a [u8]),
}

#[derive(Debug, Default)]
pub(crate) struct Msg(pub(crate) Vec<u8>);

/// Appenders of integers in network byte order, one per type, named after it.
macro_rules! big_endian {
    ($($t:ident),*) => {
        $(
            pub(crate) fn $t(mut self, v: $t) -> Self {
                self.0.extend_from_slice(&v.to_be_bytes());
                self
            }
        )*
    };
}

impl Msg {
    pub(crate) fn new(tag: u8) -> Self {
        Msg(vec![tag])
    }
    pub(crate) fn u8(mut self, v: u8) -> Self {
        self.0.push(v);
        self
    }
    big_endian!(i16, u32, i32, u64, i64);

    pub(crate) fn str(mut self, s: &str) -> Self {
        self.0.extend_from_slice(s.as_bytes());
        self.0.push(0);
        self
    }
    pub(crate) fn bytes(mut self, b: &[u8]) -> Self {
        self.0.extend_from_slice(b);
        self
    }
    pub(crate) fn tuple(mut self, cols: &[Col<'_>]) -> Self {
        self = self.i16(cols.len() as i16);
        for c in cols {
            self = match c {
                Col::Null => self.u8(b'n'),
                Col::Toast => self.u8(b'u'),
                Col::Text(t) => self.u8(b't').i32(t.len() as i32).bytes(t.as_bytes()),
                Col::Binary(b) => self.u8(b'b').i32(b.len() as i32).bytes(b),
            };
        }
        self
    }
    pub(crate) fn done(self) -> Vec<u8> {
        self.0
    }
}

/// PostgreSQL-epoch microseconds for a Unix-epoch time.
pub(crate) fn pg_time(unix_micros: i64) -> i64 {
    unix_micros - super::message::PG_EPOCH_OFFSET_MICROS
}

pub(crate) fn begin(final_lsn: u64, unix_micros: i64, xid: u32) -> Vec<u8> {
    Msg::new(b'B')
        .u64(final_lsn)
        .i64(pg_time(unix_micros))
        .u32(xid)
        .done()
}

pub(crate) fn commit(commit_lsn: u64, end_lsn: u64, unix_micros: i64) -> Vec<u8> {
    Msg::new(b'C')
        .u8(0)
        .u64(commit_lsn)
        .u64(end_lsn)
        .i64(pg_time(unix_micros))
        .done()
}

/// A Relation message; columns are (key flag, name, type OID).
pub(crate) fn relation(
    oid: u32,
    schema: &str,
    name: &str,
    columns: &[(bool, &str, u32)],
) -> Vec<u8> {
    let mut m = Msg::new(b'R')
        .u32(oid)
        .str(schema)
        .str(name)
        .u8(b'd')
        .i16(columns.len() as i16);
    for (key, col, type_oid) in columns {
        m = m.u8(u8::from(*key)).str(col).u32(*type_oid).i32(-1);
    }
    m.done()
}

pub(crate) fn insert(oid: u32, cols: &[Col<'_>]) -> Vec<u8> {
    Msg::new(b'I').u32(oid).u8(b'N').tuple(cols).done()
}
