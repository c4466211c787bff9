package cli

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"

	"github.com/atrest/atrest/pkg/secret"
	"github.com/atrest/atrest/pkg/volume"
)

// A recovery key to show goes to stdout from its own bytes: never through
// fmt or encoding/json, which would copy it into ordinary, core-dumpable
// heap. JSON documents are marshalled with keyPlaceholder where the key
// belongs, and the key's bytes are written in its place. The placeholder
// is random, so no name or path in the document can be mistaken for it.
var keyPlaceholder = func() string {
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	return "recovery-key-" + hex.EncodeToString(b)
}()

// errWriter remembers the first write error: an output that failed means
// the key was not shown, and the use case must not remove the old one.
type errWriter struct {
	w   io.Writer
	err error
}

func (w *errWriter) Write(p []byte) (int, error) {
	if w.err != nil {
		return 0, w.err
	}
	n, err := w.w.Write(p)
	w.err = err
	return n, err
}

// writeWithKey writes doc with its first keyPlaceholder replaced by key.
func writeWithKey(w io.Writer, doc []byte, key *secret.Key) error {
	i := bytes.Index(doc, []byte(keyPlaceholder))
	if key == nil || i < 0 {
		_, err := w.Write(doc)
		return err
	}
	for _, b := range key.Bytes() {
		if b < 0x20 || b >= 0x7f || b == '"' || b == '\\' {
			return errors.New("the recovery key has a byte that JSON would have to escape")
		}
	}
	ew := &errWriter{w: w}
	_, _ = ew.Write(doc[:i])
	_, _ = ew.Write(key.Bytes())
	_, _ = ew.Write(doc[i+len(keyPlaceholder):])
	return ew.err
}

// printJSONKey writes v as printJSON does, with the recovery key r holds
// (if any) in place of keyPlaceholder.
func (e *env) printJSONKey(v any, r *volume.Recovery) error {
	doc, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	var key *secret.Key
	if r != nil {
		key = r.Key
	}
	return writeWithKey(e.stdout, append(doc, '\n'), key)
}

// showRecovery outputs a new recovery arrangement in text mode (nothing in
// JSON mode, where the document carries it); a printed key goes to stdout
// once. Its error says the key may not have been shown.
func (e *env) showRecovery(r *volume.Recovery) error {
	if e.json || r == nil {
		return nil
	}
	w := &errWriter{w: e.stdout}
	switch {
	case r.Keyslot < 0:
		fmt.Fprintf(w, "  recovery key: none\n")
	case r.Location != "":
		fmt.Fprintf(w, "  recovery keyslot %d, key escrowed at %s\n", r.Keyslot, r.Location)
	case r.Key != nil:
		fmt.Fprintf(w, "  recovery keyslot %d; the recovery key is shown once, store it now:\n\n    ", r.Keyslot)
		_, _ = w.Write(r.Key.Bytes())
		_, _ = w.Write([]byte("\n\n"))
	}
	return w.err
}

// jsonList streams a volumesDoc ({"schema": N, "volumes": [...]}) one
// element at a time, so that a
// volume's printed recovery key is on stdout before that volume's old
// recovery keyslot is removed, not only once every volume is done.
type jsonList struct {
	e *env
	n int
}

// add writes one element (with r's key in place of keyPlaceholder).
func (l *jsonList) add(v any, r *volume.Recovery) error {
	if !l.e.json {
		return nil
	}
	doc, err := json.MarshalIndent(v, "    ", "  ")
	if err != nil {
		return err
	}
	sep := ",\n    "
	if l.n == 0 {
		sep = "{\n  \"schema\": " + strconv.Itoa(jsonSchema) + ",\n  \"volumes\": [\n    "
	}
	l.n++
	var key *secret.Key
	if r != nil {
		key = r.Key
	}
	return writeWithKey(l.e.stdout, append([]byte(sep), doc...), key)
}

// close ends the document.
func (l *jsonList) close() {
	switch {
	case !l.e.json:
	case l.n == 0:
		fmt.Fprintf(l.e.stdout, "{\n  \"schema\": %d,\n  \"volumes\": []\n}\n", jsonSchema)
	default:
		fmt.Fprint(l.e.stdout, "\n  ]\n}\n")
	}
}
