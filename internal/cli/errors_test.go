package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"strings"
	"testing"

	"github.com/atrest/atrest/pkg/blockdev"
	"github.com/atrest/atrest/pkg/blockdev/preflight"
	"github.com/atrest/atrest/pkg/config"
	"github.com/atrest/atrest/pkg/dmcrypt"
	"github.com/atrest/atrest/pkg/kms"
	"github.com/atrest/atrest/pkg/luks2"
	"github.com/atrest/atrest/pkg/secret"
	"github.com/atrest/atrest/pkg/token"
	"github.com/atrest/atrest/pkg/volume"
)

// Each failure a script can meet has its own documented code, however
// deeply the layers below wrapped it.
func TestClassify(t *testing.T) {
	wrap := func(err error) error { return fmt.Errorf("data1: %w", fmt.Errorf("inner: %w", err)) }
	for _, tc := range []struct {
		err  error
		code int
	}{
		{wrap(preflight.ErrSignatures), ExitRefused},
		{wrap(volume.ErrNotFound), ExitNotFound},
		{wrap(luks2.ErrLUKS1), ExitNotLUKS2},
		{wrap(luks2.ErrNotLUKS), ExitNotLUKS2},
		{wrap(volume.ErrNotManaged), ExitNotLUKS2},
		{wrap(luks2.ErrHeaderDamaged), ExitDamaged},
		{wrap(luks2.ErrAmbiguousSignatures), ExitDamaged},
		{wrap(volume.ErrDeviceChanged), ExitBusy},
		{wrap(luks2.ErrKeyRejected), ExitKeyRejected},
		{wrap(kms.ErrUnavailable), ExitKMSUnavailable},
		{wrap(kms.ErrAuth), ExitKMSDenied},
		{wrap(kms.ErrPermissionDenied), ExitKMSDenied},
		{wrap(kms.ErrKeyNotFound), ExitKMSKey},
		{wrap(kms.ErrCiphertextRejected), ExitKMSKey},
		{wrap(config.ErrInsecure), ExitConfig},
		{&config.Error{Path: "/etc/atrest/atrest.yaml", Line: 3, Field: "kms", Msg: "unknown"}, ExitConfig},
		{wrap(dmcrypt.ErrBusy), ExitBusy},
		{wrap(volume.ErrLocked), ExitBusy},
		{wrap(dmcrypt.ErrNoDeviceMapper), ExitNoDM},
		{wrap(dmcrypt.ErrBackingBusy), ExitRefused},
		{wrap(dmcrypt.ErrNoNode), ExitError},
		{wrap(volume.ErrNotConfirmed), ExitUsage},
		{usagef("", "bad"), ExitUsage},
		{&volume.StageError{Op: "rekey", Err: errors.New("disk gone"), State: "old keyslot kept"}, ExitPartial},
		// A KMS failure part-way keeps its KMS code: the KMS is what to fix.
		{&volume.StageError{Op: "format", Err: kms.ErrUnavailable, State: "nothing was written"}, ExitKMSUnavailable},
		{wrap(secret.ErrEmpty), ExitUsage},
		{wrap(luks2.ErrUUIDMismatch), ExitUsage},
		{&volume.ReencryptingError{Ref: "data1", Done: 1 << 20, Total: 4 << 20}, ExitReencrypting},
		{wrap(luks2.ErrBackupStale), ExitRefused},
		{wrap(token.ErrInvalid), ExitNotLUKS2},
		{wrap(fs.ErrNotExist), ExitNotFound},
		{wrap(blockdev.ErrUnsupported), ExitNotFound},
		{wrap(config.ErrUnreadable), ExitConfig},
		{wrap(context.DeadlineExceeded), ExitKMSUnavailable},
		// An interrupted change whose two keyslots the KMS cannot check
		// names both causes; the KMS is what to fix.
		{fmt.Errorf("neither opens (new: %w; old: %w)", wrap(kms.ErrUnavailable), wrap(kms.ErrUnavailable)), ExitKMSUnavailable},
		// New key material that did not verify: the KMS's failure when the
		// KMS failed, never "your key was rejected" otherwise.
		{fmt.Errorf("%w: %w (the new keyslots were removed)", volume.ErrVerify, wrap(kms.ErrUnavailable)), ExitKMSUnavailable},
		{fmt.Errorf("%w: %w (the new keyslots were removed)", volume.ErrVerify, wrap(luks2.ErrKeyRejected)), ExitError},
		{errors.New("something else"), ExitError},
	} {
		if got := classify(tc.err).code; got != tc.code {
			t.Errorf("%v: exit %d, want %d", tc.err, got, tc.code)
		}
	}
}

// Too small a locked-memory limit is named as such, even when the local
// keystore's error wraps it as a configuration problem.
func TestMemoryLockHint(t *testing.T) {
	err := fmt.Errorf("%w: local keystore: %w", kms.ErrConfig, fmt.Errorf("%w: 4096 bytes: operation not permitted", secret.ErrMemoryLock))
	c := classify(err)
	if c.code != ExitError || !strings.Contains(c.hint, "ulimit -l") || strings.Contains(c.hint, "kms section") {
		t.Fatalf("exit %d hint %q", c.code, c.hint)
	}
}

// Every code is documented, in --help and docs/cli.md.
func TestExitCodesDocumented(t *testing.T) {
	seen := map[int]bool{}
	for _, c := range ExitCodes {
		if seen[c.Code] || c.Text == "" {
			t.Fatalf("exit code %d listed twice or without text", c.Code)
		}
		seen[c.Code] = true
	}
	for code := ExitOK; code <= ExitPartial; code++ {
		if !seen[code] {
			t.Errorf("exit code %d is not documented", code)
		}
	}
}

// With -o json a failure is also a JSON document on stdout, with the same
// code the process exits with.
func TestJSONError(t *testing.T) {
	var stdout, stderr bytes.Buffer
	code := Main([]string{"atrest", "-o", "json", "-c", "/nonexistent/atrest.yaml", "status"}, strings.NewReader(""), &stdout, &stderr)
	var doc struct {
		Error struct {
			Message  string `json:"message"`
			Kind     string `json:"kind"`
			ExitCode int    `json:"exit_code"`
		} `json:"error"`
	}
	if err := json.Unmarshal(stdout.Bytes(), &doc); err != nil {
		t.Fatalf("stdout is not a JSON document: %v\n%s", err, stdout.String())
	}
	if code == 0 || doc.Error.ExitCode != code || doc.Error.Message == "" {
		t.Fatalf("exit %d, JSON %+v", code, doc.Error)
	}
	if !strings.HasPrefix(stderr.String(), "atrest: error: ") {
		t.Fatalf("stderr %q lacks the error line", stderr.String())
	}
}
