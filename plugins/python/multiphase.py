"""mock-kong "multiphase" test plugin for the official Python plugin server (kong-pdk).

Modelled on Kong's go-hello test fixture::

    access:   host = kong.request.get_header("host")
              kong.response.set_header("x-multi-access", host)
              kong.ctx.shared.set("shared_msg", message)
    response: v = kong.service.response.get_header("Server")
              kong.response.set_header("x-multi-response", "got from server '<v>'")
    log:      kong.ctx.shared.get("shared_msg"), kong.request.get_header("x-loose-data"),
              kong.response.get_header("x-powered-by"), kong.log.serialize(),
              then one kong.log.notice per item.
"""

Schema = [{"message": {"type": "string", "default": "hello"}}]
version = "0.1.0"
priority = 100


def _value(result):
    """Return the data of a PDK call, whether or not Lua-style tuples are on."""
    if isinstance(result, tuple):
        return result[0]
    return result


def _text(value):
    """Render a PDK result as text; nil becomes the empty string."""
    return "" if value is None else str(value)


class Plugin(object):
    """One plugin instance, created by StartInstance with the decoded config."""

    def __init__(self, config):
        message = config.get("message")
        self.message = "hello" if message is None else str(message)

    def access(self, kong):
        host = _text(_value(kong.request.get_header("host")))
        kong.response.set_header("x-multi-access", host)
        kong.ctx.shared.set("shared_msg", self.message)

    def response(self, kong):
        server = _text(_value(kong.service.response.get_header("Server")))
        kong.response.set_header("x-multi-response", "got from server '" + server + "'")

    def log(self, kong):
        shared = _text(_value(kong.ctx.shared.get("shared_msg")))
        request_header = _text(_value(kong.request.get_header("x-loose-data")))
        response_header = _text(_value(kong.response.get_header("x-powered-by")))
        serialized = _text(_value(kong.log.serialize()))
        kong.log.notice("shared_msg: " + shared)
        kong.log.notice("request_header: " + request_header)
        kong.log.notice("response_header: " + response_header)
        kong.log.notice("serialized: " + serialized)


if __name__ == "__main__":
    from kong_pdk.cli import start_dedicated_server

    start_dedicated_server("multiphase", Plugin, version, priority, Schema)
