package main

import (
	"context"
	"testing"
	"time"
)

// TestCustomStreamAndConsumerNames: the stream, subject and consumer names
// given as flags are the ones created and used.
func TestCustomStreamAndConsumerNames(t *testing.T) {
	d := newDaemon(t, "--events-stream", "ACME_EVENTS", "--deliveries-stream", "ACME_DELIVERIES",
		"--deliveries-subject", "acme.deliveries", "--fanout-consumer", "acme-fanout", "--delivery-consumer", "acme-deliver")
	d.start()
	deliverSome(t, d, 10)

	js := d.jetStream()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for stream, consumer := range map[string]string{"ACME_EVENTS": "acme-fanout", "ACME_DELIVERIES": "acme-deliver"} {
		if _, err := js.Consumer(ctx, stream, consumer); err != nil {
			t.Errorf("consumer %s on stream %s: %v", consumer, stream, err)
		}
	}
	s, err := js.Stream(ctx, "ACME_DELIVERIES")
	if err != nil {
		t.Fatal(err)
	}
	if subj := s.CachedInfo().Config.Subjects; len(subj) == 0 || subj[0] != "acme.deliveries.job.>" {
		t.Errorf("deliveries subjects %v", subj)
	}
	if _, err := js.Stream(ctx, "WEBHOOKD_EVENTS"); err == nil {
		t.Error("the default events stream was created too")
	}
}
