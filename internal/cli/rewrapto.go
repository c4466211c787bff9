package cli

import (
	"context"
	"fmt"

	"github.com/atrest/atrest/pkg/volume"
)

type moveResult struct {
	Name     string   `json:"name"`
	UUID     string   `json:"uuid"`
	FromKMS  string   `json:"from_kms"`
	FromKey  string   `json:"from_key"`
	KMS      string   `json:"kms"`
	Key      string   `json:"key"`
	Skipped  bool     `json:"skipped"`
	Warnings []string `json:"warnings"`
	failed
}

// rewrapTo is rewrap --to BACKEND: the volumes' tokens move under that
// backend's KEK, their keyslots stay.
func (e *env) rewrapTo(ctx context.Context, m *volume.Manager, vols []*volume.Volume, backend string) error {
	to, err := m.KMS().Target(backend)
	if err != nil {
		return err
	}
	var errs []error
	out := volumesDoc[moveResult]{v1, []moveResult{}}
	for _, r := range m.RewrapTo(ctx, vols, to) {
		out.Volumes = append(out.Volumes, moveResult{r.Name, r.UUID, r.FromKMS, r.FromKey, r.ToKMS, r.ToKey, r.Skipped, nonNil(r.Warnings), failure(r.Err)})
		for _, w := range r.Warnings {
			e.warn("%s: %s", r.Name, w)
		}
		switch {
		case r.Err != nil:
			errs = append(errs, fmt.Errorf("%s: %w", r.Name, r.Err))
		case r.Skipped:
			e.printf("%s: already under %s %s\n", r.Name, r.ToKMS, r.ToKey)
		default:
			e.printf("%s: moved from %s %s to %s %s (keyslots unchanged)\n", r.Name, r.FromKMS, r.FromKey, r.ToKMS, r.ToKey)
		}
	}
	if e.json {
		e.printJSON(out)
	}
	return joinVolumeErrors(e, errs)
}
