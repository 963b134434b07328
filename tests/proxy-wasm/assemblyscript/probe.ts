// A proxy-wasm filter written in AssemblyScript with the solo-io runtime, for the gateway's
// tests: it changes request and response headers and copies properties into them.
export * from "@solo-io/proxy-runtime/proxy";
import {
  Context,
  FilterHeadersStatusValues,
  RootContext,
  registerRootContext,
  stream_context,
} from "@solo-io/proxy-runtime";
import { BufferTypeValues, get_buffer_status, get_property } from "@solo-io/proxy-runtime/runtime";

class Root extends RootContext {
  /** The configuration's length as the host's buffer status gives it. */
  configurationLength: usize = 0;

  onConfigure(configuration_size: u32): bool {
    this.configurationLength = get_buffer_status(BufferTypeValues.PluginConfiguration).length;
    return super.onConfigure(configuration_size);
  }

  createContext(context_id: u32): Context {
    return new Probe(context_id, this);
  }
}

class Probe extends Context {
  constructor(context_id: u32, root_context: Root) {
    super(context_id, root_context);
  }

  onRequestHeaders(headers: u32, end_of_stream: bool): FilterHeadersStatusValues {
    const request = stream_context.headers.request;
    request.replace("x-as-path", property("request\0path"));
    request.replace("x-as-method", request.get(":method"));
    request.replace("x-as-root-id", property("plugin_root_id"));
    request.remove("x-drop");
    return FilterHeadersStatusValues.Continue;
  }

  onResponseHeaders(headers: u32, end_of_stream: bool): FilterHeadersStatusValues {
    const response = stream_context.headers.response;
    response.add("x-as-config", this.root_context.getConfiguration());
    response.add("x-as-config-length", (this.root_context as Root).configurationLength.toString());
    response.add("x-as-status", response.get(":status"));
    response.remove("content-type");
    return FilterHeadersStatusValues.Continue;
  }
}

/** A property as text; path segments are separated by NUL bytes. */
function property(path: string): string {
  return String.UTF8.decode(get_property(path));
}

// The runtime creates root contexts by the `plugin_root_id` property: the plugin's name.
registerRootContext((context_id: u32): RootContext => {
  return new Root(context_id);
}, "as-probe");
