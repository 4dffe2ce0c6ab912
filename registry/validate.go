package registry

import (
	"fmt"
	"net/url"
	"sort"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/webhookd/webhookd/events"
	"github.com/webhookd/webhookd/registry/ssrf"
)

// Limits on registrations.
const (
	MaxURLBytes      = 2048
	MaxWorkflowIDLen = 256
)

// ValidationError names every invalid field (by its JSON name) with a
// human-readable message.
type ValidationError struct {
	Fields map[string]string
}

func (e *ValidationError) Error() string {
	names := make([]string, 0, len(e.Fields))
	for k := range e.Fields {
		names = append(names, k)
	}
	sort.Strings(names)
	parts := make([]string, len(names))
	for i, n := range names {
		parts[i] = n + ": " + e.Fields[n]
	}
	return "registry: invalid webhook: " + strings.Join(parts, "; ")
}

// Validator checks registrations. Guard is the SSRF policy for literal
// hosts; nil means protection on.
type Validator struct {
	Guard *ssrf.Guard
}

// Validate returns a *ValidationError naming each bad field, or nil.
func (v Validator) Validate(in Input) error {
	fields := map[string]string{}
	if msg := v.checkURL(in.URL); msg != "" {
		fields["url"] = msg
	}
	if in.EventType == "" {
		fields["eventType"] = "is required"
	} else if !events.Type(in.EventType).Valid() {
		fields["eventType"] = fmt.Sprintf("must be one of %s", typeList())
	}
	if msg := checkWorkflowID(in.WorkflowID); msg != "" {
		fields["workflowId"] = msg
	}
	if len(fields) > 0 {
		return &ValidationError{Fields: fields}
	}
	return nil
}

func typeList() string {
	s := make([]string, len(events.Types))
	for i, t := range events.Types {
		s[i] = string(t)
	}
	return strings.Join(s, ", ")
}

func (v Validator) checkURL(raw string) string {
	switch {
	case raw == "":
		return "is required"
	case len(raw) > MaxURLBytes:
		return fmt.Sprintf("must be at most %d bytes", MaxURLBytes)
	case strings.ContainsFunc(raw, func(r rune) bool { return r <= ' ' || r == 0x7f }):
		return "must not contain spaces or control characters"
	}
	u, err := url.Parse(raw)
	if err != nil {
		return "is not a valid URL"
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return "must be an absolute http or https URL"
	}
	if u.Opaque != "" || u.Host == "" || u.Hostname() == "" {
		return "must have a host"
	}
	if u.User != nil {
		// Credentials in the URL would be sent to the receiver and shown
		// back by the API; they also hide the real host from a casual reader.
		return "must not contain user information"
	}
	if p := u.Port(); p != "" {
		if n, err := parsePort(p); err != nil || n == 0 {
			return "has an invalid port"
		}
	}
	if err := v.Guard.CheckHost(u.Hostname()); err != nil {
		return "is not allowed: " + strings.TrimPrefix(err.Error(), "ssrf: ")
	}
	return ""
}

func parsePort(p string) (int, error) {
	n := 0
	for _, c := range p {
		if c < '0' || c > '9' {
			return 0, fmt.Errorf("not a number")
		}
		n = n*10 + int(c-'0')
		if n > 65535 {
			return 0, fmt.Errorf("out of range")
		}
	}
	return n, nil
}

func checkWorkflowID(id string) string {
	if id == "" {
		return ""
	}
	if !utf8.ValidString(id) {
		return "must be valid UTF-8"
	}
	if utf8.RuneCountInString(id) > MaxWorkflowIDLen {
		return fmt.Sprintf("must be at most %d characters", MaxWorkflowIDLen)
	}
	for _, r := range id {
		if !unicode.IsPrint(r) {
			return "must contain only printable characters"
		}
	}
	return ""
}
