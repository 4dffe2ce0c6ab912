package main

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// clockTicks is USER_HZ, the unit of utime and stime in /proc/<pid>/stat.
// It is 100 on every Linux architecture Go supports (the kernel fixes it
// for user space independently of CONFIG_HZ).
const clockTicks = 100

var errProcFormat = errors.New("unexpected /proc format")

// parseStatCPU returns utime+stime in seconds from the contents of
// /proc/<pid>/stat. The command name (field 2) may hold spaces and
// parentheses, so fields are counted from the last ')'.
func parseStatCPU(stat []byte) (float64, error) {
	i := bytes.LastIndexByte(stat, ')')
	if i < 0 {
		return 0, fmt.Errorf("%w: stat has no ')'", errProcFormat)
	}
	f := bytes.Fields(stat[i+1:])
	// f[0] is field 3 (state); utime and stime are fields 14 and 15.
	if len(f) < 13 {
		return 0, fmt.Errorf("%w: stat has %d fields after the name", errProcFormat, len(f))
	}
	ut, err1 := strconv.ParseUint(string(f[11]), 10, 64)
	st, err2 := strconv.ParseUint(string(f[12]), 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		return 0, fmt.Errorf("%w: utime/stime: %w", errProcFormat, err)
	}
	return float64(ut+st) / clockTicks, nil
}

// parseStatusKB returns a "Name:   123 kB" field of /proc/<pid>/status.
func parseStatusKB(status []byte, name string) (int64, error) {
	key := []byte(name + ":")
	for line := range bytes.SplitSeq(status, []byte("\n")) {
		if !bytes.HasPrefix(line, key) {
			continue
		}
		f := bytes.Fields(line[len(key):])
		if len(f) != 2 || string(f[1]) != "kB" {
			return 0, fmt.Errorf("%w: %s line %q", errProcFormat, name, line)
		}
		v, err := strconv.ParseInt(string(f[0]), 10, 64)
		if err != nil || v < 0 {
			return 0, fmt.Errorf("%w: %s value %q", errProcFormat, name, f[0])
		}
		return v, nil
	}
	return 0, fmt.Errorf("%w: no %s", errProcFormat, name)
}

// cpuSeconds is the process's user+system CPU time so far (all threads;
// webhookd's embedded NATS server runs in-process, so it is included).
func cpuSeconds(pid int) (float64, error) {
	raw, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, fmt.Errorf("cpu of pid %d: %w", pid, err)
	}
	return parseStatCPU(raw)
}

// rssKB returns VmRSS and VmHWM (peak RSS) in KiB.
func rssKB(pid int) (rss, hwm int64, err error) {
	raw, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0, 0, fmt.Errorf("memory of pid %d: %w", pid, err)
	}
	rss, err1 := parseStatusKB(raw, "VmRSS")
	hwm, err2 := parseStatusKB(raw, "VmHWM")
	return rss, hwm, errors.Join(err1, err2)
}

// memSampler polls a process's peak RSS (VmHWM) every interval until
// stopped. VmHWM is exact between samples; polling keeps the figure once
// the process has exited (e.g. stopped for a restart).
type memSampler struct {
	pid      int
	peak     atomic.Int64 // KiB
	stopOnce sync.Once
	stop     chan struct{}
	done     chan struct{}
}

func startMemSampler(pid int, interval time.Duration) *memSampler {
	m := &memSampler{pid: pid, stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(m.done)
		t := time.NewTicker(interval)
		defer t.Stop()
		for {
			m.sample()
			select {
			case <-t.C:
			case <-m.stop:
				return
			}
		}
	}()
	return m
}

func (m *memSampler) sample() {
	_, hwm, err := rssKB(m.pid)
	if err != nil {
		return // the process is gone; the last sample stands
	}
	for {
		p := m.peak.Load()
		if hwm <= p || m.peak.CompareAndSwap(p, hwm) {
			return
		}
	}
}

// peakMiB is the process's peak RSS as last seen.
func (m *memSampler) peakMiB() float64 {
	m.sample()
	return float64(m.peak.Load()) / 1024
}

// close stops polling (after one last sample) and waits for the poller.
func (m *memSampler) close() {
	m.stopOnce.Do(func() { close(m.stop) })
	<-m.done
}
