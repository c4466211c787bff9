package cli

import (
	"os"
	"strings"

	"github.com/atrest/atrest/pkg/secret"
	"github.com/atrest/atrest/pkg/volume"
	ucli "github.com/urfave/cli/v2"
	"golang.org/x/term"
)

// openPIN gives open the PIN of TPM keyslots, read only when such a
// keyslot is the way left: from --pin-file or --pin once for all volumes,
// else on a terminal for each volume that needs it.
type openPIN struct {
	e      *env
	c      *ucli.Context
	given  bool
	cached *secret.Key
}

func (e *env) pinFunc(c *ucli.Context) *openPIN {
	return &openPIN{e: e, c: c, given: c.Bool("pin") || c.IsSet("pin-file")}
}

// get is a volume.PINFunc; open wipes what it returns.
func (p *openPIN) get(v *volume.Volume) (*secret.Key, error) {
	if p.cached != nil {
		return p.cached.Clone()
	}
	if !p.given {
		f, ok := p.e.stdin.(*os.File)
		if !ok || !term.IsTerminal(int(f.Fd())) {
			return nil, nil // no one to ask: PIN keyslots are not tried
		}
		return p.e.readSecretFlag(p.c, "pin-file", "TPM PIN for "+v.Device, true)
	}
	k, err := p.e.readSecretFlag(p.c, "pin-file", "TPM PIN", true)
	if err != nil {
		return nil, err
	}
	p.cached = k
	return k.Clone()
}

func (p *openPIN) wipe() { p.cached.Wipe() }

// resealAfterOpen runs the re-seal of TPM keyslots that follows a
// successful open (volume.ResealAfterOpen) and reports it; its failure is
// a warning: the volume opened.
func (e *env) resealAfterOpen(c *ucli.Context, m *volume.Manager, v *volume.Volume, by []string) []volume.TPMKeyslot {
	res, err := m.ResealAfterOpen(c.Context, v, by)
	if err != nil {
		e.warn("%s: opened, but its TPM keyslots whose PCRs changed were not sealed again: %v", v.Name, err)
		return []volume.TPMKeyslot{}
	}
	if res == nil {
		return []volume.TPMKeyslot{}
	}
	for _, w := range res.Warnings {
		e.warn("%s: %s", res.Name, w)
	}
	for _, a := range res.Added {
		e.printf("%s: TPM keyslot %d sealed again to today's %s PCRs %s (they had changed; %s vouched for the node)\n", res.Name, a.Keyslot, a.Bank, formatPCRs(a.PCRs), strings.Join(by, "+"))
	}
	return nonNil(res.Added)
}
