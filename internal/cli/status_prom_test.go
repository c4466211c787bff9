package cli

import (
	"bytes"
	"os"
	"testing"

	"github.com/atrest/atrest/pkg/volume"
)

// The textfile-collector lines of `atrest status --prometheus` for a
// healthy volume, one whose header backup is stale, whose recovery
// keyslot is gone and whose TPM keyslot needs a reseal, and a configured
// volume no device carries (testdata/status.prom; -update rewrites it).
func TestStatusPrometheusGolden(t *testing.T) {
	no, yes := false, true
	sts := []volume.Status{
		{Name: "data1", UUID: "11111111-2222-3333-4444-555555555555", State: volume.StateOpen, Healthy: true,
			KMS: &volume.KMSStatus{Backend: "local"}, Recovery: volume.RecoveryStatus{Present: true, Escrow: "printed"},
			Backup: volume.BackupInfo{Present: true, Current: true}, TPM: []volume.TPMKeyslot{{Keyslot: 2, PCRsMatch: &yes}}},
		{Name: `we"ird`, UUID: "66666666-7777-8888-9999-000000000000", State: volume.StateClosed,
			KMS: &volume.KMSStatus{Backend: "vault-transit", Stale: true}, Recovery: volume.RecoveryStatus{Escrow: "vault-kv"},
			Backup: volume.BackupInfo{Present: true}, TPM: []volume.TPMKeyslot{{Keyslot: 3, PCRsMatch: &no}}},
		{Name: "gone", State: volume.StateMissing},
	}
	var b bytes.Buffer
	writeStatusProm(&b, sts)
	const golden = "testdata/status.prom"
	if *update {
		if err := os.WriteFile(golden, b.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatal(err)
	}
	if b.String() != string(want) {
		t.Errorf("got:\n%s\nwant (%s):\n%s", b.String(), golden, want)
	}
}
