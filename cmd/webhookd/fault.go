package main

import (
	"log/slog"
	"os"
	"strconv"
	"sync/atomic"
)

// faultEnv is a test-only fault hook: with WEBHOOKD_FAULT_EXIT_BEFORE_ACK=N
// the process exits abruptly (status 3, no cleanup) right after the N-th
// successful delivery and before its ack, the narrowest window the
// at-least-once guarantee has to cover. It is read from the environment, not
// a flag, so it never appears in --help; it must not be set in production.
const faultEnv = "WEBHOOKD_FAULT_EXIT_BEFORE_ACK"

func faultExitBeforeAck(log *slog.Logger) func(string) {
	n, err := strconv.Atoi(os.Getenv(faultEnv))
	if err != nil || n <= 0 {
		return nil
	}
	log.Warn("fault injection armed: exiting before an ack", "after_deliveries", n)
	var count atomic.Int64
	return func(deliveryID string) {
		if count.Add(1) == int64(n) {
			log.Warn("fault injection: exiting after 2xx, before ack", "delivery", deliveryID)
			os.Exit(3)
		}
	}
}
