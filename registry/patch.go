package registry

import (
	"context"
	"errors"
	"fmt"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/webhookd/webhookd/events"
)

// MaxDescriptionLen bounds a webhook's description, in characters (runes).
// Every instance keeps each description in memory with its webhook, so
// the bound is part of the registry's memory bound.
const MaxDescriptionLen = 512

// ErrEmptyPatch: a Patch that sets no field. Nothing was read or written.
var ErrEmptyPatch = errors.New("registry: the patch sets no field")

// Patch is a partial change of a webhook: every nil field is left as it
// is. The id, workspace, secret and creation time cannot be patched.
type Patch struct {
	URL        *string
	EventType  *string
	WorkflowID *string // "": every workflow
	// Description "" removes the description.
	Description *string
	// Enabled true turns a disabled webhook back on, as Enable does;
	// false disables an enabled one as a manual disable (DisabledManual,
	// now). Either is a no-op when the webhook already is so; a disabled
	// webhook keeps its first reason and time.
	Enabled *bool
}

// IsEmpty reports whether p sets no field.
func (p Patch) IsEmpty() bool {
	return p.URL == nil && p.EventType == nil && p.WorkflowID == nil && p.Description == nil && p.Enabled == nil
}

// Patched field names, as ValidationError and Store.Patch name them (the
// JSON names of the API).
const (
	FieldURL         = "url"
	FieldEventType   = "eventType"
	FieldWorkflowID  = "workflowId"
	FieldDescription = "description"
	FieldEnabled     = "enabled"
)

// CheckDescription returns why d is not a valid description, or "" when
// it is: valid UTF-8, at most MaxDescriptionLen characters, all printable
// (unicode.IsPrint: letters, marks, numbers, punctuation, symbols and the
// ASCII space; no control characters, line breaks or tabs). "" is valid.
func CheckDescription(d string) string {
	switch {
	case d == "":
		return ""
	case !utf8.ValidString(d):
		return "must be valid UTF-8"
	case utf8.RuneCountInString(d) > MaxDescriptionLen:
		return fmt.Sprintf("must be at most %d characters", MaxDescriptionLen)
	}
	for _, r := range d {
		if !unicode.IsPrint(r) {
			return "must contain only printable characters (no control characters or line breaks)"
		}
	}
	return ""
}

// ValidatePatch checks the fields p sets with the rules of Validate (SSRF
// policy included) and CheckDescription, and returns a *ValidationError
// naming each bad one, or nil. Unset fields are not checked: the rules of
// one field never depend on another's value.
func (v Validator) ValidatePatch(p Patch) error {
	fields := map[string]string{}
	if p.URL != nil {
		if msg := v.checkURL(*p.URL); msg != "" {
			fields[FieldURL] = msg
		}
	}
	if p.EventType != nil {
		switch {
		case *p.EventType == "":
			fields[FieldEventType] = "is required"
		case !events.Type(*p.EventType).Valid():
			fields[FieldEventType] = fmt.Sprintf("must be one of %s", typeList())
		}
	}
	if p.WorkflowID != nil {
		if msg := checkWorkflowID(*p.WorkflowID); msg != "" {
			fields[FieldWorkflowID] = msg
		}
	}
	if p.Description != nil {
		if msg := CheckDescription(*p.Description); msg != "" {
			fields[FieldDescription] = msg
		}
	}
	if len(fields) > 0 {
		return &ValidationError{Fields: fields}
	}
	return nil
}

// Patch applies p to the workspace's webhook through the one
// read-modify-write path (update): with a shared registry it is a
// compare-and-swap on the journal's current copy, retried on a
// concurrent change, so that writers on every instance converge and a
// deleted webhook is never brought back. It keeps the secret, id,
// workspace and creation time. A changed event type or workflow moves the
// webhook in the match index; a changed URL takes effect for every job
// resolved after Patch returns (jobs name the webhook by id).
//
// It returns the webhook as it now is and the names (Field*) of the
// fields whose value changed, in a fixed order; none when p asks for what
// already is, and then nothing is written. Errors: ErrEmptyPatch,
// *ValidationError (p's fields, or the patched webhook failing the rules
// every journal entry is held to, such as a stored URL the SSRF policy
// refuses now), ErrNotFound (unknown id or another workspace's),
// ErrUnavailable (the shared registry cannot be written).
func (s *Store) Patch(ctx context.Context, workspace, id string, p Patch) (Webhook, []string, error) {
	if p.IsEmpty() {
		return Webhook{}, nil, ErrEmptyPatch
	}
	if err := s.validator.ValidatePatch(p); err != nil {
		return Webhook{}, nil, fmt.Errorf("registry: patch %s: %w", id, err)
	}
	if ws, ok := s.ix.workspaceOf(id); !ok || ws != workspace {
		// As Enable: probing other workspaces' ids costs no journal round
		// trip; change checks again on the journal's copy.
		return Webhook{}, nil, fmt.Errorf("registry: patch %s: %w", id, ErrNotFound)
	}
	now := time.Now().UTC().Truncate(time.Millisecond)
	var changed []string
	w, _, err := s.update(ctx, id, func(w *Webhook) error {
		// change may run more than once (a compare-and-swap lost to a
		// concurrent writer): every run starts from the current copy.
		changed = changed[:0]
		if w.Workspace != workspace {
			return ErrNotFound
		}
		changed = applyPatch(w, p, now, changed)
		if len(changed) == 0 {
			return errUnchanged
		}
		// The rules every instance holds the journal entry to: an entry
		// failing them would be applied as a deletion everywhere.
		return s.validator.validWebhook(w)
	})
	if err != nil {
		return Webhook{}, nil, fmt.Errorf("registry: patch %s: %w", id, err)
	}
	return w, changed, nil
}

// applyPatch sets p's fields on w and appends the names of those whose
// value changed to changed.
func applyPatch(w *Webhook, p Patch, now time.Time, changed []string) []string {
	setString := func(dst *string, v *string, name string) {
		if v != nil && *dst != *v {
			*dst = *v
			changed = append(changed, name)
		}
	}
	setString(&w.URL, p.URL, FieldURL)
	if p.EventType != nil && string(w.EventType) != *p.EventType {
		w.EventType = events.Type(*p.EventType)
		changed = append(changed, FieldEventType)
	}
	setString(&w.WorkflowID, p.WorkflowID, FieldWorkflowID)
	setString(&w.Description, p.Description, FieldDescription)
	if p.Enabled != nil && *p.Enabled == w.Disabled {
		if *p.Enabled {
			w.Disabled, w.DisabledReason, w.DisabledAt = false, "", time.Time{}
		} else {
			w.Disabled, w.DisabledReason, w.DisabledAt = true, DisabledManual, now
		}
		changed = append(changed, FieldEnabled)
	}
	return changed
}
