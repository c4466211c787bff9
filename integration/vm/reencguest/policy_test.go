package reencguest

import (
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/atrest/atrest/integration/vm/guest"
	"github.com/atrest/atrest/internal/testutil"
	"github.com/atrest/atrest/pkg/token"
	"github.com/atrest/atrest/pkg/tpm2"
)

// policySlots is what the header holds of the volume's policy: the
// keyslots of its atrest policy token (there must be exactly one such
// token), and the keyslots of the digest that covers the data segment
// (those the current volume key opens).
func policySlots(t *testing.T, dev string) (tokenSlots, keySlots []string) {
	t.Helper()
	var meta struct {
		Tokens map[string]struct {
			Type     string   `json:"type"`
			KMS      string   `json:"kms"`
			Keyslots []string `json:"keyslots"`
		} `json:"tokens"`
		Digests map[string]struct {
			Keyslots []string `json:"keyslots"`
			Segments []string `json:"segments"`
		} `json:"digests"`
	}
	if err := json.Unmarshal([]byte(guest.Run(t, "cryptsetup", "luksDump", "--dump-json-metadata", dev)), &meta); err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, tok := range meta.Tokens {
		if tok.Type == token.Type && tok.KMS == "policy" {
			n++
			tokenSlots = tok.Keyslots
		}
	}
	if n != 1 {
		t.Fatalf("the header has %d atrest policy tokens, want one: %+v", n, meta.Tokens)
	}
	for _, d := range meta.Digests {
		if slices.Equal(d.Segments, []string{"0"}) {
			keySlots = d.Keyslots
		}
	}
	return tokenSlots, keySlots
}

// without runs f with the node's local keystore moved away, so that only
// the volume's other factors can answer.
func (n *node) without(t *testing.T, f func()) {
	t.Helper()
	kek := filepath.Join(n.Dir, "kek")
	if err := os.Rename(kek, kek+".away"); err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := os.Rename(kek+".away", kek); err != nil {
			t.Fatal(err)
		}
	}()
	f()
}

// withoutTPM is n with a configuration whose TPM device does not exist,
// so that the policy's tpm factor fails and the others must answer.
func (n *node) withoutTPM(t *testing.T) *node {
	t.Helper()
	doc, err := os.ReadFile(n.Config)
	if err != nil {
		t.Fatal(err)
	}
	a := *n.Atrest
	a.Config = filepath.Join(n.Dir, "atrest-no-tpm.yaml")
	o := &node{&a, n.t}
	if err := os.WriteFile(a.Config, append(doc, "tpm:\n  device: /dev/tpmrm-none\n"...), 0o600); err != nil {
		t.Fatal(err)
	}
	return o
}

// A mounted ext4 volume under an unlock policy over the guest's factors
// (the TPM-sealed KEK and the local keystore), with a writer running, is
// re-encrypted online: the writer sees no error, the key digest is new,
// the policy's keyslots are replaced (one policy token, bound to as many
// new keyslots as the policy has branches, all of them opened by the new
// volume key, none of the old ones left), the tree and e2fsck are clean
// and the volume opens again through its policy after close. all needs
// both factors (without the local keystore or the TPM it does not unlock,
// naming the missing one); any unlocks through each branch alone.
func TestOnlineReencryptPolicy(t *testing.T) {
	// On the host (no device-mapper) this skips as every guest test
	// does; inside the guest the TPM must be there.
	testutil.RequireDeviceMapper(t)
	if _, err := os.Stat(tpm2.DefaultDevice); err != nil {
		testutil.Missing(t, "no kernel TPM ("+tpm2.DefaultDevice+"): the guest of TestRealKernelReencrypt has one")
	}
	for _, c := range []struct {
		name, policy string
		branches     int
	}{
		{"opall", "all: [tpm, local]", 1},
		{"opany", "any: [tpm, local]", 2},
	} {
		t.Run(c.name, func(t *testing.T) {
			n := newNode(t)
			n.AddConfig(t, "policy:\n  "+c.policy+"\n")
			m := newMounted(t, n, c.name, 48)
			oldSlots, _ := policySlots(t, m.dev)
			if len(oldSlots) != c.branches {
				t.Fatalf("the policy token of %s is bound to %v, want %d keyslots", c.policy, oldSlots, c.branches)
			}
			before, _ := luksDigests(t, m.dev)
			w := startWriter(m.dir)
			time.Sleep(200 * time.Millisecond)
			r := parseReport(t, n.want("-o", "json", "reencrypt", c.name, "--hotzone-size", "4M"))
			if v := r.Volumes[0]; v.Resumed || v.Bytes == 0 {
				t.Fatalf("report: %+v", v)
			}
			if after, _ := luksDigests(t, m.dev); after == before {
				t.Fatal("the header's key digest did not change: no new volume key")
			}
			newSlots, keySlots := policySlots(t, m.dev)
			if len(newSlots) != c.branches {
				t.Fatalf("after the re-encryption the policy token is bound to %v, want %d keyslots", newSlots, c.branches)
			}
			_, types := luksDigests(t, m.dev)
			for _, s := range newSlots {
				if slices.Contains(oldSlots, s) || !slices.Contains(keySlots, s) {
					t.Fatalf("policy keyslots %v before, %v after, the new key's keyslots %v: not re-enrolled to the new key", oldSlots, newSlots, keySlots)
				}
			}
			if len(types) != c.branches {
				t.Fatalf("the header has keyslots %v after the re-encryption, want only the policy's %d (old ones gone)", types, c.branches)
			}
			m.verify(t, w)

			// all unlocks by both factors; any by the first that answers.
			if out := n.want("open", "--test", c.name); !strings.Contains(out, c.name+": unlocks (by ") || c.branches == 1 && !(strings.Contains(out, "local") && strings.Contains(out, "tpm")) {
				t.Fatalf("open --test through %s: %s", c.policy, out)
			}
			n.without(t, func() {
				code, out := n.try("open", "--test", c.name)
				switch {
				case c.branches == 1 && (code == 0 || !strings.Contains(out, "is not satisfied: missing local")):
					t.Fatalf("%s without the local keystore: exit %d, want refused naming local\n%s", c.policy, code, out)
				case c.branches == 2 && (code != 0 || !strings.Contains(out, c.name+": unlocks (by tpm)")):
					t.Fatalf("open --test through the tpm branch of %s alone: exit %d\n%s", c.policy, code, out)
				}
			})
			code, out := n.withoutTPM(t).try("open", "--test", c.name)
			switch {
			case c.branches == 1 && (code == 0 || !strings.Contains(out, "is not satisfied: missing tpm")):
				t.Fatalf("%s without the TPM: exit %d, want refused naming tpm\n%s", c.policy, code, out)
			case c.branches == 2 && (code != 0 || !strings.Contains(out, c.name+": unlocks (by local)")):
				t.Fatalf("open --test through the local branch of %s alone: exit %d\n%s", c.policy, code, out)
			}
		})
	}
}
