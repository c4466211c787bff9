package volume

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/atrest/atrest/internal/testutil"
	"github.com/atrest/atrest/internal/testutil/vaulttest"
	"github.com/atrest/atrest/pkg/blockdev/preflight"
	"github.com/atrest/atrest/pkg/config"
	"github.com/atrest/atrest/pkg/kms"
	"github.com/atrest/atrest/pkg/kms/backends"
	"github.com/atrest/atrest/pkg/luks2"
)

// unreachableVault is a Manager whose Vault (for kms, or only for the
// recovery escrow) listens nowhere: every call to it fails.
func unreachableVault(t *testing.T, backend, recovery string) *Manager {
	t.Helper()
	dir := t.TempDir()
	yaml := fmt.Sprintf(`kms: %s
local:
  keystore: %s/kek
state_dir: %s/state
recovery:
  mode: %s
vault:
  address: http://127.0.0.1:1
  auth:
    method: token
  transit:
    key: atrest-test
  kv:
    mount: secret
  timeout: 200ms
  deadline: 1s
`, backend, dir, dir, recovery)
	cfg, err := config.Parse([]byte(yaml), filepath.Join(dir, "atrest.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	set, err := backends.Open(cfg, func(k string) string {
		if k == "VAULT_TOKEN" {
			return "s.unreachable"
		}
		return ""
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { set.Close() })
	return New(cfg, set, WithRunDir(filepath.Join(dir, "run")))
}

// format --force on a device that holds a volume, with the KMS or the
// escrow unreachable: the format fails with the KMS's error and the
// device is byte for byte as it was (the old volume still there).
func TestFormatForceAsksTheKMSBeforeWiping(t *testing.T) {
	for _, tc := range []struct{ name, backend, recovery string }{
		{"transit unreachable", config.BackendVaultTransit, config.RecoveryNone},
		{"escrow unreachable", config.BackendLocal, config.RecoveryEscrow},
	} {
		t.Run(tc.name, func(t *testing.T) {
			img, _ := formatted(t, newTestManager(t), "old")
			before := testutil.SHA256(t, img)
			m := unreachableVault(t, tc.backend, tc.recovery)
			_, err := m.Format(context.Background(), FormatOptions{Device: img, Name: "new", Force: true})
			if !errors.Is(err, kms.ErrUnavailable) {
				t.Fatalf("format --force with the KMS unreachable: %v", err)
			}
			if testutil.SHA256(t, img) != before {
				t.Fatal("format --force changed the device although the KMS could not be asked")
			}
		})
	}
}

// A device too small for a volume is refused by the preflight, before any
// KMS call (the unreachable Vault would fail otherwise), with the device's
// size in the message, and nothing is written.
func TestFormatTooSmallIsRefusedFirst(t *testing.T) {
	for _, size := range []int64{1 << 20, 16 << 20} {
		t.Run(fmt.Sprintf("%dMiB", size>>20), func(t *testing.T) {
			img := filepath.Join(t.TempDir(), "small.img")
			if err := os.WriteFile(img, nil, 0o600); err != nil {
				t.Fatal(err)
			}
			if err := os.Truncate(img, size); err != nil {
				t.Fatal(err)
			}
			before := testutil.SHA256(t, img)
			m := unreachableVault(t, config.BackendVaultTransit, config.RecoveryEscrow)
			_, err := m.Format(context.Background(), FormatOptions{Device: img, Name: "small", Force: true})
			if !errors.Is(err, luks2.ErrDeviceTooSmall) || !errors.Is(err, preflight.ErrTooSmall) {
				t.Fatalf("format on %d MiB: %v, want the preflight's too-small refusal", size>>20, err)
			}
			var se *StageError
			if errors.As(err, &se) {
				t.Fatalf("a refusal before anything was written reads as a failed stage: %v", err)
			}
			if testutil.SHA256(t, img) != before {
				t.Fatal("a refused format changed the device")
			}
		})
	}
}

// Concurrent formats of different devices with one name make one volume
// of that name: the others are refused with ErrNameInUse.
func TestConcurrentFormatsWithOneName(t *testing.T) {
	m := newTestManager(t)
	const n = 20
	imgs := make([]string, n)
	for i := range imgs {
		imgs[i] = testImage(t)
		// Configured devices are scanned like block devices, so the name
		// check sees the image files.
		m.cfg.Volumes = append(m.cfg.Volumes, config.Volume{Name: fmt.Sprintf("cfg%d", i), Device: imgs[i]})
	}
	errs := make(chan error, n)
	for _, img := range imgs {
		go func() {
			_, err := m.Format(context.Background(), FormatOptions{Device: img, Name: "same"})
			errs <- err
		}()
	}
	made := 0
	for range imgs {
		err := <-errs
		switch {
		case err == nil:
			made++
		case !errors.Is(err, ErrNameInUse):
			t.Errorf("format: %v, want ErrNameInUse", err)
		}
	}
	if made != 1 {
		t.Fatalf("%d concurrent formats made %d volumes named %q, want 1", n, made, "same")
	}
}

// A format that fails once the header is written (here: the new keyslots
// do not open) leaves no escrow entry behind: the node cannot delete one
// (escrow is create-only), so the recovery key is escrowed last, once the
// volume exists and opens. A format that succeeds escrows its key where
// the token says.
func TestFailedFormatLeavesNoEscrowEntry(t *testing.T) {
	s := vaulttest.Shared(t)
	dir := t.TempDir()
	prefix := fmt.Sprintf("orphan-test-%d", time.Now().UnixNano())
	entries := func() []any {
		t.Helper()
		sec, err := s.Client(t).Logical().List("secret/metadata/" + prefix)
		if err != nil {
			t.Fatal(err)
		}
		if sec == nil {
			return nil
		}
		keys, _ := sec.Data["keys"].([]any)
		return keys
	}
	yaml := fmt.Sprintf(`kms: local
local:
  keystore: %s/kek
state_dir: %s/state
recovery:
  mode: escrow
vault:
  address: %s
  ca_file: %s
  auth:
    method: token
  kv:
    mount: secret
  escrow:
    prefix: %s
`, dir, dir, s.Address, s.CAFile, prefix)
	m := vaultManager(t, dir, yaml, s.RootToken)

	img := testImage(t)
	prev := failpoint
	failpoint = func(name string) {
		if name != "format-after-add" {
			return
		}
		// The keyslots areas start after the two 16 KiB header copies;
		// the preflight holds the device lock, so no header read here.
		f, err := os.OpenFile(img, os.O_WRONLY, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		junk := make([]byte, 1<<20)
		_, _ = rand.Read(junk)
		if _, err := f.WriteAt(junk, 0x8000); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() { failpoint = prev })
	_, err := m.Format(context.Background(), FormatOptions{Device: img, Name: "orphan"})
	if !errors.Is(err, ErrVerify) {
		t.Fatalf("failed format: %v, want ErrVerify", err)
	}
	if e := entries(); len(e) != 0 {
		t.Fatalf("a failed format left escrow entries under %s: %v", prefix, e)
	}
	if left, _ := filepath.Glob(filepath.Join(m.backupDir(), "*")); len(left) != 0 {
		t.Fatalf("a failed format left header backups: %v", left)
	}

	failpoint = prev
	res, err := m.Format(context.Background(), FormatOptions{Device: testImage(t), Name: "kept"})
	if err != nil {
		t.Fatal(err)
	}
	mount, rest, _ := strings.Cut(res.Recovery.Location, "/")
	if sec, err := s.Client(t).Logical().Read(mount + "/data/" + rest); err != nil || sec == nil {
		t.Fatalf("the escrow entry %s of a formatted volume is not there: %v", res.Recovery.Location, err)
	}
	if e := entries(); len(e) != 1 {
		t.Fatalf("escrow entries after one good format: %v, want one host", e)
	}
}

// approleEscrowManager is a Manager on the shared Vault with node's
// AppRole credentials, its Transit key and the recovery key escrowed
// (docs/vault.md's node policy), and that node.
func approleEscrowManager(t *testing.T, node string) (*Manager, vaulttest.Node, *vaulttest.Server) {
	t.Helper()
	s := vaulttest.Shared(t)
	vn := vaulttest.Provision(t, s, node, nil)
	dir := t.TempDir()
	yaml := fmt.Sprintf("kms: vault-transit\nvault:\n  address: %s\n  ca_file: %s\n  auth:\n    method: approle\n    role_id: %s\n    secret_id_file: %s\n  transit:\n    key: %s\n  kv:\n    hostname: %s\nrecovery:\n  mode: escrow\nstate_dir: %s/state\n",
		s.Address, s.CAFile, vn.RoleID, vn.SecretIDFile, vn.Key, node, dir)
	return vaultManager(t, dir, yaml, ""), vn, s
}

// Format logs in to Vault while it probes the device, and a device the
// probe refuses (here: it holds a file system) has cost at most the
// questions that write nothing (the login, the Transit key's check, the
// escrow's capabilities): no secret wrapped, nothing deposited, the
// device unchanged. A device too small never reaches Vault.
func TestFormatLogsInWhileItProbes(t *testing.T) {
	testutil.RequireCommand(t, "mkfs.ext4", "e2fsprogs")
	m, _, _ := approleEscrowManager(t, fmt.Sprintf("probe%d", time.Now().UnixNano()%1e6))
	byOp := func() map[string]int64 { return m.kms.Vault().Stats().ByOp }

	small := filepath.Join(t.TempDir(), "small.img")
	if err := os.WriteFile(small, make([]byte, 1<<20), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Format(context.Background(), FormatOptions{Device: small, Name: "small"}); !errors.Is(err, preflight.ErrTooSmall) {
		t.Fatalf("format of 1 MiB: %v", err)
	}
	if ops := byOp(); len(ops) != 0 {
		t.Fatalf("a device too small cost Vault requests: %v", ops)
	}

	fs := testImage(t)
	run(t, "mkfs.ext4", "-q", "-F", fs)
	before := testutil.SHA256(t, fs)
	if _, err := m.Format(context.Background(), FormatOptions{Device: fs, Name: "fs"}); !errors.Is(err, preflight.ErrSignatures) {
		t.Fatalf("format of a file system without --force: %v", err)
	}
	// The questions that write nothing run beside the probe: how far
	// they got before it refused depends on which was quicker, so each
	// may have been asked once; nothing was wrapped or deposited.
	asked := map[string]bool{"approle login": true, "transit read key": true, "capabilities-self": true}
	for op, n := range byOp() {
		if !asked[op] || n > 1 {
			t.Fatalf("a refused device cost Vault %v, want at most one login, one key check and one escrow question", byOp())
		}
	}
	if testutil.SHA256(t, fs) != before {
		t.Fatal("a refused format changed the device")
	}

	img, res := formatted(t, m, "probed")
	if ops := byOp(); ops["transit encrypt"] != 1 || ops["transit decrypt"] != 1 || ops["kv escrow"] != 1 {
		t.Fatalf("Vault requests after a format: %v, want one encrypt, one decrypt, one deposit", ops)
	}
	if ps := problems(t, m, img); len(ps) > 0 || res.Recovery.Location == "" {
		t.Fatalf("the volume: %v, recovery %+v", ps, res.Recovery)
	}
}

// When the escrow refuses the deposit (the node's policy lost the escrow
// path after the escrow was asked), the header just written is erased
// again (no keyslot, no token, as luks2.Erase leaves it) and so is its
// backup: no volume, no backup and no escrow entry are left, and the
// error says so.
func TestFormatDepositRefusedLeavesNothing(t *testing.T) {
	node := fmt.Sprintf("deposit%d", time.Now().UnixNano()%1e6)
	m, vn, s := approleEscrowManager(t, node)
	img := testImage(t)
	prev := failpoint
	failpoint = func(name string) {
		if name != "format-after-add" {
			return
		}
		pol := fmt.Sprintf("path \"transit/encrypt/%[1]s\" { capabilities = [\"update\"] }\npath \"transit/decrypt/%[1]s\" { capabilities = [\"update\"] }\npath \"transit/keys/%[1]s\" { capabilities = [\"read\"] }\n", vn.Key)
		if err := s.Client(t).Sys().PutPolicy(vn.Policy, pol); err != nil {
			t.Error(err)
		}
	}
	t.Cleanup(func() { failpoint = prev })
	_, err := m.Format(context.Background(), FormatOptions{Device: img, Name: "refused"})
	if !errors.Is(err, kms.ErrPermissionDenied) || !strings.Contains(err.Error(), "was erased again (the device holds no volume)") {
		t.Fatalf("format whose deposit is refused: %v", err)
	}
	f, ferr := luks2.OpenFile(img, false)
	if ferr != nil {
		t.Fatal(ferr)
	}
	h, rerr := luks2.Read(context.Background(), f)
	f.Close()
	if rerr != nil || len(h.KeyslotIDs()) != 0 || len(h.TokenIDs()) != 0 {
		t.Fatalf("the device after the refused format: %v, want a header erased of every keyslot and token", rerr)
	}
	if left, _ := filepath.Glob(filepath.Join(m.backupDir(), "*")); len(left) != 0 {
		t.Fatalf("backups left: %v", left)
	}
	if sec, err := s.Client(t).Logical().List("secret/metadata/atrest-escrow/" + node); err != nil || sec != nil {
		t.Fatalf("escrow entries left: %v, %v", sec, err)
	}
}
