package events

import (
	"errors"
	"fmt"
	"strings"
)

// DefaultPrefix is the subject prefix when none is configured.
const DefaultPrefix = "events"

// Subjects is the subject scheme <prefix>.<workspaceId>.<eventType>. Event
// types contain a dot, so a subject is the prefix's tokens, one workspace
// token, and two type tokens.
type Subjects struct {
	// Prefix is one or more dot-separated tokens. Zero means "events".
	Prefix string
}

func (s Subjects) prefix() string {
	if s.Prefix == "" {
		return DefaultPrefix
	}
	return s.Prefix
}

// For returns the subject an event of this workspace and type is published on.
func (s Subjects) For(workspace string, t Type) string {
	return s.prefix() + "." + workspace + "." + string(t)
}

// Filter is the wildcard that captures every subject under the prefix,
// including malformed ones, so they can be counted rather than missed.
func (s Subjects) Filter() string { return s.prefix() + ".>" }

// Errors Parse returns; wrap-checked with errors.Is.
var (
	ErrBadSubject  = errors.New("subject does not match <prefix>.<workspace>.<eventType>")
	ErrUnknownType = errors.New("unknown event type")
)

// Parse splits a subject into workspace and event type.
func (s Subjects) Parse(subject string) (workspace string, t Type, err error) {
	p := s.prefix()
	if len(subject) <= len(p)+1 || subject[:len(p)] != p || subject[len(p)] != '.' {
		return "", "", fmt.Errorf("%w: prefix is not %q", ErrBadSubject, p)
	}
	rest := subject[len(p)+1:]
	dot := strings.IndexByte(rest, '.')
	if dot < 0 {
		return "", "", fmt.Errorf("%w: no event type", ErrBadSubject)
	}
	workspace, typ := rest[:dot], rest[dot+1:]
	if err := ValidateWorkspace(workspace); err != nil {
		return "", "", fmt.Errorf("%w: %v", ErrBadSubject, err)
	}
	if !Type(typ).Valid() {
		return "", "", fmt.Errorf("%w %q", ErrUnknownType, typ)
	}
	return workspace, Type(typ), nil
}

// ValidatePrefix checks a subject prefix: dot-separated tokens without
// wildcards or white space.
func ValidatePrefix(prefix string) error {
	if prefix == "" {
		return errors.New("subject prefix is empty")
	}
	if len(prefix) > 128 {
		return errors.New("subject prefix is longer than 128 bytes")
	}
	for _, tok := range strings.Split(prefix, ".") {
		if tok == "" {
			return fmt.Errorf("subject prefix %q has an empty token", prefix)
		}
		for _, r := range tok {
			if r == '*' || r == '>' || r <= ' ' || r == 0x7f {
				return fmt.Errorf("subject prefix %q may not contain wildcards, spaces or control characters", prefix)
			}
		}
	}
	return nil
}

// ValidateWorkspace checks a workspace id: 1 to 64 of [A-Za-z0-9_-].
func ValidateWorkspace(ws string) error {
	if ws == "" || len(ws) > 64 {
		return fmt.Errorf("workspace id must be 1 to 64 characters, got %d", len(ws))
	}
	for i := 0; i < len(ws); i++ {
		c := ws[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-') {
			return fmt.Errorf("workspace id %q may only hold letters, digits, '_' and '-'", ws)
		}
	}
	return nil
}

// opFamily is the subject family of webhookd's own operational events,
// <prefix>.<workspace>.webhook.<name>: they share the event prefix so a
// workspace's subscribers find them beside its events, and fan-out passes
// them by rather than counting them as malformed.
const opFamily = "webhook."

// Operational is the subject of an operational event, such as
// "webhook.disabled", for a workspace.
func (s Subjects) Operational(workspace, name string) string {
	return s.prefix() + "." + workspace + "." + name
}

// IsOperational reports whether subject is an operational event's.
func (s Subjects) IsOperational(subject string) bool {
	p := s.prefix()
	if len(subject) <= len(p)+1 || subject[:len(p)] != p || subject[len(p)] != '.' {
		return false
	}
	_, typ, ok := strings.Cut(subject[len(p)+1:], ".")
	return ok && strings.HasPrefix(typ, opFamily)
}

// ValidToken reports whether s is one literal subject token. Ids that
// become tokens of webhookd's own subjects (webhook ids, workspaces) are
// checked with it, so that an id like "*" or "a.b" never reaches a filter,
// where it would read other ids' messages.
func ValidToken(s string) bool {
	if s == "" || len(s) > 255 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; c <= ' ' || c == 0x7f || c == '.' || c == '*' || c == '>' {
			return false
		}
	}
	return true
}
