package volume

import (
	"context"

	"github.com/atrest/atrest/pkg/kms"
)

// KMSCheck diagnoses every configured backend step by step: reachability,
// authentication, permissions and a probe round trip.
func (m *Manager) KMSCheck(ctx context.Context) ([]kms.CheckStep, error) {
	checkers, err := m.kms.Checkers()
	if err != nil {
		return nil, err
	}
	var steps []kms.CheckStep
	for _, c := range checkers {
		steps = append(steps, c.Check(ctx)...)
	}
	return steps, nil
}

// Managed returns every atrest volume on this machine's block devices and
// the configured devices, for --all; unreadable devices come back as
// errors.
func (m *Manager) Managed(ctx context.Context) ([]*Volume, []error) {
	all, errs := m.Scan(ctx)
	out := all[:0]
	for _, v := range all {
		if v.Managed() {
			out = append(out, v)
		}
	}
	return out, errs
}
