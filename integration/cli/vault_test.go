package cli

import (
	"encoding/base64"
	"strings"
	"testing"

	"github.com/atrest/atrest/internal/testutil"
	"github.com/atrest/atrest/internal/testutil/vaulttest"
)

// The production setup: Vault Transit wraps the platform secret, the
// recovery key is escrowed where the node cannot read it, an administrator
// rotates the KEK and the node rewraps.
func TestVaultTransitLifecycle(t *testing.T) {
	srv := vaulttest.Shared(t)
	n, vn := vaultNode(t, srv, "clinode1")
	dev := disk(t, 64)

	n.ok("kms", "check")
	f := jsonOf[formatJSON](t, n.ok("-o", "json", "format", dev, "--name", "vt1"))
	if f.KMS.Backend != "vault-transit" || f.KMS.Key != vn.Key || f.KMS.KeyVersion != 1 {
		t.Fatalf("format JSON kms: %+v", f.KMS)
	}
	if f.Recovery.Mode != "escrow" || f.Recovery.Key != "" || !strings.HasPrefix(f.Recovery.Location, "secret/atrest-escrow/clinode1/"+f.UUID+"/") {
		t.Fatalf("format JSON recovery: %+v (the key must not be printed in escrow mode)", f.Recovery)
	}

	// The administrator reads the escrowed key; cryptsetup takes it.
	admin := srv.Client(t)
	sec, err := admin.Logical().Read(strings.Replace(f.Recovery.Location, "secret/", "secret/data/", 1))
	if err != nil || sec == nil {
		t.Fatalf("read escrow: %v", err)
	}
	rk, err := base64.StdEncoding.DecodeString(sec.Data["data"].(map[string]any)["secret"].(string))
	if err != nil || !cryptsetupAccepts(t, dev, string(rk)) {
		t.Fatalf("the escrowed recovery key does not open the volume (%v)", err)
	}

	s := jsonOf[statusJSON](t, n.ok("-o", "json", "status", "vt1"))
	if k := s.Volumes[0].KMS; !s.Healthy || k.LatestVersion != 1 || k.Stale || s.Volumes[0].Recovery.Escrow == "" {
		t.Fatalf("status after format: %+v", s)
	}

	if _, err := admin.Logical().Write("transit/keys/"+vn.Key+"/rotate", nil); err != nil {
		t.Fatal(err)
	}
	s = jsonOf[statusJSON](t, n.expect(3, nil, "-o", "json", "status", "vt1"))
	if k := s.Volumes[0].KMS; !k.Stale || k.LatestVersion != 2 {
		t.Fatalf("status after the KEK rotation: %+v", k)
	}
	if out := n.ok("rewrap", "vt1").stdout; !strings.Contains(out, "version 1 -> 2") {
		t.Fatalf("rewrap: %s", out)
	}
	if _, err := admin.Logical().Write("transit/keys/"+vn.Key+"/config", map[string]any{"min_decryption_version": 2}); err != nil {
		t.Fatal(err)
	}
	n.ok("status", "vt1")
	n.ok("rekey", "vt1")
	if !cryptsetupAccepts(t, dev, string(rk)) {
		t.Fatal("the escrowed recovery key stopped working after rekey")
	}
}

// What the KMS can do wrong, each with its own exit code, and the device
// untouched: Vault down (9), the KEK deleted (11), a token that belongs to
// another volume (11).
func TestVaultFailures(t *testing.T) {
	t.Run("KMS down", func(t *testing.T) {
		srv := vaulttest.Start(t)
		n, _ := vaultNode(t, srv, "downnode")
		dev := disk(t, 64)
		n.ok("format", dev, "--name", "down1")
		srv.Stop(t)
		before := testutil.SHA256(t, dev)
		n.expect(9, []string{"kms unavailable", "connection refused", "hint: check the network and the KMS"}, "rekey", "down1")
		if testutil.SHA256(t, dev) != before {
			t.Fatal("a rekey with the KMS down changed the device")
		}
		blank := disk(t, 64)
		blankBefore := testutil.SHA256(t, blank)
		n.expect(9, []string{"kms unavailable"}, "format", blank, "--name", "down2")
		if testutil.SHA256(t, blank) != blankBefore {
			t.Fatal("a format with the KMS down wrote to the device")
		}
		s := jsonOf[statusJSON](t, n.expect(3, nil, "-o", "json", "status", "down1"))
		if s.Volumes[0].KMS.Error == "" {
			t.Fatalf("status does not say the KMS could not be asked: %+v", s.Volumes[0].KMS)
		}
	})
	t.Run("KEK deleted", func(t *testing.T) {
		srv := vaulttest.Shared(t)
		n, vn := vaultNode(t, srv, "kekgone")
		dev := disk(t, 64)
		n.ok("format", dev, "--name", "gone1")
		admin := srv.Client(t)
		if _, err := admin.Logical().Write("transit/keys/"+vn.Key+"/config", map[string]any{"deletion_allowed": true}); err != nil {
			t.Fatal(err)
		}
		if _, err := admin.Logical().Delete("transit/keys/" + vn.Key); err != nil {
			t.Fatal(err)
		}
		before := testutil.SHA256(t, dev)
		n.expect(11, []string{"hint: if the KEK is gone for good, reseal with the recovery key"}, "rekey", "gone1")
		if testutil.SHA256(t, dev) != before {
			t.Fatal("a failed rekey changed the device")
		}
	})
	t.Run("token of another volume", func(t *testing.T) {
		srv := vaulttest.Shared(t)
		n, _ := vaultNode(t, srv, "ctxnode")
		a, b := disk(t, 64), disk(t, 64)
		n.ok("format", a, "--name", "ctxa")
		n.ok("format", b, "--name", "ctxb")
		// Replace b's atrest token (token 0, bound to keyslot 0 in both)
		// with a's: same KEK, wrong volume.
		tokA := sh(t, "cryptsetup", "token", "export", "--token-id", "0", a)
		if !strings.Contains(tokA, `"atrest"`) {
			t.Fatalf("token 0 of %s is not the atrest token: %s", a, tokA)
		}
		sh(t, "cryptsetup", "token", "remove", "--token-id", "0", b)
		sh(t, "cryptsetup", "token", "import", "--token-id", "0", "--json-file", keyFile(t, strings.Replace(tokA, `"ctxa"`, `"ctxb"`, 1)), b)
		before := testutil.SHA256(t, b)
		n.expect(11, []string{"rejected"}, "rekey", b)
		if testutil.SHA256(t, b) != before {
			t.Fatal("a rejected token led to a change on the device")
		}
	})
}
