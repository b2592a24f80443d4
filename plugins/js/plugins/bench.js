'use strict'

// mock-kong "bench" test plugin for the official JavaScript plugin server.
//
// The access phase makes exactly `calls` PDK calls: calls-1 calls of `method`
// (kong.request.get_header gets the argument "x-bench", any other method is
// called without arguments), then
// kong.response.set_header("x-bench-calls", "<calls>"). calls = 0 makes no
// call at all.

class BenchPlugin {
  constructor(config) {
    this.calls = config.calls === undefined || config.calls === null
      ? 0 : Number(config.calls)
    this.method = config.method === undefined || config.method === null
      ? 'kong.request.get_header' : String(config.method)
  }

  async access(kong) {
    if (!(this.calls >= 1)) return
    // kong-pdk resolves any dotted name dynamically: walk "kong.a.b" from the root.
    let target = kong
    for (const part of this.method.split('.').slice(1)) {
      target = target[part]
    }
    const isGetHeader = this.method === 'kong.request.get_header'
    for (let i = 1; i < this.calls; i++) {
      if (isGetHeader) {
        await target('x-bench')
      } else {
        await target()
      }
    }
    await kong.response.set_header('x-bench-calls', String(this.calls))
  }
}

module.exports = {
  Plugin: BenchPlugin,
  Schema: [
    { calls: { type: 'integer', default: 0 } },
    { method: { type: 'string', default: 'kong.request.get_header' } },
  ],
  Version: '0.1.0',
  Priority: 100,
}
