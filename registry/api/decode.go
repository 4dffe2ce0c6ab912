package api

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"mime"
	"net/http"
	"slices"
	"strconv"
	"strings"

	"github.com/webhookd/webhookd/registry"
)

// createFields are the JSON names decodeCreate reads, in report order.
var createFields = [...]string{"url", "eventType", "workflowId", "description"}

// createRequest is a decoded create-webhook body.
type createRequest struct {
	registry.Input
	Description string
}

// decodeCreate parses a create-webhook body. Every error it returns is an
// *apiError with a 4xx status:
//   - 400 INVALID_JSON when the body is not exactly one JSON object;
//   - 413 BODY_TOO_LARGE when r is an http.MaxBytesReader that hit its limit;
//   - 422 VALIDATION_FAILED when a known field has the wrong JSON type. The
//     returned request is still filled with the well-typed fields so the
//     caller can validate them too and report every bad field at once.
//
// Unknown fields are ignored; field names match exactly; null means absent.
func decodeCreate(r io.Reader) (createRequest, error) {
	obj, err := decodeObject(r)
	if err != nil {
		return createRequest{}, err
	}
	var in createRequest
	dst := [...]*string{&in.URL, &in.EventType, &in.WorkflowID, &in.Description}
	var typeErrs map[string]string
	for i, name := range createFields {
		raw, ok := obj[name]
		if !ok || bytes.Equal(raw, []byte("null")) {
			continue
		}
		if err := json.Unmarshal(raw, dst[i]); err != nil {
			if typeErrs == nil {
				typeErrs = make(map[string]string, len(createFields))
			}
			typeErrs[name] = "must be a string"
		}
	}
	if typeErrs != nil {
		return in, validationError(typeErrs)
	}
	return in, nil
}

// decodeObject reads exactly one JSON object, its members left undecoded:
// cheap for unknown fields, and a wrongly typed known field can then be
// reported by name instead of failing the whole document. Its errors are
// 400 INVALID_JSON or 413 BODY_TOO_LARGE *apiErrors.
func decodeObject(r io.Reader) (map[string]json.RawMessage, error) {
	dec := json.NewDecoder(r)
	var obj map[string]json.RawMessage
	if err := dec.Decode(&obj); err != nil {
		return nil, jsonError(err)
	}
	if obj == nil { // the document was the literal null
		return nil, invalidJSON("body must be a JSON object")
	}
	if err := expectEOF(dec); err != nil {
		return nil, err
	}
	return obj, nil
}

// maxUnknownReported bounds the fields an UNKNOWN_FIELD answer names.
const maxUnknownReported = 16

// unknownFields returns a 400 UNKNOWN_FIELD naming the members of obj
// that known does not list (at most maxUnknownReported of them), or nil.
// Routes whose fields change state use it so that a misspelt field is an
// error rather than a silent no-op.
func unknownFields(obj map[string]json.RawMessage, known []string, hint string) *apiError {
	var d map[string]any
	for name := range obj {
		if slices.Contains(known, name) {
			continue
		}
		if d == nil {
			d = make(map[string]any)
		}
		if len(d) < maxUnknownReported {
			d[name] = hint
		}
	}
	if d == nil {
		return nil
	}
	return &apiError{Status: http.StatusBadRequest, Code: codeUnknownField, Details: d}
}

// expectEOF rejects anything but whitespace after the first JSON value.
func expectEOF(dec *json.Decoder) error {
	_, err := dec.Token()
	switch {
	case errors.Is(err, io.EOF):
		return nil
	case err == nil:
		return invalidJSON("unexpected data after the JSON object")
	}
	if tooLarge := bodyTooLarge(err); tooLarge != nil {
		return tooLarge
	}
	return invalidJSON("unexpected data after the JSON object")
}

func jsonError(err error) *apiError {
	if tooLarge := bodyTooLarge(err); tooLarge != nil {
		return tooLarge
	}
	var syn *json.SyntaxError
	var typ *json.UnmarshalTypeError
	switch {
	case errors.Is(err, io.EOF):
		return invalidJSON("body is empty")
	case errors.Is(err, io.ErrUnexpectedEOF):
		return invalidJSON("body ends in the middle of a JSON value")
	case errors.As(err, &syn):
		return invalidJSON(syn.Error())
	case errors.As(err, &typ):
		return invalidJSON("body must be a JSON object")
	}
	return invalidJSON("body could not be read")
}

func bodyTooLarge(err error) *apiError {
	var mbe *http.MaxBytesError
	if !errors.As(err, &mbe) {
		return nil
	}
	return &apiError{Status: http.StatusRequestEntityTooLarge, Code: codeBodyTooLarge,
		Details: map[string]any{"limitBytes": mbe.Limit}}
}

func invalidJSON(reason string) *apiError {
	return &apiError{Status: http.StatusBadRequest, Code: codeInvalidJSON, Details: map[string]any{"reason": reason}}
}

// checkJSONBody enforces the content type and the size limit of a POST body
// before any byte of it is read, and returns the body wrapped so that reading
// past maxBytes fails with *http.MaxBytesError.
func checkJSONBody(w http.ResponseWriter, r *http.Request, maxBytes int64) (io.Reader, error) {
	return checkBody(w, r, maxBytes, "application/json")
}

// readJSONBody is checkJSONBody, then the whole body: for handlers that
// parse it from bytes. A body over maxBytes is 413 BODY_TOO_LARGE.
func readJSONBody(w http.ResponseWriter, r *http.Request, maxBytes int64) ([]byte, error) {
	body, err := checkJSONBody(w, r, maxBytes)
	if err != nil {
		return nil, err
	}
	raw, err := io.ReadAll(body)
	if err != nil {
		if tooLarge := bodyTooLarge(err); tooLarge != nil {
			return nil, tooLarge
		}
		return nil, invalidJSON("body could not be read")
	}
	return raw, nil
}

// checkBody is checkJSONBody accepting any of the media types (the first
// is the one error messages name).
func checkBody(w http.ResponseWriter, r *http.Request, maxBytes int64, mediaTypes ...string) (io.Reader, error) {
	mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if err != nil || !slices.Contains(mediaTypes, mt) {
		return nil, &apiError{Status: http.StatusBadRequest, Code: codeUnsupportedMediaType,
			Details: map[string]any{"reason": "Content-Type must be " + strings.Join(mediaTypes, " or ")}}
	}
	if r.ContentLength > maxBytes {
		return nil, &apiError{Status: http.StatusRequestEntityTooLarge, Code: codeBodyTooLarge,
			Details: map[string]any{"limitBytes": maxBytes}}
	}
	return http.MaxBytesReader(w, r.Body, maxBytes), nil
}

// parseLimit reads ?limit=, defaulting to def and accepting 1..maxListLimit.
func parseLimit(r *http.Request, def int) (int, error) {
	v := r.URL.Query().Get("limit")
	if v == "" {
		return def, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 || n > maxListLimit {
		return 0, &apiError{Status: http.StatusBadRequest, Code: codeInvalidLimit,
			Details: map[string]any{"limit": "must be an integer between 1 and " + strconv.Itoa(maxListLimit)}}
	}
	return n, nil
}
