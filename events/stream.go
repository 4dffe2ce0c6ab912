package events

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// StreamConfig describes the JetStream stream that captures events. The
// zero value is usable.
type StreamConfig struct {
	// Name of the stream. Zero means "WEBHOOKD_EVENTS".
	Name string
	// Subjects is the subject scheme; the stream captures Subjects.Filter().
	Subjects Subjects
	// MaxAge is the events' retention (--event-retention), and it is not a
	// server-side limit: the stream is created with no MaxAge, because the
	// server would expire an event fan-out has not taken yet (fan-out
	// paused, or the registry unsynced, for longer than the retention)
	// just as readily as one long delivered. dispatcher/capacity's Monitor
	// enforces the retention instead, purging old events only below the
	// fan-out consumer's ack floor. Here it only bounds Duplicates. Zero
	// means 7 days.
	MaxAge time.Duration
	// Duplicates is the Nats-Msg-Id dedupe window, at most MaxAge. Zero
	// means 2 minutes.
	Duplicates time.Duration
	// Replicas for a clustered NATS. Zero means 1.
	Replicas int
	// MaxBytes caps the stream's size (capacity.Budget derives it from the
	// store size). At the cap the stream refuses new events: a publisher
	// that asked for an acknowledgement gets an error ("maximum bytes
	// exceeded"), a plain core-NATS publish is not stored. It never
	// drops an event it has acknowledged, which might not have been fanned
	// out yet; dispatcher/capacity purges events already fanned out long
	// before the cap. Zero means unlimited.
	MaxBytes int64
}

// DefaultStreamName is the events stream's name when none is configured.
const DefaultStreamName = "WEBHOOKD_EVENTS"

// EnsureStream creates the events stream or updates it to cfg. Plain
// core-NATS publishes on the subjects are then captured durably. A stream
// created by an older version with a server-side MaxAge loses it here.
func EnsureStream(ctx context.Context, js jetstream.JetStream, cfg StreamConfig) (jetstream.Stream, error) {
	name := cfg.Name
	if name == "" {
		name = DefaultStreamName
	}
	if err := ValidatePrefix(cfg.Subjects.prefix()); err != nil {
		return nil, fmt.Errorf("events stream %s: %w", name, err)
	}
	if cfg.MaxAge < 0 || cfg.Duplicates < 0 || cfg.Replicas < 0 || cfg.MaxBytes < 0 {
		return nil, errors.New("events stream: negative limits")
	}
	maxAge, dups, replicas, maxBytes := cfg.MaxAge, cfg.Duplicates, cfg.Replicas, cfg.MaxBytes
	if maxAge == 0 {
		maxAge = 7 * 24 * time.Hour
	}
	if dups == 0 {
		dups = 2 * time.Minute
	}
	if dups > maxAge {
		dups = maxAge
	}
	if replicas == 0 {
		replicas = 1
	}
	if maxBytes == 0 {
		maxBytes = -1
	}
	s, err := js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name:        name,
		Description: "webhookd workflow events",
		Subjects:    []string{cfg.Subjects.Filter()},
		Storage:     jetstream.FileStorage,
		Retention:   jetstream.LimitsPolicy,
		// At MaxBytes, refuse the new event rather than drop the oldest:
		// the oldest may not be fanned out yet, and its publisher was
		// told it is stored. For the same reason no MaxAge (zero: none,
		// also on update): see StreamConfig.MaxAge.
		Discard:    jetstream.DiscardNew,
		MaxAge:     0,
		Duplicates: dups,
		Replicas:   replicas,
		MaxBytes:   maxBytes,
	})
	if err != nil {
		return nil, fmt.Errorf("events stream %s: %w", name, err)
	}
	return s, nil
}
