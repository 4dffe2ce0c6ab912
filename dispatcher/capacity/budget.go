package capacity

// Limits are the byte bounds of webhookd's JetStream streams and buckets,
// each for one replica (with R3 every server holds a full copy).
type Limits struct {
	// Events is the events stream's MaxBytes (events.StreamConfig.MaxBytes).
	// At it, new events are refused, never old ones dropped; the Monitor
	// trims events already fanned out long before.
	Events int64
	// Deliveries is the deliveries stream's bound
	// (dispatcher.Config.DeliveriesMaxBytes). Fan-out enforces it, not the
	// server: see the dispatcher's Config for why.
	Deliveries int64
	// Failures is the failure records stream's MaxBytes
	// (failurelog.Config.MaxBytes); at it the oldest records go.
	Failures int64
	// Attempts is the delivery log stream's MaxBytes
	// (deliverylog.Config.MaxBytes); at it the oldest attempts go.
	Attempts int64
	// Registry is the shared-registry bucket's MaxBytes (about 360 bytes
	// per subscription); at it, registrations are refused.
	Registry int64
	// Health is the health bucket's MaxBytes (health.Config.MaxBytes);
	// at it, health changes stay local to each instance until room returns.
	Health int64
	// Keys is the API key bucket's MaxBytes (apikeys.Config.MaxBytes,
	// about 250 bytes per key, and records are never deleted); at it,
	// `webhookd keys create` is refused, existing keys keep working.
	Keys int64
	// Replays is the replay bucket's MaxBytes (replay.Config.MaxBytes,
	// about 600 bytes per job); at it, new replays are refused until the
	// bucket's TTL frees room.
	Replays int64
	// Reserve is left to no stream: consumer state, the file store's own
	// files, and what fan-out lets the deliveries stream overshoot by.
	Reserve int64
}

// MinStore is the smallest store worth splitting; smaller ones are only
// useful in tests.
const MinStore = 64 << 20

// Shares of the store, in per mille, and their caps: the small stores do
// not grow without bound with a large disk, the streams that hold work do.
const (
	failuresShare  = 100 // 10%
	attemptsShare  = 100 // 10%
	registryShare  = 50  // 5%: ~1.4 million subscriptions at 10 GiB
	healthShare    = 20  // 2%
	keysShare      = 10  // 1%: ~2,600 keys at MinStore, the cap at 6.4 GiB
	replaysShare   = 10  // 1%: ~1,100 replay records at MinStore
	reserveShare   = 30  // 3%
	deliveriesRest = 55  // percent of what is left; events get the other 45

	failuresCap = 16 << 30
	attemptsCap = 16 << 30
	registryCap = 4 << 30 // ~11 million subscriptions
	healthCap   = 1 << 30
	keysCap     = 64 << 20  // ~250,000 key records
	replaysCap  = 256 << 20 // ~450,000 replay records
)

// Budget splits a JetStream store of maxStore bytes between webhookd's
// streams:
//
//	Failures   10% of the store, at most 16 GiB
//	Attempts   10%, at most 16 GiB
//	Registry    5%, at most 4 GiB
//	Health      2%, at most 1 GiB
//	Keys        1%, at most 64 MiB
//	Replays     1%, at most 256 MiB
//	Reserve     3%
//	Deliveries 55% of the rest
//	Events     45% of the rest
//
// The deliveries stream gets more of the rest than the events stream
// because what it holds is work nobody can discard, whereas the events
// stream mostly holds history: events fanned out already, which the
// Monitor trims under pressure. For 10 GiB that is 1 GiB, 1 GiB,
// 512 MiB, ~205 MiB, 64 MiB, ~102 MiB and ~307 MiB, then ~3.76 GiB for
// deliveries and ~3.08 GiB for events.
//
// Every share but Deliveries and Reserve is a stream MaxBytes the server
// reserves against its store when the stream is created, so they must fit
// the store together even at MinStore: that is why the small buckets are
// shares rather than fixed sizes (a fixed 64 MiB keys bucket alone would
// not fit a 64 MiB store). The reserve was 5% before the keys and replay
// buckets came into the budget; their 2% came out of it. A maxStore of
// zero or less means no budget: the zero Limits, every stream unbounded
// but for the failure stream's own default.
func Budget(maxStore int64) Limits {
	if maxStore <= 0 {
		return Limits{}
	}
	share := func(perMille, limit int64) int64 {
		v := scale(maxStore, perMille, 1000)
		if limit > 0 {
			v = min(v, limit)
		}
		return max(v, 1)
	}
	l := Limits{
		Failures: share(failuresShare, failuresCap),
		Attempts: share(attemptsShare, attemptsCap),
		Registry: share(registryShare, registryCap),
		Health:   share(healthShare, healthCap),
		Keys:     share(keysShare, keysCap),
		Replays:  share(replaysShare, replaysCap),
		Reserve:  share(reserveShare, 0),
	}
	rest := maxStore - l.Failures - l.Attempts - l.Registry - l.Health - l.Keys - l.Replays - l.Reserve
	l.Deliveries = max(scale(rest, deliveriesRest, 100), 1)
	l.Events = max(rest-l.Deliveries, 1)
	return l
}

// scale returns n*num/den without overflowing: exactly for any store up
// to 8 PiB, to within den bytes beyond.
func scale(n, num, den int64) int64 {
	if n <= 1<<53 {
		return n * num / den
	}
	return n / den * num
}

// Reserved is what the server reserves for these limits: the MaxBytes of
// every stream that has one. It never exceeds the store Budget split.
func (l Limits) Reserved() int64 {
	return l.Events + l.Failures + l.Attempts + l.Registry + l.Health + l.Keys + l.Replays
}

// Total is every share together: the store Budget split.
func (l Limits) Total() int64 { return l.Reserved() + l.Deliveries + l.Reserve }
