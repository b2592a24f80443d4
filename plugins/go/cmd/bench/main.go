// Command bench is the mock-kong "bench" test plugin: its access phase makes
// exactly `calls` PDK calls so a host can measure the cost of one call.
//
// The first calls-1 calls are `method` (kong.request.get_header is called
// with "x-bench"); the last one is
// kong.response.set_header("x-bench-calls", "<calls>"). calls = 0 makes no
// call at all.
package main

import (
	"strconv"

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
	Calls  int    `json:"calls"`
	Method string `json:"method"`
}

// New returns a configuration carrying the defaults.
func New() interface{} {
	return &Config{Calls: 0, Method: "kong.request.get_header"}
}

// call makes one PDK call named by method. go-pdk's API is typed, so only
// the methods listed here are available; any other name falls back to
// kong.request.get_header("x-bench") so that the number of calls stays
// exactly as configured.
func call(kong *pdk.PDK, method string) {
	switch method {
	case "kong.request.get_path":
		_, _ = kong.Request.GetPath()
	case "kong.request.get_method":
		_, _ = kong.Request.GetMethod()
	case "kong.request.get_host":
		_, _ = kong.Request.GetHost()
	case "kong.request.get_scheme":
		_, _ = kong.Request.GetScheme()
	case "kong.client.get_ip":
		_, _ = kong.Client.GetIp()
	case "kong.nginx.get_subsystem":
		_, _ = kong.Nginx.GetSubsystem()
	default: // "kong.request.get_header" and unknown names
		_, _ = kong.Request.GetHeader("x-bench")
	}
}

// Access makes the configured number of PDK calls.
func (conf Config) Access(kong *pdk.PDK) {
	if conf.Calls < 1 {
		return
	}
	for i := 1; i < conf.Calls; i++ {
		call(kong, conf.Method)
	}
	_ = kong.Response.SetHeader("x-bench-calls", strconv.Itoa(conf.Calls))
}

func main() {
	_ = server.StartServer(New, Version, Priority)
}
