package main

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// target is the webhookd under test: one this tool started, or an
// external one (pid 0: no CPU or memory figures).
type target struct {
	api, natsURL, apiKey string
	pid                  int
	cmd                  *exec.Cmd
	dataDir              string
	args                 []string
	logs                 *bytes.Buffer
}

func freeAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

// buildDaemon compiles ./cmd/webhookd once.
func buildDaemon(dir string) (string, error) {
	bin := filepath.Join(dir, "webhookd")
	cmd := exec.Command("go", "build", "-o", bin, "./cmd/webhookd")
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build ./cmd/webhookd (run from the repository root): %v\n%s", err, out)
	}
	return bin, nil
}

// startDaemon runs a fresh webhookd with an embedded NATS on free ports.
func startDaemon(bin string, extra []string) (*target, error) {
	httpAddr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	natsAddr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "webhookd-bench-data")
	if err != nil {
		return nil, err
	}
	key := make([]byte, 16)
	_, _ = rand.Read(key)
	t := &target{api: "http://" + httpAddr, natsURL: "nats://" + natsAddr, apiKey: hex.EncodeToString(key), dataDir: dir}
	t.args = append([]string{"--data-dir", dir, "--http-addr", httpAddr, "--nats-listen", natsAddr,
		"--api-keys", "bench:" + t.apiKey, "--allow-private-targets", "--log-level", "warn"}, extra...)
	return t, t.start(bin)
}

func (t *target) start(bin string) error {
	t.cmd = exec.Command(bin, t.args...)
	t.logs = &bytes.Buffer{}
	t.cmd.Stdout, t.cmd.Stderr = t.logs, t.logs
	if err := t.cmd.Start(); err != nil {
		return err
	}
	t.pid = t.cmd.Process.Pid
	return t.waitReady(60 * time.Second)
}

func (t *target) waitReady(limit time.Duration) error {
	deadline := time.Now().Add(limit)
	for time.Now().Before(deadline) {
		resp, err := http.Get(t.api + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return nil
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	return fmt.Errorf("webhookd not ready after %s; logs:\n%s", limit, t.logs.String())
}

// restart stops the daemon with SIGTERM and starts it on the same data dir,
// returning how long it took to be ready again.
func (t *target) restart(bin string) (time.Duration, error) {
	t.stopProcess()
	start := time.Now()
	if err := t.start(bin); err != nil {
		return 0, err
	}
	return time.Since(start), nil
}

func (t *target) stopProcess() {
	if t.cmd == nil {
		return
	}
	_ = t.cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() { _ = t.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		_ = t.cmd.Process.Kill()
		<-done
	}
}

func (t *target) stop() {
	t.stopProcess()
	if t.dataDir != "" {
		os.RemoveAll(t.dataDir)
	}
}

// cpuSeconds is the process's user+system CPU time (embedded NATS
// included: it runs in-process).
func (t *target) cpuSeconds() float64 {
	if t.pid == 0 {
		return 0
	}
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", t.pid))
	if err != nil {
		return 0
	}
	// Fields after the ")" that closes the command name: utime is 14th and
	// stime 15th of the whole line, i.e. 12th and 13th after it.
	s := string(raw)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	if len(f) < 13 {
		return 0
	}
	ut, _ := strconv.ParseFloat(f[11], 64)
	st, _ := strconv.ParseFloat(f[12], 64)
	return (ut + st) / 100 // USER_HZ
}

// peakRSS is VmHWM in MiB.
func (t *target) peakRSS() float64 {
	if t.pid == 0 {
		return 0
	}
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", t.pid))
	if err != nil {
		return 0
	}
	for _, l := range strings.Split(string(raw), "\n") {
		if strings.HasPrefix(l, "VmHWM:") {
			kb, _ := strconv.ParseFloat(strings.Fields(l)[1], 64)
			return kb / 1024
		}
	}
	return 0
}
