package main

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"time"
)

// target is the webhookd under test. proc is nil for a daemon the bench
// did not start (no CPU, memory, restart or profile figures then).
type target struct {
	api, natsURL, apiKey string
	workspace, prefix    string
	proc                 *daemon
}

// daemon is a webhookd process the bench started, with an embedded NATS
// server, on free loopback ports and a fresh data directory.
type daemon struct {
	bin      string
	args     []string
	dataDir  string
	target   target
	pprofURL string // "" unless profiling

	cmd     *exec.Cmd
	exited  chan struct{}
	waitErr error // valid once exited is closed
	logs    *tailBuffer
	mem     *memSampler

	stopTook time.Duration // how long the last SIGTERM took to end the process

	closeOnce sync.Once
	closeErr  error
}

// readyLimit bounds a start or restart (a large registry loads at start).
const readyLimit = 3 * time.Minute

// buildDaemon compiles cmd/webhookd into dir. It names the package by
// import path so it works from anywhere inside the module.
func buildDaemon(ctx context.Context, dir string) (string, error) {
	bin := filepath.Join(dir, "webhookd")
	cmd := exec.CommandContext(ctx, "go", "build", "-o", bin, "github.com/webhookd/webhookd/cmd/webhookd")
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build cmd/webhookd (run inside the webhookd module, or pass --webhookd-bin): %w\n%s", err, out)
	}
	return bin, nil
}

func freeAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", fmt.Errorf("free port: %w", err)
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

// daemonConfig says how to start a daemon.
type daemonConfig struct {
	Bin   string
	Extra []string // appended flags (scenario and --daemon-flag)
	Pprof bool     // serve /debug/pprof on a free port
}

// startDaemon launches a fresh webhookd and waits for /readyz.
func startDaemon(ctx context.Context, cfg daemonConfig) (*daemon, error) {
	httpAddr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	natsAddr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "webhookd-bench-data-")
	if err != nil {
		return nil, fmt.Errorf("data dir: %w", err)
	}
	key := (rand.Text() + rand.Text())[:32] // 32 base32 characters, 160 bits
	d := &daemon{bin: cfg.Bin, dataDir: dir, logs: &tailBuffer{max: 64 << 10},
		target: target{api: "http://" + httpAddr, natsURL: "nats://" + natsAddr, apiKey: key, workspace: "bench", prefix: "events"}}
	d.target.proc = d
	d.args = []string{"--data-dir", dir, "--http-addr", httpAddr, "--nats-listen", natsAddr,
		"--api-keys", "bench:" + key, "--allow-private-targets", "--log-level", "warn"}
	if cfg.Pprof {
		addr, err := freeAddr()
		if err != nil {
			os.RemoveAll(dir)
			return nil, err
		}
		d.args = append(d.args, "--pprof-addr", addr)
		d.pprofURL = "http://" + addr
	}
	d.args = append(d.args, cfg.Extra...)
	if err := d.launch(ctx); err != nil {
		d.close()
		return nil, err
	}
	return d, nil
}

// launch starts the process and waits until it is ready.
func (d *daemon) launch(ctx context.Context) error {
	d.cmd = exec.Command(d.bin, d.args...)
	d.cmd.Stdout, d.cmd.Stderr = d.logs, d.logs
	// If the bench dies, so does its daemon.
	d.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := d.cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", d.bin, err)
	}
	d.exited = make(chan struct{})
	go func(cmd *exec.Cmd, exited chan struct{}) {
		d.waitErr = cmd.Wait()
		close(exited)
	}(d.cmd, d.exited)
	d.mem = startMemSampler(d.cmd.Process.Pid, 100*time.Millisecond)
	return d.waitReady(ctx, readyLimit)
}

var readyClient = &http.Client{Timeout: 2 * time.Second}

// waitReady polls /readyz until it answers 200, the process exits, or
// limit passes.
func (d *daemon) waitReady(ctx context.Context, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	for {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, d.target.api+"/readyz", nil)
		if err != nil {
			return fmt.Errorf("readyz request: %w", err)
		}
		if resp, err := readyClient.Do(req); err == nil {
			_ = resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case <-d.exited:
			return fmt.Errorf("webhookd exited before ready (%v); its log:\n%s", d.waitErr, d.logs)
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(10 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("webhookd not ready after %s; its log:\n%s", limit, d.logs)
		}
	}
}

// terminate stops the process with SIGTERM (SIGKILL after 30 s) and
// reports an unclean exit.
func (d *daemon) terminate() error {
	if d.cmd == nil || d.exited == nil {
		return nil
	}
	defer d.mem.close()
	start := time.Now()
	defer func() { d.stopTook = time.Since(start) }()
	_ = d.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-d.exited:
	case <-time.After(30 * time.Second):
		_ = d.cmd.Process.Kill()
		<-d.exited
		return fmt.Errorf("webhookd ignored SIGTERM for 30 s and was killed")
	}
	if d.waitErr != nil {
		return fmt.Errorf("webhookd exited uncleanly after SIGTERM: %w; its log:\n%s", d.waitErr, d.logs)
	}
	return nil
}

// restart stops the daemon with SIGTERM and starts it again on the same
// data dir; it returns the time from the new start to /readyz and the
// peak RSS of the process that stopped.
func (d *daemon) restart(ctx context.Context) (ready time.Duration, oldPeakMiB float64, err error) {
	oldPeakMiB = d.mem.peakMiB()
	if err := d.terminate(); err != nil {
		return 0, oldPeakMiB, err
	}
	oldPeakMiB = max(oldPeakMiB, float64(d.mem.peak.Load())/1024)
	start := time.Now()
	if err := d.launch(ctx); err != nil {
		return 0, oldPeakMiB, fmt.Errorf("restart: %w", err)
	}
	return time.Since(start), oldPeakMiB, nil
}

func (d *daemon) cpuSeconds() (float64, error) { return cpuSeconds(d.cmd.Process.Pid) }

// close stops the daemon and deletes its data dir; later calls return the
// first call's error.
func (d *daemon) close() error {
	d.closeOnce.Do(func() {
		d.closeErr = errors.Join(d.terminate(), os.RemoveAll(d.dataDir))
	})
	return d.closeErr
}

// fetchProfile saves a CPU profile of the given length from --pprof-addr.
func (d *daemon) fetchProfile(ctx context.Context, seconds int, path string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet,
		fmt.Sprintf("%s/debug/pprof/profile?seconds=%d", d.pprofURL, seconds), nil)
	if err != nil {
		return fmt.Errorf("profile request: %w", err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("fetch profile: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return fmt.Errorf("fetch profile: %s: %s", resp.Status, msg)
	}
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("profile file: %w", err)
	}
	_, err = io.Copy(f, resp.Body)
	return errors.Join(err, f.Close())
}

// tailBuffer keeps the last max bytes written to it, for error messages.
type tailBuffer struct {
	mu  sync.Mutex
	max int
	buf []byte
}

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.buf = append(t.buf, p...)
	if over := len(t.buf) - t.max; over > 0 {
		t.buf = append(t.buf[:0], t.buf[over:]...)
	}
	return len(p), nil
}

func (t *tailBuffer) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return string(t.buf)
}
