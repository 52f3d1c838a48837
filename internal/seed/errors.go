package seed

import (
	"encoding/json"
	"net/http"
	"strconv"
)

// Error codes of the distribution spec that the seed answers with.
const (
	codeBlobUnknown     = "BLOB_UNKNOWN"
	codeDigestInvalid   = "DIGEST_INVALID"
	codeManifestUnknown = "MANIFEST_UNKNOWN"
	codeNameInvalid     = "NAME_INVALID"
	codeNameUnknown     = "NAME_UNKNOWN"
	codePagination      = "PAGINATION_NUMBER_INVALID"
	codeTagInvalid      = "TAG_INVALID"
	codeUnsupported     = "UNSUPPORTED"
	// codeCorrupted is not in the spec: bundle content that does not match
	// its digest. The spec leaves 5xx bodies to the registry.
	codeCorrupted = "BLOB_CORRUPTED"
	codeInternal  = "INTERNAL_ERROR"
)

type errorBody struct {
	Errors []errorEntry `json:"errors"`
}

type errorEntry struct {
	Code    string `json:"code"`
	Message string `json:"message"`
	Detail  any    `json:"detail,omitempty"`
}

// writeError answers with an OCI error body. HEAD gets the status and
// headers only.
func writeError(w http.ResponseWriter, r *http.Request, status int, code, msg string, detail any) {
	b, _ := json.Marshal(errorBody{Errors: []errorEntry{{Code: code, Message: msg, Detail: detail}}})
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Content-Length", strconv.Itoa(len(b)))
	h.Del("Docker-Content-Digest")
	h.Del("ETag")
	w.WriteHeader(status)
	if r.Method != http.MethodHead {
		w.Write(b)
	}
}
