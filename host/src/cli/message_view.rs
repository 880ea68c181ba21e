//! How `sluice plugin run` shows a sink's messages: one JSON object per
//! message, with the payload in the most readable form that is still exact.
//!
//! A payload that is JSON is shown as that JSON value (`"payload": {…}`),
//! re-printed on one line but otherwise verbatim (numbers keep their exact
//! text); one that is UTF-8 text as a string (`"payload-text"`); anything
//! else as lowercase hex (`"payload-hex"`). The key says which form was
//! chosen, so a reader can always get the original bytes back.

use serde::Serialize;
use serde_json::value::RawValue;

use sluice_host::model::Message;

/// One message as shown to a user.
#[derive(Debug, Serialize)]
pub(crate) struct MessageView<'a> {
    subject: &'a str,
    headers: &'a [(String, String)],
    #[serde(flatten)]
    payload: PayloadView<'a>,
    /// The index of the event in the sink's input the message names.
    #[serde(skip_serializing_if = "Option::is_none")]
    event: Option<u32>,
}

#[derive(Debug, Serialize)]
enum PayloadView<'a> {
    #[serde(rename = "payload")]
    Json(Box<RawValue>),
    #[serde(rename = "payload-text")]
    Text(&'a str),
    #[serde(rename = "payload-hex")]
    Hex(String),
}

impl<'a> MessageView<'a> {
    pub(crate) fn new(message: &'a Message) -> Self {
        MessageView {
            subject: &message.subject,
            headers: &message.headers,
            payload: PayloadView::of(&message.payload),
            event: message.event,
        }
    }
}

impl<'a> PayloadView<'a> {
    fn of(payload: &'a [u8]) -> Self {
        let Ok(text) = std::str::from_utf8(payload) else {
            return PayloadView::Hex(hex(payload));
        };
        if serde_json::from_str::<&RawValue>(text).is_ok()
            && let Ok(raw) = RawValue::from_string(one_line(text))
        {
            return PayloadView::Json(raw);
        }
        PayloadView::Text(text)
    }
}

/// Removes the whitespace between the tokens of valid JSON text, so that a
/// pretty-printed payload fits on one output line; strings are untouched.
fn one_line(json: &str) -> String {
    let mut out = String::with_capacity(json.len());
    let (mut in_string, mut escaped) = (false, false);
    for c in json.chars() {
        if in_string {
            out.push(c);
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_string = false;
            }
        } else if c == '"' {
            in_string = true;
            out.push(c);
        } else if !c.is_ascii_whitespace() {
            out.push(c);
        }
    }
    out
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn show(payload: &[u8]) -> String {
        let message = Message {
            subject: "cdc.t".into(),
            headers: vec![("k".into(), "v".into())],
            payload: payload.to_vec(),
            event: None,
        };
        serde_json::to_string(&MessageView::new(&message)).unwrap()
    }

    #[test]
    fn json_payloads_are_shown_as_json_on_one_line() {
        assert_eq!(
            show(b"{\n  \"a\": 12345678901234567890.50,\n  \"b\": \"x  y\\\" z\"\n}"),
            r#"{"subject":"cdc.t","headers":[["k","v"]],"payload":{"a":12345678901234567890.50,"b":"x  y\" z"}}"#
        );
    }

    #[test]
    fn text_and_binary_payloads() {
        assert_eq!(
            show(b"hello"),
            r#"{"subject":"cdc.t","headers":[["k","v"]],"payload-text":"hello"}"#
        );
        assert_eq!(
            show(&[0, 0xff, 0x10]),
            r#"{"subject":"cdc.t","headers":[["k","v"]],"payload-hex":"00ff10"}"#
        );
        assert_eq!(
            show(b""),
            r#"{"subject":"cdc.t","headers":[["k","v"]],"payload-text":""}"#
        );
    }
}
