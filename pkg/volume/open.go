package volume

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime"
	"strings"
	"sync"
	"time"

	"github.com/atrest/atrest/pkg/dmcrypt"
	"github.com/atrest/atrest/pkg/luks2"
	"github.com/atrest/atrest/pkg/secret"
	"github.com/atrest/atrest/pkg/token"
)

// OpenOptions tune Open.
type OpenOptions struct {
	// ReadOnly maps the volumes read-only.
	ReadOnly bool
	// Test unlocks without mapping, as cryptsetup open --test-passphrase:
	// the KMS gives each platform secret and it opens its keyslot (the
	// volume key checked against the digest); nothing is created and no
	// device-mapper is needed. An open mapping is not looked for.
	Test bool
	// PIN gives the PIN of a TPM keyslot that needs one when that is the
	// way left (nil: such keyslots are not tried).
	PIN PINFunc
}

// OpenResult is the outcome for one volume.
type OpenResult struct {
	Name, UUID, Device string
	// Mapper is /dev/mapper/Name.
	Mapper string
	// AlreadyOpen: the mapping existed; nothing was done.
	AlreadyOpen bool
	// Duration is the unlock time for this volume (KMS share excluded).
	Duration time.Duration
	// By names the factors whose secrets opened the volume ("local",
	// "vault"...; for a plain token its backend; FactorTPMKeyslot when a
	// TPM keyslot opened it because the platform path could not).
	By  []string
	Err error
}

// Open unlocks vols: one KMS round trip per KEK for all their platform
// secrets, then each keyslot opened and mapped, several at a time. A
// volume whose platform path fails (the KMS unreachable or refusing) is
// opened through its TPM keyslots when it has any, one TPM connection for
// all such volumes. A volume already open under its name is a success.
// Every volume gets a result; one failure does not stop the others.
func (m *Manager) Open(ctx context.Context, vols []*Volume, o OpenOptions) []OpenResult {
	res := make([]OpenResult, len(vols))
	for i, v := range vols {
		res[i] = OpenResult{Name: v.Name, UUID: v.UUID(), Device: v.Device, Mapper: dmcrypt.NodePath(v.Name)}
	}
	if err := dmcrypt.Available(); err != nil && !o.Test {
		for i, v := range vols {
			// A volume under re-encryption would not open with
			// device-mapper either: say what holds it.
			if res[i].Err = reencryptHold(v); res[i].Err == nil {
				res[i].Err = err
			}
		}
		return res
	}
	// Work out which volumes need unlocking.
	var todo []int
	for i, v := range vols {
		isOpen := m.isOpen
		if o.Test {
			isOpen = func(*Volume) (bool, error) { return false, nil }
		}
		switch open, err := isOpen(v); {
		case err != nil:
			res[i].Err = err
		case open:
			res[i].AlreadyOpen = true
		case !v.Managed():
			res[i].Err = v.errNotManaged()
		case reencryptHold(v) != nil:
			res[i].Err = reencryptHold(v)
		default:
			todo = append(todo, i)
		}
	}
	sel := make([]*Volume, len(todo))
	for j, i := range todo {
		sel[j] = vols[i]
	}
	// Each device is opened once, checked to be the one whose header was
	// read, and used for the keyslot and the mapping alike.
	devs, errs := openAll(sel)
	defer closeAll(devs)
	keys, by := m.unlockOn(ctx, sel, devs, errs)
	defer wipeAll(keys)
	m.openByTPMKeyslots(ctx, sel, devs, errs, keys, by, o.PIN)
	if !o.Test { // a test changes nothing, the notes included
		m.noteUnlocked(ctx, sel, by, errs)
	}
	// Map several at a time: creating a mapping is quick, but waiting for
	// udev to make /dev/mapper/NAME is not, and the waits overlap.
	var wg sync.WaitGroup
	sem := make(chan struct{}, mapParallel)
	for j, i := range todo {
		if errs[j] != nil || o.Test {
			continue
		}
		wg.Add(1)
		sem <- struct{}{}
		go func(j, i int) {
			defer wg.Done()
			defer func() { <-sem }()
			start := time.Now()
			errs[j] = m.mapVolume(vols[i], devs[j], keys[j], o.ReadOnly)
			res[i].Duration = time.Since(start)
		}(j, i)
	}
	wg.Wait()
	op := "open"
	if o.Test {
		op = "open-test"
	}
	for j, i := range todo {
		v := vols[i]
		res[i].Err, res[i].By = errs[j], by[j]
		m.audit(ctx, op, v.UUID(), v.Name, v.Device, errs[j], slog.String("factors", strings.Join(by[j], ",")))
	}
	return res
}

// mapParallel bounds the mappings Open creates at once.
const mapParallel = 16

// unlock recovers the volume keys of vols, the part of opening that needs
// no kernel, on devices it opens for the purpose (see unlockOn). The
// caller wipes every key.
func (m *Manager) unlock(ctx context.Context, vols []*Volume) ([]*secret.Key, []error) {
	keys, _, errs := m.unlockBy(ctx, vols)
	return keys, errs
}

// unlockBy is unlock that also names the factors that opened each volume.
func (m *Manager) unlockBy(ctx context.Context, vols []*Volume) ([]*secret.Key, [][]string, []error) {
	devs, errs := openAll(vols)
	defer closeAll(devs)
	keys, by := m.unlockOn(ctx, vols, devs, errs)
	m.noteUnlocked(ctx, vols, by, errs)
	return keys, by, errs
}

// unlockOn recovers the volume keys of vols through their open devices
// devs: one KMS round trip per KEK for every platform secret, then the
// keyslots opened several at a time. A volume whose platform token fails
// but which has another (an interrupted rekey) is tried through that one.
// errs holds a failure per volume on entry (a device that did not open:
// skipped) and on return. by names the factors that opened each. The
// caller wipes every key.
func (m *Manager) unlockOn(ctx context.Context, vols []*Volume, devs []*device, errs []error) (keys []*secret.Key, by [][]string) {
	var uuids []string
	var toks []*token.Token
	var idx []int
	for i, v := range vols {
		if errs[i] == nil {
			uuids, toks, idx = append(uuids, v.UUID()), append(toks, v.Platform), append(idx, i)
		}
	}
	secrets := m.unwrapAll(ctx, uuids, toks)
	defer wipeUnlocked(secrets)
	keys = make([]*secret.Key, len(vols))
	by = make([][]string, len(vols))
	// The keyslots of every unwrapped secret in one batch (spread over
	// the cores, their KDFs in lanes); a volume whose secret did not come
	// or did not open, and that has other platform tokens, then goes
	// through those.
	var jobs []luks2.KeyslotJob
	var at []int
	for j, i := range idx {
		v := vols[i]
		if errs[i] = secrets[j].err; errs[i] != nil && len(v.Others) == 0 {
			continue
		}
		by[i] = secrets[j].by
		if u := secrets[j]; u.ps != nil {
			jobs = append(jobs, luks2.KeyslotJob{Header: v.Header, Dev: devs[i], Slot: u.slot, Passphrase: u.ps})
			at = append(at, i)
		} else {
			errs[i] = errNoSecret
		}
	}
	got, gerrs := luks2.OpenKeyslots(jobs)
	for n, i := range at {
		keys[i], errs[i] = got[n], gerrs[n]
	}
	var wg sync.WaitGroup
	sem := make(chan struct{}, runtime.GOMAXPROCS(0))
	for _, i := range idx {
		if v := vols[i]; errs[i] == errNoSecret || (errs[i] != nil && len(v.Others) > 0) {
			wg.Add(1)
			sem <- struct{}{}
			go func() {
				defer wg.Done()
				defer func() { <-sem }()
				keys[i], errs[i] = m.platformKey(ctx, v, devs[i])
			}()
		}
	}
	wg.Wait()
	return keys, by
}

// errNoSecret marks a volume whose platform secret did not come, until it
// has gone through all its platform tokens.
var errNoSecret = errors.New("no platform secret")

// mapVolume creates the dm-crypt mapping of v, whose device d is, with
// volume key vk.
func (m *Manager) mapVolume(v *Volume, d *device, vk *secret.Key, readOnly bool) error {
	p, release, err := mapParams(v, d, vk, readOnly)
	if err != nil {
		return err
	}
	defer release()
	_, err = dmcrypt.Open(p)
	return err
}

// mapParams describes the mapping of v on its open device d; the backing
// device in it stays open until release.
func mapParams(v *Volume, d *device, vk *secret.Key, readOnly bool) (p dmcrypt.Params, release func(), err error) {
	a, err := v.Header.Activation()
	if err != nil {
		return p, nil, err
	}
	backing, release, err := blockDevice(d, readOnly)
	if err != nil {
		return p, nil, err
	}
	p = dmcrypt.Params{
		Name: v.Name, UUID: v.UUID(), Device: v.Device, Backing: backing,
		OffsetSectors: a.Offset / 512, SizeSectors: a.Size / 512,
		Cipher: a.Cipher, Key: vk, SectorSize: a.SectorSize, ReadOnly: readOnly,
	}
	for _, f := range a.Flags {
		switch f {
		case luks2.FlagAllowDiscards:
			p.Flags |= dmcrypt.AllowDiscards
		case luks2.FlagNoReadWorkqueue:
			p.Flags |= dmcrypt.NoReadWorkqueue
		case luks2.FlagNoWriteWorkqueue:
			p.Flags |= dmcrypt.NoWriteWorkqueue
		}
	}
	return p, release, nil
}

// isOpen reports whether v's mapping exists. A mapping of that name that
// belongs to another volume is ErrNameInUse.
func (m *Manager) isOpen(v *Volume) (bool, error) {
	if v.Name == "" && len(v.Unreadable) > 0 {
		return false, v.errNotManaged()
	}
	if v.Name == "" {
		return false, fmt.Errorf("%s: %w: no name in its token or the configuration", v.Device, ErrNotManaged)
	}
	st, err := dmcrypt.Inspect(v.Name)
	if errors.Is(err, dmcrypt.ErrNotFound) || errors.Is(err, dmcrypt.ErrNoDeviceMapper) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	want, err := dmcrypt.DMUUID(v.UUID(), v.Name)
	if err != nil {
		return false, err
	}
	if st.UUID != want {
		return false, fmt.Errorf("%w: /dev/mapper/%s is another device (%s)", ErrNameInUse, v.Name, st.UUID)
	}
	return true, nil
}

// Close removes the mapping called name. A mapping that is not there is
// a success (already closed); one in use fails with dmcrypt's BusyError
// and keeps working.
func (m *Manager) Close(ctx context.Context, name string) (closed bool, err error) {
	st, err := dmcrypt.Inspect(name)
	if errors.Is(err, dmcrypt.ErrNotFound) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	// Only LUKS2 crypt mappings: never tear down an LVM volume or a
	// plain dm-crypt device someone else made under that name.
	if !strings.HasPrefix(st.UUID, "CRYPT-LUKS2-") {
		return false, fmt.Errorf("%w: /dev/mapper/%s is not a LUKS2 mapping (%q)", ErrNotManaged, name, st.UUID)
	}
	// The dm UUID is CRYPT-LUKS2-<uuid without dashes>-<name>; the audit
	// trail names volumes by their LUKS2 UUID as everywhere else.
	uuid := luksUUIDOf(st.UUID)
	device := ""
	if st.Crypt != nil {
		device, _ = devPath(st.Crypt.Device)
	}
	defer func() { m.audit(ctx, "close", uuid, name, device, err) }()
	err = dmcrypt.Close(ctx, name)
	if errors.Is(err, dmcrypt.ErrNotFound) {
		return false, nil
	}
	if err == nil {
		err = removeStoppedStack(name)
	}
	return err == nil, err
}

// removeStoppedStack removes what an online re-encryption that stopped
// in the middle of a hotzone (killed, or failed with its hotzone device
// an error target) left under the mapping name just closed, so the
// volume can be re-encrypted offline. A hotzone device still holding I/O
// (suspended) is left, and said so: that I/O must not land.
func removeStoppedStack(name string) error {
	stack := &dmcrypt.Stack{Name: name}
	lo, err := stack.FindLeftover()
	if err != nil || lo == nil {
		return err
	}
	if lo.Suspended {
		return fmt.Errorf("%w: %s is closed, but %s still holds an online re-encryption's hotzone I/O; run atrest reencrypt %s with the volume open to finish it", ErrOnlineState, name, stack.HotzoneName(), name)
	}
	return stack.RemoveLeftover()
}
