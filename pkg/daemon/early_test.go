package daemon

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/atrest/atrest/internal/testutil/tokenedit"
	"github.com/atrest/atrest/pkg/dmcrypt"
)

// atrestd --early opens the volumes whose keys are all on the machine
// and nothing else: a volume under a network KMS waits for atrestd after
// the network, and one that /etc/crypttab names is systemd-cryptsetup's.
// Without a device-mapper (the host) the local volume is the one the
// error names; with one (the real-kernel tier) it is open afterwards.
func TestRunEarlyOpensOnlyLocalVolumes(t *testing.T) {
	n := newNode(t, "")
	n.format("early-local")
	tab := n.format("early-crypttab")
	remote := n.format("early-vault")
	// The token now says Vault wraps its secret: not local.
	tokenedit.EditToken(t, remote.Path, "atrest", func(b []byte) []byte {
		return bytes.Replace(b, []byte(`"kms":"local"`), []byte(`"kms":"vault-transit"`), 1)
	})
	v, err := n.manager().Find(context.Background(), tab.Path)
	if err != nil {
		t.Fatal(err)
	}
	crypttab := filepath.Join(n.dir, "crypttab")
	if err := os.WriteFile(crypttab, []byte("# systemd-cryptsetup's\nearly-crypttab UUID="+v.UUID()+" none tpm2-device=auto\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	d := New(Options{ConfigPath: n.config, RunDir: filepath.Join(n.dir, "run"), Crypttab: crypttab, NoHotplug: true})
	err = d.RunEarly(context.Background())
	states := map[string]string{}
	for _, s := range d.Snapshot() {
		states[s.Name] = s.State
	}
	for _, other := range []string{"early-crypttab", "early-vault"} {
		if _, ok := states[other]; ok || strings.Contains(errString(err), other) {
			t.Errorf("atrestd --early took up %s (state %q, error %v)", other, states[other], err)
		}
	}
	if dmcrypt.Available() != nil {
		if !errors.Is(err, ErrEarlyNotOpen) || !strings.Contains(err.Error(), "early-local (locked") {
			t.Errorf("no device-mapper: RunEarly returned %v, want it to name early-local as not opened", err)
		}
		return
	}
	if err != nil || states["early-local"] != StateOpen {
		t.Errorf("RunEarly: %v; early-local is %q, want open", err, states["early-local"])
	}
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}
