// A filter in C: answers 401 for paths under /private, tells the upstream how long the path is
// (`x-c-path-length`) and marks responses (`x-filter-lang: c`). It takes no configuration.
// Bindings: `wit-bindgen c sdk/wit --world filter`; see tests/src/lib.rs for the build.
#include <stdlib.h>
#include <string.h>

#include "filter.h"

static void set_request_header(filter_borrow_request_t request, const char *name, const char *value) {
    filter_string_t n, v, err;
    filter_string_set(&n, name);
    filter_string_set(&v, value);
    if (!sluice_filter_types_method_request_set_header(request, &n, &v, &err)) {
        filter_string_free(&err);
    }
}

// Decimal digits of `value`, without pulling in stdio (and with it WASI's file descriptors).
static void format_size(size_t value, char out[24]) {
    char digits[24];
    size_t n = 0;
    do {
        digits[n++] = (char)('0' + value % 10);
        value /= 10;
    } while (value > 0);
    for (size_t i = 0; i < n; i++) {
        out[i] = digits[n - 1 - i];
    }
    out[n] = '\0';
}

bool exports_filter_validate_config(filter_string_t *config, filter_string_t *err) {
    bool ok = config->len == 4 && memcmp(config->ptr, "null", 4) == 0;
    filter_string_free(config);
    if (!ok) {
        filter_string_dup(err, "this filter takes no configuration");
    }
    return ok;
}

void exports_filter_on_request(filter_borrow_request_t request, filter_action_t *ret) {
    filter_string_t path;
    sluice_filter_types_method_request_path(request, &path);
    bool private_path = path.len >= 8 && memcmp(path.ptr, "/private", 8) == 0;
    char length[24];
    format_size(path.len, length);
    filter_string_free(&path);
    // Borrowed handles must be given back before returning.
    if (private_path) {
        sluice_filter_types_request_drop_borrow(request);
        static const char body[] = "private\n";
        ret->tag = SLUICE_FILTER_TYPES_ACTION_RESPOND;
        ret->val.respond.status = 401;
        ret->val.respond.headers.ptr = NULL;
        ret->val.respond.headers.len = 0;
        // Freed by the bindings after the gateway has read it.
        ret->val.respond.body.ptr = malloc(sizeof body - 1);
        memcpy(ret->val.respond.body.ptr, body, sizeof body - 1);
        ret->val.respond.body.len = sizeof body - 1;
        return;
    }
    set_request_header(request, "x-c-path-length", length);
    sluice_filter_types_request_drop_borrow(request);
    ret->tag = SLUICE_FILTER_TYPES_ACTION_CONTINUE;
}

void exports_filter_on_response(filter_borrow_response_t response) {
    filter_string_t name, value, err;
    filter_string_set(&name, "x-filter-lang");
    filter_string_set(&value, "c");
    if (!sluice_filter_types_method_response_set_header(response, &name, &value, &err)) {
        filter_string_free(&err);
    }
    sluice_filter_types_response_drop_borrow(response);
}
