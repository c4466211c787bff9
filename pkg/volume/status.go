package volume

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"sync"

	"github.com/atrest/atrest/pkg/config"
	"github.com/atrest/atrest/pkg/dmcrypt"
	"github.com/atrest/atrest/pkg/kms"
	"github.com/atrest/atrest/pkg/kms/tpm"
	"github.com/atrest/atrest/pkg/luks2"
)

// Volume states in Status.
const (
	StateOpen    = "open"
	StateClosed  = "closed"
	StateMissing = "missing" // configured, but no device carries it
)

// Keyslot roles in Status.
const (
	RolePlatform = "platform"
	RolePending  = "platform-pending" // a second platform keyslot: a rekey under way or interrupted
	RoleRecovery = "recovery"
	RoleOther    = "other" // passphrases and keys atrest did not make
)

// Status is one volume's state. Its JSON form is the stable schema of
// `atrest status -o json` (docs/cli.md).
type Status struct {
	Name       string          `json:"name"`
	Device     string          `json:"device,omitempty"`
	UUID       string          `json:"uuid,omitempty"`
	State      string          `json:"state"`
	Mapper     string          `json:"mapper,omitempty"`
	Cipher     string          `json:"cipher,omitempty"`
	KeyBits    int             `json:"key_bits,omitempty"`
	SectorSize uint32          `json:"sector_size,omitempty"`
	Flags      []string        `json:"flags"`
	Keyslots   []KeyslotStatus `json:"keyslots"`
	KMS        *KMSStatus      `json:"kms,omitempty"`
	// LastUnlock names the factors that last unlocked the volume on this
	// node, and when.
	LastUnlock *LastUnlock `json:"last_unlock,omitempty"`
	// Policy is the unlock policy and its factors' health (policy
	// volumes only).
	Policy   *PolicyStatus  `json:"policy,omitempty"`
	TPM      []TPMKeyslot   `json:"tpm_keyslots"`
	Recovery RecoveryStatus `json:"recovery"`
	Backup   BackupInfo     `json:"backup"`
	Header   HeaderStatus   `json:"header"`
	// Problems lists what needs attention; empty when healthy.
	Problems []string `json:"problems"`
	Healthy  bool     `json:"healthy"`
}

// KeyslotStatus is one keyslot.
type KeyslotStatus struct {
	ID       int    `json:"id"`
	Role     string `json:"role"`
	KDF      string `json:"kdf"`
	Priority string `json:"priority"`
}

// KMSStatus compares the platform token with the KMS.
type KMSStatus struct {
	Backend       string `json:"backend"`
	Key           string `json:"key"`
	KeyVersion    int    `json:"key_version"`
	LatestVersion int    `json:"latest_version,omitempty"`
	// Stale: a newer KEK version exists; `atrest rewrap` moves the token.
	Stale bool `json:"stale"`
	// Error is why the KMS could not be asked ("" when it answered).
	Error string `json:"error,omitempty"`
}

// RecoveryStatus says whether a recovery key exists and where it went.
type RecoveryStatus struct {
	Present  bool   `json:"present"`
	Keyslots []int  `json:"keyslots"`
	Escrow   string `json:"escrow,omitempty"`
}

// HeaderStatus says how each header copy looked.
type HeaderStatus struct {
	Primary   string `json:"primary"`
	Secondary string `json:"secondary"`
}

// StatusOf describes the named volumes (refs as Find takes them), or when
// refs is empty every atrest volume found plus every configured one.
// Errors that stop a volume from being described at all are returned per
// ref in the error slice.
func (m *Manager) StatusOf(ctx context.Context, refs []string) ([]Status, []error) {
	var vols []*Volume
	var errs []error
	var missing []string
	if len(refs) == 0 {
		all, scanErrs := m.Scan(ctx)
		errs = append(errs, scanErrs...)
		found := map[string]bool{}
		for _, v := range all {
			if v.Managed() || v.Config != nil {
				vols = append(vols, v)
				found[v.Name] = true
			}
		}
		for _, c := range m.cfg.Volumes {
			if !found[c.Name] {
				missing = append(missing, c.Name)
			}
		}
	} else {
		f := m.Finder()
		for _, r := range refs {
			v, err := f.Find(ctx, r)
			if errors.Is(err, ErrNotFound) && m.configured(r) {
				missing = append(missing, r)
				continue
			}
			if err != nil {
				errs = append(errs, err)
				continue
			}
			vols = append(vols, v)
		}
	}
	infos := m.describeKEKs(ctx, vols)
	out := make([]Status, 0, len(vols)+len(missing))
	for _, v := range vols {
		out = append(out, m.status(ctx, v, infos))
	}
	for _, name := range missing {
		out = append(out, Status{Name: name, State: StateMissing, Flags: []string{}, Keyslots: []KeyslotStatus{},
			Recovery: RecoveryStatus{Keyslots: []int{}},
			Problems: []string{"configured volume not found on any device"}})
	}
	return out, errs
}

func (m *Manager) configured(name string) bool {
	return slices.ContainsFunc(m.cfg.Volumes, func(c config.Volume) bool { return c.Name == name })
}

type kekInfo struct {
	info kms.KeyInfo
	err  error
}

// describeKEKs asks each KEK the volumes use for its versions, once.
func (m *Manager) describeKEKs(ctx context.Context, vols []*Volume) map[[2]string]kekInfo {
	out := map[[2]string]kekInfo{}
	var todo []kms.Wrapped
	for _, v := range vols {
		if !v.Managed() || v.Platform.KMS == config.BackendVaultKV {
			continue
		}
		for _, w := range wrappedOf(v.Platform) {
			if _, ok := out[[2]string{w.Backend, w.Key}]; !ok {
				out[[2]string{w.Backend, w.Key}] = kekInfo{}
				todo = append(todo, w)
			}
		}
	}
	// The KEKs are asked in parallel: one that is down costs its own
	// timeout once, not one per KEK after it.
	got := make([]kekInfo, len(todo))
	var wg sync.WaitGroup
	for i, w := range todo {
		wg.Go(func() {
			k, err := m.kms.For(w)
			if err == nil {
				got[i].info, err = k.Describe(ctx)
			}
			if err == nil && w.Backend == tpm.Backend && got[i].info.Key != w.Key {
				err = staleTPMKEK(m, w.Key)
			}
			got[i].err = err
		})
	}
	wg.Wait()
	for i, w := range todo {
		out[[2]string{w.Backend, w.Key}] = got[i]
	}
	return out
}

func (m *Manager) status(ctx context.Context, v *Volume, infos map[[2]string]kekInfo) Status {
	h := v.Header
	s := Status{Name: v.Name, Device: v.Device, UUID: h.UUID, State: StateClosed, Flags: h.Config.Flags,
		Keyslots: []KeyslotStatus{}, Recovery: RecoveryStatus{Keyslots: v.Recovery}}
	if s.Flags == nil {
		s.Flags = []string{}
	}
	if s.Recovery.Keyslots == nil {
		s.Recovery.Keyslots = []int{}
	}
	problem := func(format string, args ...any) { s.Problems = append(s.Problems, fmt.Sprintf(format, args...)) }

	if hold := reencryptHold(v); hold != nil {
		problem("%v", hold)
	} else if a, err := h.Activation(); err == nil {
		s.Cipher, s.KeyBits, s.SectorSize = a.Cipher, a.KeySize*8, a.SectorSize
	} else {
		problem("cannot be opened by atrest: %v", err)
	}
	if open, err := m.isOpen(v); err != nil {
		problem("%v", err)
	} else if open {
		s.State, s.Mapper = StateOpen, dmcrypt.NodePath(v.Name)
	}

	roles := map[int]string{}
	if v.Managed() {
		for _, s := range v.Platform.Slots() {
			roles[s] = RolePlatform
		}
		for _, t := range v.Others {
			for _, s := range t.Slots() {
				roles[s] = RolePending
			}
		}
		// A policy volume's re-encryption holds the old and the new
		// policy token until it ends: the re-encryption is the problem
		// (reencryptHold, above), not an unfinished change.
		if len(v.Others) > 0 && reencryptHold(v) == nil {
			if j, _ := m.readJournal(h.UUID); j != nil && j.Op == opPolicySet {
				problem("%s", policySetHint(v))
			} else if j != nil && j.Op == opTPMFactor {
				problem("%s", factorResealHint(v))
			} else {
				problem("%d extra platform keyslot(s): a rekey is under way or was interrupted; run: atrest rekey %s", len(v.Others), v.Ref())
			}
		}
	} else if len(v.Unreadable) == 0 {
		problem("no atrest token: not managed by atrest (atrest adopt takes it over)")
	}
	if len(v.Others) == 0 {
		// One platform token but a journal: a change's recovery part (or a
		// recovery rotation) was cut short; the next change settles it.
		if j, err := m.readJournal(h.UUID); err != nil {
			problem("%v", err)
		} else if j != nil && j.Op == opPolicySet {
			problem("%s", policySetHint(v))
		} else if j != nil && j.Op == opTPMFactor {
			problem("%s", factorResealHint(v))
		} else if j != nil {
			problem("an interrupted %s was not finished (recovery keyslots %v); run: atrest rekey %s (it settles the change first)", j.Op, v.Recovery, v.Ref())
		}
	}
	for _, u := range v.Unreadable {
		problem("atrest token %d (keyslots %v) is skipped: %v; the volume does not open through the KMS, its recovery key still opens it (docs/operations.md)",
			u.ID, u.Keyslots, u.Err)
	}
	for _, id := range v.Recovery {
		roles[id] = RoleRecovery
	}
	s.TPM = m.tpmStatus(h)
	for _, t := range s.TPM {
		roles[t.Keyslot] = RoleTPM
		if t.PCRsMatch != nil && !*t.PCRsMatch {
			problem("TPM keyslot %d: the PCRs %v it is sealed to changed, the TPM will not unseal it; run: atrest tpm reseal %s", t.Keyslot, t.PCRs, v.Ref())
		}
	}
	for _, ks := range h.ListKeyslots() {
		role := roles[ks.ID]
		if role == "" {
			role = RoleOther
		}
		s.Keyslots = append(s.Keyslots, KeyslotStatus{ID: ks.ID, Role: role, KDF: ks.KDF, Priority: ks.Priority.String()})
	}

	if v.Managed() {
		t := v.Platform
		k := &KMSStatus{Backend: t.KMS, Key: t.Key, KeyVersion: t.KeyVersion}
		if t.KMS != config.BackendVaultKV && t.Policy == nil {
			ki := infos[[2]string{t.KMS, t.Key}]
			if ki.err != nil {
				k.Error = ki.err.Error()
				problem("kms: %v", ki.err)
			} else {
				k.LatestVersion = ki.info.LatestVersion
				k.Stale = ki.info.Stale(wrapped(t))
				if k.Stale {
					problem("token wrapped with key version %d, latest is %d; run: atrest rewrap %s", t.KeyVersion, k.LatestVersion, v.Ref())
				}
				if t.KeyVersion < ki.info.MinDecryptionVersion {
					problem("token key version %d is below the minimum decryption version %d: the KMS will refuse it; use the recovery key (atrest recovery reseal %s)", t.KeyVersion, ki.info.MinDecryptionVersion, v.Ref())
				}
			}
		}
		s.KMS = k
		if t.Policy != nil {
			s.Policy = policyStatus(v, t, infos, problem)
		}
		s.LastUnlock = m.lastUnlock(h.UUID)
		if t.Recovery != "" {
			s.Recovery.Escrow = t.Recovery
		}
	}
	s.Recovery.Present = len(v.Recovery) > 0
	if v.Managed() && v.Platform.Recovery != "" && !s.Recovery.Present {
		problem("the token records a recovery key (%s) but no keyslot holds one; run: atrest recovery rotate %s", v.Platform.Recovery, v.Name)
	}

	s.Backup = m.backupInfo(ctx, h)
	switch {
	case !s.Backup.Present:
		problem("no header backup; run: atrest header backup %s", v.Ref())
	case !s.Backup.Current:
		problem("header backup is older than the header; run: atrest header backup %s", v.Ref())
	}

	s.Header.Primary, s.Header.Secondary = copyState(h.Copies[0]), copyState(h.Copies[1])
	if h.Data.Err != nil {
		problem("%s; the volume cannot be opened (was the device truncated or shrunk?)", dataProblem(h))
	}
	if h.NeedsRepair() {
		problem("a header copy is damaged or outdated; run: atrest header check --repair %s", v.Ref())
	}
	s.Healthy = len(s.Problems) == 0
	if s.Problems == nil {
		s.Problems = []string{}
	}
	return s
}

func copyState(c luks2.CopyStatus) string {
	if c.Valid {
		return "ok (seqid " + strconv.FormatUint(c.SeqID, 10) + ")"
	}
	if c.Err != nil {
		return "damaged: " + c.Err.Error()
	}
	return "damaged"
}
