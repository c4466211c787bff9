package boot

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"regexp"
)

// MirrorEnv overrides the Debian mirror debootstrap installs from.
const MirrorEnv = "ATREST_BOOT_MIRROR"

// Suite is the Debian release of the root image; the guest kernel is the
// one this release's linux-image-amd64 depends on.
const Suite = "bookworm"

var policyRE = regexp.MustCompile(`(?m)^\s*\d+\s+(\S+)\s+` + Suite + `/main\s+amd64\s+Packages\s*$`)

// mirror returns the archive apt uses on this machine for the suite's
// main component (only Debian's archive is reachable from CI), asking
// apt-cache policy, which sees every sources format apt reads.
func mirror(ctx context.Context) (string, error) {
	if m := os.Getenv(MirrorEnv); m != "" {
		return m, nil
	}
	var out []byte
	for attempt := 0; attempt < 2; attempt++ {
		if attempt == 1 {
			// A fresh machine may have no package lists yet.
			cmd := exec.CommandContext(ctx, "apt-get", "update", "-qq")
			if b, err := cmd.CombinedOutput(); err != nil {
				return "", fmt.Errorf("boot: apt-get update: %w: %s", err, bytes.TrimSpace(b))
			}
		}
		var err error
		out, err = exec.CommandContext(ctx, "apt-cache", "policy").Output()
		if err != nil {
			return "", fmt.Errorf("boot: apt-cache policy: %w", err)
		}
		if m := policyRE.FindSubmatch(out); m != nil {
			return string(m[1]), nil
		}
	}
	return "", fmt.Errorf("boot: apt has no %s/main amd64 source on this machine; set %s to a Debian mirror", Suite, MirrorEnv)
}
