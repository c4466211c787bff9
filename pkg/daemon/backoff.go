package daemon

import (
	"math/rand/v2"
	"time"
)

// backoff spaces the unlock attempts of locked volumes: exponential from
// min to max, each delay drawn uniformly from its upper half ("equal
// jitter"), so a fleet that lost its KMS at once does not come back to it
// in lock step, and no delay is shorter than half the nominal one.
type backoff struct {
	min, max time.Duration
	next     time.Duration
	rand     func() float64
}

func newBackoff(min, max time.Duration) *backoff {
	return &backoff{min: min, max: max, next: min, rand: rand.Float64}
}

// Delay returns the wait before the next attempt and doubles the nominal
// delay, up to max.
func (b *backoff) Delay() time.Duration {
	d := b.next
	b.next *= 2
	if b.next > b.max || b.next <= 0 {
		b.next = b.max
	}
	half := d / 2
	return half + time.Duration(b.rand()*float64(d-half))
}

// Reset starts again from min, after a success.
func (b *backoff) Reset() { b.next = b.min }
