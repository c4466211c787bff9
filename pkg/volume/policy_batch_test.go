package volume

import (
	"bufio"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	"github.com/hashicorp/vault/api"

	"github.com/atrest/atrest/internal/testutil/vaulttest"
)

// Unlocking several policy volumes together costs one Vault decrypt
// request for all of their vault shares (atrestd's boot batch), counted
// in the server's own audit log.
func TestPolicyUnlockIsOneVaultBatchForAllVolumes(t *testing.T) {
	s := vaulttest.Start(t)
	m := policyManager(t, s, nil, "threshold: {k: 2, of: [vault, local]}")
	audit := filepath.Join(t.TempDir(), "audit.log")
	if err := s.Client(t).Sys().EnableAuditWithOptions("file", &api.EnableAuditOptions{Type: "file", Options: map[string]string{"file_path": audit}}); err != nil {
		t.Fatal(err)
	}
	var vols []*Volume
	for _, name := range []string{"b1", "b2", "b3"} {
		img, _ := formatted(t, m, name)
		vols = append(vols, find(t, m, img))
	}
	before := decrypts(t, audit, m.cfg.Vault.Transit.Key)
	if before < 3 {
		t.Fatalf("the audit log shows %d decrypts for 3 formats, each verified through vault", before)
	}
	keys, errs := m.unlock(context.Background(), vols)
	wipeAll(keys)
	for i, err := range errs {
		if err != nil {
			t.Fatalf("%s: %v", vols[i].Name, err)
		}
	}
	if n := decrypts(t, audit, m.cfg.Vault.Transit.Key) - before; n != 1 {
		t.Fatalf("unlocking 3 volumes made %d vault decrypt requests, want 1 batch", n)
	}
}

// decrypts counts the transit decrypt requests of key in a Vault audit log.
func decrypts(t *testing.T, path, key string) int {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	n := 0
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<24)
	for sc.Scan() {
		var e struct {
			Type    string `json:"type"`
			Request struct {
				Path string `json:"path"`
			} `json:"request"`
		}
		if json.Unmarshal(sc.Bytes(), &e) == nil && e.Type == "request" && e.Request.Path == "transit/decrypt/"+key {
			n++
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return n
}
