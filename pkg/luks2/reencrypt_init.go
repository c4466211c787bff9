package luks2

import (
	"context"
	"fmt"
	"slices"

	"github.com/atrest/atrest/pkg/secret"
)

// reencInit is what BeginReencrypt keeps for CommitReencrypt.
type reencInit struct {
	newDigest    int
	oldVK, newVK *secret.Key
	// encrypt is set by BeginEncrypt (oldVK is nil): the device's size.
	encrypt uint64
}

// enrolDigest is the digest a new keyslot for vk joins: the data
// segment's, or during BeginReencrypt the new key's, and the old key's
// when vk is the old key: a secret that exists only from this update on
// (a new recovery key) can then open both keys, as cryptsetup needs one
// passphrase to do to resume the re-encryption.
func (u *Update) enrolDigest(vk *secret.Key) (*Digest, error) {
	if u.reenc != nil && (u.reenc.oldVK == nil || !vk.Equal(u.reenc.oldVK)) {
		return u.next.Digests[u.reenc.newDigest], nil
	}
	return u.next.segmentDigest()
}

// reencryptHash is the checksum resilience hash, cryptsetup's default. The
// block it hashes is the data segment's sector size.
const reencryptHash = "sha256"

// BeginReencrypt starts an Update that puts a header into re-encryption
// from oldVK (the data segment's key) to newVK, forward, with checksum
// resilience, as `cryptsetup reencrypt --init-only` does. Keyslots added
// to the Update for newVK store it (the caller re-enrols its secrets, and
// may list the new keyslots in its tokens beside the old ones: when the
// re-encryption ends the old keyslots go and the tokens keep the new);
// a keyslot added for oldVK joins the old key and goes at the end too.
// CommitReencrypt writes it. Both keys must stay unwiped until then.
func (h *Header) BeginReencrypt(oldVK, newVK *secret.Key) (*Update, error) {
	u, err := h.Begin()
	if err != nil {
		return nil, err
	}
	seg, err := h.dataSegment()
	if err != nil {
		return nil, err
	}
	if seg.Encryption != Cipher || seg.Integrity != "" {
		return nil, fmt.Errorf("%w: re-encryption of a %q segment", ErrUnsupported, seg.Encryption)
	}
	old, err := h.segmentDigest()
	if err != nil {
		return nil, err
	}
	if err := old.verify(oldVK); err != nil {
		return nil, fmt.Errorf("old volume key: %w", err)
	}
	if newVK.Len() != oldVK.Len() || newVK.Equal(oldVK) {
		return nil, fmt.Errorf("luks2: the new volume key must differ from the old and have its length")
	}
	next := u.next
	id := next.freeDigest()
	nd, err := newDigest(id, newVK)
	if err != nil {
		return nil, err
	}
	prev, final := cloneSegment(seg, 1, flagBackupPrevious), cloneSegment(seg, 2, flagBackupFinal)
	next.Segments[1], next.Segments[2] = prev, final
	next.Digests[old.ID].Segments = append(next.Digests[old.ID].Segments, 1)
	nd.Segments = []int{2}
	next.Digests[id] = nd
	u.reenc = &reencInit{newDigest: id, oldVK: oldVK, newVK: newVK}
	return u, u.checkFits()
}

func cloneSegment(s *Segment, id int, flags ...string) *Segment {
	c := *s
	c.ID, c.raw, c.Flags = id, nil, flags
	return &c
}

// CommitReencrypt adds the reencrypt keyslot (its area is 1 MiB of the
// largest free part of the keyslots area; it bounds the hotzone: one
// 32-byte checksum per block), the reencrypt digest and the requirement, and
// commits: from here on only re-encryption-aware tools open the volume.
func (u *Update) CommitReencrypt(ctx context.Context, dev Device) (*Header, error) {
	if u.reenc == nil || u.reenc.encrypt > 0 {
		return nil, fmt.Errorf("luks2: not a reencryption update")
	}
	next := u.next
	ks, err := u.freeKeyslot(AnySlot)
	if err != nil {
		return nil, err
	}
	area, err := u.largestFreeArea()
	if err != nil {
		return nil, err
	}
	seg := next.Segments[0]
	next.Keyslots[ks] = &Keyslot{
		ID: ks, Type: "reencrypt", KeySize: 1, Priority: PriorityIgnore,
		Area: Area{Type: ResilienceChecksum, Offset: area.Offset, Size: area.Size},
		raw:  reencryptKeyslotJSON(area, reencryptHash, seg.SectorSize),
	}
	next.Config.Requirements = append(next.Config.Requirements, ReencryptRequirement)
	st, err := next.Reencryption()
	if err != nil {
		return nil, err
	}
	data, err := next.reencryptDigestData(st, u.reenc.oldVK, u.reenc.newVK)
	if err != nil {
		return nil, err
	}
	defer data.Wipe()
	if err := u.addReencryptDigest(ks, data); err != nil {
		return nil, err
	}
	return u.Commit(ctx, dev)
}

const reencryptAreaMax = 1 << 20

// largestFreeArea is the start (at most reencryptAreaMax) of the largest 4 KiB-aligned part of the keyslots area
// that no keyslot of either copy on the device or of the new header uses.
func (u *Update) largestFreeArea() (Area, error) {
	used := u.base.referencedAreas()
	for _, k := range u.next.Keyslots {
		used = append(used, k.Area)
	}
	slices.SortFunc(used, func(a, b Area) int { return compareU64(a.Offset, b.Offset) })
	var best Area
	off, end := 2*u.next.MetadataSize, u.next.AreasEnd()
	consider := func(limit uint64) {
		if limit > off && limit-off > best.Size {
			best = Area{Offset: off, Size: limit - off}
		}
	}
	for _, a := range used {
		consider(min(a.Offset, end))
		off = max(off, roundUp(a.Offset+a.Size, 4096))
	}
	consider(end)
	// cryptsetup takes all of it; 1 MiB holds the checksums of a 128 MiB
	// hotzone (of 4 KiB blocks) and is quicker to wipe at the end.
	best.Size = min(best.Size, reencryptAreaMax)
	if best.Size < 4096 {
		return Area{}, fmt.Errorf("%w: no free space in the keyslots area for the reencryption checksums", ErrNoSpace)
	}
	return best, nil
}

// freeDigest is the lowest unused digest number.
func (h *Header) freeDigest() int {
	id := 0
	for h.Digests[id] != nil {
		id++
	}
	return id
}

// addReencryptDigest adds the reencrypt digest over data, bound to the
// reencrypt keyslot ks, and checks that the header still fits.
func (u *Update) addReencryptDigest(ks int, data *secret.Key) error {
	id := u.next.freeDigest()
	d, err := newDigest(id, data)
	if err != nil {
		return err
	}
	d.Keyslots, d.Segments = []int{ks}, []int{}
	u.next.Digests[id] = d
	return u.checkFits()
}
