"""mock-kong "exit" test plugin for the official Python plugin server (kong-pdk).

The access phase ends the request with
``kong.response.exit(status, message, {"x-exit": "1"})``. kong-pdk treats
``kong.response.exit`` as non-returning: it does not wait for a reply.
"""

Schema = [
    {"status": {"type": "integer", "default": 403}},
    {"message": {"type": "string", "default": "blocked"}},
]
version = "0.1.0"
priority = 100


class Plugin(object):
    """One plugin instance, created by StartInstance with the decoded config."""

    def __init__(self, config):
        status = config.get("status")
        message = config.get("message")
        self.status = 403 if status is None else int(status)
        self.message = "blocked" if message is None else str(message)

    def access(self, kong):
        kong.response.exit(self.status, self.message, {"x-exit": "1"})


if __name__ == "__main__":
    from kong_pdk.cli import start_dedicated_server

    start_dedicated_server("exit", Plugin, version, priority, Schema)
