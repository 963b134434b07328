// An ext-auth filter written with our Go library, for the gateway's tests: it asks an auth
// Service about every request's path, lets the request go on if it answers 200 (telling the
// upstream which auth pod answered) and denies it otherwise.
package main

import (
	"encoding/json"
	"fmt"
	"time"

	"sluice.dev/filter"
)

type config struct {
	// Auth is the Service to ask: SERVICE:PORT or Istio's cluster name.
	Auth string `json:"auth"`
}

func (c *config) NewStream() filter.Stream { return &stream{config: c} }

type stream struct {
	filter.DefaultStream
	config *config
}

func (s *stream) OnRequestHeaders(headers filter.Headers, _ bool) filter.Action {
	path, _ := headers.Get(":path")
	ask := [][2]string{{":method", "GET"}, {":path", path}, {":authority", "auth"}}
	if err := filter.Call(s.config.Auth, ask, nil, 2*time.Second, allow); err != nil {
		filter.Respond(500, nil, []byte("auth call refused"))
	}
	return filter.Pause
}

// allow lets the request go on if the auth Service answered 200.
func allow(answer filter.Answer) {
	if answer.Status != 200 {
		filter.Respond(403, [][2]string{{"x-denied-by", "go-auth"}}, []byte(fmt.Sprintf("auth said %d", answer.Status)))
		return
	}
	var echo struct {
		Pod string `json:"pod"`
	}
	json.Unmarshal(answer.Body, &echo)
	filter.RequestHeaders.Set("x-auth-pod", echo.Pod)
	filter.Resume()
}

func init() {
	filter.Register(func(data []byte) (filter.Plugin, error) {
		var c config
		if err := json.Unmarshal(data, &c); err != nil {
			return nil, err
		}
		if c.Auth == "" {
			return nil, fmt.Errorf("auth is required")
		}
		return &c, nil
	})
}

func main() {}
