package main

import (
	"errors"
	"os"
	"strings"
	"testing"
	"time"
)

// statLine builds a /proc/<pid>/stat line with the given name, utime and
// stime (fields 14 and 15).
func statLine(name, utime, stime string) string {
	return "4242 (" + name + ") S 1 4242 4242 0 -1 4194560 1000 0 0 0 " + utime + " " + stime +
		" 0 0 20 0 12 0 55 123456 789 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0\n"
}

func TestParseStatCPU(t *testing.T) {
	cases := []struct {
		name string
		stat string
		want float64
		ok   bool
	}{
		{"plain", statLine("webhookd", "250", "75"), 3.25, true},
		{"name with spaces and parens", statLine("we) (ird name", "100", "0"), 1, true},
		{"zero", statLine("x", "0", "0"), 0, true},
		{"real line", "1030 (cat) R 1026 1026 3210 0 -1 4194304 98 0 0 0 7 3 0 0 20 0 1 0 1056604 3133440 414 18446744073709551615", 0.1, true},
		{"no name", "4242 S 1 2 3", 0, false},
		{"truncated", "4242 (x) S 1 2 3 4 5 6 7 8 9 10", 0, false},
		{"not a number", statLine("x", "12a", "1"), 0, false},
		{"negative", statLine("x", "-1", "1"), 0, false},
		{"empty", "", 0, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, err := parseStatCPU([]byte(c.stat))
			if (err == nil) != c.ok || got != c.want {
				t.Fatalf("= %v, %v; want %v (ok %v)", got, err, c.want, c.ok)
			}
			if err != nil && !errors.Is(err, errProcFormat) {
				t.Fatalf("error %v is not errProcFormat", err)
			}
		})
	}
}

const sampleStatus = `Name:	webhookd
Umask:	0022
State:	S (sleeping)
VmPeak:	 1288340 kB
VmHWM:	  151234 kB
VmRSS:	  140000 kB
Threads:	12
`

func TestParseStatusKB(t *testing.T) {
	cases := []struct {
		name, status, field string
		want                int64
		ok                  bool
	}{
		{"hwm", sampleStatus, "VmHWM", 151234, true},
		{"rss", sampleStatus, "VmRSS", 140000, true},
		{"prefix is not a match", sampleStatus, "VmH", 0, false},
		{"missing", sampleStatus, "VmSwap", 0, false},
		{"no unit", "VmRSS:\t12\n", "VmRSS", 0, false},
		{"wrong unit", "VmRSS:\t12 MB\n", "VmRSS", 0, false},
		{"negative", "VmRSS:\t-12 kB\n", "VmRSS", 0, false},
		{"kernel thread has none", "Name:\tkthreadd\nState:\tS\n", "VmRSS", 0, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, err := parseStatusKB([]byte(c.status), c.field)
			if (err == nil) != c.ok || got != c.want {
				t.Fatalf("= %v, %v; want %v (ok %v)", got, err, c.want, c.ok)
			}
		})
	}
}

func FuzzParseStatCPU(f *testing.F) {
	f.Add([]byte(statLine("webhookd", "250", "75")))
	f.Add([]byte(statLine(") ) (", "1", "2")))
	f.Add([]byte("1 (x)"))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		if v, err := parseStatCPU(b); err == nil && v < 0 {
			t.Fatalf("negative CPU %v from %q", v, b)
		}
	})
}

func FuzzParseStatusKB(f *testing.F) {
	f.Add([]byte(sampleStatus), "VmHWM")
	f.Add([]byte("VmRSS: 1 kB"), "VmRSS")
	f.Add([]byte("VmRSS:"), "VmRSS")
	f.Fuzz(func(t *testing.T, b []byte, field string) {
		if v, err := parseStatusKB(b, field); err == nil && v < 0 {
			t.Fatalf("negative %s %d from %q", field, v, b)
		}
	})
}

// TestOwnProcess reads this test process's real /proc entries.
func TestOwnProcess(t *testing.T) {
	if _, err := os.Stat("/proc/self/stat"); err != nil {
		t.Skip("no /proc on this system")
	}
	pid := os.Getpid()
	before, err := cpuSeconds(pid)
	if err != nil {
		t.Fatal(err)
	}
	// Burn CPU until the tick-granular counter moves (generous bound).
	deadline := time.Now().Add(30 * time.Second)
	x := 0
	for after := before; after == before; after, _ = cpuSeconds(pid) {
		if time.Now().After(deadline) {
			t.Fatal("CPU time did not advance")
		}
		for i := range 1_000_000 {
			x += i % 7
		}
	}
	_ = strings.Repeat("x", x%2)
	m := startMemSampler(pid, 5*time.Millisecond)
	peak := m.peakMiB()
	m.close()
	rss, hwm, err := rssKB(pid)
	if err != nil || rss <= 0 || hwm < rss || peak <= 0 || peak > float64(hwm)/1024+1 {
		t.Fatalf("rss %d hwm %d sampled peak %.1f MiB: %v", rss, hwm, peak, err)
	}
	if _, err := cpuSeconds(1 << 30); err == nil {
		t.Fatal("a pid that does not exist must fail")
	}
}
