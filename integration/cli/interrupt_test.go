package cli

import (
	"strings"
	"testing"
)

// A rekey killed half-way: the volume keeps opening, status reports the
// half-done change, and the next rekey finishes it.
func TestRekeyKilledHalfWay(t *testing.T) {
	for _, point := range []string{"rekey-after-add", "rekey-after-verify"} {
		t.Run(point, func(t *testing.T) {
			n := localNode(t, "print")
			dev := disk(t, 64)
			f := jsonOf[formatJSON](t, n.ok("-o", "json", "format", dev, "--name", "cut1"))

			n.env = []string{"ATREST_FAILPOINT=" + point}
			if r := n.run(nil, "rekey", "cut1"); r.code != 137 {
				t.Fatalf("the failpoint did not end the rekey: %s", r)
			}
			n.env = nil

			// Two platform keyslots now; status says so and how to finish.
			s := jsonOf[statusJSON](t, n.expect(3, nil, "-o", "json", "status", "cut1"))
			r := roles(s)
			pending := 0
			for _, role := range r {
				if role == "platform-pending" {
					pending++
				}
			}
			if pending != 1 || r[f.PlatformKeyslot] != "platform" || !strings.Contains(strings.Join(s.Volumes[0].Problems, " "), "atrest rekey cut1") {
				t.Fatalf("status after the cut: roles %v problems %v", r, s.Volumes[0].Problems)
			}
			// The volume opens meanwhile: the recovery key, and the KMS path
			// (rewrap must unwrap and open the platform keyslot).
			if !cryptsetupAccepts(t, dev, f.Recovery.Key) {
				t.Fatal("the recovery key stopped working after the cut")
			}
			n.ok("rewrap", "--force", "cut1")

			out := n.ok("rekey", "cut1").stdout
			if !strings.Contains(out, "found an interrupted change and completed it") {
				t.Fatalf("the next rekey does not report finishing the cut one: %s", out)
			}
			s = jsonOf[statusJSON](t, n.ok("-o", "json", "status", "cut1"))
			r = roles(s)
			if !s.Healthy || len(r) != 2 || r[f.PlatformKeyslot] == "platform" {
				t.Fatalf("status after finishing: roles %v %+v", r, s)
			}
			// And a fresh rekey works as usual afterwards.
			n.ok("rekey", "cut1")
			n.ok("status", "cut1")
		})
	}
}

// A printed recovery key is on stdout before the old recovery keyslot
// goes (rekey streams its JSON document per volume): a rekey --recovery
// or recovery rotate killed right after the key was output has printed a
// key that opens the volume, and the next rekey keeps that key and drops
// the old one.
func TestRecoveryKeyIsOutBeforeTheOldGoes(t *testing.T) {
	for _, tc := range []struct {
		point string
		args  []string
	}{
		{"rekey-after-show", []string{"-o", "json", "rekey", "--recovery", "shown1"}},
		{"recovery-rotate-after-show", []string{"-o", "json", "recovery", "rotate", "--mode", "print", "shown1"}},
		{"recovery-rotate-after-show", []string{"recovery", "rotate", "--mode", "print", "shown1"}},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			n := localNode(t, "print")
			dev := disk(t, 64)
			f := jsonOf[formatJSON](t, n.ok("-o", "json", "format", dev, "--name", "shown1"))

			n.env = []string{"ATREST_FAILPOINT=" + tc.point}
			r := n.run(nil, tc.args...)
			n.env = nil
			if r.code != 137 {
				t.Fatalf("the failpoint did not end the command: %s", r)
			}
			var key string
			if tc.args[0] == "-o" {
				_, rest, ok := strings.Cut(r.stdout, `"recovery": {`)
				_, rest, ok2 := strings.Cut(rest, `"key": "`)
				k, _, ok3 := strings.Cut(rest, `"`)
				if ok && ok2 && ok3 {
					key = k
				}
			} else if _, rest, ok := strings.Cut(r.stdout, "store it now:\n\n    "); ok {
				key, _, _ = strings.Cut(rest, "\n")
			}
			if key == "" || key == f.Recovery.Key {
				t.Fatalf("no new recovery key on stdout before the kill: %s", r)
			}
			if !cryptsetupAccepts(t, dev, key) {
				t.Fatal("the recovery key printed before the kill does not open the volume")
			}

			n.ok("rekey", "shown1")
			s := jsonOf[statusJSON](t, n.ok("-o", "json", "status", "shown1"))
			if !s.Healthy || !cryptsetupAccepts(t, dev, key) || cryptsetupAccepts(t, dev, f.Recovery.Key) {
				t.Fatalf("after the next rekey: healthy %v, printed key opens %v, old key opens %v",
					s.Healthy, cryptsetupAccepts(t, dev, key), cryptsetupAccepts(t, dev, f.Recovery.Key))
			}
		})
	}
}
