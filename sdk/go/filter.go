// Package filter writes Sluice filters in Go: core WebAssembly modules of the proxy-wasm ABI
// (v0.2.1), built with the standard Go toolchain alone:
//
//	GOOS=wasip1 GOARCH=wasm go build -buildmode=c-shared -o my-filter.wasm .
//
// A filter registers its configuration parser in an init function; the parser returns a
// Plugin, which makes a Stream for every request:
//
//	func init() {
//		filter.Register(func(config []byte) (filter.Plugin, error) { ... })
//	}
//
// The same modules run in any proxy-wasm host (Envoy, Istio); this library needs no module
// outside the standard library.
package filter

import (
	"encoding/binary"
	"errors"
	"math"
	"strings"
	"time"
	"unsafe"
)

// Action says what happens to the request after a phase.
type Action uint32

const (
	// Continue goes on with the next filter, then the upstream.
	Continue Action = 0
	// Pause stops the phase (after Respond, the answer goes out instead).
	Pause Action = 1
)

// A Plugin is one configuration of the filter, parsed once per attachment.
type Plugin interface {
	// NewStream makes the filter of one request.
	NewStream() Stream
}

// A Stream is the filter of one request. Embed DefaultStream and implement the phases needed.
type Stream interface {
	// OnRequestHeaders runs before the request goes upstream.
	OnRequestHeaders(headers Headers, endOfStream bool) Action
	// OnRequestBody runs on the request body as it arrives, if there is one. Continue lets
	// what body holds go on, changed or not; Pause holds it, and body has it again, grown,
	// with the next chunk: pause until endOfStream to see the body whole (the gateway caps
	// what a filter holds and answers 413 over it).
	OnRequestBody(body Body, endOfStream bool) Action
	// OnResponseHeaders runs before the response goes back.
	OnResponseHeaders(headers Headers, endOfStream bool) Action
	// OnResponseBody is OnRequestBody for the response body.
	OnResponseBody(body Body, endOfStream bool) Action
	// OnLog runs when the request is over.
	OnLog()
}

// DefaultStream does nothing in every phase.
type DefaultStream struct{}

func (DefaultStream) OnRequestHeaders(Headers, bool) Action  { return Continue }
func (DefaultStream) OnRequestBody(Body, bool) Action        { return Continue }
func (DefaultStream) OnResponseHeaders(Headers, bool) Action { return Continue }
func (DefaultStream) OnResponseBody(Body, bool) Action       { return Continue }
func (DefaultStream) OnLog()                                 {}

// Body is what a body phase works on: the bytes of the request or response body the filter
// holds (or an HTTP call's answer).
type Body struct{ buffer, size uint32 }

// Len returns the size of the body.
func (b Body) Len() int { return int(b.size) }

// Bytes returns a copy of the body.
func (b Body) Bytes() []byte {
	if b.size == 0 {
		return nil
	}
	var address, length uint32
	if proxyGetBufferBytes(b.buffer, 0, b.size, unsafe.Pointer(&address), unsafe.Pointer(&length)) != statusOK {
		return nil
	}
	return returned(address, length)
}

// Set replaces the whole body with data.
func (b Body) Set(data []byte) error {
	bytes, size := sliceOf(data)
	return check(proxySetBufferBytes(b.buffer, 0, math.MaxUint32, bytes, size))
}

// Register makes parse the filter's entry point: it gets the attachment's configuration (a
// string as it is, anything else as JSON) and returns the Plugin, or an error that rejects the
// configuration (the gateway reports it against the Ingress). Call it from an init function.
func Register(parse func(config []byte) (Plugin, error)) {
	configure = parse
}

// Headers is the request's or the response's header map. Names are lower-case; the pseudo
// headers ":method", ":path", ":authority", ":scheme" (requests) and ":status" (responses) can
// be read and set too.
type Headers struct{ mapType uint32 }

var (
	RequestHeaders  = Headers{mapRequestHeaders}
	ResponseHeaders = Headers{mapResponseHeaders}
)

// ErrRejected is what the host answered to a change it refused (an invalid name or value, or
// a map not available in this phase).
var ErrRejected = errors.New("the gateway refused the change")

func check(status uint32) error {
	if status != statusOK {
		return ErrRejected
	}
	return nil
}

// Get returns the value of name (several values joined by ","), and whether it is there.
func (h Headers) Get(name string) (string, bool) {
	key, keySize := bytesOf(name)
	var address, size uint32
	if proxyGetHeaderMapValue(h.mapType, key, keySize, unsafe.Pointer(&address), unsafe.Pointer(&size)) != statusOK {
		return "", false
	}
	return string(returned(address, size)), true
}

// Set replaces every value of name with value.
func (h Headers) Set(name, value string) error {
	key, keySize := bytesOf(name)
	data, size := bytesOf(value)
	return check(proxyReplaceHeaderMapValue(h.mapType, key, keySize, data, size))
}

// Add adds a value of name.
func (h Headers) Add(name, value string) error {
	key, keySize := bytesOf(name)
	data, size := bytesOf(value)
	return check(proxyAddHeaderMapValue(h.mapType, key, keySize, data, size))
}

// Remove removes every value of name.
func (h Headers) Remove(name string) error {
	key, keySize := bytesOf(name)
	return check(proxyRemoveHeaderMapValue(h.mapType, key, keySize))
}

// All returns every header as a name and a value, pseudo-headers first.
func (h Headers) All() [][2]string {
	var address, size uint32
	if proxyGetHeaderMapPairs(h.mapType, unsafe.Pointer(&address), unsafe.Pointer(&size)) != statusOK {
		return nil
	}
	return deserialize(returned(address, size))
}

// serialize encodes pairs as the ABI does: their count, the sizes of each name and value,
// then each name and value followed by a zero byte (little-endian integers).
func serialize(pairs [][2]string) []byte {
	out := binary.LittleEndian.AppendUint32(nil, uint32(len(pairs)))
	for _, pair := range pairs {
		out = binary.LittleEndian.AppendUint32(out, uint32(len(pair[0])))
		out = binary.LittleEndian.AppendUint32(out, uint32(len(pair[1])))
	}
	for _, pair := range pairs {
		out = append(append(out, pair[0]...), 0)
		out = append(append(out, pair[1]...), 0)
	}
	return out
}

func deserialize(data []byte) [][2]string {
	if len(data) < 4 {
		return nil
	}
	count := int(binary.LittleEndian.Uint32(data))
	if len(data) < 4+count*8 {
		return nil
	}
	pairs := make([][2]string, 0, count)
	at := 4 + count*8
	for i := 0; i < count; i++ {
		nameSize := int(binary.LittleEndian.Uint32(data[4+i*8:]))
		valueSize := int(binary.LittleEndian.Uint32(data[8+i*8:]))
		if at+nameSize+valueSize+2 > len(data) {
			return pairs
		}
		name := string(data[at : at+nameSize])
		at += nameSize + 1
		value := string(data[at : at+valueSize])
		at += valueSize + 1
		pairs = append(pairs, [2]string{name, value})
	}
	return pairs
}

// Property returns the property at path (for example "request", "path"), and whether it is
// there. Numbers (ports, status codes) are 8 bytes, little-endian: see PropertyNumber.
func Property(path ...string) ([]byte, bool) {
	joined, size := bytesOf(strings.Join(path, "\x00"))
	var address, length uint32
	if proxyGetProperty(joined, size, unsafe.Pointer(&address), unsafe.Pointer(&length)) != statusOK {
		return nil, false
	}
	return returned(address, length), true
}

// PropertyString returns a text property, or "" if it is not there.
func PropertyString(path ...string) string {
	value, _ := Property(path...)
	return string(value)
}

// PropertyNumber returns a number property, and whether it is there.
func PropertyNumber(path ...string) (uint64, bool) {
	value, ok := Property(path...)
	if !ok || len(value) != 8 {
		return 0, false
	}
	return binary.LittleEndian.Uint64(value), true
}

// Respond answers the request in its request phase instead of the upstream; return Pause
// after it.
func Respond(status int, headers [][2]string, body []byte) error {
	data, dataSize := sliceOf(body)
	pairs, pairsSize := sliceOf(serialize(headers))
	return check(proxySendLocalResponse(uint32(status), nil, 0, data, dataSize, pairs, pairsSize, -1))
}

// An Answer is what a Service answered an HTTP call. A call that failed (refused, timed out,
// no ready endpoint) has Status 0 and nothing else.
type Answer struct {
	Status  int
	Headers [][2]string
	Body    []byte
}

// Call sends an HTTP request to a Service of the Ingress's namespace, target "SERVICE:PORT"
// or Istio's "outbound|PORT||SERVICE.NAMESPACE.svc.cluster.local", and gives its answer to
// done within timeout. headers must have ":method", ":path" and ":authority". Return Pause
// from the phase to wait for the answer: done then lets the request go on (Resume) or
// answers it (Respond), changing headers first if it likes. An error means the call was not
// made (a target that is not a Service the gateway routes to).
func Call(target string, headers [][2]string, body []byte, timeout time.Duration, done func(Answer)) error {
	to, toSize := bytesOf(target)
	pairs, pairsSize := sliceOf(serialize(headers))
	data, dataSize := sliceOf(body)
	var token uint32
	status := proxyHTTPCall(to, toSize, pairs, pairsSize, data, dataSize, nil, 0, uint32(timeout.Milliseconds()), unsafe.Pointer(&token))
	if err := check(status); err != nil {
		return err
	}
	calls[token] = done
	return nil
}

// Resume lets a request paused in its request phase go on, from the answer of a Call.
func Resume() error {
	return check(proxyContinueStream(0))
}

// LogLevel is the level of a log line.
type LogLevel uint32

const (
	LogTrace LogLevel = iota
	LogDebug
	LogInfo
	LogWarn
	LogError
	LogCritical
)

// Log writes message to the gateway's log under the plugin's name.
func Log(level LogLevel, message string) {
	data, size := bytesOf(message)
	proxyLog(uint32(level), data, size)
}

// ErrCasMismatch is SetSharedData's answer when the value changed since it was read.
var ErrCasMismatch = errors.New("shared data changed since it was read")

// SharedData returns the value of key shared by all instances of the plugin in the gateway
// process, its version for SetSharedData, and whether it is there.
func SharedData(key string) (value []byte, cas uint32, ok bool) {
	data, size := bytesOf(key)
	var address, length uint32
	if proxyGetSharedData(data, size, unsafe.Pointer(&address), unsafe.Pointer(&length), unsafe.Pointer(&cas)) != statusOK {
		return nil, 0, false
	}
	return returned(address, length), cas, true
}

// SetSharedData sets key to value if its version is still cas (0: whatever it is).
func SetSharedData(key string, value []byte, cas uint32) error {
	data, size := bytesOf(key)
	bytes, length := sliceOf(value)
	switch proxySetSharedData(data, size, bytes, length, cas) {
	case statusOK:
		return nil
	case statusCasMismatch:
		return ErrCasMismatch
	default:
		return ErrRejected
	}
}

// Counter is a counter on the gateway's /metrics, labelled with the plugin's name.
type Counter struct{ id uint32 }

// NewCounter defines the counter name (or finds it, if it is defined already).
func NewCounter(name string) (Counter, error) {
	data, size := bytesOf(name)
	var id uint32
	if err := check(proxyDefineMetric(0, data, size, unsafe.Pointer(&id))); err != nil {
		return Counter{}, err
	}
	return Counter{id}, nil
}

// Add adds delta to the counter.
func (c Counter) Add(delta int64) {
	proxyIncrementMetric(c.id, delta)
}
