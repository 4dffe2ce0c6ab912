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

// defaultHangAfter is how long hanghostsN's bad hosts answer 204 before
// they hang: long enough for the daemon to prove them healthy.
const defaultHangAfter = 10 * time.Second

// deadPreset is deadhostsN: n destinations that accept connections and
// never answer, plus 1 healthy receiver, every event fanned out to all;
// revive of the dead come back once publishing ends. Its controls run the
// same pacing on fresh daemons: n+1 healthy receivers, and the healthy
// one alone.
func deadPreset(n, revive int) preset {
	return badHostsPreset("deadhosts"+strconv.Itoa(n), n, revive, false)
}

// hangPreset is hanghostsN: deadhostsN whose n bad hosts first answer 204
// quickly (--hang-after, 10 s from the first publish, so the daemon proves
// them healthy) and then hang: a healthy host turned hanging must not
// monopolise the capacity the healthy one shares with it.
func hangPreset(n, revive int) preset {
	return badHostsPreset("hanghosts"+strconv.Itoa(n), n, revive, true)
}

func badHostsPreset(name string, n, revive int, turns bool) preset {
	what := "hanging hosts"
	if turns {
		what = fmt.Sprintf("hosts answering 204 for the first %.0f s, then hanging,", defaultHangAfter.Seconds())
	}
	return preset{
		about: fmt.Sprintf("%d %s + 1 healthy, each event to all, %d events/s for %.0f s; then %d of them come back; then two controls",
			n, what, deadRate, deadDuration.Seconds(), revive),
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
			what := "hanging hosts"
			if turns {
				s.HealthyFor = defaultHangAfter
				if c.HangAfter > 0 {
					s.HealthyFor = c.HangAfter
				}
				what = fmt.Sprintf("hosts answering 204 for %.0f s, then hanging,", s.HealthyFor.Seconds())
			}
			s.About = fmt.Sprintf("%d %s + 1 healthy, each event to all, %.0f events/s for %.0f s; then %d of them come back",
				n, what, s.Rate, s.Duration.Seconds(), s.Revive)
			bad := "hanging hosts"
			if turns {
				bad = "turned hosts"
			}
			s.Notes = []string{fmt.Sprintf("latency and ledger cover the 1 healthy endpoint; the %d %s are reported apart", n, bad)}
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
