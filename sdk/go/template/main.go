// add-tenant, in Go: sets a request header from its configuration and tells the client which
// tenant it served. Build: GOOS=wasip1 GOARCH=wasm go build -buildmode=c-shared -o add-tenant.wasm .
package main

import (
	"encoding/json"
	"errors"

	"sluice.dev/filter"
)

type config struct {
	Header string `json:"header"`
	Value  string `json:"value"`
}

func (c *config) NewStream() filter.Stream { return &stream{config: c} }

type stream struct {
	filter.DefaultStream
	config *config
}

func (s *stream) OnRequestHeaders(headers filter.Headers, _ bool) filter.Action {
	headers.Set(s.config.Header, s.config.Value)
	return filter.Continue
}

func (s *stream) OnResponseHeaders(headers filter.Headers, _ bool) filter.Action {
	headers.Set("x-served-for", s.config.Value)
	return filter.Continue
}

func init() {
	filter.Register(func(data []byte) (filter.Plugin, error) {
		var c config
		if err := json.Unmarshal(data, &c); err != nil {
			return nil, err
		}
		if c.Header == "" || c.Value == "" {
			return nil, errors.New("header and value are required")
		}
		return &c, nil
	})
}

func main() {}
