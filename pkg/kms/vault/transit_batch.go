package vault

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/atrest/atrest/pkg/kms"
	"github.com/atrest/atrest/pkg/secret"
)

// batchItem is one entry of a transit batch_results array.
type batchItem struct {
	Ciphertext string `json:"ciphertext"`
	KeyVersion int    `json:"key_version"`
	Plaintext  []byte `json:"plaintext"` // base64 in JSON, decoded by encoding/json
	Error      string `json:"error"`
}

// batch posts one batch_input request and returns its batch_results.
// Transit answers 400 when every item failed and 200 otherwise (atrest
// asks for partial_failure_response_code 200): both carry per-item
// results, which are returned; other failures are whole-call errors.
func (t *Transit) batch(ctx context.Context, op string, n int, body []byte) ([]batchItem, error) {
	rep, err := t.cl.do(ctx, call{
		op: "transit " + op, method: http.MethodPut, path: t.path(op), body: body,
	})
	if rep != nil {
		defer clear(rep.body)
	}
	if err != nil {
		if rep != nil && rep.status == http.StatusBadRequest {
			if items, perr := parseBatch(rep, op, n); perr == nil {
				return items, nil
			}
			var ve *Error
			if errors.As(err, &ve) && strings.Contains(strings.Join(ve.Messages, " "), "encryption key not found") {
				ve.Kind = kms.ErrKeyNotFound
				ve.Reason = fmt.Sprintf("transit key %q does not exist at %s/", t.key, t.mount)
			}
		}
		return nil, err
	}
	return parseBatch(rep, op, n)
}

func parseBatch(rep *reply, op string, n int) ([]batchItem, error) {
	var out struct {
		Data struct {
			BatchResults []batchItem `json:"batch_results"`
		} `json:"data"`
	}
	if err := json.Unmarshal(rep.body, &out); err != nil {
		return nil, fmt.Errorf("vault transit %s: unexpected response (HTTP %d): %w", op, rep.status, err)
	}
	if got := len(out.Data.BatchResults); got != n {
		for _, it := range out.Data.BatchResults {
			clear(it.Plaintext)
		}
		return nil, fmt.Errorf("vault transit %s: %d results for %d items (HTTP %d)", op, got, n, rep.status)
	}
	return out.Data.BatchResults, nil
}

// chunks calls f on consecutive ranges of at most size items of n.
func chunks(n, size int, f func(lo, hi int) error) error {
	for lo := 0; lo < n; lo += size {
		if err := f(lo, min(lo+size, n)); err != nil {
			return err
		}
	}
	return nil
}

// wrapped turns an encrypt or rewrap result into a token's fields.
func (t *Transit) wrapped(it batchItem) (kms.Wrapped, error) {
	if it.Error != "" {
		return kms.Wrapped{}, &Error{Op: "transit", Kind: kms.ErrCiphertextRejected, Reason: "item rejected", Messages: []string{oneLine(it.Error)}}
	}
	v, err := kms.CiphertextVersion("vault", it.Ciphertext)
	if err != nil {
		return kms.Wrapped{}, fmt.Errorf("vault transit returned an unexpected ciphertext: %w", err)
	}
	if it.KeyVersion != 0 && it.KeyVersion != v {
		return kms.Wrapped{}, fmt.Errorf("vault transit returned key_version %d for a v%d ciphertext", it.KeyVersion, v)
	}
	return kms.Wrapped{Backend: BackendTransit, Key: t.key, KeyVersion: v, Ciphertext: it.Ciphertext}, nil
}

// Wrap encrypts the plaintexts with transit/encrypt, one request per
// MaxBatch items; a key that is not derived is refused (ErrConfig).
func (t *Transit) Wrap(ctx context.Context, reqs []kms.WrapRequest) ([]kms.WrapResult, error) {
	if err := kms.CheckRequests(reqs); err != nil {
		return nil, err
	}
	if err := t.requireDerived(ctx); err != nil {
		return nil, t.explainDenied(ctx, err)
	}
	out := make([]kms.WrapResult, 0, len(reqs))
	err := chunks(len(reqs), t.maxBatch, func(lo, hi int) error {
		const head, item = `{"partial_failure_response_code":200,"batch_input":[`, `{"plaintext":,"context":},`
		n := len(head) + 2
		for _, r := range reqs[lo:hi] {
			n += len(item) + base64.StdEncoding.EncodedLen(r.Plaintext.Len()) + base64.StdEncoding.EncodedLen(len(r.Context)) + 4
		}
		w := newJSONBuf(n).raw(head)
		for i, r := range reqs[lo:hi] {
			if i > 0 {
				w.raw(",")
			}
			w.raw(`{"plaintext":`).base64(r.Plaintext.Bytes()).raw(`,"context":`).base64([]byte(r.Context)).raw("}")
		}
		body := w.raw("]}").bytes()
		items, err := t.batch(ctx, "encrypt", hi-lo, body)
		clear(body)
		if err != nil {
			return t.explainDenied(ctx, err)
		}
		for _, it := range items {
			var res kms.WrapResult
			res.Wrapped, res.Err = t.wrapped(it)
			out = append(out, res)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// Unwrap decrypts with transit/decrypt, one request per MaxBatch items.
// Plaintexts go straight from the response into locked memory; the
// response buffers are cleared.
func (t *Transit) Unwrap(ctx context.Context, reqs []kms.UnwrapRequest) ([]kms.UnwrapResult, error) {
	itemErrs, err := kms.CheckUnwrapRequests(t, reqs)
	if err != nil {
		return nil, err
	}
	out := make([]kms.UnwrapResult, len(reqs))
	err = t.eachValid(reqs, itemErrs, func(idx []int) error {
		items, err := t.batch(ctx, "decrypt", len(idx), t.ciphertextBody(reqs, idx))
		if err != nil {
			return err
		}
		for j, it := range items {
			i := idx[j]
			if it.Error != "" {
				out[i].Err = rejected("decrypt", it.Error)
				continue
			}
			if len(it.Plaintext) == 0 {
				out[i].Err = fmt.Errorf("vault transit decrypt: empty plaintext")
				continue
			}
			out[i].Plaintext, out[i].Err = secret.FromBytes(it.Plaintext)
		}
		return nil
	})
	if err != nil {
		for _, r := range out {
			r.Plaintext.Wipe()
		}
		return nil, err
	}
	for i, e := range itemErrs {
		if e != nil {
			out[i].Err = e
		}
	}
	return out, nil
}

// Rewrap re-encrypts with transit/rewrap under the newest key version;
// the plaintexts never leave Vault. A key that is not derived is refused
// (ErrConfig).
func (t *Transit) Rewrap(ctx context.Context, reqs []kms.UnwrapRequest) ([]kms.WrapResult, error) {
	itemErrs, err := kms.CheckUnwrapRequests(t, reqs)
	if err != nil {
		return nil, err
	}
	if err := t.requireDerived(ctx); err != nil {
		return nil, err
	}
	out := make([]kms.WrapResult, len(reqs))
	err = t.eachValid(reqs, itemErrs, func(idx []int) error {
		items, err := t.batch(ctx, "rewrap", len(idx), t.ciphertextBody(reqs, idx))
		if err != nil {
			return err
		}
		for j, it := range items {
			i := idx[j]
			if it.Error != "" {
				out[i].Err = rejected("rewrap", it.Error)
				continue
			}
			out[i].Wrapped, out[i].Err = t.wrapped(it)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	for i, e := range itemErrs {
		if e != nil {
			out[i].Err = e
		}
	}
	return out, nil
}

// eachValid calls f with the indexes of the requests that passed the
// local checks, at most MaxBatch at a time.
func (t *Transit) eachValid(reqs []kms.UnwrapRequest, itemErrs []error, f func(idx []int) error) error {
	idx := make([]int, 0, len(reqs))
	for i := range reqs {
		if itemErrs[i] == nil {
			idx = append(idx, i)
		}
	}
	return chunks(len(idx), t.maxBatch, func(lo, hi int) error { return f(idx[lo:hi]) })
}

// ciphertextBody is a decrypt or rewrap batch_input.
func (t *Transit) ciphertextBody(reqs []kms.UnwrapRequest, idx []int) []byte {
	w := newJSONBuf(64 + 128*len(idx)).raw(`{"partial_failure_response_code":200,"batch_input":[`)
	for j, i := range idx {
		if j > 0 {
			w.raw(",")
		}
		w.raw(`{"ciphertext":`).str([]byte(reqs[i].Wrapped.Ciphertext)).raw(`,"context":`).base64([]byte(reqs[i].Context)).raw("}")
	}
	return w.raw("]}").bytes()
}

// rejected is a per-item refusal: wrong context, tampering, a version
// below min_decryption_version, a malformed ciphertext.
func rejected(op, msg string) error {
	return &Error{Op: "transit " + op, Kind: kms.ErrCiphertextRejected, Reason: "item rejected", Messages: []string{oneLine(msg)}}
}
