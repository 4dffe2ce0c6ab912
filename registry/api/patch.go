package api

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"

	"github.com/webhookd/webhookd/registry"
)

// patchFields are the JSON names a PATCH body may hold, in report order.
var patchFields = []string{
	registry.FieldURL, registry.FieldEventType, registry.FieldWorkflowID, registry.FieldDescription, registry.FieldEnabled,
}

var patchableList = strings.Join(patchFields, ", ")

// mergePatchType is RFC 7396's media type, which a PATCH body may carry
// instead of application/json: the body is a JSON merge patch (members
// replace, null clears).
const mergePatchType = "application/merge-patch+json"

// decodePatch parses a PATCH /api/webhook/{id} body: a JSON object whose
// members are among patchFields. Absent members leave their field as it
// is. A string member's null clears it as "" would (so null on url or
// eventType, which cannot be empty, is a validation failure); enabled
// must be true or false. Unlike create, unknown members are refused: a
// misspelt field in an update would otherwise be a silent no-op. Every
// error is an *apiError with a 4xx status:
//   - 400 INVALID_JSON when the body is not exactly one JSON object;
//   - 400 UNKNOWN_FIELD naming the members that are not patchable;
//   - 413 BODY_TOO_LARGE when r is an http.MaxBytesReader that hit its limit;
//   - 422 VALIDATION_FAILED when a member has the wrong JSON type; the
//     returned Patch still holds the well-typed members, so that the
//     caller can validate them too and report every bad field at once.
//
// A body without members decodes to an empty Patch without error; the
// Store refuses that (registry.ErrEmptyPatch).
func decodePatch(r io.Reader) (registry.Patch, error) {
	obj, err := decodeObject(r)
	if err != nil {
		return registry.Patch{}, err
	}
	if ae := unknownFields(obj, patchFields, "is not a field of a webhook patch; patchable: "+patchableList); ae != nil {
		return registry.Patch{}, ae
	}
	var p registry.Patch
	strs := [...]**string{&p.URL, &p.EventType, &p.WorkflowID, &p.Description}
	typeErrs := map[string]string{}
	for i, name := range patchFields[:len(strs)] {
		raw, ok := obj[name]
		if !ok {
			continue
		}
		v := new(string)
		if !bytes.Equal(raw, []byte("null")) {
			if err := json.Unmarshal(raw, v); err != nil {
				typeErrs[name] = "must be a string"
				continue
			}
		}
		*strs[i] = v
	}
	if raw, ok := obj[registry.FieldEnabled]; ok {
		var b bool
		if bytes.Equal(raw, []byte("null")) || json.Unmarshal(raw, &b) != nil {
			typeErrs[registry.FieldEnabled] = "must be true or false"
		} else {
			p.Enabled = &b
		}
	}
	if len(typeErrs) > 0 {
		return p, validationError(typeErrs)
	}
	return p, nil
}

// patchWebhook changes some of a webhook's fields (see decodePatch) with
// the create rules, through the Store's compare-and-swap update: the
// secret, id and creation time stay. enabled true acts as
// POST …/enable (health reset included); false is a manual disable. A
// changed url resets the health too: the failures were the old
// endpoint's. The answer is the webhook view, as GET shows it.
func (s *Server) patchWebhook(w http.ResponseWriter, r *http.Request) error {
	body, err := checkBody(w, r, s.maxBodyBytes, "application/json", mergePatchType)
	if err != nil {
		return err
	}
	p, err := decodePatch(body)
	if err != nil {
		var ae *apiError
		if !errors.As(err, &ae) || ae.Code != codeValidationFailed {
			return err
		}
		return mergeValidation(ae, s.validator.ValidatePatch(p))
	}
	if err := s.validator.ValidatePatch(p); err != nil {
		return err
	}
	id := r.PathValue("id")
	ws := workspaceFrom(r.Context())
	hook, changed, err := s.store.Patch(r.Context(), ws, id, p)
	if err != nil {
		return fmt.Errorf("patch webhook %s: %w", id, err)
	}
	if (p.Enabled != nil && *p.Enabled) || slices.Contains(changed, registry.FieldURL) {
		s.resetHealth(r, ws, id, "webhook patched but its health could not be reset")
	}
	// Field names only: never the values (the URL may carry a token).
	s.log.InfoContext(r.Context(), "webhook patched",
		"request_id", requestID(r.Context()), "workspace", ws, "webhook_id", id, "changed", strings.Join(changed, ","))
	writeSuccess(w, viewOf(hook, s.healthOf(id)), "")
	return nil
}
