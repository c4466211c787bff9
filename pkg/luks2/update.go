package luks2

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"

	"github.com/atrest/atrest/pkg/luks2/af"
	"github.com/atrest/atrest/pkg/luks2/kdf"
	"github.com/atrest/atrest/pkg/secret"
)

// AnySlot and AnyToken ask for the lowest free keyslot or token number.
const (
	AnySlot  = -1
	AnyToken = -1
)

// Update collects changes to a header and commits them as one crash-safe
// write (see Commit). Changes are checked as they are made, against the
// header as it will be: a token may name a keyslot added earlier in the same
// Update. An Update is used by one goroutine and committed at most once.
type Update struct {
	base    *Header
	next    *Header
	pending map[int][]byte // new keyslot → encrypted area content
	reenc   *reencInit     // set by BeginReencrypt: keyslots enrol the new key
	wipe    []Area         // areas of killed keyslots, wiped after the commit
	wipeAll bool
	done    bool
}

// Begin starts an Update of h. It refuses headers with unmet requirements.
func (h *Header) Begin() (*Update, error) {
	if err := h.UnmetRequirements(); err != nil {
		return nil, err
	}
	return &Update{base: h, next: h.Clone(), pending: map[int][]byte{}}, nil
}

// Header returns the header as it will be after Commit. Do not modify it.
func (u *Update) Header() *Header { return u.next }

// KeyslotOptions describe a new keyslot.
type KeyslotOptions struct {
	// Slot is the keyslot number, or AnySlot. Note that 0 means keyslot 0.
	Slot int
	// KDF gives the KDF type and its costs; the salt is generated. Use
	// kdf.Platform() for machine secrets.
	KDF kdf.Params
	// Priority; the zero value is taken as PriorityNormal. To add an
	// ignored keyslot, call SetKeyslotPriority in the same Update.
	Priority Priority
}

// AddKeyslot adds a keyslot that stores vk under passphrase and returns its
// number. vk must be the volume's key (checked against the digest). The KDF
// runs now; the keyslot area is written by Commit, into a part of the
// keyslots area that the header on the device does not use.
func (u *Update) AddKeyslot(vk, passphrase *secret.Key, opts KeyslotOptions) (int, error) {
	d, id, err := u.placeFor(vk, opts.Slot)
	if err != nil {
		return -1, err
	}
	s, err := SealKeyslot(vk, passphrase, opts.KDF)
	if err != nil {
		return -1, err
	}
	return u.add(d, id, s, opts.Priority)
}

// SealedKeyslot is a keyslot made ahead of the Update that adds it
// (AddSealed): its KDF parameters and salt, and its area's content,
// encrypted, which do not depend on where in the header the area goes
// (an area's IVs count from its own first sector). It holds nothing
// secret.
type SealedKeyslot struct {
	k    Keyslot // without its number and its area's offset
	area []byte
}

// SealKeyslot runs the costly part of adding a keyslot, which needs no
// header: the KDF over passphrase, the anti-forensic split of vk and the
// area's encryption. A format seals its keyslots while the KMS answers.
// The salt is generated; kdfParams gives the KDF and its costs.
func SealKeyslot(vk, passphrase *secret.Key, kdfParams kdf.Params) (*SealedKeyslot, error) {
	if passphrase.Len() == 0 {
		return nil, fmt.Errorf("luks2: empty passphrase")
	}
	p := kdfParams
	p.Salt = make([]byte, kdf.SaltSize)
	if _, err := io.ReadFull(saltSource, p.Salt); err != nil {
		return nil, err
	}
	if err := p.Validate(); err != nil {
		return nil, err
	}
	// The anti-forensic splitter always hashes with SHA-256, cryptsetup's
	// default (it uses the PBKDF2 hash only when that is the KDF). It is
	// independent of the KDF's strength, and with SHA-NI it costs a quarter
	// of SHA-512: the merge is the largest part of unlocking a platform
	// keyslot (docs/luks2.md).
	const afHash = "sha256"
	areaKeySize := vk.Len()
	if err := checkAreaCipher("aes-xts-plain64", areaKeySize); err != nil {
		areaKeySize = 64
	}
	s := &SealedKeyslot{k: Keyslot{
		Type: "luks2", KeySize: vk.Len(), KDF: p,
		AF:   AF{Type: "luks1", Stripes: af.Stripes, Hash: afHash},
		Area: Area{Type: "raw", Size: roundUp(uint64(af.Size(vk.Len(), af.Stripes)), 4096), Encryption: "aes-xts-plain64", KeySize: areaKeySize},
	}}
	var err error
	if s.area, err = s.k.seal(vk, passphrase); err != nil {
		return nil, err
	}
	return s, nil
}

// AddSealed adds the keyslot s, sealed for vk, and returns its number, as
// AddKeyslot does (opts.KDF is s's already). Each SealedKeyslot is added
// once: two keyslots from one would share their salt.
func (u *Update) AddSealed(vk *secret.Key, s *SealedKeyslot, opts KeyslotOptions) (int, error) {
	if s.k.KeySize != vk.Len() {
		return -1, fmt.Errorf("luks2: keyslot sealed for a %d-byte key, not %d", s.k.KeySize, vk.Len())
	}
	d, id, err := u.placeFor(vk, opts.Slot)
	if err != nil {
		return -1, err
	}
	return u.add(d, id, s, opts.Priority)
}

// placeFor is the digest a keyslot for vk joins, checked against vk, and
// the keyslot number it gets (want, or the lowest free one).
func (u *Update) placeFor(vk *secret.Key, want int) (*Digest, int, error) {
	d, err := u.enrolDigest(vk)
	if err != nil {
		return nil, -1, err
	}
	if err := d.verify(vk); err != nil {
		return nil, -1, err
	}
	id, err := u.freeKeyslot(want)
	if err != nil {
		return nil, -1, err
	}
	return d, id, nil
}

// add puts s into the header as keyslot id of digest d, in a free part of
// the keyslots area.
func (u *Update) add(d *Digest, id int, s *SealedKeyslot, prio Priority) (int, error) {
	off, err := u.findArea(s.k.Area.Size)
	if err != nil {
		return -1, err
	}
	if prio == PriorityIgnore {
		prio = PriorityNormal
	}
	k := s.k
	k.ID, k.Priority, k.Area.Offset = id, prio, off
	u.next.Keyslots[id] = &k
	d.Keyslots = append(d.Keyslots, id)
	if err := u.checkFits(); err != nil {
		delete(u.next.Keyslots, id)
		d.Keyslots = d.Keyslots[:len(d.Keyslots)-1]
		return -1, err
	}
	u.pending[id] = s.area
	return id, nil
}

func roundUp(n, to uint64) uint64 { return (n + to - 1) / to * to }

func (u *Update) freeKeyslot(want int) (int, error) {
	if want == AnySlot {
		for id := range MaxKeyslots {
			if u.next.Keyslots[id] == nil {
				return id, nil
			}
		}
		return -1, fmt.Errorf("%w: all %d keyslots are in use", ErrNoSpace, MaxKeyslots)
	}
	if want < 0 || want >= MaxKeyslots {
		return -1, fmt.Errorf("luks2: keyslot number %d outside [0, %d)", want, MaxKeyslots)
	}
	if u.next.Keyslots[want] != nil {
		return -1, fmt.Errorf("%w: keyslot %d", ErrSlotInUse, want)
	}
	return want, nil
}

// findArea returns the lowest offset where size bytes fit in the keyslots
// area without touching an area used by either header copy on the device
// (the other copy may be older, after an interrupted write, and is what a
// reader falls back to while the new primary is being written) or by the
// header being built: until the commit, old keyslots must stay intact.
func (u *Update) findArea(size uint64) (uint64, error) {
	used := u.base.referencedAreas()
	for _, k := range u.next.Keyslots {
		used = append(used, k.Area)
	}
	slices.SortFunc(used, func(a, b Area) int { return compareU64(a.Offset, b.Offset) })
	off := 2 * u.next.MetadataSize
	for _, a := range used {
		if off+size <= a.Offset {
			break
		}
		off = max(off, a.Offset+a.Size)
	}
	if off+size > u.next.AreasEnd() {
		return 0, fmt.Errorf("%w: no free %d bytes in the keyslots area", ErrNoSpace, size)
	}
	return off, nil
}

func compareU64(a, b uint64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

func (u *Update) checkFits() error {
	if n := uint64(len(u.next.encodeJSON())); n >= u.next.Config.JSONSize {
		return fmt.Errorf("%w: JSON metadata would need %d bytes, the JSON area holds %d", ErrNoSpace, n+1, u.next.Config.JSONSize)
	}
	return nil
}

// KillKeyslot removes keyslot id, its digest binding and its token
// bindings (tokens stay, with the keyslot dropped from their lists, as
// cryptsetup does). Commit overwrites its area with random bytes once the
// new header is on the device.
func (u *Update) KillKeyslot(id int) error {
	if u.next.Keyslots[id] == nil {
		return fmt.Errorf("%w: %d", ErrNoSuchKeyslot, id)
	}
	delete(u.next.Keyslots, id)
	delete(u.pending, id)
	for _, d := range u.next.Digests {
		d.Keyslots = slices.DeleteFunc(d.Keyslots, func(k int) bool { return k == id })
	}
	for _, t := range u.next.Tokens {
		t.Keyslots = slices.DeleteFunc(t.Keyslots, func(k int) bool { return k == id })
	}
	if old := u.base.Keyslots[id]; old != nil && !slices.Contains(u.wipe, old.Area) {
		u.wipe = append(u.wipe, old.Area)
	}
	return nil
}

// SetKeyslotPriority changes a keyslot's priority.
func (u *Update) SetKeyslotPriority(id int, p Priority) error {
	k := u.next.Keyslots[id]
	if k == nil {
		return fmt.Errorf("%w: %d", ErrNoSuchKeyslot, id)
	}
	if p < PriorityIgnore || p > PriorityPrefer {
		return fmt.Errorf("luks2: invalid priority %d", p)
	}
	k.Priority = p
	return nil
}

// SetToken adds (id AnyToken or a free number) or replaces (a used number)
// a token and returns its number. The JSON follows cryptsetup's rules: an
// object whose "type" is a non-empty string not starting with "luks2-" and
// whose "keyslots" array holds numbers (as strings) of existing keyslots;
// all tokens together must fit the JSON area. Other fields are kept as
// given.
func (u *Update) SetToken(id int, tokenJSON []byte) (int, error) {
	t, err := ParseToken(tokenJSON)
	if err != nil {
		return -1, err
	}
	if err := checkNewTokenType(t.Type); err != nil {
		return -1, err
	}
	for _, ks := range t.Keyslots {
		if u.next.Keyslots[ks] == nil {
			return -1, fmt.Errorf("%w: token names keyslot %d", ErrNoSuchKeyslot, ks)
		}
	}
	if id == AnyToken {
		id = -1
		for i := range MaxTokens {
			if u.next.Tokens[i] == nil {
				id = i
				break
			}
		}
		if id < 0 {
			return -1, fmt.Errorf("%w: all %d tokens are in use", ErrNoSpace, MaxTokens)
		}
	} else if id < 0 || id >= MaxTokens {
		return -1, fmt.Errorf("luks2: token number %d outside [0, %d)", id, MaxTokens)
	}
	t.ID = id
	old := u.next.Tokens[id]
	u.next.Tokens[id] = t
	if err := u.checkFits(); err != nil {
		if old != nil {
			u.next.Tokens[id] = old
		} else {
			delete(u.next.Tokens, id)
		}
		return -1, err
	}
	return id, nil
}

// RemoveToken removes token id.
func (u *Update) RemoveToken(id int) error {
	if u.next.Tokens[id] == nil {
		return fmt.Errorf("%w: %d", ErrNoSuchToken, id)
	}
	delete(u.next.Tokens, id)
	return nil
}

// SetFlags replaces the persistent activation flags (config.flags).
func (u *Update) SetFlags(flags []string) error {
	for _, f := range flags {
		if !slices.Contains(KnownFlags, f) {
			return fmt.Errorf("luks2: unknown persistent flag %q", f)
		}
	}
	u.next.Config.Flags = orderFlags(flags)
	return u.checkFits()
}

// orderFlags returns the flags without duplicates in cryptsetup's order.
func orderFlags(flags []string) []string {
	var out []string
	for _, f := range KnownFlags {
		if slices.Contains(flags, f) {
			out = append(out, f)
		}
	}
	return out
}

// SetLabel changes the label and subsystem (at most 47 bytes each).
func (u *Update) SetLabel(label, subsystem string) error {
	if len(label) >= labelLen || len(subsystem) >= labelLen {
		return fmt.Errorf("luks2: label and subsystem hold at most %d bytes", labelLen-1)
	}
	u.next.Label, u.next.Subsystem = label, subsystem
	return nil
}

// Commit writes the changes to dev and returns the header now on it.
//
// The write order keeps the volume openable with the old or the new key
// material at every instant (docs/luks2.md has the argument): new keyslot
// areas are written into space the old header does not use, and synced;
// then the primary header copy, synced; then the secondary, synced; only
// then are the areas of killed keyslots overwritten. Commit holds the
// device's exclusive lock (when dev is a Locker) and fails with
// ErrConcurrentUpdate if the header on dev is no longer the one this Update
// started from.
func (u *Update) Commit(ctx context.Context, dev Device) (*Header, error) {
	if u.done {
		return nil, fmt.Errorf("luks2: update already committed")
	}
	release, err := lock(ctx, dev, true)
	if err != nil {
		return nil, err
	}
	defer release()
	next := u.next
	if err := next.validate(next.Config.JSONSize); err != nil {
		return nil, err
	}
	if u.base.fresh {
		return u.commitFormat(dev)
	}
	// The header the update started from, unparsed when the device still
	// holds its bytes (it usually does: it was read moments ago).
	cur, err := reread(ctx, dev, u.base)
	if err != nil {
		return nil, fmt.Errorf("luks2: re-read header before writing: %w", err)
	}
	if cur.SeqID != u.base.SeqID || cur.UUID != u.base.UUID {
		return nil, fmt.Errorf("%w: sequence id %d, expected %d", ErrConcurrentUpdate, cur.SeqID, u.base.SeqID)
	}
	seq := max(cur.Copies[0].SeqID, cur.Copies[1].SeqID) + 1
	copies, err := next.render(seq)
	if err != nil {
		return nil, err
	}
	u.done = true
	if len(u.pending) > 0 {
		for _, id := range next.KeyslotIDs() {
			if area, ok := u.pending[id]; ok {
				if _, err := dev.WriteAt(area, int64(next.Keyslots[id].Area.Offset)); err != nil {
					return nil, fmt.Errorf("luks2: write keyslot %d area: %w", id, err)
				}
			}
		}
		if err := dev.Sync(); err != nil {
			return nil, fmt.Errorf("luks2: sync: %w", err)
		}
	}
	if err := copies[0].writeSynced(dev); err != nil {
		return nil, err
	}
	// The new primary is durable and wins over the old secondary: no
	// header a reader picks names the killed keyslots any more. They are
	// wiped even if writing the secondary fails, so that a failed commit
	// does not leave a removed key usable.
	err = copies[1].writeSynced(dev)
	if werr := u.wipeAreas(dev); werr != nil {
		err = errors.Join(err, werr)
	}
	if err != nil {
		return nil, err
	}
	next.Data = cur.Data
	next.committed(seq).setImage(copies, cur.devSize)
	return next, nil
}

// wipeAreas overwrites the areas of killed keyslots (or, for Erase, all of
// the keyslots area outside live keyslots) once no header refers to them.
func (u *Update) wipeAreas(dev Device) error {
	areas := u.wipe
	if u.wipeAll {
		areas = []Area{{Offset: 2 * u.next.MetadataSize, Size: u.next.Config.KeyslotsSize}}
	}
	if len(areas) == 0 {
		return nil
	}
	for _, a := range areas {
		if err := fillRandom(dev, a.Offset, a.Size); err != nil {
			return err
		}
	}
	if err := dev.Sync(); err != nil {
		return fmt.Errorf("luks2: sync: %w", err)
	}
	return nil
}

// committed records that h is now on the device with sequence id seq.
func (h *Header) committed(seq uint64) *Header {
	h.SeqID = seq
	h.fresh = false
	h.other = nil
	h.Copies = [2]CopyStatus{
		{Offset: 0, Valid: true, SeqID: seq},
		{Offset: h.MetadataSize, Valid: true, SeqID: seq},
	}
	return h
}
