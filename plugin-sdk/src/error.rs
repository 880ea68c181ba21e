//! Constructors and accessors for [`PluginError`], the error every plugin
//! call returns. The host picks the pipeline's error policy from the case:
//! `bad-config` fails `init`, `bad-input` names one event the plugin cannot
//! process (so the host can dead-letter or skip just that event), `other`
//! is everything else.

use crate::{BadInput, PluginError};

impl PluginError {
    /// The configuration cannot be used; `message` says which key and why.
    pub fn bad_config(message: impl Into<String>) -> Self {
        PluginError::BadConfig(message.into())
    }

    /// The event at `event_index` of the batch cannot be processed.
    pub fn bad_input(event_index: usize, message: impl Into<String>) -> Self {
        PluginError::BadInput(BadInput {
            // A batch never holds more than u32::MAX events (the WIT list
            // length is a u32), so saturating never changes a real index.
            event_index: Some(u32::try_from(event_index).unwrap_or(u32::MAX)),
            message: message.into(),
        })
    }

    /// Some event of the batch cannot be processed, the plugin cannot tell
    /// which; the host then searches for it by splitting the batch.
    pub fn bad_input_somewhere(message: impl Into<String>) -> Self {
        PluginError::BadInput(BadInput {
            event_index: None,
            message: message.into(),
        })
    }

    /// Any other failure.
    pub fn other(message: impl Into<String>) -> Self {
        PluginError::Other(message.into())
    }

    /// The human-readable text of the error, whatever its case.
    pub fn message(&self) -> &str {
        match self {
            PluginError::BadConfig(message) | PluginError::Other(message) => message,
            PluginError::BadInput(input) => &input.message,
        }
    }
}
