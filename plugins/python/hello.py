"""mock-kong "hello" test plugin for the official Python plugin server (kong-pdk).

Access phase, exactly two PDK calls::

    host = kong.request.get_header("host")
    kong.response.set_header("x-hello", "<message> <host>")

and a third when config ``upstream_header`` is set (the upstream sees it)::

    kong.service.request.set_header(<upstream_header>, "<message> <host>")

Served either from a plugin directory (``kong-python-pluginserver -d DIR``)
or as a dedicated server (``python3 hello.py -p PREFIX --socket-name hello.socket``).
"""

Schema = [
    {"message": {"type": "string", "default": "hello"}},
    {"upstream_header": {"type": "string"}},
]
version = "0.1.0"
priority = 100


def _value(result):
    """Return the data of a PDK call.

    kong-pdk returns ``(data, err)`` tuples by default ("Lua style") and plain
    data with ``--no-lua-style``; msgpack never decodes to a tuple, so a tuple
    is always the Lua-style pair.
    """
    if isinstance(result, tuple):
        return result[0]
    return result


def _text(value):
    """Render a PDK result for a header; nil becomes the empty string."""
    return "" if value is None else str(value)


class Plugin(object):
    """One plugin instance, created by StartInstance with the decoded config."""

    def __init__(self, config):
        message = config.get("message")
        self.message = "hello" if message is None else str(message)
        upstream_header = config.get("upstream_header")
        self.upstream_header = "" if upstream_header is None else str(upstream_header)

    def access(self, kong):
        host = _text(_value(kong.request.get_header("host")))
        kong.response.set_header("x-hello", self.message + " " + host)
        if self.upstream_header:
            kong.service.request.set_header(self.upstream_header, self.message + " " + host)


if __name__ == "__main__":
    from kong_pdk.cli import start_dedicated_server

    start_dedicated_server("hello", Plugin, version, priority, Schema)
