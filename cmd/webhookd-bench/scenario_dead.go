package main

import (
	"fmt"
	"strconv"
	"time"
)

// Roles in a dead-hosts family (Scenario.Role).
const (
	roleDead       = "dead"       // n hanging hosts + 1 healthy
	roleAllHealthy = "allhealthy" // the same n+1 webhooks, all healthy
	roleAlone      = "alone"      // the healthy webhook on its own
)

// Pacing of the dead-hosts presets (--rate and --duration override it).
const (
	deadRate     = 100
	deadDuration = time.Minute
)

// defaultReviveTimeout bounds the wait for the revived hosts.
const defaultReviveTimeout = 10 * time.Minute

// overCapacity is a delivery rate no 2-core machine sustains alongside its
// receivers (the max-rate runs reach about 16,000/s): a control asking for
// more is expected to fall behind.
const overCapacity = 20_000

// deadPreset is deadhostsN: n destinations that accept connections and
// never answer, plus 1 healthy receiver, every event fanned out to all;
// revive of the dead come back once publishing ends. Its controls run the
// same pacing on fresh daemons: n+1 healthy receivers, and the healthy
// one alone.
func deadPreset(n, revive int) preset {
	name := "deadhosts" + strconv.Itoa(n)
	return preset{
		about: fmt.Sprintf("%d hanging hosts + 1 healthy, each event to all, %d events/s for %.0f s; then %d of them come back; then two controls",
			n, deadRate, deadDuration.Seconds(), revive),
		build: func(c Config) Scenario {
			s := paced(name, c, deadRate, deadDuration)
			s.Healthy, s.Dead, s.Subs = 1, n, n+1
			s.Family, s.Role = name, roleDead
			s.Revive = revive
			if c.Revive > 0 {
				s.Revive = min(c.Revive, n)
			}
			s.ReviveTimeout = c.ReviveTimeout
			if s.ReviveTimeout == 0 {
				s.ReviveTimeout = defaultReviveTimeout
			}
			s.About = fmt.Sprintf("%d hanging hosts + 1 healthy, each event to all, %.0f events/s for %.0f s; then %d of them come back",
				n, s.Rate, s.Duration.Seconds(), s.Revive)
			s.Notes = []string{fmt.Sprintf("latency and ledger cover the 1 healthy endpoint; the %d hanging hosts are reported apart", n)}
			return s
		},
		controls: func(c Config) []Scenario {
			all := paced(name+"/"+roleAllHealthy, c, deadRate, deadDuration)
			all.Healthy, all.Subs = n+1, n+1
			all.Family, all.Role = name, roleAllHealthy
			all.About = fmt.Sprintf("%s's control: the same %d webhooks, all healthy", name, n+1)
			demand := all.Rate * float64(n+1)
			all.Notes = []string{fmt.Sprintf("control: %d healthy endpoints, %.0f deliveries/s asked for", n+1, demand)}
			if demand > overCapacity {
				all.LossExpected = true
				all.Notes = append(all.Notes, "that is beyond what a 2-core machine delivers: the wait ends --drain-timeout after publishing "+
					"and what arrived is reported; its losses do not fail the run")
			}
			alone := paced(name+"/"+roleAlone, c, deadRate, deadDuration)
			alone.Healthy, alone.Subs = 1, 1
			alone.Family, alone.Role = name, roleAlone
			alone.About = fmt.Sprintf("%s's control: the healthy webhook alone", name)
			alone.Notes = []string{"control: the healthy endpoint alone"}
			return []Scenario{all, alone}
		},
	}
}
