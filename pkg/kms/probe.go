package kms

import (
	"context"
	"errors"
	"fmt"

	"github.com/atrest/atrest/pkg/secret"
)

// ProbeContext is the context `atrest kms check` wraps its probe with; no
// volume has it as its UUID.
const ProbeContext = "atrest-kms-check"

// Probe is the "round trip" step of a Checker: it wraps a random 32-byte
// secret with k and unwraps it again.
func Probe(ctx context.Context, k KEK) CheckStep {
	step := CheckStep{Name: "round trip"}
	pt, err := secret.Random(32)
	if err != nil {
		step.Err = err
		return step
	}
	defer pt.Wipe()
	w, err := Wrap(ctx, k, ProbeContext, pt)
	if err == nil {
		var got *secret.Key
		if got, err = Unwrap(ctx, k, ProbeContext, w); err == nil {
			if !got.Equal(pt) {
				err = errors.New(k.Backend() + ": the probe unwrapped to different bytes")
			}
			got.Wipe()
		}
	}
	step.Err = err
	if err == nil {
		step.Detail = fmt.Sprintf("wrapped and unwrapped a probe with key version %d", w.KeyVersion)
	}
	return step
}
