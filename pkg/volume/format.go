package volume

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"sync"

	"github.com/atrest/atrest/pkg/blockdev/overwrite"
	"github.com/atrest/atrest/pkg/blockdev/preflight"
	"github.com/atrest/atrest/pkg/config"
	"github.com/atrest/atrest/pkg/dmcrypt"
	"github.com/atrest/atrest/pkg/kms"
	"github.com/atrest/atrest/pkg/luks2"
	"github.com/atrest/atrest/pkg/secret"
	"github.com/atrest/atrest/pkg/token"
)

// FormatOptions describe a new volume.
type FormatOptions struct {
	// Device is the block device or image file to format.
	Device string
	// Name is the mapping name (/dev/mapper/Name), recorded in the token.
	Name string
	// Force wipes existing signatures (never overrides "in use").
	Force bool
	// Recovery overrides the configured recovery policy.
	Recovery string
	// SectorSize is the encryption sector size; 0 means 4096.
	SectorSize uint32
	// Label is the LUKS2 label; defaults to Name.
	Label string
	// Discard persists allow-discards, so opened mappings pass TRIM down
	// (which reveals which blocks are unused: off by default).
	Discard bool
	// Workqueues keeps dm-crypt's read/write workqueues on a non-rotational
	// device; by default they are bypassed there (lower latency on
	// SSD/NVMe), as the no-read/no-write-workqueue flags say.
	Workqueues bool
	// Progress receives the progress of a signature wipe.
	Progress overwrite.Func
}

// FormatResult is a formatted volume.
type FormatResult struct {
	Device, Name, UUID string
	PlatformKeyslot    int
	KMS, Key           string
	KeyVersion         int
	SectorSize         uint32
	Flags              []string
	// Recovery is the recovery key arrangement; in mode print it holds the
	// key, which the caller shows once and wipes.
	Recovery *Recovery
	// Wiped lists the signatures --force erased.
	Wiped []string
	// Backup is the header backup's path ("" when it failed: see Warnings).
	Backup   string
	Warnings []string
}

// Format turns a blank device into an atrest volume: preflight (which
// refuses a device too small for a volume before any KMS call), a new
// LUKS2 header with a platform keyslot whose secret the KMS protects, an
// optional recovery keyslot, and a header backup. The KMS and the escrow
// are asked before anything is written, --force's wipe included, so an
// unreachable KMS leaves the device untouched. What follows an escrow
// deposit is the wipe, the header write and its verification: only a
// device error there leaves an escrowed key for a volume that does not
// exist (escrow is create-only: the node cannot take it back), and the
// error names its location.
func (m *Manager) Format(ctx context.Context, o FormatOptions) (res *FormatResult, err error) {
	defer func() {
		uuid := ""
		if res != nil {
			uuid = res.UUID
		}
		m.audit(ctx, "format", uuid, o.Name, o.Device, err)
	}()
	// The connection to Vault (when the configuration uses it) is made
	// while the device is checked: no request is sent before preflight
	// has accepted the device (below).
	m.kms.Warm()
	mode, release, err := m.newVolume(ctx, o.Name, o.Recovery)
	if err != nil {
		return nil, err
	}
	defer release()
	if err := m.checkNameFree(ctx, o.Name, "", o.Device); err != nil {
		return nil, err
	}

	opts := luks2.FormatOptions{SectorSize: o.SectorSize, Label: o.Label, Subsystem: "atrest"}
	if opts.SectorSize == 0 {
		opts.SectorSize = 4096
	}
	// Preflight writes nothing, also with Force: the signatures it found
	// are wiped only once the KMS (and escrow) have answered below. What
	// the KMS and the escrow are asked first, writing nothing (the Vault
	// login and key check, whether the escrow takes the recovery key),
	// runs beside the probe of the device's contents, once the device is
	// known to exist, be unused and large enough: a device refused by the
	// probe (signatures, data) has cost those questions at most, one
	// missing, in use or too small no KMS call at all.
	if opts.UUID, err = luks2.NewUUID(); err != nil {
		return nil, err
	}
	var prep *formatPrep
	defer func() {
		if prep != nil && err != nil {
			prep.stop()
		}
	}()
	pf, err := preflight.Run(ctx, o.Device, preflight.Options{Force: o.Force, Progress: o.Progress,
		MinSize: MinDeviceSize(opts.SectorSize),
		Checked: func() { prep = m.startFormatPrep(ctx, o.Name, opts.UUID, mode) }})
	if errors.Is(err, preflight.ErrTooSmall) {
		return nil, deviceTooSmall{err}
	}
	if err != nil {
		return nil, err
	}
	defer pf.Handle.Close()
	res = &FormatResult{Device: pf.Device.Path, Name: o.Name}
	untouched := "nothing was written to the device"
	var seals *sealing
	fail := func(state string, err error) (*FormatResult, error) {
		if seals != nil {
			seals.wait() // before the keys it seals with are wiped
		}
		if res.Recovery != nil && res.Recovery.deposited {
			// Escrow is create-only for the node: say where the key of
			// the volume that was not made went, for an administrator.
			state += "; the recovery key escrowed at " + res.Recovery.Location + " belongs to no volume (an administrator may delete it)"
		}
		res.Recovery.Wipe()
		return nil, &StageError{Op: "format", Device: o.Device, State: state, Err: err}
	}

	if opts.Label == "" {
		opts.Label = o.Name
	}
	if o.Discard {
		opts.Flags = append(opts.Flags, luks2.FlagAllowDiscards)
	}
	if !pf.Device.Rotational && !o.Workqueues {
		opts.Flags = append(opts.Flags, luks2.FlagNoReadWorkqueue, luks2.FlagNoWriteWorkqueue)
	}
	h, vk, err := luks2.New(opts)
	if err != nil {
		return fail(untouched, err)
	}
	defer vk.Wipe()
	res.UUID, res.SectorSize, res.Flags = h.UUID, opts.SectorSize, opts.Flags

	// The keyslots are sealed while the KMS and the escrow answer: the
	// KDF, the anti-forensic split and the area encryption of each (most
	// of a format's CPU) need only the volume key, the platform secret
	// and the recovery key, all made here. A policy's keyslots wait for
	// its factors (protect).
	var ps *secret.Key
	defer func() { ps.Wipe() }()
	if m.cfg.PolicyFor(o.Name) == nil {
		if ps, err = secret.Random(PlatformSecretSize); err != nil {
			return fail(untouched, err)
		}
	}
	seals = sealAhead(vk, ps, prep.rec)
	defer seals.wait() // runs before the keys' wipes above

	// The KMS protects the platform secret once the escrow said it would
	// take the recovery key (given it last, once the volume exists and
	// opens): neither writes anything, and a failure of either fails the
	// format before anything is written.
	prep.wait()
	if res.Recovery, err = prep.rec, prep.recErr; prep.err != nil || err != nil {
		return fail(untouched, cmp.Or(prep.err, err))
	}
	var tok *token.Token
	if ps != nil {
		tok, err = m.protectSecret(ctx, h.UUID, o.Name, ps)
	} else {
		ps, tok, err = m.protect(ctx, h.UUID, o.Name)
	}
	if err != nil {
		return fail(untouched, err)
	}
	platform, recovery, err := seals.wait()
	if err != nil {
		return fail(untouched, err)
	}
	res.Recovery.sealed = recovery
	res.KMS, res.Key, res.KeyVersion = tok.KMS, tok.Key, tok.KeyVersion
	tok.Recovery = res.Recovery.record()
	// What the KMS unwraps the new ciphertext to is asked while the
	// header is written; the verification below opens the written keyslot
	// with it, as with its own unwrap (which it makes if this one failed).
	ahead := m.unwrapAhead(ctx, h.UUID, tok)
	defer ahead.wipe()

	// The signatures --force erases are wiped while the keyslots are
	// made (in memory: nothing of them is written before the commit).
	wiped := make(chan error, 1)
	go func() { wiped <- pf.Wipe(ctx) }()
	k := &newKeys{vk: vk, ps: ps, tok: tok, rec: res.Recovery, sealed: platform}
	u, err := h.Begin()
	if err == nil {
		err = k.add(u)
	}
	if werr := <-wiped; werr != nil {
		return fail("wiping the signatures failed part-way; no LUKS2 header was written", werr)
	}
	res.Warnings = pf.Warnings
	for _, s := range pf.Wiped {
		res.Wiped = append(res.Wiped, s.String())
	}
	if len(res.Wiped) > 0 {
		untouched = "the signatures listed were wiped; nothing else was written"
	}
	if err != nil {
		return fail(untouched, err)
	}
	res.PlatformKeyslot = k.slot
	dev := fileDevice{File: pf.Handle.File, h: pf.Handle, size: pf.Device.Size}
	written, err := u.Commit(ctx, dev)
	if err != nil {
		return fail("the device may hold a partial LUKS2 header and no data; run format again with --force", err)
	}
	failpoint("format-after-add")
	// The header backup is written while the keyslots are proven and the
	// recovery key deposited (neither needs it); a format that fails
	// after all takes the backup with it.
	backedUp := make(chan error, 1)
	go func() { backedUp <- m.saveBackup(ctx, dev, h.UUID, h) }()
	// Prove the platform path (through the KMS, as the next boot will)
	// and the recovery key before reporting success.
	k.known = ahead.wait()
	if err := m.verifyKeys(ctx, written, dev, k); err != nil {
		<-backedUp
		_ = m.removeBackups(h.UUID)
		return fail("formatted, but the new keyslots did not open; run format again with --force", fmt.Errorf("%w: %w", ErrVerify, err))
	}
	err = res.Recovery.deposit(ctx)
	backupErr := <-backedUp
	if err != nil {
		// A volume whose recovery key went nowhere is not what was asked
		// for: erase the header just written (the data area holds nothing
		// yet) and its backup, so that neither a volume nor an escrow
		// entry is left.
		state := "the escrow refused the recovery key; the LUKS2 header just written was erased again (the device holds no volume); run format again once the escrow answers"
		if _, eerr := luks2.Erase(ctx, dev); eerr != nil {
			state = fmt.Sprintf("the escrow refused the recovery key, and erasing the LUKS2 header just written failed too (%v): run format again with --force", eerr)
		} else if rerr := m.removeBackups(h.UUID); rerr != nil {
			state += fmt.Sprintf("; its header backup could not be removed (%v)", rerr)
		}
		return fail(state, err)
	}
	failpoint("format-after-deposit")
	res.Recovery.settle()
	if backupErr != nil {
		res.Warnings = append(res.Warnings, backupErr.Error()+"; run: atrest header backup "+o.Name)
	} else {
		res.Backup = m.backupPath(h.UUID)
	}
	return res, nil
}

// formatPrep is what a format asks the KMS and the escrow while its
// device is probed, writing nothing: the Vault login and key check
// (kms.Preparer, with kms: vault-transit or vault-kv and no policy; the
// local keystore, which Wrap might create, KMIP and the TPM are not
// touched before the probe) and the planned recovery key, whose escrow
// says whether it would take it.
type formatPrep struct {
	cancel context.CancelFunc
	done   chan struct{}
	err    error     // the Preparer's: protect would have met it
	rec    *Recovery // made at once; its escrow asked meanwhile
	recErr error
}

// startFormatPrep starts the questions of a format of the volume uuid,
// named name, with recovery mode mode.
func (m *Manager) startFormatPrep(ctx context.Context, name, uuid, mode string) *formatPrep {
	ctx, cancel := context.WithCancel(ctx)
	p := &formatPrep{cancel: cancel, done: make(chan struct{})}
	var wg sync.WaitGroup
	if pr := m.formatPreparer(name); pr != nil {
		wg.Go(func() { p.err = pr.Prepare(ctx) })
	}
	// The key is made now, for its keyslot to be sealed meanwhile; the
	// escrow is asked beside the Preparer.
	if p.rec, p.recErr = recoveryKey(mode); p.recErr == nil {
		wg.Go(func() { p.recErr = m.planEscrow(ctx, p.rec, uuid) })
	}
	go func() {
		wg.Wait()
		close(p.done)
	}()
	return p
}

// wait waits for the answers.
func (p *formatPrep) wait() {
	<-p.done
	p.cancel()
}

// stop cancels the questions of a format that will not go on, waits for
// them and wipes the recovery key they made.
func (p *formatPrep) stop() {
	p.cancel()
	<-p.done
	p.rec.Wipe()
}

// formatPreparer is the kms.Preparer of what protect asks for a volume
// named name, or nil.
func (m *Manager) formatPreparer(name string) kms.Preparer {
	if m.cfg.PolicyFor(name) != nil {
		return nil
	}
	var p kms.Preparer
	switch m.kms.Backend() {
	case config.BackendVaultTransit:
		if kek, err := m.kms.Wrapper(); err == nil {
			p, _ = kek.(kms.Preparer)
		}
	case config.BackendVaultKV:
		if st, err := m.kms.Store(); err == nil {
			p, _ = st.(kms.Preparer)
		}
	}
	return p
}

// sealing is a format's keyslots sealed ahead (sealAhead).
type sealing struct {
	done               chan struct{}
	platform, recovery *luks2.SealedKeyslot
	err                error
}

// sealAhead seals for vk, each on its own goroutine, the platform keyslot
// of ps and the recovery keyslot of rec's key (nil, or no key: none). The
// keys stay unwiped until wait has returned.
func sealAhead(vk, ps *secret.Key, rec *Recovery) *sealing {
	s := &sealing{done: make(chan struct{})}
	var wg sync.WaitGroup
	var perr, rerr error
	if ps != nil {
		wg.Go(func() { s.platform, perr = luks2.SealKeyslot(vk, ps, platformKeyslot().KDF) })
	}
	if rec != nil && rec.Key != nil {
		wg.Go(func() { s.recovery, rerr = luks2.SealKeyslot(vk, rec.Key, recoveryKeyslot().KDF) })
	}
	go func() {
		wg.Wait()
		s.err = cmp.Or(perr, rerr)
		close(s.done)
	}()
	return s
}

// wait waits for the sealed keyslots (nil where none was asked for).
func (s *sealing) wait() (platform, recovery *luks2.SealedKeyslot, err error) {
	<-s.done
	return s.platform, s.recovery, s.err
}

// newVolume checks the name and the recovery mode of a volume to be made
// (format, encrypt) and holds the name's lock until release.
func (m *Manager) newVolume(ctx context.Context, name, recovery string) (mode string, release func(), err error) {
	if err := config.CheckName(name); err != nil {
		return "", nil, fmt.Errorf("%w: %v", ErrInvalidArgument, err)
	}
	mode = m.recoveryMode(recovery)
	switch mode {
	case config.RecoveryEscrow, config.RecoveryPrint, config.RecoveryNone:
	default:
		return "", nil, fmt.Errorf("%w: unknown recovery mode %q (escrow, print or none)", ErrInvalidArgument, mode)
	}
	release, err = m.lockName(ctx, name)
	return mode, release, err
}

// MinDeviceSize is the smallest device format accepts: the LUKS2 header
// and keyslots area (16 MiB) and one encryption sector of data.
func MinDeviceSize(sectorSize uint32) int64 {
	return luks2.DefaultDataOffset + int64(sectorSize)
}

// deviceTooSmall is preflight's refusal as luks2.ErrDeviceTooSmall, the
// sentinel callers (and the CLI's exit code) know.
type deviceTooSmall struct{ error }

func (e deviceTooSmall) Unwrap() error        { return e.error }
func (e deviceTooSmall) Is(target error) bool { return target == luks2.ErrDeviceTooSmall }

// checkNameFree refuses a name that an open mapping or another volume of
// the configuration already uses (named so there, or recorded in the
// token of a configured device); the volume uuid, or any volume on device,
// may have it. It reads the headers of the configured devices only, not of
// every LUKS device on the machine: a name recorded solely in the token of
// an unconfigured volume that is not open is not seen here, and opening
// both would fail on the second with ErrNameInUse (Open checks the
// mapping's owner).
func (m *Manager) checkNameFree(ctx context.Context, name, uuid, device string) error {
	own, _ := filepath.EvalSymlinks(device)
	if st, err := dmcrypt.Inspect(name); err == nil {
		if uuid == "" || !strings.Contains(strings.ReplaceAll(st.UUID, "-", ""), strings.ReplaceAll(uuid, "-", "")) {
			return fmt.Errorf("%w: /dev/mapper/%s exists (%s)", ErrNameInUse, name, st.UUID)
		}
	}
	for _, c := range m.cfg.Volumes {
		dev, _ := filepath.EvalSymlinks(c.Device)
		if c.Device != "" && dev == own {
			continue
		}
		if c.Name == name && (c.UUID == "" || !strings.EqualFold(c.UUID, uuid)) {
			return fmt.Errorf("%w: the configuration names %s %q", ErrNameInUse, cmp.Or(c.Device, "UUID="+c.UUID), name)
		}
		if c.Device == "" || !hasLUKSMagic(dev) {
			continue
		}
		if v, err := m.load(ctx, dev); err == nil && v.Name == name && !strings.EqualFold(v.UUID(), uuid) {
			return fmt.Errorf("%w: %q is the name of the volume on %s (%s)", ErrNameInUse, name, v.Device, v.UUID())
		}
	}
	return nil
}
