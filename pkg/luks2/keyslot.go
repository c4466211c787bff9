package luks2

import (
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"

	"github.com/atrest/atrest/pkg/luks2/af"
	"github.com/atrest/atrest/pkg/luks2/kdf"
	"github.com/atrest/atrest/pkg/secret"
)

// areaSectorSize is the unit of keyslot area encryption: 512-byte sectors
// numbered from 0 at the start of the area.
const areaSectorSize = 512

// OpenKeyslot unlocks keyslot id with passphrase and returns the volume key
// (the caller wipes it). It derives the keyslot key, decrypts the keyslot
// area, merges the split key and checks it against the data segment's
// digest; a passphrase that does not fit gives an error wrapping
// ErrKeyRejected. A keyslot that digest does not cover (an "unbound"
// keyslot, cryptsetup luksAddKey --unbound) holds some other key and is
// refused before its KDF runs, with an error wrapping ErrUnboundKeyslot and
// ErrKeyRejected, as cryptsetup's "No key available with this passphrase".
// Every intermediate key lives in locked memory and is wiped.
//
// Every volume key this package hands out passes through here, so this is
// where the digest check lives.
func (h *Header) OpenKeyslot(dev io.ReaderAt, id int, passphrase *secret.Key) (*secret.Key, error) {
	k, d, err := h.openable(id)
	if err != nil {
		return nil, err
	}
	return k.open(dev, d, func(derived, scratch []byte) error {
		return kdf.DeriveTo(k.KDF, passphrase, derived, scratch)
	})
}

// openable is keyslot id with the digest it opens to, once checked that
// it may be opened (OpenKeyslot's refusals).
func (h *Header) openable(id int) (*Keyslot, *Digest, error) {
	if err := h.UnmetRequirements(); err != nil {
		return nil, nil, err
	}
	k := h.Keyslots[id]
	if k == nil {
		return nil, nil, fmt.Errorf("%w: %d", ErrNoSuchKeyslot, id)
	}
	d, err := h.segmentDigest()
	if err != nil {
		return nil, nil, err
	}
	if !slices.Contains(d.Keyslots, id) {
		return nil, nil, fmt.Errorf("keyslot %d: %w (%w: digest %d of the data segment does not list it)", id, ErrKeyRejected, ErrUnboundKeyslot, d.ID)
	}
	if err := k.usable(); err != nil {
		return nil, nil, fmt.Errorf("keyslot %d: %w", id, err)
	}
	return k, d, nil
}

// open is the rest of OpenKeyslot: derive puts the keyslot key into its
// first argument (working in the second), the area is decrypted and
// merged, and the key checked against d.
func (k *Keyslot) open(dev io.ReaderAt, d *Digest, derive func(derived, scratch []byte) error) (*secret.Key, error) {
	work, err := k.newWork()
	if err != nil {
		return nil, err
	}
	defer putWork(work)
	w := k.workOf(work)
	read := k.readArea(dev, w)
	return k.finish(w, read, derive(k.derived(w), k.scratch(w)), d)
}

// newWork is a locked buffer for an open of k: one buffer holds every
// intermediate (split material, keyslot key, KDF scratch, the digest's
// computation). The caller gives it back with putWork.
func (k *Keyslot) newWork() (*secret.Key, error) {
	return getWork(workSize(k.KeySize, k.Area.KeySize))
}

// workOf is the part of work an open of k uses; derived and scratch are
// where in it the keyslot key and the KDF's scratch go.
func (k *Keyslot) workOf(work *secret.Key) []byte {
	return work.Bytes()[:workSize(k.KeySize, k.Area.KeySize)]
}

func (k *Keyslot) derived(w []byte) []byte {
	n := af.Size(k.KeySize, af.Stripes)
	return w[n : n+k.Area.KeySize]
}

func (k *Keyslot) scratch(w []byte) []byte { return w[af.Size(k.KeySize, af.Stripes)+k.Area.KeySize:] }

// readArea starts reading k's area into w's material; the channel gives
// the read's error.
func (k *Keyslot) readArea(dev io.ReaderAt, w []byte) <-chan error {
	read := make(chan error, 1)
	go func() {
		_, err := dev.ReadAt(w[:af.Size(k.KeySize, af.Stripes)], int64(k.Area.Offset))
		read <- err
	}()
	return read
}

// finish is the rest of an open once the keyslot key is in w (derr: the
// derivation's error) and the area's read started: the area decrypted
// and merged, the key checked against d.
func (k *Keyslot) finish(w []byte, read <-chan error, derr error, d *Digest) (*secret.Key, error) {
	vk, err := k.unsealRead(w, read, derr)
	if err != nil {
		return nil, fmt.Errorf("keyslot %d: %w", k.ID, err)
	}
	return k.check(vk, w, d)
}

// check is the end of an open: vk, merged from k's area in w, is the
// volume key if d accepts it; otherwise it is wiped.
func (k *Keyslot) check(vk *secret.Key, w []byte, d *Digest) (*secret.Key, error) {
	return k.checked(vk, d.verifyWith(vk, w[len(w)-digestScratch:]))
}

// checked is check once the digest has answered err for vk.
func (k *Keyslot) checked(vk *secret.Key, err error) (*secret.Key, error) {
	if err == nil {
		return vk, nil
	}
	vk.Wipe()
	if errors.Is(err, ErrWrongVolumeKey) {
		return nil, fmt.Errorf("keyslot %d: %w", k.ID, ErrKeyRejected)
	}
	return nil, fmt.Errorf("keyslot %d: %w", k.ID, err)
}

// Open tries passphrase on every keyslot that may be tried without being
// named and holds the data segment's key, preferred ones first
// (cryptsetup's order), and returns the volume key and the keyslot that
// opened. Unbound keyslots are not tried. It fails with ErrKeyRejected when
// none accepts the passphrase.
func (h *Header) Open(dev io.ReaderAt, passphrase *secret.Key) (*secret.Key, int, error) {
	if err := h.UnmetRequirements(); err != nil {
		return nil, -1, err
	}
	d, err := h.segmentDigest()
	if err != nil {
		return nil, -1, err
	}
	var lastErr error
	for _, prio := range []Priority{PriorityPrefer, PriorityNormal} {
		for _, id := range h.KeyslotIDs() {
			k := h.Keyslots[id]
			if k.Priority != prio || k.Type != "luks2" || !slices.Contains(d.Keyslots, id) {
				continue
			}
			vk, err := h.OpenKeyslot(dev, id, passphrase)
			if err == nil {
				return vk, id, nil
			}
			if !errors.Is(err, ErrKeyRejected) {
				lastErr = err
			}
		}
	}
	if lastErr != nil {
		return nil, -1, fmt.Errorf("%w (and %v)", ErrKeyRejected, lastErr)
	}
	return nil, -1, ErrKeyRejected
}

// workSize is the locked space an open of a keyslot with keys of these
// sizes works in: split material, keyslot key, KDF scratch or XTS round
// keys, digest scratch.
func workSize(keySize, areaKeySize int) int {
	return af.Size(keySize, af.Stripes) + areaKeySize + max(kdf.ScratchSize, xtsScheduleSize, af.ScratchSize) + digestScratch
}

// workPool keeps the locked buffers keyslot opens work in, all at least
// the size a 512-bit key's open needs. Each is a mapping (an mmap, an
// mlock and an munmap: about a tenth of an open's CPU), and a batch opens
// a keyslot per core at a time, so the same few are reused. A buffer is
// cleared before it goes back; one the pool drops is wiped by secret's
// cleanup when it becomes unreachable.
var workPool sync.Pool

func getWork(n int) (*secret.Key, error) {
	if w, ok := workPool.Get().(*secret.Key); ok {
		if w.Len() >= n {
			return w, nil
		}
		w.Wipe()
	}
	return secret.New(max(n, workSize(64, 64)))
}

func putWork(w *secret.Key) {
	clear(w.Bytes())
	workPool.Put(w)
}

// usable checks what cryptsetup only checks when unlocking.
func (k *Keyslot) usable() error {
	if k.Type != "luks2" {
		return fmt.Errorf("%w: keyslot type %q", ErrUnsupported, k.Type)
	}
	if err := k.KDF.Validate(); err != nil {
		if k.KDF.Salt == nil {
			return fmt.Errorf("%w: kdf salt is not 32 bytes of base64", ErrInvalidHeader)
		}
		return fmt.Errorf("%w: %v", ErrUnsupported, err)
	}
	if k.AF.Stripes != af.Stripes {
		return fmt.Errorf("%w: %d anti-forensic stripes (only %d are defined)", ErrUnsupported, k.AF.Stripes, af.Stripes)
	}
	if _, err := kdf.NewHash(k.AF.Hash); err != nil {
		return fmt.Errorf("af hash: %w", err)
	}
	if err := checkAreaCipher(k.Area.Encryption, k.Area.KeySize); err != nil {
		return err
	}
	if k.KeySize <= 0 || uint64(af.Size(k.KeySize, af.Stripes)) > k.Area.Size {
		return fmt.Errorf("%w: area of %d bytes cannot hold a %d-byte key in %d stripes", ErrInvalidHeader, k.Area.Size, k.KeySize, af.Stripes)
	}
	return nil
}

// checkAreaCipher accepts the keyslot encryptions atrest implements:
// AES-XTS with a plain64 (or plain, identical below 2^32 sectors) IV.
func checkAreaCipher(enc string, keySize int) error {
	if enc != "aes-xts-plain64" && enc != "aes-xts-plain" {
		return fmt.Errorf("%w: keyslot encryption %q (atrest implements aes-xts-plain64)", ErrUnsupported, enc)
	}
	if keySize != 32 && keySize != 48 && keySize != 64 {
		return fmt.Errorf("%w: %d-byte key for %s", ErrInvalidHeader, keySize, enc)
	}
	return nil
}

// unseal derives the keyslot key and recovers the key the area stores,
// working in work (locked memory the caller wipes). The area is read while
// the KDF runs.
func (k *Keyslot) unseal(dev io.ReaderAt, derive func(derived, scratch []byte) error, work []byte) (*secret.Key, error) {
	read := k.readArea(dev, work)
	return k.unsealRead(work, read, derive(k.derived(work), k.scratch(work)))
}

// unsealRead is unseal once the area's read started and the keyslot key
// was derived (err: the derivation's error).
func (k *Keyslot) unsealRead(work []byte, read <-chan error, err error) (*secret.Key, error) {
	if err := k.decryptRead(work, read, err); err != nil {
		return nil, err
	}
	return k.merge(work)
}

// merge recovers the key from the decrypted material in work.
func (k *Keyslot) merge(work []byte) (*secret.Key, error) {
	return af.MergeBytes(k.material(work), k.KeySize, af.Stripes, k.AF.Hash, k.scratch(work))
}

// decryptRead waits for the area's read into work's material and, once
// the keyslot key is there (err: the derivation's error), decrypts the
// material in place: what is left is the merge.
func (k *Keyslot) decryptRead(work []byte, read <-chan error, err error) error {
	material, derived, scratch := k.material(work), k.derived(work), k.scratch(work)
	if rerr := <-read; rerr != nil {
		return fmt.Errorf("read keyslot area: %w", rerr)
	}
	if err != nil {
		return err
	}
	c, err := newXTS(derived, scratch[:xtsScheduleSize])
	if err != nil {
		return err
	}
	c.cryptSectors(material, areaSectorSize, 0, false)
	clear(scratch[:xtsScheduleSize])
	return nil
}

// material is the split material's place in w.
func (k *Keyslot) material(w []byte) []byte { return w[:af.Size(k.KeySize, af.Stripes)] }

// cryptArea en- or decrypts keyslot material in place with AES-XTS, sector
// numbers (the plain64 IV) counted from 0 at the area start.
func cryptArea(key, buf []byte, encrypt bool) error {
	sched, err := secret.New(xtsScheduleSize)
	if err != nil {
		return err
	}
	defer sched.Wipe()
	c, err := newXTS(key, sched.Bytes())
	if err != nil {
		return err
	}
	c.cryptSectors(buf, areaSectorSize, 0, encrypt)
	return nil
}

// seal builds the encrypted area content for a new keyslot holding vk.
func (k *Keyslot) seal(vk, passphrase *secret.Key) ([]byte, error) {
	derived, err := kdf.Derive(k.KDF, passphrase, k.Area.KeySize)
	if err != nil {
		return nil, err
	}
	defer derived.Wipe()
	material, err := af.Split(vk, af.Stripes, k.AF.Hash)
	if err != nil {
		return nil, err
	}
	defer material.Wipe()
	if err := cryptArea(derived.Bytes(), material.Bytes(), true); err != nil {
		return nil, err
	}
	// Once encrypted the material is no longer secret.
	return slices.Clone(material.Bytes()), nil
}

// KeyslotInfo summarises a keyslot for listings.
type KeyslotInfo struct {
	ID       int
	Type     string
	Priority Priority
	KDF      string // e.g. "pbkdf2-sha512/1000" or "argon2id t=4 m=32768 p=1"
	Tokens   []int  // tokens bound to this keyslot
}

// ListKeyslots returns every keyslot with its priority, KDF and tokens.
func (h *Header) ListKeyslots() []KeyslotInfo {
	out := make([]KeyslotInfo, 0, len(h.Keyslots))
	for _, id := range h.KeyslotIDs() {
		k := h.Keyslots[id]
		info := KeyslotInfo{ID: id, Type: k.Type, Priority: k.Priority, KDF: describeKDF(k.KDF)}
		for _, tid := range h.TokenIDs() {
			if slices.Contains(h.Tokens[tid].Keyslots, id) {
				info.Tokens = append(info.Tokens, tid)
			}
		}
		out = append(out, info)
	}
	return out
}

func describeKDF(p kdf.Params) string {
	switch p.Type {
	case kdf.PBKDF2:
		return fmt.Sprintf("pbkdf2-%s/%d", p.Hash, p.Iterations)
	case kdf.Argon2i, kdf.Argon2id:
		return fmt.Sprintf("%s t=%d m=%d p=%d", p.Type, p.Time, p.Memory, p.CPUs)
	}
	return strings.TrimSpace(string(p.Type))
}
