package vault

import (
	"time"

	"github.com/atrest/atrest/pkg/kms/internal/backoff"
)

// wait returns the pause before retry n (0-based); see backoff.Wait.
func (b Backoff) wait(n int) time.Duration { return backoff.Wait(b.Initial, b.Max, n) }
