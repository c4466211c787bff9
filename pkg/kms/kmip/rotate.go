package kmip

import (
	"context"
	"fmt"
	"time"

	"github.com/atrest/atrest/pkg/kms"
)

// Rotate creates and activates a new key object with the same name: new
// wraps and rewraps use it, the older objects keep unwrapping until
// retired. Versions are Initial Dates in seconds, so Rotate first waits
// for the clock to pass the newest version's second.
func (k *KEK) Rotate(ctx context.Context) (kms.KeyInfo, error) {
	before, err := k.Describe(ctx)
	if err != nil {
		return kms.KeyInfo{}, err
	}
	if wait := time.Until(time.Unix(int64(before.LatestVersion)+1, 0)); wait > 0 {
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return kms.KeyInfo{}, ctx.Err()
		case <-t.C:
		}
	}
	if _, err := k.cl.CreateKey(ctx, k.name); err != nil {
		return kms.KeyInfo{}, err
	}
	after, err := k.Describe(ctx)
	if err != nil {
		return kms.KeyInfo{}, err
	}
	if after.LatestVersion <= before.LatestVersion {
		return after, fmt.Errorf("kmip rotate: the new key object's Initial Date (%d) is not after the previous one's (%d): is the key manager's clock behind?", after.LatestVersion, before.LatestVersion)
	}
	return after, nil
}

// SetMinDecryptionVersion revokes (Cessation of Operation) every Active
// object named k.name whose version is below v: secrets wrapped with them
// stop unwrapping. Rewrap every token first. The key manager keeps the
// revoked objects; an operator may still destroy them.
func (k *KEK) SetMinDecryptionVersion(ctx context.Context, v int) (kms.KeyInfo, error) {
	act, err := k.activeObjects(ctx)
	if err != nil {
		return kms.KeyInfo{}, err
	}
	if v < 1 || v > version(act[len(act)-1]) {
		return kms.KeyInfo{}, fmt.Errorf("%w: minimum decryption version %d outside 1..%d", kms.ErrInvalidRequest, v, version(act[len(act)-1]))
	}
	for _, o := range act {
		if version(o) < v {
			if err := k.cl.Revoke(ctx, o.UID); err != nil {
				return kms.KeyInfo{}, err
			}
		}
	}
	return k.Describe(ctx)
}
