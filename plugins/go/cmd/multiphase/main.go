// Command multiphase is the mock-kong "multiphase" test plugin, modelled on
// Kong's own go-hello test fixture (access, response and log phases).
//
//	access:   host := kong.request.get_header("host")
//	          kong.response.set_header("x-multi-access", host)
//	          kong.ctx.shared.set("shared_msg", message)
//	response: v := kong.service.response.get_header("Server")
//	          kong.response.set_header("x-multi-response", "got from server '<v>'")
//	log:      kong.ctx.shared.get("shared_msg"), kong.request.get_header("x-loose-data"),
//	          kong.response.get_header("x-powered-by"), kong.log.serialize(),
//	          then one kong.log.notice per item.
package main

import (
	"github.com/Kong/go-pdk"
	"github.com/Kong/go-pdk/server"
)

// Version and Priority are reported in the -dump output.
const (
	Version  = "0.1.0"
	Priority = 100
)

// Config is the plugin configuration.
type Config struct {
	Message string `json:"message"`
}

// New returns a configuration carrying the defaults.
func New() interface{} {
	return &Config{Message: "hello"}
}

// Access records the host and shares the configured message with later phases.
func (conf Config) Access(kong *pdk.PDK) {
	host, _ := kong.Request.GetHeader("host")
	_ = kong.Response.SetHeader("x-multi-access", host)
	_ = kong.Ctx.SetShared("shared_msg", conf.Message)
}

// Response copies the upstream's Server header.
func (conf Config) Response(kong *pdk.PDK) {
	server, _ := kong.ServiceResponse.GetHeader("Server")
	_ = kong.Response.SetHeader("x-multi-response", "got from server '"+server+"'")
}

// Log reads the saved request data and logs one notice line per item.
func (conf Config) Log(kong *pdk.PDK) {
	shared, _ := kong.Ctx.GetSharedString("shared_msg")
	reqHeader, _ := kong.Request.GetHeader("x-loose-data")
	respHeader, _ := kong.Response.GetHeader("x-powered-by")
	serialized, _ := kong.Log.Serialize()
	_ = kong.Log.Notice("shared_msg: " + shared)
	_ = kong.Log.Notice("request_header: " + reqHeader)
	_ = kong.Log.Notice("response_header: " + respHeader)
	_ = kong.Log.Notice("serialized: " + serialized)
}

func main() {
	_ = server.StartServer(New, Version, Priority)
}
