// Command webhookd is the webhook dispatcher daemon: it turns workflow events
// published on NATS into signed HTTP deliveries, at least once.
//
// This file only parses flags, wires the packages and handles signals; all
// behaviour lives in registry, events and dispatcher.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/signal"
	"runtime/debug"
	"strings"
	"syscall"
	"time"
)

// version is set at build time with -ldflags "-X main.version=v1.2.3".
var version = ""

func buildVersion() string {
	if version != "" {
		return version
	}
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		return bi.Main.Version
	}
	return "dev"
}

func main() {
	os.Exit(realMain(os.Args[1:], os.Stdout, os.Stderr))
}

func realMain(args []string, stdout, stderr io.Writer) int {
	if len(args) > 0 {
		switch args[0] {
		case "version":
			fmt.Fprintln(stdout, "webhookd", buildVersion())
			return 0
		case "healthcheck":
			return healthcheck(args[1:], stderr)
		case "check":
			return checkCmd(args[1:], stdout, stderr)
		case "backup":
			return backupCmd(args[1:], stdout, stderr)
		case "keys":
			return keysCmd(args[1:], stdout, stderr)
		}
	}
	opts, err := parseOptions(args, lookupEnv, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		// The message names the flag; "usage: " only selects the exit code.
		fmt.Fprintln(stderr, "webhookd:", strings.TrimPrefix(err.Error(), errUsage.Error()+": "))
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, opts, stderr); err != nil {
		fmt.Fprintln(stderr, "webhookd:", err)
		return 1
	}
	return 0
}

// healthcheck probes /healthz for container HEALTHCHECKs, where no curl is
// available.
func healthcheck(args []string, stderr io.Writer) int {
	fs := flag.NewFlagSet("healthcheck", flag.ContinueOnError)
	fs.SetOutput(stderr)
	url := fs.String("url", "http://127.0.0.1:8080/healthz", "URL to probe")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	c := http.Client{Timeout: 3 * time.Second}
	resp, err := c.Get(*url)
	if err != nil {
		fmt.Fprintln(stderr, "healthcheck:", err)
		return 1
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		fmt.Fprintln(stderr, "healthcheck: status", resp.Status)
		return 1
	}
	return 0
}
