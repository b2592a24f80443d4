'use strict'

// mock-kong "multiphase" test plugin for the official JavaScript plugin
// server, modelled on Kong's go-hello test fixture:
//   access:   host = kong.request.get_header("host")
//             kong.response.set_header("x-multi-access", host)
//             kong.ctx.shared.set("shared_msg", message)
//   response: v = kong.service.response.get_header("Server")
//             kong.response.set_header("x-multi-response", "got from server '<v>'")
//   log:      kong.ctx.shared.get("shared_msg"), kong.request.get_header("x-loose-data"),
//             kong.response.get_header("x-powered-by"), kong.log.serialize(),
//             then one kong.log.notice per item.

/** Renders a PDK result as text; nil (undefined/null) becomes "". */
function text(value) {
  return value === undefined || value === null ? '' : String(value)
}

class MultiphasePlugin {
  constructor(config) {
    this.message = config.message === undefined || config.message === null
      ? 'hello' : String(config.message)
  }

  async access(kong) {
    const host = text(await kong.request.get_header('host'))
    await kong.response.set_header('x-multi-access', host)
    await kong.ctx.shared.set('shared_msg', this.message)
  }

  async response(kong) {
    const server = text(await kong.service.response.get_header('Server'))
    await kong.response.set_header('x-multi-response', `got from server '${server}'`)
  }

  async log(kong) {
    const shared = text(await kong.ctx.shared.get('shared_msg'))
    const requestHeader = text(await kong.request.get_header('x-loose-data'))
    const responseHeader = text(await kong.response.get_header('x-powered-by'))
    const serialized = text(await kong.log.serialize())
    await kong.log.notice(`shared_msg: ${shared}`)
    await kong.log.notice(`request_header: ${requestHeader}`)
    await kong.log.notice(`response_header: ${responseHeader}`)
    await kong.log.notice(`serialized: ${serialized}`)
  }
}

module.exports = {
  Plugin: MultiphasePlugin,
  Schema: [{ message: { type: 'string', default: 'hello' } }],
  Version: '0.1.0',
  Priority: 100,
}
