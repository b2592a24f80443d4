"""mock-kong "bench" test plugin for the official Python plugin server (kong-pdk).

The access phase makes exactly ``calls`` PDK calls: ``calls - 1`` calls of
``method`` (``kong.request.get_header`` gets the argument ``"x-bench"``, any
other method is called without arguments), then
``kong.response.set_header("x-bench-calls", "<calls>")``. ``calls = 0``
makes no call at all.
"""

Schema = [
    {"calls": {"type": "integer", "default": 0}},
    {"method": {"type": "string", "default": "kong.request.get_header"}},
]
version = "0.1.0"
priority = 100


class Plugin(object):
    """One plugin instance, created by StartInstance with the decoded config."""

    def __init__(self, config):
        calls = config.get("calls")
        method = config.get("method")
        self.calls = 0 if calls is None else int(calls)
        self.method = "kong.request.get_header" if method is None else str(method)

    def access(self, kong):
        if self.calls < 1:
            return
        # kong-pdk resolves any dotted name dynamically: walk "kong.a.b" from the root.
        target = kong
        for part in self.method.split(".")[1:]:
            target = getattr(target, part)
        is_get_header = self.method == "kong.request.get_header"
        for _ in range(self.calls - 1):
            if is_get_header:
                target("x-bench")
            else:
                target()
        kong.response.set_header("x-bench-calls", str(self.calls))


if __name__ == "__main__":
    from kong_pdk.cli import start_dedicated_server

    start_dedicated_server("bench", Plugin, version, priority, Schema)
