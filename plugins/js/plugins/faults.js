'use strict'

// mock-kong "faults" test plugin for the official JavaScript plugin server.
//
// The access phase fails on purpose, selected by config `mode`:
//   "raise-before": throw before any PDK call
//   "raise-after":  throw after one kong.request.get_header("host") call
//   "none" (and unknown modes): one kong.request.get_header("host") call
// kong-pdk catches the exception, logs a warning and answers "ret".

class FaultsPlugin {
  constructor(config) {
    this.mode = config.mode === undefined || config.mode === null
      ? 'none' : String(config.mode)
  }

  async access(kong) {
    if (this.mode === 'raise-before') {
      throw new Error('faults: raise-before')
    }
    await kong.request.get_header('host')
    if (this.mode === 'raise-after') {
      throw new Error('faults: raise-after')
    }
  }
}

module.exports = {
  Plugin: FaultsPlugin,
  Schema: [{ mode: { type: 'string', default: 'none' } }],
  Version: '0.1.0',
  Priority: 100,
}
