"""mock-kong "faults" test plugin for the official Python plugin server (kong-pdk).

The access phase fails on purpose, selected by config ``mode``:

* ``"raise-before"``: raise before any PDK call;
* ``"raise-after"``: raise after one ``kong.request.get_header("host")`` call;
* ``"none"`` (and unknown modes): one ``kong.request.get_header("host")`` call.

kong-pdk runs the handler in a thread (or greenlet); an exception there is
printed and the handler never reports "ret", so the RPC that waits for it
never gets an answer.
"""

Schema = [{"mode": {"type": "string", "default": "none"}}]
version = "0.1.0"
priority = 100


class Plugin(object):
    """One plugin instance, created by StartInstance with the decoded config."""

    def __init__(self, config):
        mode = config.get("mode")
        self.mode = "none" if mode is None else str(mode)

    def access(self, kong):
        if self.mode == "raise-before":
            raise RuntimeError("faults: raise-before")
        kong.request.get_header("host")
        if self.mode == "raise-after":
            raise RuntimeError("faults: raise-after")


if __name__ == "__main__":
    from kong_pdk.cli import start_dedicated_server

    start_dedicated_server("faults", Plugin, version, priority, Schema)
