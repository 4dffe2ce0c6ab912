package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/webhookd/webhookd/registry"
)

// checkCmd validates the configuration (flags and env, exactly as the daemon
// reads them) and the data dir's registry, offline.
func checkCmd(args []string, stdout, stderr io.Writer) int {
	o, err := parseOptions(args, lookupEnv, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintln(stderr, "webhookd check:", errors.Unwrap(err))
		return 2
	}
	fmt.Fprintln(stdout, "configuration: ok")
	path := filepath.Join(o.dataDir, "webhookd.db")
	if _, err := os.Stat(path); errors.Is(err, os.ErrNotExist) {
		fmt.Fprintf(stdout, "registry: %s does not exist yet (created on first start)\n", path)
		return 0
	}
	r, err := registry.CheckFile(path, nil)
	if err != nil {
		fmt.Fprintln(stderr, "webhookd check:", err)
		return 1
	}
	fmt.Fprintf(stdout, "registry: %s ok (schema %s, %d workspaces, %d webhooks, %d failed deliveries, %d stored API keys)\n",
		path, r.Schema, r.Workspaces, r.Webhooks, r.Failures, r.APIKeys)
	return 0
}

// backupCmd writes a consistent copy of the registry: hot, through a
// running daemon's admin listener, or offline from a stopped one's data dir.
func backupCmd(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("backup", flag.ContinueOnError)
	fs.SetOutput(stderr)
	out := fs.String("out", "", "file to write the backup to (required)")
	adminURL := fs.String("admin-url", "", "hot backup from a running webhookd's --admin-addr, e.g. http://127.0.0.1:8081")
	dataDir := fs.String("data-dir", envOr("data-dir", "./data"), "offline backup from this data dir (webhookd must be stopped)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *out == "" {
		fmt.Fprintln(stderr, "webhookd backup: --out is required")
		return 2
	}
	tmp, err := os.CreateTemp(filepath.Dir(*out), ".webhookd-backup-*")
	if err != nil {
		fmt.Fprintln(stderr, "webhookd backup:", err)
		return 1
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(0o600); err != nil {
		fmt.Fprintln(stderr, "webhookd backup:", err)
		return 1
	}
	if *adminURL != "" {
		err = hotBackup(*adminURL, tmp)
	} else {
		_, err = registry.CheckFile(filepath.Join(*dataDir, "webhookd.db"), tmp)
	}
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), *out)
	}
	if err != nil {
		fmt.Fprintln(stderr, "webhookd backup:", err)
		return 1
	}
	// The copy must itself be a sound registry.
	r, err := registry.CheckFile(*out, nil)
	if err != nil {
		fmt.Fprintln(stderr, "webhookd backup: the copy does not check out:", err)
		return 1
	}
	fmt.Fprintf(stdout, "backup written to %s (%d webhooks)\n", *out, r.Webhooks)
	return 0
}

func hotBackup(adminURL string, w io.Writer) error {
	c := http.Client{Timeout: 5 * time.Minute}
	resp, err := c.Get(adminURL + "/admin/backup")
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("admin endpoint answered %s", resp.Status)
	}
	_, err = io.Copy(w, resp.Body)
	return err
}

// envOr reads a flag's environment twin for the subcommands.
func envOr(flagName, def string) string {
	if v := os.Getenv(envName(flagName)); v != "" {
		return v
	}
	return def
}
