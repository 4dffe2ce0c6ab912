package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// chromium finds a Chromium to drive: absent, the browser test skips,
// except in CI (CI=true), where .ci/run installs Debian's chromium.
func chromium(t *testing.T) string {
	t.Helper()
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	if os.Getenv("CI") == "true" {
		t.Fatal("no chromium on PATH; .ci/run installs Debian's chromium")
	}
	t.Skip("no chromium on PATH (apt-get install chromium)")
	return ""
}

// xssBody is what the failing receiver answers: shown as text, it must
// never run.
const xssBody = `<script>window.pwned=1</script><img src=x onerror="window.pwned=2">`

// TestConsoleInABrowser drives the web console in a real headless
// Chromium against the real binary: sign in, create an endpoint, send a
// test event, see deliveries (a receiver's HTML answer shown as text),
// retry a failed one, rotate the secret, delete the endpoint. Screenshots
// go to $WEBHOOKD_SCREENSHOTS (a temp dir without it).
func TestConsoleInABrowser(t *testing.T) {
	if testing.Short() {
		t.Skip("real daemon and browser")
	}
	chrome := chromium(t)
	d := newDaemon(t, "--retry-max-attempts", "1", "--circuit-failures", "100000")
	d.start()
	base := "http://" + d.httpAddr
	shots := os.Getenv("WEBHOOKD_SCREENSHOTS")
	if shots == "" {
		shots = t.TempDir()
	}
	if err := os.MkdirAll(shots, 0o755); err != nil {
		t.Fatal(err)
	}

	var failing atomic.Bool
	recv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if failing.Load() {
			w.Header().Set("Content-Type", "text/html")
			w.WriteHeader(http.StatusInternalServerError)
			fmt.Fprint(w, xssBody)
			return
		}
		fmt.Fprint(w, "ok")
	}))
	defer recv.Close()

	resp, err := http.Get(base + "/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if csp := resp.Header.Get("Content-Security-Policy"); !strings.Contains(csp, "script-src 'self'") || !strings.Contains(csp, "frame-ancestors 'none'") {
		t.Errorf("Content-Security-Policy = %q", csp)
	}

	opts := append(chromedp.DefaultExecAllocatorOptions[:], chromedp.ExecPath(chrome), chromedp.NoSandbox,
		chromedp.Flag("disable-dev-shm-usage", true), chromedp.WindowSize(1280, 800))
	actx, cancelA := chromedp.NewExecAllocator(context.Background(), opts...)
	defer cancelA()
	bctx, cancelB := chromedp.NewContext(actx)
	defer cancelB()
	ctx, cancel := context.WithTimeout(bctx, 2*time.Minute)
	defer cancel()
	run := func(step string, actions ...chromedp.Action[chromedp.Void]) {
		t.Helper()
		if err := chromedp.Do(ctx, actions...); err != nil {
			t.Fatalf("%s: %v", step, err)
		}
	}
	eval := func(js string) string {
		t.Helper()
		v, err := chromedp.Run(ctx, chromedp.Evaluate[string](js))
		if err != nil {
			t.Fatalf("evaluate %s: %v", js, err)
		}
		return v
	}
	shot := func(name string) {
		t.Helper()
		run("settle", chromedp.Sleep(300*time.Millisecond))
		png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
		if err != nil {
			t.Fatalf("screenshot %s: %v", name, err)
		}
		if err := os.WriteFile(filepath.Join(shots, name), png, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	// poll evaluates js until it is true.
	poll := func(what, js string) {
		t.Helper()
		deadline := time.Now().Add(30 * time.Second)
		for time.Now().Before(deadline) {
			if ok, err := chromedp.Run(ctx, chromedp.Evaluate[bool](js)); err == nil && ok {
				return
			}
			time.Sleep(200 * time.Millisecond)
		}
		t.Fatalf("timed out waiting for %s (notice: %q, replay: %q)", what, eval(`document.getElementById("notice").textContent`), eval(`document.getElementById("replay-progress").textContent`))
	}
	id := func(s string) chromedp.ID { return chromedp.ID(s) }
	css := func(s string) chromedp.CSS { return chromedp.CSS(s) }

	// 1. Sign in with the keyboard alone: the key field has the focus on
	// load, and Enter submits.
	run("open", chromedp.Navigate(base+"/"), chromedp.WaitVisible(id("api-key")))
	poll("the key field to have the focus", `document.activeElement === document.getElementById("api-key")`)
	run("sign in", chromedp.KeyEvent(d.apiKey+"\r"), chromedp.WaitVisible(id("endpoints")))
	// 2. Create an endpoint.
	run("create", chromedp.SendKeys(id("new-url"), recv.URL+"/hook"),
		chromedp.SetValue(id("new-event-type"), "workflowRun.completed"),
		chromedp.Click(css("#create-form button")), chromedp.WaitVisible(id("created")))
	poll("the endpoint in the list", `document.querySelectorAll("#endpoint-table tbody a").length === 1`)
	shot("console-endpoints.png")
	run("open it", chromedp.Click(css("#endpoint-table tbody a")), chromedp.WaitVisible(id("endpoint")))
	// 3. A test event and its 200.
	run("test", chromedp.Click(id("send-test")))
	poll("the test's 200", `document.getElementById("test-result").textContent.includes("HTTP 200")`)
	// 4. Events in the deliveries list, one of them failed with an HTML answer.
	failing.Store(true)
	publishEvents(t, d.natsURL(), 1)
	hook := d.listIDs(t)[0]
	waitUntil(t, 15*time.Second, "the first delivery to fail", func() bool {
		f, _ := d.deliveries(t, hook, "?status=failed")
		return len(f) == 1
	})
	failing.Store(false)
	publishEventsFrom(t, d.natsURL(), 1, 3)
	poll("four deliveries, one failed", `(document.getElementById("refresh-deliveries").click(),
		document.querySelectorAll("#delivery-table tr[data-state=succeeded]").length === 3 &&
		document.querySelectorAll("#delivery-table tr[data-state=failed]").length === 1)`)
	shown := eval(`document.querySelectorAll("#delivery-table details").forEach(d => d.open = true),
		Array.from(document.querySelectorAll("pre.snippet")).map(p => p.textContent).join("")`)
	ran := eval(`String(!!window.pwned || document.querySelectorAll("#delivery-table script, #delivery-table img").length > 0)`)
	if !strings.Contains(shown, xssBody) || ran != "false" {
		t.Errorf("the receiver's HTML: shown %q, ran or rendered: %s", shown, ran)
	}
	shot("console-endpoint.png")
	// 5. Retry the failed one from the page, and see it succeed.
	run("retry", chromedp.Click(css("#delivery-table tr[data-state=failed] button.retry")))
	poll("the retried delivery to succeed", `(document.getElementById("refresh-deliveries").click(),
		document.querySelectorAll("#delivery-table tr[data-state=succeeded]").length === 4)`)
	// A replay of the last hour, followed to its end on the page.
	run("replay", chromedp.Click(css("#replay-form button")))
	poll("the replay to finish", `/: succeeded, 4 re-delivered of 4 matching/.test(document.getElementById("replay-progress").textContent)`)
	// 6. Rotate the secret.
	run("reveal", chromedp.Click(id("reveal-secret")))
	poll("the secret", `document.getElementById("secret-value").textContent.startsWith("whsec_")`)
	before := eval(`document.getElementById("secret-value").textContent`)
	eval(`document.querySelector("#rotate-form").closest("details").open = true, ""`)
	run("rotate", chromedp.Click(id("rotate-secret")))
	poll("a new secret", fmt.Sprintf(`(t => t.startsWith("whsec_") && t !== %q)(document.getElementById("secret-value").textContent)`, before))
	// The same page at a phone's width.
	run("phone width", chromedp.EmulateViewport(390, 844))
	shot("console-endpoint-phone.png")
	run("desktop width", chromedp.EmulateViewport(1280, 800))
	// 7. Delete the endpoint, answering its confirmation yes (a headless
	// browser has nobody to click the dialog).
	eval(`window.confirm = (q) => (window.asked = q, true), ""`)
	run("delete", chromedp.Click(id("delete-endpoint")), chromedp.WaitVisible(id("endpoints")))
	if asked := eval(`window.asked || ""`); !strings.Contains(asked, recv.URL) {
		t.Errorf("the delete confirmation asked %q", asked)
	}
	poll("an empty list", `document.querySelectorAll("#endpoint-table tbody a").length === 0`)
	if ids := d.listIDs(t); len(ids) != 0 {
		t.Errorf("webhooks left after the delete: %v", ids)
	}
	t.Logf("screenshots in %s", shots)
}

// listIDs lists the workspace's webhook ids through the API.
func (d *daemon) listIDs(t *testing.T) []string {
	t.Helper()
	status, out := d.api(http.MethodGet, "/api/webhook", nil)
	if status != http.StatusOK {
		t.Fatalf("list: %d %s", status, out)
	}
	var env struct{ Data []struct{ ID string } }
	if err := json.Unmarshal(out, &env); err != nil {
		t.Fatal(err)
	}
	ids := make([]string, len(env.Data))
	for i, w := range env.Data {
		ids[i] = w.ID
	}
	return ids
}
