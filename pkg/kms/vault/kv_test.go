package vault_test

import (
	"errors"
	"testing"

	"github.com/atrest/atrest/internal/testutil/vaulttest"
	"github.com/atrest/atrest/pkg/kms"
	"github.com/atrest/atrest/pkg/kms/vault"
	"github.com/hashicorp/vault/api"
)

func TestKVStoreCreateOnlyAndDestroy(t *testing.T) {
	s := vaulttest.Shared(t)
	tr, n := nodeTransit(t, s)
	kv, err := vault.NewKV(tr.Client(), vault.KVConfig{Prefix: "atrest", Host: n.Name})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Get(ctx(t), volA); !errors.Is(err, kms.ErrSecretNotFound) {
		t.Fatalf("get before put = %v, want ErrSecretNotFound", err)
	}
	pt := random(t, 32)
	if err := kv.Put(ctx(t), volA, pt); err != nil {
		t.Fatal(err)
	}
	got, err := kv.Get(ctx(t), volA)
	if err != nil {
		t.Fatal(err)
	}
	if !got.Equal(pt) {
		t.Error("get returned other bytes than put stored")
	}
	got.Wipe()
	// Never overwritten: the stored secret may still be the only way in.
	if err := kv.Put(ctx(t), volA, random(t, 32)); err == nil {
		t.Error("a second put over an existing secret succeeded")
	}
	got, err = kv.Get(ctx(t), volA)
	if err != nil || !got.Equal(pt) {
		t.Errorf("after a refused overwrite: %v (secret changed?)", err)
	}
	got.Wipe()
	if err := kv.Destroy(ctx(t), volA); err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Get(ctx(t), volA); !errors.Is(err, kms.ErrSecretNotFound) {
		t.Errorf("get after destroy = %v, want ErrSecretNotFound", err)
	}
	// Another node's secrets are out of reach.
	foreign, _ := vault.NewKV(tr.Client(), vault.KVConfig{Prefix: "atrest", Host: "someone-else"})
	if err := foreign.Put(ctx(t), volA, pt); !errors.Is(err, kms.ErrPermissionDenied) {
		t.Errorf("put under another host = %v, want ErrPermissionDenied", err)
	}
	if _, err := kv.Get(ctx(t), "../x"); !errors.Is(err, kms.ErrInvalidRequest) {
		t.Errorf("path traversal in the volume = %v, want ErrInvalidRequest", err)
	}
}

func TestKVCreateOnlyWithUpdateRights(t *testing.T) {
	s := vaulttest.Shared(t)
	root := newClient(t, vault.Config{Address: s.Address, CACert: s.CAFile, Auth: vault.Auth{Token: s.RootToken}})
	kv, err := vault.NewKV(root, vault.KVConfig{Prefix: "atrest", Host: "rootnode"})
	if err != nil {
		t.Fatal(err)
	}
	if err := kv.Put(ctx(t), volB, random(t, 32)); err != nil {
		t.Fatal(err)
	}
	// Even a token allowed to update is refused by check-and-set.
	if err := kv.Put(ctx(t), volB, random(t, 32)); !errors.Is(err, kms.ErrSecretExists) {
		t.Errorf("overwrite with update rights = %v, want ErrSecretExists", err)
	}
}

func TestEscrowIsWriteOnlyForTheNode(t *testing.T) {
	s := vaulttest.Shared(t)
	tr, n := nodeTransit(t, s)
	escrow, err := vault.NewKV(tr.Client(), vault.KVConfig{Prefix: "atrest-escrow", Host: n.Name, Escrow: true})
	if err != nil {
		t.Fatal(err)
	}
	rk := random(t, 64)
	loc, err := escrow.Deposit(ctx(t), volA, "slot1-20250101T000000Z", rk)
	if err != nil {
		t.Fatal(err)
	}
	if want := "secret/atrest-escrow/" + n.Name + "/" + volA + "/slot1-20250101T000000Z"; loc != want {
		t.Errorf("location %q, want %q", loc, want)
	}
	if _, err := escrow.Deposit(ctx(t), volA, "slot1-20250101T000000Z", random(t, 64)); !errors.Is(err, kms.ErrPermissionDenied) {
		t.Errorf("overwriting an escrowed key = %v, want ErrPermissionDenied", err)
	}
	for _, step := range escrow.Check(ctx(t)) {
		if step.Err != nil {
			t.Errorf("escrow check %s: %v", step.Name, step.Err)
		}
	}
	// The administrator reads it back.
	admin := newClient(t, vault.Config{Address: s.Address, CACert: s.CAFile, Auth: vault.Auth{TokenFile: tokenFile(t, s.Token(t, vaultTokenReq("atrest-admin")))}})
	adminKV, err := vault.NewKV(admin, vault.KVConfig{Prefix: "atrest-escrow/" + n.Name, Host: volA})
	if err != nil {
		t.Fatal(err)
	}
	got, err := adminKV.Get(ctx(t), "slot1-20250101T000000Z")
	if err != nil {
		t.Fatal(err)
	}
	defer got.Wipe()
	if !got.Equal(rk) {
		t.Error("escrowed key reads back different")
	}
}

func TestVaultlockerLayoutIsReadable(t *testing.T) {
	s := vaulttest.Shared(t)
	rootAPI := s.Client(t)
	mounts, err := rootAPI.Sys().ListMounts()
	if err != nil {
		t.Fatal(err)
	}
	if mounts["vaultlocker/"] == nil {
		if err := rootAPI.Sys().Mount("vaultlocker", &api.MountInput{Type: "kv", Options: map[string]string{"version": "1"}}); err != nil {
			t.Fatal(err)
		}
	}
	// What vaultlocker writes: KV v1, <backend>/<hostname>/<uuid>,
	// {"dmcrypt_key": <base64 text used as the LUKS passphrase>}.
	const passphrase = "q2VkK1dQ3i4yZHN0cmluZy1vZi1yYW5kb20tYmFzZTY0LXRleHQ="
	if _, err := rootAPI.Logical().Write("vaultlocker/juju-node-3/"+volA, map[string]any{"dmcrypt_key": passphrase}); err != nil {
		t.Fatal(err)
	}
	root := newClient(t, vault.Config{Address: s.Address, CACert: s.CAFile, Auth: vault.Auth{Token: s.RootToken}})
	kv, err := vault.NewKV(root, vault.Vaultlocker("vaultlocker", "juju-node-3"))
	if err != nil {
		t.Fatal(err)
	}
	got, err := kv.Get(ctx(t), volA)
	if err != nil {
		t.Fatal(err)
	}
	defer got.Wipe()
	if string(got.Bytes()) != passphrase {
		t.Error("vaultlocker's key did not come back as its passphrase text")
	}
	// Raw text fields take text only: binary would not read back.
	if err := kv.Put(ctx(t), volB, random(t, 32)); !errors.Is(err, kms.ErrInvalidRequest) {
		t.Errorf("raw put of binary bytes = %v, want ErrInvalidRequest", err)
	}
	if _, err := kv.Get(ctx(t), volB); !errors.Is(err, kms.ErrSecretNotFound) {
		t.Errorf("missing vaultlocker key = %v, want ErrSecretNotFound", err)
	}
}
