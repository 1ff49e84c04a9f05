"""Sparkplug B 3.0: the vendored Eclipse Tahu ``sparkplug_b.proto``, its generated code, payload
helpers (:mod:`.payload`) and the edge-node payload mode (:mod:`.node`)."""

__all__: list[str] = []
