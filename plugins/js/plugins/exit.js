'use strict'

// mock-kong "exit" test plugin for the official JavaScript plugin server.
//
// The access phase ends the request with
// kong.response.exit(status, message, {"x-exit": "1"}). kong-pdk treats
// kong.response.exit as non-returning: it does not wait for a reply.

class ExitPlugin {
  constructor(config) {
    this.status = config.status === undefined || config.status === null
      ? 403 : Number(config.status)
    this.message = config.message === undefined || config.message === null
      ? 'blocked' : String(config.message)
  }

  async access(kong) {
    await kong.response.exit(this.status, this.message, { 'x-exit': '1' })
  }
}

module.exports = {
  Plugin: ExitPlugin,
  Schema: [
    { status: { type: 'integer', default: 403 } },
    { message: { type: 'string', default: 'blocked' } },
  ],
  Version: '0.1.0',
  Priority: 100,
}
