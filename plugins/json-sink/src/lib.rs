//! Sink that publishes each change as a JSON envelope (format and
//! configuration in `plugins/README.md`): one message per row change, per
//! truncated table and per logical message, on subject
//! `<prefix>.<schema>.<table>` by default.
//!
//! Row changes are written as JSON directly from the batch into the
//! payload ([`Encoder::encode_json`]), so a row costs one payload buffer and
//! one subject string.

use sluice_plugin_sdk::envelope::Encoder;
use sluice_plugin_sdk::{Batch, Message, Result, Sink, export_sink};

/// The plugin: the parsed subject and header configuration.
#[derive(Debug)]
pub struct JsonSink(Encoder);

impl Sink for JsonSink {
    fn init(config: &str) -> Result<Self> {
        Encoder::from_config(config).map(JsonSink)
    }

    fn encode(&mut self, batch: Batch) -> Result<Vec<Message>> {
        self.0.encode_json(&batch)
    }
}

export_sink!(JsonSink);

#[cfg(test)]
mod tests {
    use sluice_plugin_sdk::{Column, LogicalMessage, PluginError, Relation, RowChange, Value};

    use super::*;

    #[test]
    fn one_json_message_per_event() {
        let mut batch = Batch::new(9, 0x200, 86_400_000_000);
        let users = batch.add_relation(Relation::new(
            7,
            "public",
            "users",
            vec![
                Column::new("id", 23, "int4").key(),
                Column::new("avatar", 17, "bytea"),
            ],
        ));
        batch.push(RowChange::insert(
            users,
            0x100,
            vec![1.into(), Value::Bytes(vec![1, 2, 3])],
        ));
        batch.push(LogicalMessage {
            transactional: true,
            prefix: "app".into(),
            content: b"{}".to_vec(),
            lsn: 0x150,
        });
        let mut sink = JsonSink::init(r#"{"subject-prefix": "db1"}"#).unwrap();
        let messages = sink.encode(batch).unwrap();
        let texts: Vec<_> = messages
            .iter()
            .map(|m| (m.subject.as_str(), std::str::from_utf8(&m.payload).unwrap()))
            .collect();
        assert_eq!(
            texts,
            [
                (
                    "db1.public.users",
                    r#"{"op":"c","source":{"schema":"public","table":"users","lsn":"0/100","commit_lsn":"0/200","xid":9,"commit_time":"1970-01-02T00:00:00Z","commit_time_us":86400000000},"before":null,"after":{"id":1,"avatar":"AQID"}}"#
                ),
                (
                    "db1.messages",
                    r#"{"op":"m","source":{"lsn":"0/150","commit_lsn":"0/200","xid":9,"commit_time":"1970-01-02T00:00:00Z","commit_time_us":86400000000},"message":{"prefix":"app","transactional":true,"content":"e30="}}"#
                ),
            ]
        );
    }

    #[test]
    fn unknown_config_keys_are_refused() {
        assert_eq!(
            JsonSink::init(r#"{"prefix": "x"}"#).unwrap_err(),
            PluginError::bad_config(
                "config: unknown field `prefix`, expected one of `subject-prefix`, `subject`, `message-subject`, `headers`, `bundle`"
            )
        );
    }
}
