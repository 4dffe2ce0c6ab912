package replay

import (
	"sort"
	"strings"
	"time"

	"github.com/webhookd/webhookd/registry"
)

// FieldError names each invalid request field (since, until, status,
// webhook) with a message. It is ErrInvalid for errors.Is and a
// *registry.ValidationError for errors.As, so the API answers 422 with
// the fields in details, as for an invalid webhook.
type FieldError struct {
	Fields map[string]string
}

func (e *FieldError) Error() string {
	names := make([]string, 0, len(e.Fields))
	for k := range e.Fields {
		names = append(names, k)
	}
	sort.Strings(names)
	for i, n := range names {
		names[i] = n + ": " + e.Fields[n]
	}
	return "replay: invalid request: " + strings.Join(names, "; ")
}

// Is makes errors.Is(err, ErrInvalid) hold.
func (e *FieldError) Is(target error) bool { return target == ErrInvalid }

// As hands the API the registry's validation error type.
func (e *FieldError) As(target any) bool {
	if p, ok := target.(**registry.ValidationError); ok {
		*p = &registry.ValidationError{Fields: e.Fields}
		return true
	}
	return false
}

// futureSlack is how far in the future Until may be; it is then clamped
// to now, since events not yet stored cannot be replayed.
const futureSlack = time.Minute

// validate checks r's fields and returns it normalised.
func (m *Manager) validate(r Request, now time.Time) (Request, error) {
	fields := map[string]string{}
	switch {
	case r.Since.IsZero():
		fields["since"] = "is required"
	case r.Since.After(now):
		fields["since"] = "must not be in the future"
	}
	switch {
	case r.Until.IsZero():
		fields["until"] = "is required"
	case r.Until.After(now.Add(futureSlack)):
		fields["until"] = "must not be in the future"
	case r.Until.After(now):
		r.Until = now
	}
	if fields["since"] == "" && fields["until"] == "" && !r.Since.Before(r.Until) {
		fields["until"] = "must be after since"
	}
	switch r.Status {
	case "", StatusAll:
		r.Status = StatusAll
	case StatusFailed:
		if m.cfg.Failed == nil {
			fields["status"] = `"failed" is not available on this server`
		}
	default:
		fields["status"] = `must be "all" or "failed"`
	}
	if len(fields) > 0 {
		return r, &FieldError{Fields: fields}
	}
	r.Since, r.Until = r.Since.UTC(), r.Until.UTC()
	return r, nil
}
