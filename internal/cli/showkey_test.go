package cli

import (
	"bytes"
	"encoding/json"
	"errors"
	"testing"

	"github.com/atrest/atrest/pkg/recoverykey"
	"github.com/atrest/atrest/pkg/volume"
)

// The streamed rekey document is one valid JSON document whose recovery
// key is the key's bytes, in the element of its own volume only.
func TestStreamedRekeyDocument(t *testing.T) {
	key, err := recoverykey.Generate()
	if err != nil {
		t.Fatal(err)
	}
	defer key.Wipe()
	var out bytes.Buffer
	e := &env{stdout: &out, json: true}
	list := &jsonList{e: e}
	with := &volume.RekeyResult{Name: "a", Recovery: &volume.Recovery{Mode: "print", Keyslot: 2, Key: key}}
	without := &volume.RekeyResult{Name: "b"}
	if err := e.showRekey(list, with); err != nil {
		t.Fatal(err)
	}
	if err := e.showRekey(list, without); err != nil {
		t.Fatal(err)
	}
	list.close()
	var doc struct {
		Volumes []struct {
			Name     string `json:"name"`
			Recovery *struct {
				Key string `json:"key"`
			} `json:"recovery"`
		} `json:"volumes"`
	}
	if err := json.Unmarshal(out.Bytes(), &doc); err != nil {
		t.Fatalf("not one JSON document: %v\n%s", err, out.String())
	}
	if len(doc.Volumes) != 2 || doc.Volumes[0].Recovery == nil || doc.Volumes[0].Recovery.Key != string(key.Bytes()) || doc.Volumes[1].Recovery != nil {
		t.Fatalf("document %+v", doc)
	}
}

type brokenWriter struct{}

func (brokenWriter) Write([]byte) (int, error) { return 0, errors.New("stdout closed") }

// A key that could not be written is reported, so the use case keeps the
// old recovery key (text and JSON alike).
func TestShowingAKeyReportsAFailedWrite(t *testing.T) {
	key, err := recoverykey.Generate()
	if err != nil {
		t.Fatal(err)
	}
	defer key.Wipe()
	rec := &volume.Recovery{Mode: "print", Keyslot: 2, Key: key}
	for _, asJSON := range []bool{false, true} {
		e := &env{stdout: brokenWriter{}, json: asJSON}
		if err := e.showRekey(&jsonList{e: e}, &volume.RekeyResult{Name: "a", Recovery: rec}); err == nil {
			t.Errorf("json %v: a failed write of the key was not reported", asJSON)
		}
	}
}
