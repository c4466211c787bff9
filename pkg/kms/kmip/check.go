package kmip

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"github.com/atrest/atrest/pkg/kms"
)

// Check diagnoses the backend for `atrest kms check`: the server answers
// over mutual TLS and speaks KMIP 1.4, the key's objects and their states,
// and an Encrypt/Decrypt round trip of a random probe.
func (k *KEK) Check(ctx context.Context) []kms.CheckStep {
	reach := kms.CheckStep{Name: "reachable"}
	vers, err := k.cl.DiscoverVersions(ctx)
	switch {
	case err != nil:
		reach.Err = err
	case !slices.Contains(vers, fmt.Sprintf("%d.%d", protoMajor, protoMinor)):
		reach.Err = fmt.Errorf("%w: the key manager at %s speaks KMIP %s, atrest needs 1.4 (authenticated encryption)", kms.ErrConfig, k.cl.cfg.Address, strings.Join(vers, ", "))
	default:
		reach.Detail = fmt.Sprintf("%s: mutual TLS as %s, KMIP %s", k.cl.cfg.Address, k.cl.cfg.CertFile, strings.Join(vers, ", "))
	}
	steps := []kms.CheckStep{reach}
	if reach.Err != nil {
		return steps
	}
	key := kms.CheckStep{Name: "key"}
	objs, err := k.objects(ctx)
	switch {
	case err != nil:
		key.Err = err
	case len(active(objs)) == 0 && !(len(objs) == 0 && k.create):
		key.Err = k.noActiveKey(objs)
	case len(objs) == 0:
		key.Detail = fmt.Sprintf("no object named %q yet; the first format creates it (kmip.create)", k.name)
	default:
		var d []string
		for _, o := range objs {
			d = append(d, fmt.Sprintf("%s %s version %d", o.UID, o.State, version(o)))
		}
		key.Detail = fmt.Sprintf("%q: %s", k.name, strings.Join(d, "; "))
	}
	steps = append(steps, key)
	if key.Err != nil || len(objs) == 0 {
		return steps
	}
	return append(steps, kms.Probe(ctx, k))
}
