package local

import (
	"context"
	"errors"
	"fmt"
	"os"

	"github.com/atrest/atrest/pkg/kms"
	"github.com/atrest/atrest/pkg/secret"
)

var _ kms.Checker = (*Keystore)(nil)

// Check diagnoses the keystore for `atrest kms check`: the KEK file is
// present, private and well-formed, and a probe wraps and unwraps.
func (ks *Keystore) Check(ctx context.Context) []kms.CheckStep {
	file := kms.CheckStep{Name: "key file"}
	info, err := ks.Describe(ctx)
	if err != nil {
		file.Err = err
		return []kms.CheckStep{file}
	}
	fi, err := os.Stat(ks.path)
	if err != nil {
		file.Err = fmt.Errorf("%w: %w", kms.ErrConfig, err)
		return []kms.CheckStep{file}
	}
	file.Detail = fmt.Sprintf("%s: mode %04o, keystore %s, versions %d..%d", ks.path, fi.Mode().Perm(), info.Key, info.MinDecryptionVersion, info.LatestVersion)
	return []kms.CheckStep{file, ks.probe(ctx)}
}

func (ks *Keystore) probe(ctx context.Context) kms.CheckStep {
	step := kms.CheckStep{Name: "round trip"}
	pt, err := secret.Random(32)
	if err != nil {
		step.Err = err
		return step
	}
	defer pt.Wipe()
	const probeContext = "atrest-kms-check"
	w, err := kms.Wrap(ctx, ks, probeContext, pt)
	if err == nil {
		var got *secret.Key
		if got, err = kms.Unwrap(ctx, ks, probeContext, w); err == nil {
			if !got.Equal(pt) {
				err = errors.New("local: the probe unwrapped to different bytes")
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
