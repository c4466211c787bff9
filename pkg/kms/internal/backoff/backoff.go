// Package backoff is the jittered exponential backoff with which every
// KMS client of atrest (Vault, KMIP) retries transient failures.
package backoff

import (
	"math/rand/v2"
	"time"
)

// Wait returns the pause before retry n (0-based): uniformly between half
// and all of min(max, initial·2ⁿ), so that many nodes retrying a KMS that
// comes back do not arrive in lockstep.
func Wait(initial, max time.Duration, n int) time.Duration {
	d := initial
	for i := 0; i < n && d < max; i++ {
		d *= 2
	}
	d = min(d, max)
	half := d / 2
	return half + rand.N(d-half+1)
}
