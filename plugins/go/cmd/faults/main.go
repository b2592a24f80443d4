// Command faults is the mock-kong "faults" test plugin: its access phase
// fails on purpose, selected by config `mode`:
//
//	"raise-before": panic before any PDK call
//	"raise-after":  panic after one kong.request.get_header("host") call
//	"none":         one kong.request.get_header("host") call, no fault
//
// go-pdk does not recover panics in handlers: a panic ends the whole plugin
// server process (and with it every connection).
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
	Mode string `json:"mode"`
}

// New returns a configuration carrying the defaults.
func New() interface{} {
	return &Config{Mode: "none"}
}

// Access fails as configured; unknown modes behave like "none".
func (conf Config) Access(kong *pdk.PDK) {
	if conf.Mode == "raise-before" {
		panic("faults: raise-before")
	}
	_, _ = kong.Request.GetHeader("host")
	if conf.Mode == "raise-after" {
		panic("faults: raise-after")
	}
}

func main() {
	_ = server.StartServer(New, Version, Priority)
}
