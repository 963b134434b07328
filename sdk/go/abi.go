package filter

// The proxy-wasm ABI (v0.2.1): what the gateway provides (imports) and what it calls (exports).

import (
	"strconv"
	"unsafe"
)

// Status codes of the ABI.
const (
	statusOK          = 0
	statusNotFound    = 1
	statusCasMismatch = 8
)

// Buffer and map types of the ABI.
const (
	bufferRequestBody          = 0
	bufferResponseBody         = 1
	bufferHTTPCallResponseBody = 4
	bufferPluginConfiguration  = 7
	mapRequestHeaders          = 0
	mapResponseHeaders         = 2
	mapHTTPCallResponseHeaders = 6
)

//go:wasmimport env proxy_log
func proxyLog(level uint32, message unsafe.Pointer, size uint32) uint32

//go:wasmimport env proxy_get_buffer_bytes
func proxyGetBufferBytes(buffer, start, maxSize uint32, data, size unsafe.Pointer) uint32

//go:wasmimport env proxy_get_header_map_pairs
func proxyGetHeaderMapPairs(mapType uint32, data, size unsafe.Pointer) uint32

//go:wasmimport env proxy_get_header_map_value
func proxyGetHeaderMapValue(mapType uint32, key unsafe.Pointer, keySize uint32, data, size unsafe.Pointer) uint32

//go:wasmimport env proxy_replace_header_map_value
func proxyReplaceHeaderMapValue(mapType uint32, key unsafe.Pointer, keySize uint32, value unsafe.Pointer, valueSize uint32) uint32

//go:wasmimport env proxy_add_header_map_value
func proxyAddHeaderMapValue(mapType uint32, key unsafe.Pointer, keySize uint32, value unsafe.Pointer, valueSize uint32) uint32

//go:wasmimport env proxy_remove_header_map_value
func proxyRemoveHeaderMapValue(mapType uint32, key unsafe.Pointer, keySize uint32) uint32

//go:wasmimport env proxy_get_property
func proxyGetProperty(path unsafe.Pointer, pathSize uint32, data, size unsafe.Pointer) uint32

//go:wasmimport env proxy_send_local_response
func proxySendLocalResponse(status uint32, details unsafe.Pointer, detailsSize uint32, body unsafe.Pointer, bodySize uint32, headers unsafe.Pointer, headersSize uint32, grpcStatus int32) uint32

//go:wasmimport env proxy_get_shared_data
func proxyGetSharedData(key unsafe.Pointer, keySize uint32, data, size, cas unsafe.Pointer) uint32

//go:wasmimport env proxy_set_shared_data
func proxySetSharedData(key unsafe.Pointer, keySize uint32, value unsafe.Pointer, valueSize uint32, cas uint32) uint32

//go:wasmimport env proxy_define_metric
func proxyDefineMetric(metricType uint32, name unsafe.Pointer, nameSize uint32, id unsafe.Pointer) uint32

//go:wasmimport env proxy_increment_metric
func proxyIncrementMetric(id uint32, offset int64) uint32

//go:wasmimport env proxy_set_buffer_bytes
func proxySetBufferBytes(buffer, start, size uint32, data unsafe.Pointer, dataSize uint32) uint32

//go:wasmimport env proxy_http_call
func proxyHTTPCall(target unsafe.Pointer, targetSize uint32, headers unsafe.Pointer, headersSize uint32, body unsafe.Pointer, bodySize uint32, trailers unsafe.Pointer, trailersSize uint32, timeoutMs uint32, token unsafe.Pointer) uint32

//go:wasmimport env proxy_continue_stream
func proxyContinueStream(stream uint32) uint32

// bytesOf points at the bytes of s (nil for none).
func bytesOf(s string) (unsafe.Pointer, uint32) {
	if len(s) == 0 {
		return nil, 0
	}
	return unsafe.Pointer(unsafe.StringData(s)), uint32(len(s))
}

func sliceOf(b []byte) (unsafe.Pointer, uint32) {
	if len(b) == 0 {
		return nil, 0
	}
	return unsafe.Pointer(&b[0]), uint32(len(b))
}

// allocated holds what proxy_on_memory_allocate handed the host last, until the call that
// asked for it takes it: the host fills it before that call returns.
var allocated []byte

//go:wasmexport proxy_on_memory_allocate
func proxyOnMemoryAllocate(size uint32) uint32 {
	allocated = make([]byte, size)
	if size == 0 {
		return 0
	}
	return uint32(uintptr(unsafe.Pointer(&allocated[0])))
}

// returned is what a host call wrote at (address, size): the last allocation.
func returned(address, size uint32) []byte {
	data := allocated
	allocated = nil
	if address == 0 || size == 0 || len(data) < int(size) || uint32(uintptr(unsafe.Pointer(&data[0]))) != address {
		return nil
	}
	return data[:size]
}

//go:wasmexport proxy_abi_version_0_2_1
func proxyAbiVersion() {}

// roots are the root contexts (one per configuration), streams the requests' contexts,
// calls the HTTP calls in flight by token, configure the filter's entry point (Register).
var (
	roots     = map[uint32]Plugin{}
	streams   = map[uint32]Stream{}
	calls     = map[uint32]func(Answer){}
	configure func(config []byte) (Plugin, error)
)

//go:wasmexport proxy_on_context_create
func proxyOnContextCreate(id, root uint32) {
	if root == 0 {
		roots[id] = nil
		return
	}
	if plugin := roots[root]; plugin != nil {
		streams[id] = plugin.NewStream()
	}
}

//go:wasmexport proxy_on_vm_start
func proxyOnVMStart(root, size uint32) uint32 {
	return 1
}

//go:wasmexport proxy_on_configure
func proxyOnConfigure(root, size uint32) uint32 {
	if configure == nil {
		Log(LogError, "no filter registered: call filter.Register in an init function")
		return 0
	}
	var config []byte
	if size > 0 {
		var address, length uint32
		if proxyGetBufferBytes(bufferPluginConfiguration, 0, size, unsafe.Pointer(&address), unsafe.Pointer(&length)) == statusOK {
			config = returned(address, length)
		}
	}
	plugin, err := configure(config)
	if err != nil {
		Log(LogError, "configuration rejected: "+err.Error())
		return 0
	}
	roots[root] = plugin
	return 1
}

//go:wasmexport proxy_on_request_headers
func proxyOnRequestHeaders(id, headers, endOfStream uint32) uint32 {
	if stream := streams[id]; stream != nil {
		return uint32(stream.OnRequestHeaders(RequestHeaders, endOfStream != 0))
	}
	return uint32(Continue)
}

//go:wasmexport proxy_on_response_headers
func proxyOnResponseHeaders(id, headers, endOfStream uint32) uint32 {
	if stream := streams[id]; stream != nil {
		return uint32(stream.OnResponseHeaders(ResponseHeaders, endOfStream != 0))
	}
	return uint32(Continue)
}

//go:wasmexport proxy_on_request_body
func proxyOnRequestBody(id, size, endOfStream uint32) uint32 {
	if stream := streams[id]; stream != nil {
		return uint32(stream.OnRequestBody(Body{bufferRequestBody, size}, endOfStream != 0))
	}
	return uint32(Continue)
}

//go:wasmexport proxy_on_response_body
func proxyOnResponseBody(id, size, endOfStream uint32) uint32 {
	if stream := streams[id]; stream != nil {
		return uint32(stream.OnResponseBody(Body{bufferResponseBody, size}, endOfStream != 0))
	}
	return uint32(Continue)
}

//go:wasmexport proxy_on_http_call_response
func proxyOnHTTPCallResponse(id, token, headers, bodySize, trailers uint32) {
	done, ok := calls[token]
	if !ok {
		return
	}
	delete(calls, token)
	var answer Answer
	// A call that failed has no headers at all.
	if headers > 0 {
		answer.Headers = Headers{mapHTTPCallResponseHeaders}.All()
		for _, header := range answer.Headers {
			if header[0] == ":status" {
				answer.Status, _ = strconv.Atoi(header[1])
			}
		}
	}
	answer.Body = Body{bufferHTTPCallResponseBody, bodySize}.Bytes()
	done(answer)
}

//go:wasmexport proxy_on_done
func proxyOnDone(id uint32) uint32 {
	return 1
}

//go:wasmexport proxy_on_log
func proxyOnLog(id uint32) {
	if stream := streams[id]; stream != nil {
		stream.OnLog()
	}
}

//go:wasmexport proxy_on_delete
func proxyOnDelete(id uint32) {
	delete(streams, id)
	delete(roots, id)
}
