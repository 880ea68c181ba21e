//! Sink that publishes each change as a MessagePack envelope: the same
//! envelope, subjects and configuration as the JSON sink (see
//! `plugins/README.md`), with maps keyed by field name and `bytea` values
//! and message contents as MessagePack binary instead of base64 text.

use serde::Serialize;
use sluice_plugin_sdk::envelope::Encoder;
use sluice_plugin_sdk::{Batch, Message, PluginError, Result, Sink, export_sink};

/// The plugin: the parsed subject and header configuration.
#[derive(Debug)]
pub struct MsgpackSink(Encoder);

impl Sink for MsgpackSink {
    fn init(config: &str) -> Result<Self> {
        let encoder = Encoder::from_config(config)?;
        if encoder.bundle_subject().is_some() {
            return Err(PluginError::bad_config(
                "config key `bundle`: msgpack-sink publishes one message per event; only json-sink bundles",
            ));
        }
        Ok(MsgpackSink(encoder))
    }

    fn encode(&mut self, batch: Batch) -> Result<Vec<Message>> {
        self.0.encode(&batch, |envelope, payload| {
            // Field names as map keys (rmp-serde's default writes structs as
            // arrays), so that consumers need no schema.
            envelope.serialize(&mut rmp_serde::Serializer::new(payload).with_struct_map())
        })
    }
}

export_sink!(MsgpackSink);

#[cfg(test)]
mod tests {
    use sluice_plugin_sdk::{Column, Relation, RowChange, Value};

    use super::*;

    #[test]
    fn bundles_are_refused() {
        let err = MsgpackSink::init(r#"{"bundle": "cdc.tx"}"#).unwrap_err();
        assert_eq!(
            err.message(),
            "config key `bundle`: msgpack-sink publishes one message per event; only json-sink bundles"
        );
    }

    #[test]
    fn envelope_in_messagepack() {
        let mut batch = Batch::new(9, 0x200, 0);
        let users = batch.add_relation(Relation::new(
            7,
            "public",
            "users",
            vec![
                Column::new("id", 23, "int4").key(),
                Column::new("avatar", 17, "bytea"),
            ],
        ));
        batch.push(RowChange::delete(
            users,
            0x100,
            vec![1.into(), Value::Bytes(vec![0xFF])],
        ));
        let messages = MsgpackSink::init("{}").unwrap().encode(batch).unwrap();
        assert_eq!(messages.len(), 1);
        assert_eq!(messages[0].subject, "cdc.public.users");
        let mut expected = Vec::new();
        expected.extend_from_slice(b"\x84\xa2op\xa1d\xa6source\x87");
        expected.extend_from_slice(b"\xa6schema\xa6public\xa5table\xa5users\xa3lsn\xa50/100");
        expected.extend_from_slice(b"\xaacommit_lsn\xa50/200\xa3xid\x09");
        expected
            .extend_from_slice(b"\xabcommit_time\xb41970-01-01T00:00:00Z\xaecommit_time_us\x00");
        expected.extend_from_slice(b"\xa6before\x82\xa2id\x01\xa6avatar\xc4\x01\xff\xa5after\xc0");
        assert_eq!(messages[0].payload, expected);
    }
}
