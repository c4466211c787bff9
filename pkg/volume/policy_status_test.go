package volume

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/atrest/atrest/internal/testutil/vaulttest"
)

// Status reports a policy volume's factors one by one: after the Transit
// key rotates, vault's shares are stale (local's are not); with Vault
// frozen, vault is broken and the policy still satisfied by local, and
// status does not wait out Vault's timeout once per KEK.
func TestPolicyStatusPerFactor(t *testing.T) {
	s := vaulttest.Start(t)
	m := policyManager(t, s, nil, "any: [{all: [vault, local]}, local]")
	img, _ := formatted(t, m, "stvol")
	if ps := problems(t, m, img); hasProblem(ps, "policy") {
		t.Fatalf("status of a new policy volume: %v", ps)
	}
	if _, err := s.Client(t).Logical().Write("transit/keys/"+m.cfg.Vault.Transit.Key+"/rotate", nil); err != nil {
		t.Fatal(err)
	}
	if ps := problems(t, m, img); !hasProblem(ps, "policy factor vault: shares wrapped with key version 1, latest is 2") || hasProblem(ps, "policy factor local") {
		t.Fatalf("status after the rotation: %v", ps)
	}

	s.Freeze(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	st, errs := m.StatusOf(ctx, []string{img})
	if len(errs) > 0 || st[0].Policy == nil {
		t.Fatalf("status: %v %+v", errs, st)
	}
	p := st[0].Policy
	if !p.Satisfied || !hasProblem(st[0].Problems, "policy factor vault is broken") || hasProblem(st[0].Problems, "policy factor local") {
		t.Fatalf("vault frozen: policy %+v, problems %v", p, st[0].Problems)
	}
}

// kms check diagnoses every factor a policy names, not only the kms:
// backend, and names the factor in each of its steps.
func TestPolicyKMSCheckCoversEveryFactor(t *testing.T) {
	s := vaulttest.Shared(t)
	m := policyManager(t, s, nil, "any: [vault, local]")
	formatted(t, m, "chkvol") // makes the local keystore
	steps, err := m.KMSCheck(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	vault := 0
	for _, st := range steps {
		if st.Err != nil {
			t.Errorf("step %s: %v", st.Name, st.Err)
		}
		if strings.HasPrefix(st.Name, "factor vault: ") {
			vault++
		}
	}
	if vault == 0 {
		t.Fatalf("kms check has no step for the vault factor: %+v", steps)
	}
}
