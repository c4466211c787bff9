package cli

import (
	"encoding/json"
	"strings"
	"testing"
)

// atrest policy set killed (the process exits as on SIGKILL) at every
// write on a loop device: the recovery key still opens the volume
// (cryptsetup is the oracle), status names the unfinished change with the
// command that finishes it, that command finishes it, and cryptsetup sees
// exactly the new policy's keyslot and the recovery keyslot.
func TestPolicySetKilledAtEveryWrite(t *testing.T) {
	for _, point := range []string{"policy-set-after-journal", "policy-set-after-add", "policy-set-after-verify",
		"policy-set-after-remove", "policy-set-after-clear"} {
		t.Run(point, func(t *testing.T) {
			n := localNode(t, "print")
			dev := disk(t, 64)
			f := jsonOf[formatJSON](t, n.ok("-o", "json", "format", dev, "--name", "polcut"))

			n.env = []string{"ATREST_FAILPOINT=" + point}
			if r := n.run(nil, "policy", "set", "polcut", "local"); r.code != 137 {
				t.Fatalf("the failpoint did not end policy set: %s", r)
			}
			n.env = nil
			if !cryptsetupAccepts(t, dev, f.Recovery.Key) {
				t.Fatal("the recovery key stopped working after the kill")
			}
			s := jsonOf[statusJSON](t, n.run(nil, "-o", "json", "status", "polcut"))
			if p := strings.Join(s.Volumes[0].Problems, " "); point != "policy-set-after-clear" && !strings.Contains(p, "atrest policy set polcut --resume") {
				t.Fatalf("status after the kill does not say how to finish: %v", s.Volumes[0].Problems)
			}
			n.ok("policy", "set", "polcut", "--resume")
			n.ok("policy", "set", "polcut", "local")
			var st struct {
				Volumes []struct {
					Policy *struct{ Expr string }
				}
			}
			r := n.ok("-o", "json", "status", "polcut")
			if err := json.Unmarshal([]byte(r.stdout), &st); err != nil || st.Volumes[0].Policy == nil || st.Volumes[0].Policy.Expr != "local" {
				t.Fatalf("after finishing: %v %s", err, r)
			}
			if n := strings.Count(sh(t, "cryptsetup", "luksDump", dev), ": luks2\n"); n != 2 {
				t.Fatalf("cryptsetup sees %d keyslots, want the policy's and the recovery keyslot", n)
			}
			if !cryptsetupAccepts(t, dev, f.Recovery.Key) {
				t.Fatal("the recovery key does not open after the change")
			}
		})
	}
}
