package volume

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/atrest/atrest/pkg/config"
	"github.com/atrest/atrest/pkg/luks2"
	"github.com/atrest/atrest/pkg/secret"
)

// Every failpoint of a rekey that also replaces a printed recovery key,
// and of recovery rotate in mode print: whatever the point the process
// dies at, the volume keeps a recovery keyslot whose key was shown (the
// old one until the new one was output), it opens through the KMS, and
// the next rekey leaves exactly one recovery keyslot, the one of the key
// shown last, a healthy status and no journal.
func TestRecoveryPrintInterrupted(t *testing.T) {
	ctx := context.Background()
	rekey := func(m *Manager, v *Volume, show func(*secret.Key)) {
		_, _ = m.Rekey(ctx, v, RekeyOptions{Recovery: true, Show: func(res *RekeyResult) error { show(res.Recovery.Key); return nil }})
	}
	// The same rekey as one of a batch (RekeyEach), with the KMS's
	// answers given ahead.
	rekeyEach := func(m *Manager, v *Volume, show func(*secret.Key)) {
		o := RekeyOptions{Recovery: true, Show: func(res *RekeyResult) error { show(res.Recovery.Key); return nil }}
		m.RekeyEach(ctx, []*Volume{v}, o, func(*Volume, *RekeyResult, error) {})
	}
	rotate := func(m *Manager, v *Volume, show func(*secret.Key)) {
		_, _, _ = m.RecoveryRotate(ctx, v, "", func(r *Recovery) error { show(r.Key); return nil })
	}
	for _, tc := range []struct {
		point string
		run   func(*Manager, *Volume, func(*secret.Key))
		shown bool // the new key was output before the crash
	}{
		{"rekey-after-add", rekey, false},
		{"rekey-after-verify", rekey, false},
		{"rekey-after-remove", rekey, false},
		{"rekey-after-show", rekey, true},
		{"rekey-after-recovery-remove", rekey, true},
		{"rekey-after-add", rekeyEach, false},
		{"rekey-after-verify", rekeyEach, false},
		{"rekey-after-remove", rekeyEach, false},
		{"rekey-after-show", rekeyEach, true},
		{"rekey-after-recovery-remove", rekeyEach, true},
		{"recovery-rotate-after-add", rotate, false},
		{"recovery-rotate-after-verify", rotate, false},
		{"recovery-rotate-after-show", rotate, true},
		{"recovery-rotate-after-recovery-remove", rotate, true},
	} {
		t.Run(tc.point, func(t *testing.T) {
			m := withRecovery(newTestManager(t), config.RecoveryPrint)
			img, f := formatted(t, m, "cut")
			oldKey := keyCopy(t, f.Recovery.Key)

			var newKey *secret.Key
			armFailpoint(t, tc.point)
			if !crashed(func() { tc.run(m, find(t, m, img), func(k *secret.Key) { newKey = keyCopy(t, k) }) }) {
				t.Fatal("the failpoint was not reached")
			}
			if (newKey != nil) != tc.shown {
				t.Fatalf("new key shown before %s: %v", tc.point, newKey != nil)
			}

			v := find(t, m, img)
			if !recoveryOpens(t, v, oldKey) && (newKey == nil || !recoveryOpens(t, v, newKey)) {
				t.Fatalf("after a crash at %s no recovery key that was shown opens the volume (recovery keyslots %v)", tc.point, v.Recovery)
			}
			if err := platformOpens(t, m, v); err != nil {
				t.Fatalf("after a crash at %s the volume does not open through the KMS: %v", tc.point, err)
			}

			if ps := problems(t, m, img); !hasProblem(ps, "interrupted") {
				t.Fatalf("status after a crash at %s does not say a change was interrupted: %q", tc.point, ps)
			}

			failpoint = func(string) {}
			if _, err := m.Rekey(ctx, v, RekeyOptions{}); err != nil {
				t.Fatalf("the rekey after the crash: %v", err)
			}
			v = find(t, m, img)
			want := oldKey
			if tc.shown {
				want = newKey
			}
			if len(v.Recovery) != 1 || !recoveryOpens(t, v, want) {
				t.Fatalf("after finishing: recovery keyslots %v; the key shown last opens one: %v", v.Recovery, recoveryOpens(t, v, want))
			}
			if err := platformOpens(t, m, v); err != nil {
				t.Fatal(err)
			}
			if ps := problems(t, m, img); len(ps) > 0 {
				t.Fatalf("status after finishing: %v", ps)
			}
			if journalLeft(t, m, v.UUID()) {
				t.Fatal("the journal is still there")
			}
		})
	}
}

// A printed key whose output failed never replaces the old one: the new
// recovery keyslot goes again, the old key keeps working, and the token
// records the old arrangement.
func TestRecoveryKeyNotShownKeepsTheOldOne(t *testing.T) {
	ctx := context.Background()
	cantShow := errors.New("stdout closed")
	for _, op := range []string{"rekey", "recovery rotate"} {
		t.Run(op, func(t *testing.T) {
			m := withRecovery(newTestManager(t), config.RecoveryPrint)
			img, f := formatted(t, m, "noshow")
			oldKey := keyCopy(t, f.Recovery.Key)
			var err error
			if op == "rekey" {
				_, err = m.Rekey(ctx, find(t, m, img), RekeyOptions{Recovery: true, Show: func(*RekeyResult) error { return cantShow }})
			} else {
				_, _, err = m.RecoveryRotate(ctx, find(t, m, img), "", func(*Recovery) error { return cantShow })
			}
			if !errors.Is(err, cantShow) {
				t.Fatalf("%s whose key could not be shown: %v", op, err)
			}
			v := find(t, m, img)
			if len(v.Recovery) != 1 || !recoveryOpens(t, v, oldKey) {
				t.Fatalf("recovery keyslots %v; the old key opens one: %v", v.Recovery, recoveryOpens(t, v, oldKey))
			}
			if v.Platform.Recovery != config.RecoveryPrint {
				t.Fatalf("token records %q", v.Platform.Recovery)
			}
			if err := platformOpens(t, m, v); err != nil {
				t.Fatal(err)
			}
			if ps := problems(t, m, img); len(ps) > 0 || journalLeft(t, m, v.UUID()) {
				t.Fatalf("status %v; journal left %v", ps, journalLeft(t, m, v.UUID()))
			}
		})
	}
}

// A journal from an interrupted run that lost the old recovery keyslot
// before the new key was shown (what earlier versions could leave):
// settling it keeps the new keyslot rather than leaving none.
func TestSettleNeverRemovesTheLastRecoveryKeyslot(t *testing.T) {
	ctx := context.Background()
	m := withRecovery(newTestManager(t), config.RecoveryPrint)
	img, _ := formatted(t, m, "last")
	v := find(t, m, img)
	old := v.Recovery
	c, release, err := m.begin(ctx, v, "test")
	if err != nil {
		t.Fatal(err)
	}
	vk, err := m.platformKey(ctx, c.v, c.dev)
	if err != nil {
		t.Fatal(err)
	}
	defer vk.Wipe()
	rec, err := m.newRecovery(ctx, v.UUID(), config.RecoveryPrint)
	if err != nil {
		t.Fatal(err)
	}
	defer rec.Wipe()
	u, err := c.v.Header.Begin()
	if err == nil {
		err = rec.enroll(u, vk)
	}
	if err == nil {
		_, err = u.Commit(ctx, c.dev)
	}
	if err == nil {
		err = c.remove(ctx, old, nil)
	}
	if err != nil {
		t.Fatal(err)
	}
	j := &journal{Op: "rekey", OldKeyslot: v.Platform.Keyslot, NewKeyslot: v.Platform.Keyslot, OldToken: v.TokenID, NewToken: v.TokenID,
		Recovery: true, RecoveryMode: config.RecoveryPrint, OldRecovery: old, OldRecord: config.RecoveryPrint, Verified: true}
	if err := m.writeJournal(v.UUID(), j); err != nil {
		t.Fatal(err)
	}
	release()

	if _, err := m.Rekey(ctx, find(t, m, img), RekeyOptions{}); err != nil {
		t.Fatal(err)
	}
	v = find(t, m, img)
	if len(v.Recovery) != 1 || !recoveryOpens(t, v, rec.Key) {
		t.Fatalf("settling removed the last recovery keyslot: %v", v.Recovery)
	}
}

// A token that records a recovery key while no keyslot holds one is a
// problem status reports.
func TestStatusReportsAMissingRecoveryKeyslot(t *testing.T) {
	ctx := context.Background()
	m := withRecovery(newTestManager(t), config.RecoveryPrint)
	img, _ := formatted(t, m, "gone")
	if ps := problems(t, m, img); len(ps) > 0 {
		t.Fatalf("fresh volume: %v", ps)
	}
	v := find(t, m, img)
	c, release, err := m.begin(ctx, v, "test")
	if err != nil {
		t.Fatal(err)
	}
	err = c.remove(ctx, v.Recovery, nil)
	release()
	if err != nil {
		t.Fatal(err)
	}
	if ps := problems(t, m, img); !hasProblem(ps, "no keyslot holds one") {
		t.Fatalf("status with the recovery keyslot gone: %v", ps)
	}
}

// Every failpoint of a plain rekey (alone, and as one of a batch:
// "rekeyeach-" runs RekeyEach) and of reseal: the volume opens through the
// KMS and with its recovery key after the crash, and the next rekey
// completes the change.
func TestPlatformChangeInterrupted(t *testing.T) {
	for _, point := range []string{"rekey-after-add", "rekey-after-verify", "rekey-after-remove",
		"rekeyeach-after-add", "rekeyeach-after-verify", "rekeyeach-after-remove",
		"reseal-after-add", "reseal-after-verify", "reseal-after-remove"} {
		t.Run(point, func(t *testing.T) {
			interruptAndResume(t, withRecovery(newTestManager(t), config.RecoveryPrint), point, 2)
		})
	}
}

// interruptAndResume crashes a rekey or a reseal (by point's prefix) of a
// new volume of m at failpoint point, checks that the volume opens
// through the KMS and with its recovery key, and that the next rekey
// completes the change, leaving keyslots keyslots, every platform keyslot
// opening through the KMS, and a healthy status.
func interruptAndResume(t *testing.T, m *Manager, point string, keyslots int) {
	t.Helper()
	ctx := context.Background()
	img, f := formatted(t, m, "plat")
	key := keyCopy(t, f.Recovery.Key)
	batched := strings.HasPrefix(point, "rekeyeach-")
	if batched {
		point = "rekey-" + strings.TrimPrefix(point, "rekeyeach-")
	}
	armFailpoint(t, point)
	hit := crashed(func() {
		switch {
		case batched:
			m.RekeyEach(ctx, []*Volume{find(t, m, img)}, RekeyOptions{}, func(*Volume, *RekeyResult, error) {})
		case point[:5] == "rekey":
			_, _ = m.Rekey(ctx, find(t, m, img), RekeyOptions{})
		default:
			_, _ = m.Reseal(ctx, find(t, m, img), key)
		}
	})
	if !hit {
		t.Fatal("the failpoint was not reached")
	}
	v := find(t, m, img)
	if err := platformOpens(t, m, v); err != nil {
		t.Fatalf("after a crash at %s: %v", point, err)
	}
	if !recoveryOpens(t, v, key) {
		t.Fatalf("after a crash at %s the recovery key does not open", point)
	}
	failpoint = func(string) {}
	res, err := m.Rekey(ctx, v, RekeyOptions{})
	if err != nil {
		t.Fatal(err)
	}
	v = find(t, m, img)
	if len(v.Others) != 0 || len(v.Header.Keyslots) != keyslots || !recoveryOpens(t, v, key) || platformOpens(t, m, v) != nil {
		t.Fatalf("after the next rekey (resumed %q): %d keyslots (want %d), %d extra tokens", res.Resumed, len(v.Header.Keyslots), keyslots, len(v.Others))
	}
	f2, err := luks2.OpenFile(img, false)
	if err != nil {
		t.Fatal(err)
	}
	defer f2.Close()
	if err := m.verifyToken(ctx, v.Header, f2, v.Platform, nil); err != nil {
		t.Fatalf("a platform keyslot does not open after the resumed change: %v", err)
	}
	if ps := problems(t, m, img); len(ps) > 0 {
		t.Fatalf("status: %v", ps)
	}
}

// rekey --recovery --recovery-mode none removes the recovery key, also
// when it was cut short.
func TestRekeyRecoveryNoneInterrupted(t *testing.T) {
	for _, point := range []string{"rekey-after-add", "rekey-after-verify", "rekey-after-remove", "rekey-after-recovery-remove"} {
		t.Run(point, func(t *testing.T) {
			ctx := context.Background()
			m := withRecovery(newTestManager(t), config.RecoveryPrint)
			img, _ := formatted(t, m, "none")
			armFailpoint(t, point)
			if !crashed(func() {
				_, _ = m.Rekey(ctx, find(t, m, img), RekeyOptions{Recovery: true, RecoveryMode: config.RecoveryNone})
			}) {
				t.Fatal("the failpoint was not reached")
			}
			failpoint = func(string) {}
			if _, err := m.Rekey(ctx, find(t, m, img), RekeyOptions{}); err != nil {
				t.Fatal(err)
			}
			v := find(t, m, img)
			if len(v.Recovery) != 0 || v.Platform.Recovery != "" {
				t.Fatalf("recovery keyslots %v, token records %q", v.Recovery, v.Platform.Recovery)
			}
			if ps := problems(t, m, img); len(ps) > 0 {
				t.Fatalf("status: %v", ps)
			}
		})
	}
}

// A rekey, reseal or recovery rotate whose new keyslots do not open
// removes them again in the same run and says the volume is unchanged:
// the old platform and recovery keys keep working, no journal is left and
// status is healthy.
func TestChangeWithSpoiltNewKeyslotsRollsBack(t *testing.T) {
	ctx := context.Background()
	for _, op := range []string{"rekey", "reseal", "recovery-rotate"} {
		t.Run(op, func(t *testing.T) {
			m := withRecovery(newTestManager(t), config.RecoveryPrint)
			img, f := formatted(t, m, "spoilt")
			key := keyCopy(t, f.Recovery.Key)
			v := find(t, m, img)
			keep := []int{v.Platform.Keyslot}
			keep = append(keep, v.Recovery...)
			prev := failpoint
			failpoint = func(name string) {
				if name == op+"-after-add" {
					spoilNewKeyslots(t, img, keep, false)
				}
			}
			t.Cleanup(func() { failpoint = prev })
			var err error
			switch op {
			case "rekey":
				_, err = m.Rekey(ctx, v, RekeyOptions{Recovery: true, Show: func(*RekeyResult) error { return nil }})
			case "reseal":
				_, err = m.Reseal(ctx, v, key)
			default:
				_, _, err = m.RecoveryRotate(ctx, v, "", func(*Recovery) error { return nil })
			}
			if !errors.Is(err, ErrVerify) || !strings.Contains(err.Error(), "the volume is as it was") {
				t.Fatalf("%s with spoilt new keyslots: %v", op, err)
			}
			failpoint = prev
			v = find(t, m, img)
			if len(v.Header.Keyslots) != len(keep) || !recoveryOpens(t, v, key) || platformOpens(t, m, v) != nil {
				t.Fatalf("after the rollback: keyslots %d (want %d), recovery opens %v", len(v.Header.Keyslots), len(keep), recoveryOpens(t, v, key))
			}
			if v.Platform.Recovery != config.RecoveryPrint || journalLeft(t, m, v.UUID()) {
				t.Fatalf("token records %q; journal left %v", v.Platform.Recovery, journalLeft(t, m, v.UUID()))
			}
			if ps := problems(t, m, img); len(ps) > 0 {
				t.Fatalf("status: %v", ps)
			}
		})
	}
}
