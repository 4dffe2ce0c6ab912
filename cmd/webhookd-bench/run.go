package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"time"

	"github.com/webhookd/webhookd/events"
)

// bench runs scenarios against fresh daemons built from bin, or against
// the external target.
type bench struct {
	cfg      Config
	bin      string
	external *target
	log      io.Writer // progress of long waits (nil: none)
}

// scenarioRun is one scenario's live parts.
type scenarioRun struct {
	s     Scenario
	t     target
	shape eventShape
	led   *ledger
	book  *book
	recvs []*receiver // one per hot subscription, same index
	trap  *receiver   // cold subscriptions' endpoint (nil without any)
	dead  *deadSet    // subscriptions len(recvs).. (nil without any)
	api   *apiClient
	ids   []string // registered subscriptions, for cleanup of an external daemon
	// hookIDs are the hot subscriptions' ids, same index as the ledger's.
	hookIDs []string
	logw    io.Writer // progress of long waits
}

// run executes s and returns its figures. Errors are failures to measure
// (daemon did not start, API refused); a measured but untrustworthy run is
// a Result with Void set.
func (b *bench) run(ctx context.Context, s Scenario) (res Result, err error) {
	switch s.Kind {
	case kindChurn:
		return b.runChurn(ctx, s)
	case kindFailing:
		return b.runFailing(ctx, s)
	}
	res = newResult(s)
	t, err := b.target(ctx, s)
	if err != nil {
		return res, err
	}
	r := &scenarioRun{s: s, t: t, api: newAPIClient(t, b.cfg.RegisterWorkers), logw: b.logOrDiscard()}
	defer func() { err = errors.Join(err, r.close(b, &res)) }()
	if err := r.setUp(ctx, b.cfg, &res); err != nil {
		return res, err
	}
	if err := r.measure(ctx, b.cfg, &res); err != nil {
		return res, err
	}
	if r.dead != nil {
		r.awaitRevived(ctx, b.log, &res)
	}
	if t.proc != nil {
		// The daemon has to be quiet while the baseline runs on the same cores.
		if err := t.proc.close(); err != nil {
			res.Notes = append(res.Notes, err.Error())
		}
		res.ShutdownSeconds = t.proc.stopTook.Seconds()
	}
	if s.Baseline && res.Tally.Unique > 0 {
		conns := b.cfg.BaselineConns
		if conns == 0 {
			for _, rc := range r.recvs[:s.Healthy] {
				conns = max(conns, int(rc.peakConns.Load()))
			}
		}
		bl, err := runBaseline(ctx, baselineConfig{Receivers: s.Healthy, Conns: max(conns, 1),
			Requests: int(res.Tally.Unique), MaxDuration: 20 * time.Second, Shape: r.shape})
		if err != nil {
			return res, err
		}
		res.Baseline = &bl
		ratio := res.PerSecond / bl.PerSecond
		res.Ratio = &ratio
	}
	return res, nil
}

func (b *bench) target(ctx context.Context, s Scenario) (target, error) {
	if b.external != nil {
		return *b.external, nil
	}
	// The scenario's own flags first, so --daemon-flag overrides them.
	extra := append(append([]string(nil), s.DaemonFlags...), b.cfg.DaemonFlags...)
	d, err := startDaemon(ctx, daemonConfig{Bin: b.bin, Extra: extra, Pprof: b.cfg.Profile != ""})
	if err != nil {
		return target{}, fmt.Errorf("%s: %w", s.Name, err)
	}
	return d.target, nil
}

// setUp starts the receivers and registers every subscription.
func (r *scenarioRun) setUp(ctx context.Context, cfg Config, res *Result) error {
	s := r.s
	runID := randomID()
	r.shape = newEventShape(runID, cfg.BodyBytes)
	modes := make([]behaviour, 0, s.Fanout())
	for range s.Healthy {
		modes = append(modes, healthy)
	}
	for range s.Hanging {
		modes = append(modes, hanging)
	}
	for range s.Failing {
		modes = append(modes, failing)
	}
	counted := make([]bool, len(modes)+s.Dead) // dead hosts: never counted
	for i, m := range modes {
		counted[i] = m == healthy
	}
	r.led = newLedger(s.Events, counted)
	r.book = newBook(r.led, r.shape)
	for _, m := range modes {
		rc, err := newReceiver(m, r.book)
		if err != nil {
			return err
		}
		r.recvs = append(r.recvs, rc)
	}
	if s.Dead > 0 {
		var err error
		if r.dead, err = newDeadSet(s.Dead, len(modes), r.book, s.HealthyFor); err != nil {
			return err
		}
	}
	hot := make([]string, len(counted))
	err := parallel(ctx, len(counted), cfg.RegisterWorkers, func(ctx context.Context, i int) error {
		reg, err := r.api.register(ctx, r.url(i)+subPath(i), events.WorkflowRunCompleted, r.shape.WorkflowID)
		if err != nil {
			return err
		}
		hot[i] = reg.ID
		return r.book.setSecret(i, reg.Secret)
	})
	r.hookIDs = hot
	if r.t.proc == nil {
		r.ids = append(r.ids, hot...)
	}
	if err != nil {
		return fmt.Errorf("%s: %w", s.Name, err)
	}
	if cold := s.Subs - s.Fanout(); cold > 0 {
		if err := r.registerCold(ctx, cfg, cold, res); err != nil {
			return err
		}
	}
	if s.Restart && r.t.proc != nil {
		took, oldPeak, err := r.t.proc.restart(ctx)
		if err != nil {
			return fmt.Errorf("%s: %w", s.Name, err)
		}
		rss, _, _ := rssKB(r.t.proc.cmd.Process.Pid)
		res.Restart = &restartResult{Subs: s.Subs, ReadySeconds: took.Seconds(),
			PeakRSSBeforeMiB: oldPeak, RSSAtReadyMiB: float64(rss) / 1024}
	}
	return nil
}

// url is hot subscription i's endpoint.
func (r *scenarioRun) url(i int) string {
	if i < len(r.recvs) {
		return r.recvs[i].url
	}
	return r.dead.url(i - len(r.recvs))
}

// registerCold registers the subscriptions no event matches, all pointing
// at a trap receiver that voids the run if it is ever called.
func (r *scenarioRun) registerCold(ctx context.Context, cfg Config, n int, res *Result) error {
	var err error
	if r.trap, err = newReceiver(trap, r.book); err != nil {
		return err
	}
	ids := make([]string, n)
	start := time.Now()
	err = parallel(ctx, n, cfg.RegisterWorkers, func(ctx context.Context, i int) error {
		et, wf := coldShape(i)
		reg, err := r.api.register(ctx, r.trap.url+"/cold", et, wf)
		ids[i] = reg.ID
		return err
	})
	took := time.Since(start)
	if r.t.proc == nil {
		r.ids = append(r.ids, ids...)
	}
	if err != nil {
		return fmt.Errorf("%s: registering %d subscriptions: %w", r.s.Name, n, err)
	}
	res.Registration = &registrationResult{Subs: n, Workers: cfg.RegisterWorkers, Seconds: took.Seconds(),
		PerSecond: float64(n) / took.Seconds(), Projected1MSeconds: 1e6 / (float64(n) / took.Seconds())}
	return nil
}

// measure publishes, waits for the deliveries and closes the books.
func (r *scenarioRun) measure(ctx context.Context, cfg Config, res *Result) error {
	s := r.s
	pub, err := newPublisher(publisherConfig{NATSURL: r.t.natsURL, Window: cfg.Window, Shape: r.shape,
		Subject: r.t.prefix + "." + r.t.workspace + "." + string(events.WorkflowRunCompleted)})
	if err != nil {
		return err
	}
	defer pub.close()
	var cpu0 float64
	if r.t.proc != nil {
		if cpu0, err = r.t.proc.cpuSeconds(); err != nil {
			return err
		}
	}
	profDone := make(chan error, 1)
	profCtx, cancelProf := context.WithCancel(ctx)
	defer cancelProf()
	if cfg.Profile != "" && r.t.proc != nil {
		path := filepath.Join(cfg.Profile, s.Name+".cpu.pprof")
		go func() { profDone <- r.t.proc.fetchProfile(profCtx, 10, path) }()
		res.Profile = path
	} else {
		profDone <- nil
	}

	start := time.Now()
	if r.dead != nil {
		r.dead.startSampling(start)
	}
	pr, pubErr := pub.run(ctx, s.Events, pacer{start: start, rate: s.Rate})
	res.PublishRetries, res.PublishLagMs = pr.Retried, float64(pr.Lag)/float64(time.Millisecond)
	if pubErr != nil && ctx.Err() != nil {
		return ctx.Err()
	}
	if pubErr != nil {
		res.Notes = append(res.Notes, "publishing stopped: "+pubErr.Error())
	}
	if s.Family != "" && r.t.proc != nil {
		// The whole run's CPU depends on how long the drain takes; this
		// part covers the same span in a dead-hosts run and its controls.
		cpu, err := r.t.proc.cpuSeconds()
		if err != nil {
			return err
		}
		cpu -= cpu0
		res.CPUPublishSeconds = &cpu
	}
	if r.dead != nil {
		r.dead.endPublishing()
		if s.Revive > 0 {
			// Read before the hung connections close: those attempts
			// fail then, and their failures would move the circuits.
			r.dead.circuits = r.readCircuits(ctx, spread(len(r.dead.hosts), s.Revive))
		}
		r.dead.revive(s.Revive, int64(pr.Acked))
	}
	want := int64(pr.Acked) * int64(s.Healthy)
	drainWait(ctx, r.led, want, cfg.DrainIdle, cfg.DrainTimeout)
	if ctx.Err() != nil {
		return ctx.Err()
	}
	if r.t.proc != nil {
		cpu1, err := r.t.proc.cpuSeconds()
		if err != nil {
			return err
		}
		cpu := cpu1 - cpu0
		res.CPUSeconds = &cpu
		if err := <-profDone; err != nil {
			res.Notes = append(res.Notes, "profile: "+err.Error())
			res.Profile = ""
		}
		peak := r.t.proc.mem.peakMiB()
		res.PeakRSSMiB = &peak
	}
	res.Tally = r.led.tally(pr.Generated, pr.Acked)
	if last := r.led.lastArrival.Load(); last > 0 {
		res.Seconds = time.Unix(0, last).Sub(start).Seconds()
		res.PerSecond = float64(res.Tally.Unique) / res.Seconds
	}
	res.Latency = r.led.lat.summary()
	r.unhealthyStats(res)
	res.finish()
	return nil
}

// drainWait returns when want counted deliveries arrived, when none arrived
// for idle, or timeout after it was called.
func drainWait(ctx context.Context, l *ledger, want int64, idle, timeout time.Duration) {
	deadline := time.Now().Add(timeout)
	lastN, lastChange := int64(-1), time.Now()
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for {
		n := l.counted.Load()
		now := time.Now()
		if n >= want || now.After(deadline) {
			return
		}
		if n != lastN {
			lastN, lastChange = n, now
		} else if now.Sub(lastChange) >= idle {
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// unhealthyStats reports what the hanging and failing endpoints saw.
func (r *scenarioRun) unhealthyStats(res *Result) {
	for _, mode := range []behaviour{hanging, failing} {
		st := endpointStats{Behaviour: mode.String()}
		for i, rc := range r.recvs {
			if rc.mode != mode {
				continue
			}
			st.Receivers++
			st.Attempts += rc.attempts.Load()
			u, _ := r.led.subCounts(i)
			st.EventsSeen += u
		}
		if st.Receivers > 0 {
			res.Unhealthy = append(res.Unhealthy, st)
		}
	}
}

// close stops the receivers (after the daemon, so hanging deliveries end on
// the daemon's side) and removes what was registered on an external daemon.
func (r *scenarioRun) close(b *bench, res *Result) error {
	var errs []error
	if r.t.proc != nil {
		if err := r.t.proc.close(); err != nil && !containsNote(res.Notes, err.Error()) {
			res.Notes = append(res.Notes, err.Error())
		}
	}
	if r.t.proc == nil && r.book != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		err := parallel(ctx, len(r.ids), b.cfg.RegisterWorkers, func(ctx context.Context, i int) error {
			if r.ids[i] == "" {
				return nil
			}
			return r.api.remove(ctx, r.ids[i])
		})
		if err != nil {
			errs = append(errs, fmt.Errorf("cleanup of %d subscriptions: %w", len(r.ids), err))
		}
	}
	for _, rc := range r.recvs {
		rc.close()
	}
	if r.dead != nil {
		r.dead.close()
	}
	if r.trap != nil {
		r.trap.close()
	}
	r.api.close()
	return errors.Join(errs...)
}

func containsNote(notes []string, n string) bool {
	for _, x := range notes {
		if x == n {
			return true
		}
	}
	return false
}

func randomID() string {
	var b [6]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}
