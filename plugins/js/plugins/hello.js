'use strict'

// mock-kong "hello" test plugin for the official JavaScript plugin server
// (kong-pdk, `kong-js-pluginserver -d <this directory>`).
//
// Access phase, exactly two PDK calls:
//   host = kong.request.get_header("host")
//   kong.response.set_header("x-hello", "<message> <host>")
// and a third when config `upstream_header` is set (the upstream sees it):
//   kong.service.request.set_header(<upstream_header>, "<message> <host>")

/** Renders a PDK result as text; nil (undefined/null) becomes "". */
function text(value) {
  return value === undefined || value === null ? '' : String(value)
}

class HelloPlugin {
  constructor(config) {
    this.message = config.message === undefined || config.message === null
      ? 'hello' : String(config.message)
    this.upstreamHeader = text(config.upstream_header)
  }

  async access(kong) {
    const host = text(await kong.request.get_header('host'))
    await kong.response.set_header('x-hello', `${this.message} ${host}`)
    if (this.upstreamHeader !== '') {
      await kong.service.request.set_header(this.upstreamHeader, `${this.message} ${host}`)
    }
  }
}

module.exports = {
  Plugin: HelloPlugin,
  Schema: [
    { message: { type: 'string', default: 'hello' } },
    { upstream_header: { type: 'string' } },
  ],
  Version: '0.1.0',
  Priority: 100,
}
