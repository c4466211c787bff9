package vault

import (
	"math/rand/v2"
	"time"
)

// wait returns the pause before retry n (0-based): uniformly between half
// and all of min(Max, Initial·2ⁿ), so that many nodes retrying a Vault that
// comes back do not arrive in lockstep.
func (b Backoff) wait(n int) time.Duration {
	d := b.Initial
	for i := 0; i < n && d < b.Max; i++ {
		d *= 2
	}
	d = min(d, b.Max)
	half := d / 2
	return half + rand.N(d-half+1)
}
