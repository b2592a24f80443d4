// Command exit is the mock-kong "exit" test plugin: its access phase ends
// the request with kong.response.exit(status, message, {"x-exit": "1"}).
//
// go-pdk's Exit waits for a reply to the exit call (Kong never sends one)
// and then closes the connection, so no "done" frame and no RpcReturn
// follow.
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
	Status  int    `json:"status"`
	Message string `json:"message"`
}

// New returns a configuration carrying the defaults.
func New() interface{} {
	return &Config{Status: 403, Message: "blocked"}
}

// Access short-circuits the request.
func (conf Config) Access(kong *pdk.PDK) {
	kong.Response.Exit(conf.Status, []byte(conf.Message), map[string][]string{"x-exit": {"1"}})
}

func main() {
	_ = server.StartServer(New, Version, Priority)
}
