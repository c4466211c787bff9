package vault

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"

	"github.com/atrest/atrest/pkg/kms"
	"github.com/atrest/atrest/pkg/secret"
)

// Get returns the volume's secret in locked memory; the caller wipes it.
func (kv *KV) Get(ctx context.Context, volume string) (*secret.Key, error) {
	if err := pathPart("volume", volume); err != nil {
		return nil, err
	}
	rel := kv.rel(volume)
	rep, err := kv.cl.do(ctx, call{op: "kv get", method: http.MethodGet, path: kv.dataPath(rel), notFound: kms.ErrSecretNotFound})
	if err != nil {
		var ve *Error
		if errors.As(err, &ve) && errors.Is(err, kms.ErrSecretNotFound) {
			ve.Reason, ve.Messages = "nothing stored at "+kv.cfg.Mount+"/"+rel, nil
		}
		return nil, err
	}
	defer clear(rep.body)
	var v1 struct {
		Data map[string]json.RawMessage `json:"data"`
	}
	var v2 struct {
		Data struct {
			Data map[string]json.RawMessage `json:"data"`
		} `json:"data"`
	}
	var fields map[string]json.RawMessage
	if kv.cfg.Version == 1 {
		err = json.Unmarshal(rep.body, &v1)
		fields = v1.Data
	} else {
		err = json.Unmarshal(rep.body, &v2)
		fields = v2.Data.Data
	}
	defer func() {
		for _, raw := range fields {
			clear(raw)
		}
	}()
	if err != nil {
		return nil, fmt.Errorf("vault kv get: unexpected response: %w", err)
	}
	raw, ok := fields[kv.cfg.Field]
	if !ok {
		return nil, &Error{Op: "kv get", Kind: kms.ErrSecretNotFound, Reason: fmt.Sprintf("%s/%s has no field %q", kv.cfg.Mount, rel, kv.cfg.Field)}
	}
	return kv.decodeField(raw, rel)
}

// decodeField turns a JSON string into the secret's bytes in locked
// memory. Base64 and vaultlocker's keys contain no escapes, so the bytes
// between the quotes are used directly; anything else is refused rather
// than copied through a string.
func (kv *KV) decodeField(raw json.RawMessage, rel string) (*secret.Key, error) {
	bad := &Error{Op: "kv get", Kind: kms.ErrCiphertextRejected, Reason: fmt.Sprintf("%s/%s field %q is not a plain %s string", kv.cfg.Mount, rel, kv.cfg.Field, kv.cfg.Encoding)}
	if len(raw) < 3 || raw[0] != '"' || raw[len(raw)-1] != '"' || bytes.IndexByte(raw, '\\') >= 0 {
		return nil, bad
	}
	text := raw[1 : len(raw)-1]
	if kv.cfg.Encoding == "raw" {
		return secret.FromBytes(bytes.Clone(text))
	}
	k, err := secret.New(base64.StdEncoding.DecodedLen(len(text)))
	if err != nil {
		return nil, err
	}
	n, err := base64.StdEncoding.Decode(k.Bytes(), text)
	if err != nil || n == 0 {
		k.Wipe()
		return nil, bad
	}
	if n == k.Len() {
		return k, nil
	}
	defer k.Wipe()
	out, err := secret.New(n)
	if err != nil {
		return nil, err
	}
	copy(out.Bytes(), k.Bytes()[:n])
	return out, nil
}

// Destroy removes every version of the volume's secret (KV v2 metadata
// delete; a plain delete on v1).
func (kv *KV) Destroy(ctx context.Context, volume string) error {
	if err := pathPart("volume", volume); err != nil {
		return err
	}
	p := kv.dataPath(kv.rel(volume))
	if kv.cfg.Version == 2 {
		p = kv.cfg.Mount + "/metadata/" + kv.rel(volume)
	}
	_, err := kv.cl.do(ctx, call{op: "kv destroy", method: http.MethodDelete, path: p, notFound: kms.ErrSecretNotFound})
	return err
}
