package vault

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"unsafe"

	"github.com/atrest/atrest/internal/testutil/vaulttest"
	"github.com/hashicorp/vault/api"
)

// A long-running atrestd renews its token and rereads its token file again
// and again; each used to leave one more copy of the token on the heap, as
// a new Go string. The Client keeps one string per distinct token.
func TestOneTokenStringPerToken(t *testing.T) {
	s := vaulttest.Shared(t)
	token := s.Token(t, &api.TokenCreateRequest{Policies: []string{"default"}, TTL: "1h"})
	p := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(p, []byte(token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cl, err := New(Config{Address: s.Address, CACert: s.CAFile, Auth: Auth{TokenFile: p}})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if _, err := cl.ensureToken(ctx); err != nil {
		t.Fatal(err)
	}
	first := unsafe.StringData(cl.tok.value)
	for i := range 3 {
		cl.mu.Lock()
		_, err := cl.renewLocked(ctx)
		if err == nil {
			err = cl.loginLocked(ctx) // reread the unchanged file
		}
		cl.mu.Unlock()
		if err != nil {
			t.Fatalf("round %d: %v", i, err)
		}
		if unsafe.StringData(cl.tok.value) != first {
			t.Fatalf("round %d: a renewal or a reread of the token file made a new copy of the token", i)
		}
	}
}
