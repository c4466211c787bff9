package volume

import (
	"context"
	"testing"

	"github.com/atrest/atrest/internal/testutil/vaulttest"
)

// BenchmarkPolicyAnyUnlock unlocks 32 volumes under any: [vault, local]
// (Manager.unlock, the part of Open without the kernel) with Vault up and
// with Vault frozen (SIGSTOP: connections accepted, nothing answers; its
// call timeout is 30 s). With Vault frozen an unlock costs what the local
// keystore costs, never a Vault timeout.
func BenchmarkPolicyAnyUnlock(b *testing.B) {
	for _, frozen := range []bool{false, true} {
		b.Run(map[bool]string{false: "vault-up", true: "vault-frozen"}[frozen], func(b *testing.B) {
			s := vaulttest.Start(b)
			m := policyManager(b, s, nil, "any: [vault, local]")
			vols := formatVolumes(b, m, 32)
			if frozen {
				s.Freeze(b)
			}
			ctx := context.Background()
			b.ResetTimer()
			for range b.N {
				keys, errs := m.unlock(ctx, vols)
				for _, err := range errs {
					if err != nil {
						b.Fatal(err)
					}
				}
				wipeAll(keys)
			}
		})
	}
}

// BenchmarkPolicyAnyTPMUnlock unlocks 32 volumes under any: [tpm, vault]
// (swtpm; Vault's call timeout 30 s) with both up and with Vault frozen.
// Every iteration is a boot: a fresh Manager, so the TPM KEK is unsealed
// once per iteration as atrestd does once per boot (building the Manager
// is not timed). With Vault frozen an unlock costs the TPM's unseal and the
// local decryption, never a Vault timeout.
func BenchmarkPolicyAnyTPMUnlock(b *testing.B) {
	for _, frozen := range []bool{false, true} {
		b.Run(map[bool]string{false: "both-up", true: "vault-frozen"}[frozen], func(b *testing.B) {
			m, r := tpmPolicy(b, "any: [tpm, vault]")
			vols := formatVolumes(b, m, 32)
			if frozen {
				r.s.Freeze(b)
			}
			ctx := context.Background()
			b.ResetTimer()
			for range b.N {
				b.StopTimer()
				boot := r.boot()
				b.StartTimer()
				keys, errs := boot.unlock(ctx, vols)
				for _, err := range errs {
					if err != nil {
						b.Fatal(err)
					}
				}
				wipeAll(keys)
			}
		})
	}
}
