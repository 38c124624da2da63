/*
 * pyhost host ABI, version 2.
 *
 * The host (the Rust process embedding CPython) hands the embedded interpreter one
 * `pyhost_host_v2` table; the pyhost SDK binds it with cffi in ABI mode. No symbol is looked
 * up by name, so an application embedding pyhost needs no special linker flags.
 *
 * Memory ownership:
 *   - Inputs (`const uint8_t *` + length) are owned by the caller and only borrowed for the
 *     duration of the call. Strings are UTF-8 and not NUL-terminated.
 *   - Every function that takes a `pyhost_buffer *out` may fill it with bytes allocated by the
 *     host: the result on PYHOST_OK, a UTF-8 error message on any other status. The caller
 *     must release a filled buffer exactly once with `free_buffer` (an empty buffer, with
 *     data == NULL, may be passed to free_buffer too and is ignored).
 *
 * Every call is checked against the capabilities the config grants the calling plugin. The
 * host decides which plugin that is: the one whose code it is running on the calling thread (a
 * handler, a task or thread the handler started, the plugin's import). No function takes the
 * caller as an argument, so no plugin can claim to be another. A call from code the host runs
 * for no plugin (an event-loop callback, say) gets PYHOST_DENIED; `log` is always accepted.
 *
 * Compatibility: an SDK accepts exactly its own PYHOST_HOST_ABI_VERSION. Within a version the
 * table only grows: entries are appended at the end, never removed, reordered or changed, and
 * `struct_size` says how large the host's table is. Any other change is a new version.
 * Version 2 removed the `plugin` argument that version 1 took first in every function.
 */
#ifndef PYHOST_HOST_H
#define PYHOST_HOST_H

#include <stddef.h>
#include <stdint.h>

#define PYHOST_HOST_ABI_VERSION 2

/* Status codes returned by every call. */
#define PYHOST_OK 0
#define PYHOST_NOT_FOUND 1         /* kv_get: no such key */
#define PYHOST_DENIED 2            /* not granted to the calling plugin, or no plugin is calling */
#define PYHOST_ERROR 3             /* the host (or a host function) failed; see the message */
#define PYHOST_INVALID 4           /* bad arguments: invalid UTF-8, data that is not JSON, ... */
#define PYHOST_NO_SUCH_FUNCTION 5  /* call: no host function of that name */

typedef struct pyhost_buffer {
    uint8_t *data;
    size_t len;
    size_t cap;
} pyhost_buffer;

typedef struct pyhost_host_v2 {
    uint32_t abi_version; /* PYHOST_HOST_ABI_VERSION */
    uint32_t struct_size; /* sizeof(pyhost_host_v2) as the host compiled it */

    /* Writes one structured log record into the host's log. `level` uses Python's numbers
     * (10 debug, 20 info, 30 warning, 40 error, 50 critical); `fields_json` is a JSON object
     * of extra fields (may be empty). */
    int32_t (*log)(int32_t level,
                   const uint8_t *message, size_t message_len,
                   const uint8_t *request_id, size_t request_id_len,
                   const uint8_t *fields_json, size_t fields_json_len,
                   pyhost_buffer *out);

    /* The plugin's settings table from the config, as a JSON object. */
    int32_t (*settings)(pyhost_buffer *out);

    /* The value of a secret the config names for this plugin (read from the environment at
     * start-up; never logged). */
    int32_t (*secret)(const uint8_t *name, size_t name_len, pyhost_buffer *out);

    /* The host's key-value store, one namespace per plugin. */
    int32_t (*kv_get)(const uint8_t *key, size_t key_len, pyhost_buffer *out);
    int32_t (*kv_set)(const uint8_t *key, size_t key_len,
                      const uint8_t *value, size_t value_len, pyhost_buffer *out);
    int32_t (*kv_delete)(const uint8_t *key, size_t key_len, pyhost_buffer *out);

    /* Calls a function the host application registered; `data` and the result are JSON. */
    int32_t (*call)(const uint8_t *name, size_t name_len,
                    const uint8_t *data, size_t data_len, pyhost_buffer *out);

    /* Releases a buffer the host filled. */
    void (*free_buffer)(pyhost_buffer *buffer);
} pyhost_host_v2;

#endif /* PYHOST_HOST_H */
