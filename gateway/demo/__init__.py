"""``edge-gateway demo``: the whole flow on the bundled simulators, checked end to end."""

__all__: list[str] = []
