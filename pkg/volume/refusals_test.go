package volume

import (
	"bytes"
	"context"
	"errors"
	"os"
	"testing"

	"github.com/atrest/atrest/pkg/config"
	"github.com/atrest/atrest/pkg/luks2"
	"github.com/atrest/atrest/pkg/secret"
)

// deviceBytes is the whole image, to show a refusal wrote nothing.
func deviceBytes(t *testing.T, img string) []byte {
	t.Helper()
	b, err := os.ReadFile(img)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// Every refusal of format, rekey, reseal, recovery rotate and adopt that
// comes before a write: the documented sentinel, and the device byte for
// byte as it was.
func TestRefusalsWriteNothing(t *testing.T) {
	ctx := context.Background()
	wrong, err := secret.FromBytes([]byte("not the recovery key"))
	if err != nil {
		t.Fatal(err)
	}
	defer wrong.Wipe()
	for _, tc := range []struct {
		name string
		want error
		run  func(m *Manager, img, other string) error
	}{
		{"format: bad name", ErrInvalidArgument, func(m *Manager, _, other string) error {
			_, err := m.Format(ctx, FormatOptions{Device: other, Name: "../x"})
			return err
		}},
		{"format: bad recovery mode", ErrInvalidArgument, func(m *Manager, _, other string) error {
			_, err := m.Format(ctx, FormatOptions{Device: other, Name: "x", Recovery: "paper"})
			return err
		}},
		{"format: name of another volume", ErrNameInUse, func(m *Manager, _, other string) error {
			_, err := m.Format(ctx, FormatOptions{Device: other, Name: "first"})
			return err
		}},
		{"format: a volume without --force", nil, func(m *Manager, img, _ string) error {
			_, err := m.Format(ctx, FormatOptions{Device: img, Name: "again"})
			if err == nil {
				return errors.New("formatted over a volume")
			}
			return nil
		}},
		{"rekey --recovery print without a way to show the key", ErrInvalidArgument, func(m *Manager, img, _ string) error {
			_, err := m.Rekey(ctx, find(t, m, img), RekeyOptions{Recovery: true, RecoveryMode: config.RecoveryPrint})
			return err
		}},
		{"recovery rotate to mode none", ErrInvalidArgument, func(m *Manager, img, _ string) error {
			_, _, err := m.RecoveryRotate(ctx, find(t, m, img), config.RecoveryNone, nil)
			return err
		}},
		{"recovery rotate print without a way to show the key", ErrInvalidArgument, func(m *Manager, img, _ string) error {
			_, _, err := m.RecoveryRotate(ctx, find(t, m, img), config.RecoveryPrint, nil)
			return err
		}},
		{"reseal with a wrong key", luks2.ErrKeyRejected, func(m *Manager, img, _ string) error {
			_, err := m.Reseal(ctx, find(t, m, img), wrong)
			return err
		}},
		{"adopt an atrest volume", ErrAlreadyManaged, func(m *Manager, img, _ string) error {
			_, err := m.Adopt(ctx, AdoptOptions{Device: img, Name: "adopted", Passphrase: wrong})
			return err
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := withRecovery(newTestManager(t), config.RecoveryPrint)
			img, _ := formatted(t, m, "first")
			m.cfg.Volumes = []config.Volume{{Name: "cfg", Device: img}}
			other := testImage(t)
			before, otherBefore := deviceBytes(t, img), deviceBytes(t, other)
			err := tc.run(m, img, other)
			if tc.want != nil && !errors.Is(err, tc.want) {
				t.Fatalf("got %v, want %v", err, tc.want)
			} else if tc.want == nil && err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(deviceBytes(t, img), before) || !bytes.Equal(deviceBytes(t, other), otherBefore) {
				t.Fatal("a refusal wrote to a device")
			}
		})
	}
}
