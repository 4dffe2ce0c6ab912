package registry

import (
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
	"unicode"
)

// Journal entries are not trusted: anyone allowed to write the shared
// bucket could plant one, bypassing the API. Every entry that arrives
// through a Journal is held to the API's rules before it is applied.

// Reasons an entry is refused, as Refusal.Reason and the label of
// webhookd_registry_entries_refused_total.
const (
	// RefusedInvalid: the entry does not decode, names another id, or
	// breaks the API's validation (URL and SSRF policy, event type,
	// workflow, id and secret format). It is applied as a deletion, so
	// every instance agrees the webhook does not exist.
	RefusedInvalid = "invalid"
	// RefusedPlaintext: sealing is required (RequireSealedFrom) and the
	// entry's secret is not sealed. Applied as a deletion.
	RefusedPlaintext = "plaintext_secret"
	// RefusedSealed: the secret is sealed with a key this instance was not
	// given. The entry may be perfectly valid, so nothing is changed: the
	// caller must treat its copy as incomplete until a later entry of the
	// same id (re-sealed, or a deletion) applies.
	RefusedSealed = "sealed"
)

// RefusalReasons lists every Refusal.Reason.
var RefusalReasons = []string{RefusedInvalid, RefusedPlaintext, RefusedSealed}

// A Refusal is a journal entry ApplyChanges did not apply as it stands.
type Refusal struct {
	ID       string
	Revision uint64
	Reason   string
	Err      error
}

func (r Refusal) Error() string {
	return fmt.Sprintf("registry: journal entry %s (revision %d) refused (%s): %v", r.ID, r.Revision, r.Reason, r.Err)
}

// RequireSealedFrom makes ApplyChanges refuse journal entries of revision
// rev or later whose secret is in plaintext (0: refuse none). With
// encryption on, a shared registry accepts the plaintext entries that were
// there when encryption was turned on, to re-seal them, and no later one:
// a plaintext entry planted afterwards is never accepted.
func (s *Store) RequireSealedFrom(rev uint64) { s.sealedFrom.Store(rev) }

// checkEntry decodes and vets one journal entry.
func (s *Store) checkEntry(c Change) (*Webhook, *Refusal) {
	refuse := func(reason string, err error) (*Webhook, *Refusal) {
		return nil, &Refusal{ID: c.ID, Revision: c.Revision, Reason: reason, Err: err}
	}
	w, _, err := s.decode(c.Value)
	switch {
	case errors.Is(err, ErrSealed):
		return refuse(RefusedSealed, err)
	case err != nil:
		return refuse(RefusedInvalid, err)
	case w.ID != c.ID:
		return refuse(RefusedInvalid, fmt.Errorf("holds webhook %q", w.ID))
	}
	if from := s.sealedFrom.Load(); s.sealer != nil && from > 0 && c.Revision >= from && !sealedValue(c.Value) {
		return refuse(RefusedPlaintext, errors.New("secret is not sealed"))
	}
	if err := s.validator.validWebhook(w); err != nil {
		return refuse(RefusedInvalid, err)
	}
	return w, nil
}

// sealedValue reports whether stored webhook bytes carry a sealed secret
// and, when they have one, a sealed previous secret, without decoding
// them whole.
func sealedValue(v []byte) bool {
	str := string(v)
	if !strings.Contains(str, `"secret":"`+sealedPrefix) {
		return false
	}
	return !strings.Contains(str, `"previousSecret":"`) || strings.Contains(str, `"previousSecret":"`+sealedPrefix)
}

// validWebhook applies the API's rules to a webhook read from a journal.
func (v Validator) validWebhook(w *Webhook) error {
	if err := v.Validate(Input{URL: w.URL, EventType: string(w.EventType), WorkflowID: w.WorkflowID}); err != nil {
		return err
	}
	switch {
	case !validID(w.ID):
		return fmt.Errorf("id %q is not a webhook id", w.ID)
	case !validWorkspace(w.Workspace):
		return errors.New("workspace is missing or malformed")
	case !validSecret(w.Secret):
		return errors.New("secret is not whsec_ followed by 32 bytes in base64")
	case w.PreviousSecret != "" && !validSecret(w.PreviousSecret):
		return errors.New("previousSecret is not whsec_ followed by 32 bytes in base64")
	case (w.PreviousSecret != "") != !w.PreviousSecretUntil.IsZero():
		return errors.New("previousSecret and previousSecretUntil disagree")
	case w.CreatedAt.IsZero():
		return errors.New("createdAt is missing")
	case w.Disabled != (w.DisabledReason != ""):
		return errors.New("disabled and disabledReason disagree")
	case CheckDescription(w.Description) != "":
		return fmt.Errorf("description %s", CheckDescription(w.Description))
	}
	return nil
}

func validID(id string) bool {
	if len(id) != 3+26 || !strings.HasPrefix(id, "wh_") {
		return false
	}
	for _, c := range id[3:] {
		if !strings.ContainsRune(crockford, c) {
			return false
		}
	}
	return true
}

// maxWorkspaceLen bounds workspace names read from a journal; real ones
// come from API keys and are far shorter.
const maxWorkspaceLen = 256

func validWorkspace(ws string) bool {
	if ws == "" || len(ws) > maxWorkspaceLen {
		return false
	}
	return !strings.ContainsFunc(ws, func(r rune) bool { return !unicode.IsPrint(r) })
}

func validSecret(secret string) bool {
	raw, ok := strings.CutPrefix(secret, "whsec_")
	if !ok {
		return false
	}
	b, err := base64.StdEncoding.DecodeString(raw)
	return err == nil && len(b) == 32
}

// UnsealedIDs lists the webhooks stored with a plaintext secret.
func (s *Store) UnsealedIDs() ([]string, error) {
	var ids []string
	err := s.IDs(func(id string, value []byte) error {
		if !sealedValue(value) {
			ids = append(ids, id)
		}
		return nil
	})
	return ids, err
}

// Reseal returns stored webhook bytes with the secret (and the previous
// secret, if any) sealed under the first key, and false when they need no change (already sealed under it,
// or no Sealer). A shared registry uses it to re-seal the bucket's entries
// after a key rotation or when encryption is turned on.
func (s *Store) Reseal(value []byte) ([]byte, bool, error) {
	if s.sealer == nil {
		return nil, false, nil
	}
	w, stale, err := s.decode(value)
	if err != nil || !stale {
		return nil, false, err
	}
	out, err := s.encode(*w)
	return out, err == nil, err
}
