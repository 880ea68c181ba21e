"""The JSON sink in Python: the same envelope, subjects and headers as the
Rust `json-sink`, byte for byte (format in plugins/README.md); the work is
in `sluice_plugin.envelope`."""

import wit_world

from sluice_plugin.envelope import Encoder


# componentize-py makes a new `WitWorld` object for every call, so the
# encoder `init` builds lives in the module, one per instance.
_encoder = None


class WitWorld(wit_world.WitWorld):
    def init(self, config: str) -> None:
        global _encoder
        _encoder = Encoder(config)

    def encode(self, batch):
        return _encoder.encode(batch)
