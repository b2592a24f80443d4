// Command hello is the mock-kong "hello" test plugin, served by go-pdk's
// embedded ProtoBuf:1 server (the binary name is the plugin name).
//
// Access phase, exactly two PDK calls:
//
//	host := kong.request.get_header("host")
//	kong.response.set_header("x-hello", "<message> <host>")
//
// and a third when config `upstream_header` is set (the upstream sees it):
//
//	kong.service.request.set_header(<upstream_header>, "<message> <host>")
package main

import (
	"github.com/Kong/go-pdk"
	"github.com/Kong/go-pdk/server"
)

// Version and Priority are reported in the -dump output; they match the
// Python and JavaScript versions of this plugin.
const (
	Version  = "0.1.0"
	Priority = 100
)

// Config is the plugin configuration; go-pdk derives the schema from it.
type Config struct {
	Message        string `json:"message"`
	UpstreamHeader string `json:"upstream_header"`
}

// New returns a configuration carrying the defaults; StartInstance
// overwrites the fields present in the JSON config.
func New() interface{} {
	return &Config{Message: "hello"}
}

// Access greets the request's host.
func (conf Config) Access(kong *pdk.PDK) {
	host, _ := kong.Request.GetHeader("host")
	_ = kong.Response.SetHeader("x-hello", conf.Message+" "+host)
	if conf.UpstreamHeader != "" {
		_ = kong.ServiceRequest.SetHeader(conf.UpstreamHeader, conf.Message+" "+host)
	}
}

func main() {
	_ = server.StartServer(New, Version, Priority)
}
