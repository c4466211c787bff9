package kmip

import (
	"context"
	"encoding/base64"
	"fmt"
	"slices"
	"strings"
	"sync"

	"github.com/atrest/atrest/pkg/kms"
	"github.com/atrest/atrest/pkg/secret"
)

// Backend is the name tokens record for the KMIP backend.
const Backend = "kmip"

// A KEK is every AES-256 key object in the key manager that carries one
// Name. KMIP has no key versions; a rotation is a new object that takes
// over the name (Rotate, or an operator creating one), so atrest's key
// version of an object is its Initial Date in Unix seconds: it grows with
// every rotation and every server sets it. New wraps use the newest Active
// object; each ciphertext names its object, so older objects keep
// unwrapping until they are revoked.
//
// Ciphertexts in tokens look like
//
//	kmip:v<version>:<object unique identifier, base64url>:<base64 of nonce | ciphertext | tag>
//
// AES-GCM on the server, a 96-bit nonce and a 128-bit tag, the volume UUID
// as additional authenticated data.
type KEK struct {
	cl     *Client
	name   string
	create bool
	mu     sync.Mutex // serialises creating the key
}

var (
	_ kms.KEK       = (*KEK)(nil)
	_ kms.Rotator   = (*KEK)(nil)
	_ kms.Retirer   = (*KEK)(nil)
	_ kms.Checker   = (*KEK)(nil)
	_ kms.Destroyer = (*KEK)(nil)
)

// KEK returns the key named name through cl; create lets Wrap create it
// when no object carries the name yet.
func (cl *Client) KEK(name string, create bool) *KEK {
	return &KEK{cl: cl, name: name, create: create}
}

// Backend returns "kmip".
func (k *KEK) Backend() string { return Backend }

// Key returns the key objects' Name.
func (k *KEK) Key() string { return k.name }

func version(o Object) int { return int(o.Initial.Unix()) }

// objects locates the objects named k.name and reads their attributes
// (two round trips). Objects that vanish in between are left out.
func (k *KEK) objects(ctx context.Context) ([]Object, error) {
	uids, err := k.cl.Locate(ctx, k.name)
	if err != nil || len(uids) == 0 {
		return nil, err
	}
	objs, errs, err := k.cl.GetAttributes(ctx, uids)
	if err != nil {
		return nil, err
	}
	out := objs[:0]
	for i, o := range objs {
		if errs[i] == nil {
			out = append(out, o)
		}
	}
	// Oldest first; equal dates by identifier, so the choice is stable.
	slices.SortFunc(out, func(a, b Object) int {
		if c := a.Initial.Compare(b.Initial); c != 0 {
			return c
		}
		return strings.Compare(a.UID, b.UID)
	})
	return out, nil
}

func active(objs []Object) []Object {
	var out []Object
	for _, o := range objs {
		if o.State == StateActive {
			out = append(out, o)
		}
	}
	return out
}

// noActiveKey explains why objs hold no usable key.
func (k *KEK) noActiveKey(objs []Object) error {
	if len(objs) == 0 {
		return &Error{Op: "locate", Kind: kms.ErrKeyNotFound,
			Reason: fmt.Sprintf("no key object is named %q (create it, or set kmip.create; see docs/kmip.md)", k.name)}
	}
	var states []string
	for _, o := range objs {
		states = append(states, fmt.Sprintf("object %s is %s", o.UID, o.State))
	}
	return &Error{Op: "locate", Kind: kms.ErrKeyNotFound,
		Reason: fmt.Sprintf("no Active key object is named %q: %s (activate one in the key manager)", k.name, strings.Join(states, ", "))}
}

// newest returns the newest Active object, creating the key first when k
// may and no object carries the name.
func (k *KEK) newest(ctx context.Context, mayCreate bool) (Object, error) {
	objs, err := k.objects(ctx)
	if err != nil {
		return Object{}, err
	}
	if len(objs) == 0 && mayCreate {
		k.mu.Lock()
		defer k.mu.Unlock()
		if objs, err = k.objects(ctx); err != nil {
			return Object{}, err
		}
		if len(objs) == 0 {
			if _, err := k.cl.CreateKey(ctx, k.name); err != nil {
				return Object{}, err
			}
			if objs, err = k.objects(ctx); err != nil {
				return Object{}, err
			}
		}
	}
	act := active(objs)
	if len(act) == 0 {
		return Object{}, k.noActiveKey(objs)
	}
	return act[len(act)-1], nil
}

// activeObjects returns the Active objects named k.name, oldest first,
// or why there are none.
func (k *KEK) activeObjects(ctx context.Context) ([]Object, error) {
	objs, err := k.objects(ctx)
	if err != nil {
		return nil, err
	}
	act := active(objs)
	if len(act) == 0 {
		return nil, k.noActiveKey(objs)
	}
	return act, nil
}

// Describe reports the versions of the Active objects named k.name.
func (k *KEK) Describe(ctx context.Context) (kms.KeyInfo, error) {
	act, err := k.activeObjects(ctx)
	if err != nil {
		return kms.KeyInfo{}, err
	}
	return kms.KeyInfo{Backend: Backend, Key: k.name, LatestVersion: version(act[len(act)-1]), MinDecryptionVersion: version(act[0])}, nil
}

func formatCiphertext(o Object, s sealed) string {
	return fmt.Sprintf("kmip:v%d:%s:%s", version(o), base64.RawURLEncoding.EncodeToString([]byte(o.UID)), base64.StdEncoding.EncodeToString(s))
}

// maxSealed bounds a ciphertext: platform secrets are 32 bytes, recovery
// keys under 100.
const maxSealed = nonceLen + 4096 + tagLen

func parseCiphertext(ct string) (string, sealed, error) {
	v, err := kms.CiphertextVersion(Backend, ct)
	if err != nil {
		return "", nil, err
	}
	rest := strings.TrimPrefix(ct, fmt.Sprintf("kmip:v%d:", v))
	u64, b64, ok := strings.Cut(rest, ":")
	uid, err1 := base64.RawURLEncoding.DecodeString(u64)
	blob, err2 := base64.StdEncoding.DecodeString(b64)
	if !ok || err1 != nil || err2 != nil || len(uid) == 0 {
		return "", nil, fmt.Errorf("%w: not a kmip ciphertext (kmip:v<version>:<object>:<data>)", kms.ErrCiphertextRejected)
	}
	if len(blob) <= nonceLen+tagLen || len(blob) > maxSealed {
		return "", nil, fmt.Errorf("%w: kmip ciphertext of %d bytes", kms.ErrCiphertextRejected, len(blob))
	}
	return string(uid), blob, nil
}

// Wrap encrypts each plaintext on the server under the newest Active
// object, bound to its context: one message per MaxBatch items.
func (k *KEK) Wrap(ctx context.Context, reqs []kms.WrapRequest) ([]kms.WrapResult, error) {
	if err := kms.CheckRequests(reqs); err != nil {
		return nil, err
	}
	out := make([]kms.WrapResult, len(reqs))
	if len(reqs) == 0 {
		return out, nil
	}
	cur, err := k.newest(ctx, k.create)
	if err != nil {
		return nil, err
	}
	return out, k.wrapWith(ctx, cur, reqs, out)
}

func (k *KEK) wrapWith(ctx context.Context, cur Object, reqs []kms.WrapRequest, out []kms.WrapResult) error {
	for lo := 0; lo < len(reqs); lo += k.cl.cfg.MaxBatch {
		hi := min(lo+k.cl.cfg.MaxBatch, len(reqs))
		pts, aads := make([]*secret.Key, 0, hi-lo), make([]string, 0, hi-lo)
		for _, r := range reqs[lo:hi] {
			if r.Plaintext.Len() > maxSealed-nonceLen-tagLen {
				return fmt.Errorf("%w: plaintext of %d bytes", kms.ErrInvalidRequest, r.Plaintext.Len())
			}
			pts, aads = append(pts, r.Plaintext), append(aads, r.Context)
		}
		sealed, errs, err := k.cl.encrypt(ctx, cur.UID, pts, aads)
		if err != nil {
			return err
		}
		for j := range sealed {
			if out[lo+j].Err = errs[j]; errs[j] == nil {
				out[lo+j].Wrapped = kms.Wrapped{Backend: Backend, Key: k.name, KeyVersion: version(cur), Ciphertext: formatCiphertext(cur, sealed[j])}
			}
		}
	}
	return nil
}

// Unwrap decrypts each wrapped secret on the server with its context; the
// caller wipes the plaintexts. One message per MaxBatch items.
func (k *KEK) Unwrap(ctx context.Context, reqs []kms.UnwrapRequest) ([]kms.UnwrapResult, error) {
	itemErrs, err := kms.CheckUnwrapRequests(k, reqs)
	if err != nil {
		return nil, err
	}
	out := make([]kms.UnwrapResult, len(reqs))
	var idx []int
	var uids []string
	var blobs []sealed
	var aads []string
	for i, r := range reqs {
		if itemErrs[i] != nil {
			out[i].Err = itemErrs[i]
			continue
		}
		uid, blob, err := parseCiphertext(r.Wrapped.Ciphertext)
		if err != nil {
			out[i].Err = err
			continue
		}
		idx, uids, blobs, aads = append(idx, i), append(uids, uid), append(blobs, blob), append(aads, r.Context)
	}
	for lo := 0; lo < len(idx); lo += k.cl.cfg.MaxBatch {
		hi := min(lo+k.cl.cfg.MaxBatch, len(idx))
		pts, errs, err := k.cl.decrypt(ctx, uids[lo:hi], blobs[lo:hi], aads[lo:hi])
		if err != nil {
			for _, r := range out {
				r.Plaintext.Wipe()
			}
			return nil, err
		}
		for j := range pts {
			out[idx[lo+j]].Plaintext, out[idx[lo+j]].Err = pts[j], errs[j]
		}
	}
	k.explainDenied(ctx, reqs, out)
	return out, nil
}

// explainDenied names the object behind each item the server refused and
// its state: a revoked (Deactivated) or Pre-Active object is refused with
// Permission Denied, which alone would send the operator to the wrong
// place, and a destroyed one is merely "not found".
func (k *KEK) explainDenied(ctx context.Context, reqs []kms.UnwrapRequest, out []kms.UnwrapResult) {
	var idx []int
	var uids []string
	for i := range out {
		e, ok := out[i].Err.(*Error)
		if !ok {
			continue
		}
		uid, _, _ := parseCiphertext(reqs[i].Wrapped.Ciphertext)
		switch e.Kind {
		case kms.ErrKeyNotFound:
			e.Reason = fmt.Sprintf("key object %s of %q is gone from the key manager (destroyed): %s", uid, k.name, e.Reason)
		case kms.ErrPermissionDenied:
			idx, uids = append(idx, i), append(uids, uid)
		}
	}
	if len(idx) == 0 {
		return
	}
	objs, errs, err := k.cl.GetAttributes(ctx, uids)
	if err != nil {
		return
	}
	for j, i := range idx {
		if errs[j] != nil || objs[j].State == StateActive {
			continue
		}
		e := *out[i].Err.(*Error)
		e.Reason = fmt.Sprintf("key object %s is %s, not Active (revoked or never activated): %s", uids[j], objs[j].State, e.Reason)
		if objs[j].State == StateDestroyed || objs[j].State == StateDestroyedCompromised {
			e.Kind = kms.ErrKeyNotFound
		}
		out[i].Err = &e
	}
}

// Rewrap moves each secret to the newest Active object. KMIP has no
// server-side rewrap: each secret is decrypted into locked memory and
// encrypted again, two messages per batch.
func (k *KEK) Rewrap(ctx context.Context, reqs []kms.UnwrapRequest) ([]kms.WrapResult, error) {
	if _, err := kms.CheckUnwrapRequests(k, reqs); err != nil {
		return nil, err
	}
	cur, err := k.newest(ctx, false)
	if err != nil {
		return nil, err
	}
	plain, err := k.Unwrap(ctx, reqs)
	if err != nil {
		return nil, err
	}
	defer func() {
		for _, p := range plain {
			p.Plaintext.Wipe()
		}
	}()
	out := make([]kms.WrapResult, len(reqs))
	var idx []int
	var wreqs []kms.WrapRequest
	for i, p := range plain {
		if p.Err != nil {
			out[i].Err = p.Err
			continue
		}
		idx, wreqs = append(idx, i), append(wreqs, kms.WrapRequest{Context: reqs[i].Context, Plaintext: p.Plaintext})
	}
	wout := make([]kms.WrapResult, len(wreqs))
	if err := k.wrapWith(ctx, cur, wreqs, wout); err != nil {
		return nil, err
	}
	for j, i := range idx {
		out[i] = wout[j]
	}
	return out, nil
}

// DestroyKey revokes every object named k.name that is still Active (or
// Pre-Active) and destroys every object not destroyed yet: the
// decommission of a per-node key (docs/kmip.md). It returns how many
// objects it destroyed.
func (k *KEK) DestroyKey(ctx context.Context) (int, error) {
	objs, err := k.objects(ctx)
	if err != nil {
		return 0, err
	}
	n := 0
	for _, o := range objs {
		switch o.State {
		case StateDestroyed, StateDestroyedCompromised:
			continue
		case StateActive:
			if err := k.cl.Revoke(ctx, o.UID); err != nil {
				return n, err
			}
		}
		if err := k.cl.Destroy(ctx, o.UID); err != nil {
			return n, err
		}
		n++
	}
	return n, nil
}
