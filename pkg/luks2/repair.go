package luks2

import (
	"context"
	"crypto/rand"
	"fmt"
)

// Repair rewrites a damaged or outdated header copy from the valid copy
// with the highest sequence id, as `cryptsetup repair` does: the JSON area
// is copied byte for byte, the binary header gets a fresh salt. The good
// copy is never written, so an interrupted repair loses nothing. It returns
// the header; Copies tells what was found before the repair, and nothing is
// written when both copies were fine. A device whose header region also
// carries another known signature is not repaired: the error wraps
// ErrAmbiguousSignatures and names the signature (see Read).
func Repair(ctx context.Context, dev Device) (*Header, error) {
	release, err := lock(ctx, dev, true)
	if err != nil {
		return nil, err
	}
	defer release()
	h, err := readHeader(ctx, dev)
	if err != nil {
		return nil, err
	}
	if !h.NeedsRepair() {
		return h, nil
	}
	good := 0
	if h.readBin.hdrOffset != 0 {
		good = 1
	}
	bad := 1 - good
	b := h.readBin
	b.magic, b.hdrOffset = magicPrimary, 0
	if bad == 1 {
		b.magic, b.hdrOffset = magicSecondary, h.MetadataSize
	}
	if _, err := rand.Read(b.salt[:]); err != nil {
		return nil, err
	}
	bin := encodeBin(&b)
	if err := sealBin(b.checksumAlg, bin, h.readArea); err != nil {
		return nil, err
	}
	c := renderedCopy{offset: b.hdrOffset, bin: bin, area: h.readArea}
	if err := c.write(dev); err != nil {
		return nil, err
	}
	if err := dev.Sync(); err != nil {
		return nil, fmt.Errorf("luks2: sync: %w", err)
	}
	h.salts[bad] = b.salt
	return h, nil
}

// Erase destroys every keyslot and token (crypto-erase): the header is
// rewritten without them in both copies, then the whole keyslots area is
// overwritten with random bytes. Afterwards no passphrase opens the volume
// and its data is unrecoverable; the header stays, so tools still see an
// (unopenable) LUKS2 volume, as after `cryptsetup luksErase`.
func Erase(ctx context.Context, dev Device) (*Header, error) {
	h, err := Read(ctx, dev)
	if err != nil {
		return nil, err
	}
	u, err := h.Begin()
	if err != nil {
		return nil, err
	}
	for _, id := range h.KeyslotIDs() {
		if err := u.KillKeyslot(id); err != nil {
			return nil, err
		}
	}
	for _, id := range h.TokenIDs() {
		if err := u.RemoveToken(id); err != nil {
			return nil, err
		}
	}
	u.wipeAll = true
	return u.Commit(ctx, dev)
}
