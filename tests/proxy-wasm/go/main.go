// A proxy-wasm filter written with our Go library, whose configuration says what it does, for
// the gateway's tests: an ext-auth check through an HTTP call, and body rewriting.
package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"time"

	"sluice.dev/filter"
)

type config struct {
	// Auth is a Service (SERVICE:PORT or Istio's cluster name) asked about every request's
	// path: 200 lets the request go on, with x-auth-pod set from the answer; anything else,
	// or no answer, is denied.
	Auth string `json:"auth"`
	// RequestBody replaces its first string with the second in the whole request body.
	RequestBody []string `json:"request_body"`
	// ResponseBody does the same in the whole response body.
	ResponseBody []string `json:"response_body"`
}

func (c *config) NewStream() filter.Stream { return &stream{config: c} }

type stream struct {
	filter.DefaultStream
	config *config
}

func (s *stream) OnRequestHeaders(headers filter.Headers, _ bool) filter.Action {
	if s.config.Auth == "" {
		return filter.Continue
	}
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
		filter.Respond(403, [][2]string{{"x-denied-by", "go-probe"}}, []byte(fmt.Sprintf("auth said %d", answer.Status)))
		return
	}
	var echo struct {
		Pod string `json:"pod"`
	}
	json.Unmarshal(answer.Body, &echo)
	filter.RequestHeaders.Set("x-auth-pod", echo.Pod)
	filter.Resume()
}

func (s *stream) OnRequestBody(body filter.Body, endOfStream bool) filter.Action {
	return rewrite(body, endOfStream, s.config.RequestBody)
}

func (s *stream) OnResponseBody(body filter.Body, endOfStream bool) filter.Action {
	return rewrite(body, endOfStream, s.config.ResponseBody)
}

// rewrite holds the body until its end, then replaces replace[0] with replace[1] in it.
func rewrite(body filter.Body, endOfStream bool, replace []string) filter.Action {
	if len(replace) != 2 {
		return filter.Continue
	}
	if !endOfStream {
		return filter.Pause
	}
	body.Set(bytes.ReplaceAll(body.Bytes(), []byte(replace[0]), []byte(replace[1])))
	return filter.Continue
}

func init() {
	filter.Register(func(data []byte) (filter.Plugin, error) {
		var c config
		if err := json.Unmarshal(data, &c); err != nil {
			return nil, err
		}
		for _, replace := range [][]string{c.RequestBody, c.ResponseBody} {
			if replace != nil && len(replace) != 2 {
				return nil, fmt.Errorf("a body rewrite is [FROM, TO]")
			}
		}
		return &c, nil
	})
}

func main() {}
